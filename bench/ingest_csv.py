"""CSV extract → bronze (our ingest, with lineage, row hash and accounting) vs the limit:
a bare DuckDB ``COPY (SELECT * FROM read_csv(...)) TO '….parquet'`` of the same file.

Goal: ratio (limit time / our time) ≥ 0.7. Rows and columns: BENCH_ROWS (5,000,000) × 11.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import duckdb
import yaml

ROWS = int(os.environ.get("BENCH_ROWS", "5000000"))
MAPPING = {  # 11 person data elements onto pinyin-initial source columns
    "patient_id": "BRID", "name": "XM", "sex_code": "XB", "birth_date": "CSRQ", "id_type_code": "ZJLB",
    "id_number": "SFZH", "ethnicity_code": "MZ", "marital_status_code": "HYZK", "phone": "LXDH",
    "address_division_code": "XZQH", "address_text": "XZZ",
}


def make_extract(path: Path, rows: int) -> None:
    con = duckdb.connect()
    con.execute(f"""
        COPY (SELECT 'P' || lpad(i::VARCHAR, 9, '0') AS BRID,
                     ['王','李','张','刘','陈'][1 + i % 5] || ['伟','芳','娜','敏','静','磊'][1 + i % 6] AS XM,
                     (1 + i % 2)::VARCHAR AS XB,
                     strftime(DATE '1940-01-01' + (i % 29000)::INTEGER, '%Y-%m-%d') AS CSRQ,
                     '01' AS ZJLB,
                     '511002' || strftime(DATE '1940-01-01' + (i % 29000)::INTEGER, '%Y%m%d') || lpad((i % 1000)::VARCHAR, 3, '0') || 'X' AS SFZH,
                     '01' AS MZ, '20' AS HYZK,
                     '13' || lpad((i * 7919 % 1000000000)::VARCHAR, 9, '0') AS LXDH,
                     ['511002','511011','511024','511025','511083'][1 + i % 5] AS XZQH,
                     '四川省内江市市中区某街道' || (i % 300)::VARCHAR || '号' AS XZZ
              FROM range({rows}) t(i)) TO '{path}' (HEADER, DELIMITER ',')""")
    con.close()


def bare_copy(path: Path, out: Path) -> float:
    con = duckdb.connect()
    t0 = time.perf_counter()
    con.execute(f"COPY (SELECT * FROM read_csv('{path}', all_varchar=true)) TO '{out}' (FORMAT parquet)")
    elapsed = time.perf_counter() - t0
    con.close()
    return elapsed


def our_ingest(workdir: Path, path: Path) -> tuple[float, object]:
    os.environ["HEALTHLAKE_ROOT"] = str(workdir / "root")
    os.environ["HEALTHLAKE_LANDING"] = str(workdir / "city" / "landing")
    from healthlake.config import settings
    from healthlake.lake import connect
    from ingest_adapters import ingest_landing, load_registry

    s = settings()
    target = s.landing / "B001" / "his_patient" / path.name
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(path, target)
    s.registry.write_text(yaml.safe_dump({"institutions": [{
        "code": "B001", "name": "基准医院", "kind": "hospital", "level": "三级甲等", "division_code": "511002",
        "feeds": [{"id": "his_patient", "dataset": "person", "format": "csv", "mapping": MAPPING}]}]},
        allow_unicode=True), encoding="utf-8")
    registry = load_registry(s.registry)
    con = connect(s)
    from ingest_adapters.ingest import ensure_bronze_tables
    ensure_bronze_tables(con)
    t0 = time.perf_counter()
    [result] = ingest_landing(s, registry, con)
    elapsed = time.perf_counter() - t0
    con.close()
    os.replace(target, path)
    return elapsed, result


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench_ingest_") as d:
        work = Path(d)
        extract = work / "extract.csv"
        make_extract(extract, ROWS)
        size = extract.stat().st_size
        limit = bare_copy(extract, work / "limit.parquet")
        ours, result = our_ingest(work, extract)
        assert result.status == "loaded" and result.rows_loaded == ROWS, result
        print(f"extract: {ROWS:,} rows × 11 columns, {size / 1e6:.0f} MB UTF-8 CSV")
        print(f"limit  (bare DuckDB COPY read_csv → parquet): {limit:.2f} s = {ROWS / limit / 1e6:.2f} M rows/s")
        print(f"ours   (ingest → DuckLake bronze + lineage):   {ours:.2f} s = {ROWS / ours / 1e6:.2f} M rows/s")
        print(f"RATIO ingest_csv = {limit / ours:.2f}× of the limit (goal ≥ 0.70)")

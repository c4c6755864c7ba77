"""Tabular extracts → bronze (our ingest, with lineage, row hash and accounting) vs the limit
measured in the same run on the same data:

- ``csv``      UTF-8 CSV, BENCH_ROWS (5,000,000) × 11 columns. Limit: a bare DuckDB
  ``COPY (SELECT * FROM read_csv(...)) TO '….parquet'`` of the file. Goal ≥ 0.7×.
- ``gb18030``  the same rows in GB18030. Limit: the same bare COPY of the UTF-8 file (DuckDB has no
  reliable GB18030 reader, DESIGN.md: the UTF-8 read is the best anyone can do with these bytes).
- ``excel``    BENCH_EXCEL_ROWS (200,000) rows as .xlsx. Limit: python-calamine reading the sheet
  (``to_python``) + a DuckDB COPY of those rows to parquet — the bare read any Excel ingest needs.

Our ingest runs in a fresh child process, so its peak RSS (printed) is the ingest's alone: the
issue's bound is < 1.5 GB while ingesting a 2 GB CSV (BENCH_ROWS=18000000 makes one). The child
first ingests a 1,000-row delivery of the same feed (a pipeline process's one-time costs: lazy
imports, the registry sync), untimed. The UTF-8 limit and ingest run in BENCH_CSV_RUNS (5) adjacent
pairs; the ratio printed is the median of the pairs' ratios, with their CPU times beside.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import duckdb
import yaml

from healthlake.lake import PARQUET_CODEC

ROWS = int(os.environ.get("BENCH_ROWS", "5000000"))
RUNS = int(os.environ.get("BENCH_CSV_RUNS", "5"))  # pairs of (limit, ours) runs on the UTF-8 file
EXCEL_ROWS = int(os.environ.get("BENCH_EXCEL_ROWS", "200000"))
MAPPING = {  # 11 person data elements onto pinyin-initial source columns
    "patient_id": "BRID", "name": "XM", "sex_code": "XB", "birth_date": "CSRQ", "id_type_code": "ZJLB",
    "id_number": "SFZH", "ethnicity_code": "MZ", "marital_status_code": "HYZK", "phone": "LXDH",
    "address_division_code": "XZQH", "address_text": "XZZ",
}
ROWS_SQL = """SELECT 'P' || lpad(i::VARCHAR, 9, '0') AS BRID,
                     ['王','李','张','刘','陈'][1 + i % 5] || ['伟','芳','娜','敏','静','磊'][1 + i % 6] AS XM,
                     (1 + i % 2)::VARCHAR AS XB,
                     strftime(DATE '1940-01-01' + (i % 29000)::INTEGER, '%Y-%m-%d') AS CSRQ,
                     '01' AS ZJLB,
                     '511002' || strftime(DATE '1940-01-01' + (i % 29000)::INTEGER, '%Y%m%d') || lpad((i % 1000)::VARCHAR, 3, '0') || 'X' AS SFZH,
                     '01' AS MZ, '20' AS HYZK,
                     '13' || lpad((i * 7919 % 1000000000)::VARCHAR, 9, '0') AS LXDH,
                     ['511002','511011','511024','511025','511083'][1 + i % 5] AS XZQH,
                     '四川省内江市市中区某街道' || (i % 300)::VARCHAR || '号' AS XZZ
              FROM range({rows}) t(i)"""


def make_extract(path: Path, rows: int) -> None:
    con = duckdb.connect()
    con.execute(f"COPY ({ROWS_SQL.format(rows=rows)}) TO '{path}' (HEADER, DELIMITER ',')")
    con.close()


def make_gb18030(src: Path, out: Path) -> None:
    with open(src, encoding="utf-8", newline="") as f, open(out, "w", encoding="gb18030", newline="") as g:
        for chunk in iter(lambda: f.read(1 << 22), ""):
            g.write(chunk)


def make_xlsx(path: Path, rows: int) -> None:
    from openpyxl import Workbook

    con = duckdb.connect()
    rel = con.sql(ROWS_SQL.format(rows=rows))
    wb = Workbook(write_only=True)
    ws = wb.create_sheet("患者")
    ws.append(rel.columns)
    for row in rel.fetchall():
        ws.append(row)
    wb.save(path)
    con.close()


def cpu_seconds() -> float:
    """This process's CPU time so far, user and kernel, all threads."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def bare_copy(path: Path, out: Path) -> tuple[float, float]:
    """The limit: (wall seconds, CPU seconds)."""
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    c0, t0 = cpu_seconds(), time.perf_counter()
    con.execute(f"COPY (SELECT * FROM read_csv('{path}', all_varchar=true)) TO '{out}' (FORMAT parquet)")
    elapsed, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    con.close()
    return elapsed, cpu


def bare_excel(path: Path, out: Path) -> float:
    import pyarrow as pa
    import python_calamine as calamine

    t0 = time.perf_counter()
    rows = calamine.CalamineWorkbook.from_path(str(path)).get_sheet_by_index(0).to_python()
    header, body = rows[0], rows[1:]
    table = pa.table({h: [str(r[i]) for r in body] for i, h in enumerate(header)})
    con = duckdb.connect()
    con.register("t", table)
    con.execute(f"COPY t TO '{out}' (FORMAT parquet)")
    con.close()
    return time.perf_counter() - t0


def _child(workdir: str, path: str, fmt: str, encoding: str, queue) -> None:
    """Our ingest of one file into a fresh lake, in its own process: (seconds, result, peak RSS MB)."""
    work = Path(workdir)
    os.environ["HEALTHLAKE_ROOT"] = str(work / "root")
    os.environ["HEALTHLAKE_LANDING"] = str(work / "city" / "landing")
    from healthlake.config import settings
    from healthlake.lake import connect
    from ingest_adapters import ingest_landing, load_registry
    from ingest_adapters.ingest import ensure_bronze_tables

    s = settings()
    src = Path(path)
    target = s.landing / "B001" / "his_patient" / src.name
    target.parent.mkdir(parents=True, exist_ok=True)
    feed = {"id": "his_patient", "dataset": "person", "format": fmt, "mapping": MAPPING}
    if fmt == "csv":
        feed["encoding"] = encoding
    s.registry.write_text(yaml.safe_dump({"institutions": [{
        "code": "B001", "name": "基准医院", "kind": "hospital", "level": "三级甲等", "division_code": "511002",
        "feeds": [feed]}]}, allow_unicode=True), encoding="utf-8")
    registry = load_registry(s.registry)
    con = connect(s)
    ensure_bronze_tables(con)  # a new deployment's table creation is not part of an ingest
    # Warm-up, as in a long-running pipeline process: a first small delivery of the same feed pays the
    # process's one-time costs (lazy imports such as pandas on DuckDB's first bound parameter, the
    # registry sync, the CSV parser's database); the timed ingest then sees it as already loaded.
    if fmt == "csv":
        with open(src, "rb") as f:
            (target.parent / "warmup.csv").write_bytes(b"".join(f.readline() for _ in range(1001)))
        ingest_landing(s, registry, con)
    os.replace(src, target)
    c0, t0 = cpu_seconds(), time.perf_counter()
    results = ingest_landing(s, registry, con)
    elapsed, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    [result] = [r for r in results if r.status != "skipped"]
    con.close()
    os.replace(target, src)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put((elapsed, cpu, result.status, result.rows_loaded, result.error, peak_mb))


def our_ingest(workdir: Path, path: Path, fmt: str = "csv", encoding: str = "utf-8") -> tuple[float, float, float, int]:
    """Our ingest in a child process: (wall seconds, CPU seconds, peak RSS MB, rows loaded)."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(str(workdir), str(path), fmt, encoding, queue))
    proc.start()
    elapsed, cpu, status, loaded, error, peak_mb = queue.get()
    proc.join()
    assert status == "loaded", error
    return elapsed, cpu, peak_mb, loaded


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench_ingest_") as d:
        work = Path(d)
        extract = work / "extract.csv"
        make_extract(extract, ROWS)
        size = extract.stat().st_size
        print(f"extract: {ROWS:,} rows × 11 columns, {size / 1e6:.0f} MB UTF-8 CSV")
        # The limit and ours run in adjacent pairs, the order alternating, and the ratio is the median of the
        # pairs' ratios: on this shared machine one program's time varies by up to 30 % from run to run
        # (CPU time too), and two adjacent runs see the same conditions more often than two distant ones.
        pairs = []  # (limit wall, limit CPU, ours wall, ours CPU, our peak RSS MB)
        for i in range(RUNS):
            if i % 2:
                ours_w, ours_c, peak, loaded = our_ingest(work / f"utf8_{i}", extract)
                limit_w, limit_c = bare_copy(extract, work / f"limit{i}.parquet")
            else:
                limit_w, limit_c = bare_copy(extract, work / f"limit{i}.parquet")
                ours_w, ours_c, peak, loaded = our_ingest(work / f"utf8_{i}", extract)
            assert loaded == ROWS
            pairs.append((limit_w, limit_c, ours_w, ours_c, peak))
            shutil.rmtree(work / f"utf8_{i}")
            (work / f"limit{i}.parquet").unlink()
            print(f"csv     pair {i + 1}: limit {limit_w:.2f} s ({limit_c:.2f} s CPU), ours {ours_w:.2f} s "
                  f"({ours_c:.2f} s CPU): {limit_w / ours_w:.2f}×")
        limit = statistics.median(p[0] for p in pairs)
        ours = statistics.median(p[2] for p in pairs)
        wall_ratios = sorted(p[0] / p[2] for p in pairs)
        # both programs keep the cores busy: CPU time bounds the wall time from below
        cpu_ratio = statistics.median(p[1] / p[3] for p in pairs)
        print(f"csv     limit (bare DuckDB COPY read_csv → parquet): median {limit:.2f} s = {ROWS / limit / 1e6:.2f} M rows/s")
        print(f"csv     ours  (ingest → DuckLake bronze + lineage):   median {ours:.2f} s = {ROWS / ours / 1e6:.2f} M rows/s, "
              f"peak RSS {max(p[4] for p in pairs):,.0f} MB")
        print(f"csv     Parquet codec: the limit DuckDB's default (Snappy), bronze the lake's "
              f"({PARQUET_CODEC.upper()}, healthlake.lake.PARQUET_CODEC)")
        print(f"csv     pairs' ratios {wall_ratios[0]:.2f}-{wall_ratios[-1]:.2f}×; CPU time ratio (median) {cpu_ratio:.2f}×")
        print(f"RATIO ingest_csv = {statistics.median(wall_ratios):.2f}× of the limit, median of {RUNS} pairs (goal ≥ 0.70)")

        gb = work / "extract_gb18030.csv"
        make_gb18030(extract, gb)
        ours_gb, _, peak_gb, loaded = our_ingest(work / "gb18030", gb, encoding="gb18030")
        assert loaded == ROWS
        print(f"gb18030 ours  (transcode + ingest):                   {ours_gb:.2f} s = "
              f"{ROWS / ours_gb / 1e6:.2f} M rows/s, peak RSS {peak_gb:,.0f} MB")
        print(f"RATIO ingest_csv_gb18030 = {limit / ours_gb:.2f}× of the UTF-8 limit")

        xlsx = work / "extract.xlsx"
        make_xlsx(xlsx, EXCEL_ROWS)
        limit_x = bare_excel(xlsx, work / "limit_x.parquet")
        ours_x, _, peak_x, loaded = our_ingest(work / "excel", xlsx, fmt="excel")
        assert loaded == EXCEL_ROWS
        print(f"excel   {EXCEL_ROWS:,} rows: limit (calamine read + COPY) {limit_x:.2f} s, ours {ours_x:.2f} s, "
              f"peak RSS {peak_x:,.0f} MB")
        print(f"RATIO ingest_excel = {limit_x / ours_x:.2f}× of the limit")


if __name__ == "__main__":
    main()

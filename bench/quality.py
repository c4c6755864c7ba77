"""Row-level quality scoring of bronze.person (the 18 rules of quality/rules/bronze.person.yaml) per
institution and batch, vs the limit: ONE hand-written aggregate SQL pass over the same table that
computes the same figures (rows checked and failing per rule × institution × batch, and rows passing
every critical rule per batch), measured in the same run on the same lake table.

    python -m bench quality            # BENCH_QUALITY_ROWS (default 5,000,000) rows, 15 institutions × 4 batches

Also shown (not in the ratio): GX validating the same rules on the whole table, pushed down to
DuckDB (the engine of record: one figure per rule, not per institution). Goal: ratio ≤ 1.5×.
Both sides are checked to agree on every count before the ratio is printed.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROWS = int(os.environ.get("BENCH_QUALITY_ROWS", "5000000"))
INSTITUTIONS, BATCHES = 15, 4

# 1 % of each defect kind, spread over institutions and batches; every other ID number is valid.
CREATE = """
INSERT INTO lake.bronze.person
WITH base AS (
  SELECT i, '511002' || strftime(DATE '1940-01-01' + (i % 29000)::INTEGER, '%Y%m%d')
            || lpad((i % 1000)::VARCHAR, 3, '0') AS first17
  FROM range({rows}) t(i)
), ids AS (
  SELECT i, first17, substr('10X98765432', 1 + list_dot_product(
           list_transform(string_split(first17, ''), lambda c: ascii(c) - 48),
           [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2])::INTEGER % 11, 1) AS check_char
  FROM base
)
SELECT 'P' || lpad(i::VARCHAR, 10, '0') AS patient_id,
       CASE WHEN i % 100 = 7 THEN NULL ELSE ['王','李','张','刘','陈'][1 + i % 5] || '某' END AS name,
       CASE WHEN i % 100 = 1 THEN 'M' WHEN (ascii(substr(first17, 17, 1)) - 48) % 2 = 1 THEN '1' ELSE '2' END AS sex_code,
       strftime(DATE '1940-01-01' + (i % 29000)::INTEGER, '%Y-%m-%d') AS birth_date,
       '01' AS id_type_code,
       CASE WHEN i % 100 = 3 THEN left(first17, 16)
            WHEN i % 100 = 4 THEN first17 || CASE WHEN check_char = '0' THEN '1' ELSE '0' END
            ELSE first17 || check_char END AS id_number,
       CASE WHEN i % 100 = 5 THEN '99' ELSE '01' END AS ethnicity_code,
       '20' AS marital_status_code,
       '13' || lpad((i * 7919 % 1000000000)::VARCHAR, 9, '0') AS phone,
       ['511002','511011','511024','511025','511083'][1 + i % 5] AS address_division_code,
       '四川省内江市市中区某街道' || (i % 300)::VARCHAR || '号' AS address_text,
       '2026-10-01 08:00:00' AS updated_at,
       'B' || lpad((i % {inst})::VARCHAR, 3, '0') AS _institution_code,
       'his_patient' AS _feed,
       'B' || lpad((i % {inst})::VARCHAR, 3, '0') || '.his_patient.' || ((i // {inst}) % {batches})::VARCHAR AS _batch_id,
       'B' || lpad((i % {inst})::VARCHAR, 3, '0') || '/his_patient/his_patient_2026100' || (1 + (i // {inst}) % {batches})::VARCHAR || '.csv' AS _source_file,
       i AS _source_row,
       TIMESTAMPTZ '2026-10-05 10:00:00+08' AS _ingested_at,
       -- 1 %: the same content as the row {inst}×{batches} earlier, i.e. in the same batch (a duplicate row)
       hash(CASE WHEN i % 100 = 9 AND i >= {inst} * {batches} THEN i - {inst} * {batches} ELSE i END) AS _row_hash
FROM ids
"""


def _conditions(rules) -> tuple[list[tuple[str, str]], list[str]]:
    """(rule_id, failing-row condition) for the single pass, and the extra window columns it needs.

    The conditions are the rules' own: a column-map rule's predicate (``scoring._predicate``) and an
    unexpected-rows rule's WHERE clause. The two QUALIFY rules (duplicates) become window columns,
    written out by hand: that is the "hand-written" part of the limit.
    """
    from quality.scoring import _predicate

    conds, windows = [], []
    for r in rules:
        if r.expectation != "unexpected_rows_expectation":
            conds.append((r.id, _predicate(r)))
            continue
        q = " ".join(str(r.kwargs["unexpected_rows_query"]).split())
        body = q.split("{batch}", 1)[1].strip()
        if "QUALIFY" in body:
            col = f"w_{r.id.replace('-', '_')}"
            if "row_number()" in body:
                windows.append(f"row_number() OVER (PARTITION BY _batch_id, _row_hash ORDER BY _source_row) > 1 AS {col}")
            else:
                windows.append(f"(patient_id IS NOT NULL AND min(_row_hash) OVER (PARTITION BY _batch_id, patient_id) "
                               f"<> max(_row_hash) OVER (PARTITION BY _batch_id, patient_id)) AS {col}")
            conds.append((r.id, col))
        else:
            assert body.startswith("WHERE "), r.id
            conds.append((r.id, "(" + re.sub(r"^WHERE ", "", body) + ")"))
    return conds, windows


def limit_sql(rules) -> str:
    conds, windows = _conditions(rules)
    critical = [c for (rid, c), r in zip(conds, rules) if r.severity == "critical"]
    cols = ",\n  ".join(f"count(*) FILTER ({c}) AS \"{rid}\"" for rid, c in conds)
    return (f"WITH w AS (SELECT *{''.join(', ' + x for x in windows)} FROM lake.bronze.person)\n"
            f"SELECT _institution_code, _batch_id, count(*) AS rows_checked,\n  {cols},\n"
            f"  count(*) FILTER (NOT coalesce({' OR '.join(critical)}, false)) AS rows_passing\n"
            f"FROM w GROUP BY ALL")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench_quality_") as d:
        os.environ["HEALTHLAKE_ROOT"] = str(Path(d) / "root")
        for var in ("HEALTHLAKE_CATALOG", "HEALTHLAKE_DATA_PATH", "HEALTHLAKE_REGISTRY", "HEALTHLAKE_LANDING"):
            os.environ.pop(var, None)
        from healthlake.config import settings
        from healthlake.lake import connect
        from ingest_adapters.ingest import ensure_bronze_tables
        from quality.reference import sync_reference
        from quality.scoring import rules_for_dataset, run_dataset_rules

        s = settings()
        rules = rules_for_dataset("person").rules
        with contextlib.closing(connect(s)) as con:
            con.execute("SET enable_progress_bar = false")
            ensure_bronze_tables(con)
            t0 = time.perf_counter()
            con.execute(CREATE.format(rows=ROWS, inst=INSTITUTIONS, batches=BATCHES))
            built = time.perf_counter() - t0
            sync_reference(con, s)
        print(f"bronze.person: {ROWS:,} rows, {INSTITUTIONS} institutions × {BATCHES} batches, "
              f"{len(rules)} rules (built in {built:.1f} s)")

        # the limit: one aggregate pass (best of 2, on its own connection)
        sql = limit_sql(rules)
        limit_times, limit_rows = [], None
        for _ in range(2):
            with contextlib.closing(connect(s, read_only=True)) as con:
                con.execute("SET enable_progress_bar = false")
                t0 = time.perf_counter()
                cur = con.execute(sql)
                limit_rows = cur.fetchall()
                limit_times.append(time.perf_counter() - t0)
                names = [c[0] for c in cur.description]
        limit = min(limit_times)

        # ours: row-level scoring per institution and batch (best of 2), results not stored
        our_times, run = [], None
        for _ in range(2):
            with contextlib.closing(connect(s)) as con:
                con.execute("SET enable_progress_bar = false")
                t0 = time.perf_counter()
                run = run_dataset_rules("person", None, s, store=False, sync=False, con=con)
                our_times.append(time.perf_counter() - t0)
        ours = min(our_times)

        # both computed the same figures
        theirs = {}
        for row in limit_rows:
            d_ = dict(zip(names, row))
            for r in rules:
                theirs[(d_["_batch_id"], r.id)] = d_[r.id]
            theirs[(d_["_batch_id"], "passing")] = d_["rows_passing"]
        mine = defaultdict(int)
        for g in run.results:
            mine[(g.batch_id, g.rule_id)] = g.rows_failed
        for b in run.batches:
            mine[(b.batch_id, "passing")] = b.rows_passing
        diff = [k for k in theirs if theirs[k] != mine.get(k)]
        assert not diff, f"scoring and limit disagree on {len(diff)} counts, e.g. {diff[:3]}"
        failing = sum(g.rows_failed or 0 for g in run.results)

        from quality.runner import run_table_rules

        t0 = time.perf_counter()
        gx_results = run_table_rules("bronze.person", rules, settings=s)
        gx_time = time.perf_counter() - t0
        assert all(r.status in ("PASS", "FAIL") for r in gx_results), [r for r in gx_results if r.status == "ERROR"]

        print(f"limit  (one hand-written aggregate pass, per rule × institution × batch): {limit:.2f} s "
              f"({ROWS / limit / 1e6:.2f} M rows/s)")
        print(f"ours   (quality.scoring.run_dataset_rules, same figures + failing-row ids): {ours:.2f} s "
              f"({ROWS / ours / 1e6:.2f} M rows/s); phases {', '.join(f'{k} {v:.2f} s' for k, v in run.seconds.items())}")
        print(f"GX     (whole table, SQL pushed down to DuckDB, per rule only):            {gx_time:.2f} s")
        print(f"counts agree: {len(theirs):,} figures; {failing:,} failing (rule, row) pairs")
        print(f"RATIO quality = {ours / limit:.2f}× the limit (goal ≤ 1.50)")

"""The full bronze rule catalogue (every ``quality/rules/bronze.*.yaml``) over one delivery day, scored per
rule × institution × batch, against

* **the limit**: ONE hand-written-style aggregate SQL pass per bronze table computing the same figures
  (rows checked and failing per rule × institution × batch, rows passing every critical rule per
  batch): every rule's failing-row condition as a boolean column (a duplicate/key rule's QUALIFY
  window as a window column over the same rows), then one GROUP BY. Derived mechanically from the
  same rules, so the two must agree on every count (checked before any ratio is printed). Goal:
  ours ≤ 1.5× the limit.
* **GX on pandas** (the common way): the rules GX can evaluate on a pandas DataFrame (column-map
  expectations; GX's unexpected-rows expectation is SQL-only, so the SQL rules are left out — the
  pandas figure is a lower bound of the catalogue's cost), on a *sample* of the day loaded into
  pandas, extrapolated linearly to the day's rows. GX itself gives one figure per rule for the whole
  frame; per institution × batch it would need one validation per group on top.
* **GX pushed down to DuckDB** (the engine of record, whole table, one figure per rule): shown, not
  in the ratio.

The day: a synthetic city (``BENCH_QUALITY_RESIDENTS`` residents, one day, with its injected defects)
generated and ingested, then its activity tables replicated inside the same batches (key identifiers
made unique per copy, row hashes per copy) up to ``BENCH_QUALITY_ROWS`` bronze rows; the small
registers (departments, practitioners, equipment) stay as delivered. The per-rule failure rates of the
scaled day are printed against the city's to show the workload kept its shape.

    python -m bench quality      # BENCH_QUALITY_ROWS (default 20,000,000), BENCH_QUALITY_RESIDENTS (2,000),
                                 # BENCH_QUALITY_PANDAS_ROWS (200,000), BENCH_QUALITY_GX_SQL (1: also GX on DuckDB)

Measured on the shared 2-core machine (load average 15–35 from other work, so absolute times are
pessimistic; until 2026-12-06 limit and ours ran back to back in the same process):

    BENCH_QUALITY_ROWS=300000 BENCH_QUALITY_RESIDENTS=500 BENCH_QUALITY_PANDAS_ROWS=20000 python -m bench quality
      (per-rule scoring, before the one-pass change) limit 18.2 s, ours 35.6 s (1.95×, per-query DuckLake
      overhead dominates at this size); GX pushed down to DuckDB, whole tables: 213 s
    BENCH_QUALITY_ROWS=2000000 BENCH_QUALITY_RESIDENTS=500 BENCH_QUALITY_PANDAS_ROWS=50000 BENCH_QUALITY_GX_SQL=0
      (one pass, failing rows materialised) limit 68.0 s, ours 65.3 s: 0.96×
    BENCH_QUALITY_ROWS=20000000 BENCH_QUALITY_RESIDENTS=500 BENCH_QUALITY_GX_SQL=0 python -m bench quality
      (one pass, failing rows materialised: 21.6 M failing (rule, row) pairs, the demo's timeliness rule
      fails every row) limit 259 s, ours 572 s: 2.20×. GX on pandas, 54 column-map rules on a 200,000-row
      sample: 1.0 s → 97 s for the day (lower bound: 105 SQL rules cannot run on pandas); ours on the
      same 54 rules over the whole day: 16.0 s.
      Again after counts-only runs aggregate in the pass (commit 8dcbcc1), while the Dagster gate tests
      ran beside it: limit 354 s, ours 759 s: 2.14×; GX on pandas 0.9 s → 95 s; ours on the 54 rules
      10.7 s.

Profiled (5M and 20M rows, per data set; 2026-12-06): no fallback to per-rule queries, batch scoping
< 1 s and the Python loop over batches × rules < 0.4 s per data set; > 95 % of both sides is the
one SQL pass over bronze.person and bronze.health_record (11.0 M and 7.6 M of the 20 M rows). The
2.14× above was an artefact of running ours and the limit back to back on a machine whose load
swung between 15 and 35: the same code, per data set, gave ours 583 s vs the limit 907 s in another
run. Since then the bench interleaves the two sides data set by data set (alternating which reads
first) and reports CPU (user+sys of the process, DuckDB's threads included) beside wall time; and
ours got cheaper than the limit's one pass: windowed rules (duplicates, conflicting keys) run first
on their own few columns, their failing rowids joined back, so the wide pass streams; calls repeated
across rules (the GB 11643 check digit in three rules, parsed dates) are computed once per row
(quality.scoring.hoist_common_calls). Measured with `/usr/bin/time -v`, load average 12–24:

    BENCH_QUALITY_ROWS=20000000 BENCH_QUALITY_RESIDENTS=500 BENCH_QUALITY_GX_SQL=0 python -m bench quality
      limit 715.5 s wall, 251.1 s CPU; ours 414.9 s wall, 143.0 s CPU: 0.58× wall, 0.57× CPU (goal ≤ 1.5×);
      1,076 counts agree; 21.9 M failing (rule, row) pairs. person: ours 71.9 s CPU vs 135.0 s;
      health_record 53.5 s vs 97.6 s. GX on pandas 1.7 s on 200,000 rows → 166 s for the day; ours on
      the same 54 rules 27.0 s. Whole run: 27 min wall, 448.6 s user + 34.2 s sys, max RSS 10.1 GB.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

ROWS = int(os.environ.get("BENCH_QUALITY_ROWS", "20000000"))
RESIDENTS = int(os.environ.get("BENCH_QUALITY_RESIDENTS", "2000"))
PANDAS_ROWS = int(os.environ.get("BENCH_QUALITY_PANDAS_ROWS", "200000"))
GX_SQL = os.environ.get("BENCH_QUALITY_GX_SQL", "1") not in ("0", "", "false")
SEED = 20261206

# registers delivered whole: not replicated (their codes are the targets of other tables' references)
REGISTERS = {"department", "practitioner", "equipment"}
# the identifiers that key a record of the replicated tables (and the references to them)
KEY_IDS = {"patient_id", "encounter_id", "diagnosis_id", "lab_result_id", "order_id", "record_id", "followup_id",
           "immunization_id", "procedure_id", "report_id", "check_id", "visit_id", "event_id", "accession_number",
           "study_instance_uid", "series_instance_uid", "sop_instance_uid"}


def _copy_expr(col: str, typ: str) -> str:
    """The value of ``col`` in copy ``r.k`` (k ≥ 1) of a row: keys unique per copy, formats kept."""
    c = f'"{col}"'
    if col == "_source_row":
        return f"{c} + r.k * 1000000000"
    if col == "_row_hash":
        return f"hash({c}, r.k)::{typ}"
    if col not in KEY_IDS:
        return c
    if col.endswith("_uid"):        # DICOM UIDs: digits and dots
        return f"CASE WHEN regexp_full_match({c}, '[0-9]+([.][0-9]+)*') THEN {c} || '.' || r.k ELSE {c} END"
    # all-digit identifiers keep their length (档案编号 is 17 digits): the last 8 digits shifted per copy
    return (f"CASE WHEN regexp_full_match({c}, '[0-9]{{9,}}') THEN left({c}, length({c}) - 8) || "
            f"lpad(((right({c}, 8)::BIGINT + r.k * 12345701) % 100000000)::VARCHAR, 8, '0') "
            f"ELSE {c} || '~' || r.k END")


def scale(con, datasets: list[str], target: int) -> dict[str, int]:
    """Replicate the activity tables inside their batches until bronze holds about ``target`` rows."""
    counts = {d: con.execute(f"SELECT count(*) FROM lake.bronze.{d}").fetchone()[0] for d in datasets}
    fixed = sum(n for d, n in counts.items() if d in REGISTERS)
    grow = sum(n for d, n in counts.items() if d not in REGISTERS)
    k = max(1, round((target - fixed) / max(grow, 1)))
    for d in datasets:
        if d in REGISTERS or k == 1 or not counts[d]:
            continue
        cols = con.execute("SELECT column_name, data_type FROM duckdb_columns() WHERE database_name = 'lake' "
                           "AND schema_name = 'bronze' AND table_name = ? ORDER BY column_index", [d]).fetchall()
        names = ", ".join(f'"{c}"' for c, _ in cols)
        exprs = ", ".join(_copy_expr(c, t) for c, t in cols)
        con.execute(f"INSERT INTO lake.bronze.{d} ({names}) SELECT {exprs} FROM lake.bronze.{d}, range(1, {k}) r(k)")
    return {d: con.execute(f"SELECT count(*) FROM lake.bronze.{d}").fetchone()[0] for d in datasets}


# --- the limit: one aggregate pass per table ---------------------------------------------------

_RULE_SQL = re.compile(r"^SELECT \* FROM \{batch\}(?: WHERE (?P<where>.*?))?(?: QUALIFY (?P<qualify>.*))?$", re.S)


def _flags(rules) -> tuple[list[str], list[str]]:
    """(flag expressions AS f_i, one per rule) for the inner select, and the flag names in rule order."""
    from healthlake.lake import quote_ident
    from quality.scoring import _predicate

    exprs, names = [], []
    for i, r in enumerate(rules):
        name = f"f{i}"
        if r.expectation == "unexpected_rows_expectation":
            q = " ".join(str(r.kwargs["unexpected_rows_query"]).split())
            m = _RULE_SQL.match(q)
            assert m, f"{r.id}: not of the form SELECT * FROM {{batch}} [WHERE …] [QUALIFY …]"
            where, qualify = m.group("where"), m.group("qualify")
            if qualify:
                # QUALIFY's windows see only the rows WHERE kept: the same rows, as a leading partition key
                w = qualify.replace("OVER (PARTITION BY ", f"OVER (PARTITION BY ({where or 'true'}), ")
                expr = f"coalesce({where or 'true'}, false) AND coalesce({w}, false)"
            else:
                expr = f"coalesce({where}, false)"
        elif r.expectation == "expect_column_values_to_be_unique":
            c = quote_ident(r.kwargs["column"])
            expr = f"{c} IS NOT NULL AND count(*) OVER (PARTITION BY {c}) > 1"
        else:
            expr = f"coalesce({_predicate(r)}, false)"
        exprs.append(f"({expr}) AS {name}")
        names.append(name)
    return exprs, names


def limit_sql(dataset: str, rules) -> str:
    exprs, names = _flags(rules)
    critical = [n for n, r in zip(names, rules) if r.severity == "critical"] or ["false"]
    counts = ",\n  ".join(f'count_if({n}) AS "{r.id}"' for n, r in zip(names, rules))
    return (f"SELECT _institution_code, _batch_id, count(*) AS rows_checked,\n  {counts},\n"
            f"  count_if(NOT ({' OR '.join(critical)})) AS rows_passing\n"
            f"FROM (SELECT *, {', '.join(exprs)} FROM (SELECT * FROM lake.bronze.{dataset}) AS subselect) AS subselect\n"
            f"GROUP BY ALL")


# --- GX on pandas -------------------------------------------------------------------------------

def gx_pandas(con, datasets: list[str], counts: dict[str, int], sample: int) -> tuple[float, int, int, int]:
    """GX 1.x on pandas over a proportional sample: (seconds, rows validated, rules run, rules left out)."""
    import great_expectations as gx

    from quality.gx_duckdb import get_context
    from quality.scoring import rules_for_dataset

    context = get_context()
    source = context.data_sources.add_pandas("bench_pandas")
    total = sum(counts.values())
    seconds, rows, ran, left = 0.0, 0, 0, 0
    for d in datasets:
        rules = [r for r in rules_for_dataset(d).rules if r.expectation != "unexpected_rows_expectation"]
        left += len(rules_for_dataset(d).rules) - len(rules)
        n = max(1, round(sample * counts[d] / total))
        df = con.execute(f"SELECT * FROM lake.bronze.{d} USING SAMPLE reservoir({n} ROWS) REPEATABLE (7)").df()
        if not rules or df.empty:
            continue
        batch = source.add_dataframe_asset(name=d).add_batch_definition_whole_dataframe("day").get_batch(
            batch_parameters={"dataframe": df})
        suite = gx.ExpectationSuite(name=f"bench:{d}", expectations=[r.build_expectation() for r in rules])
        t0 = time.perf_counter()
        batch.validate(suite, result_format={"result_format": "BASIC", "partial_unexpected_count": 0})
        seconds += time.perf_counter() - t0
        rows += len(df)
        ran += len(rules)
    return seconds, rows, ran, left


def _rates(run) -> dict[str, float]:
    acc = defaultdict(lambda: [0, 0])
    for g in run.results:
        if g.rows_failed is not None:
            acc[g.rule_id][0] += g.rows_failed
            acc[g.rule_id][1] += g.rows_checked
    return {k: f / n for k, (f, n) in acc.items() if n}


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench_quality_") as d:
        os.environ["HEALTHLAKE_ROOT"] = str(Path(d) / "root")
        for var in ("HEALTHLAKE_CATALOG", "HEALTHLAKE_DATA_PATH", "HEALTHLAKE_REGISTRY", "HEALTHLAKE_LANDING"):
            os.environ.pop(var, None)
        from healthlake.config import settings
        from healthlake.lake import connect
        from ingest_adapters.ingest import ingest_landing
        from quality.scoring import bronze_datasets, rules_for_dataset, run_bronze_rules
        from synthetic import generate_city

        s = settings()
        t0 = time.perf_counter()
        generate_city(s.city_dir, residents=RESIDENTS, days=1, seed=SEED)
        ingest_landing(s)
        city_s = time.perf_counter() - t0
        with contextlib.closing(connect(s, read_only=True)) as con:
            present = {t for (t,) in con.execute("SELECT table_name FROM duckdb_tables() WHERE database_name = 'lake' "
                                                 "AND schema_name = 'bronze'").fetchall()}
        datasets = [x for x in bronze_datasets() if x in present]
        base = run_bronze_rules(datasets, settings=s, store=False)
        base_rows = sum(b.rows_checked for b in base.batches)
        rules = {x: rules_for_dataset(x).rules for x in datasets}
        n_rules = sum(len(v) for v in rules.values())

        t0 = time.perf_counter()
        with contextlib.closing(connect(s)) as con:
            con.execute("SET enable_progress_bar = false")
            counts = scale(con, datasets, ROWS)
        built = time.perf_counter() - t0
        total = sum(counts.values())
        batches = len(base.batches)
        print(f"day: {total:,} bronze rows in {len(datasets)} data sets, {batches} batches of "
              f"{len({b.institution_code for b in base.batches})} institutions; {n_rules} rules "
              f"(city of {RESIDENTS:,} residents: {base_rows:,} rows in {city_s:.0f} s; scaled in {built:.0f} s)")

        # ours (the scoring the gate runs: run_bronze_rules, data set by data set on one connection) and
        # the limit (one aggregate pass per table, its own read-only connection), interleaved data set by
        # data set so that both sides see the same load on a shared machine; wall and CPU (user+sys of
        # this process: DuckDB's threads included) per side.
        from quality.reference import sync_reference
        from quality.scoring import DatasetRun, run_dataset_rules, score_institutions

        ours = limit = ours_cpu = limit_cpu = 0.0
        runs: dict[str, DatasetRun] = {}
        theirs = {}
        with contextlib.closing(connect(s)) as mine_con, contextlib.closing(connect(s, read_only=True)) as con:
            con.execute("SET enable_progress_bar = false")
            mine_con.execute("SET enable_progress_bar = false")
            w0, c0 = time.perf_counter(), time.process_time()
            sync_reference(mine_con, s)
            ours += time.perf_counter() - w0
            ours_cpu += time.process_time() - c0
            for i, x in enumerate(datasets):
                def run_ours():
                    w, c = time.perf_counter(), time.process_time()
                    runs[x] = run_dataset_rules(x, None, s, store=False, con=mine_con, sync=False)
                    return time.perf_counter() - w, time.process_time() - c

                def run_limit():
                    w, c = time.perf_counter(), time.process_time()
                    cur = con.execute(limit_sql(x, rules[x]))
                    return time.perf_counter() - w, time.process_time() - c, cur.fetchall(), cur.description

                if i % 2:                       # alternate which side reads the table first
                    lw, lc, rows, desc = run_limit()
                    ow, oc = run_ours()
                else:
                    ow, oc = run_ours()
                    lw, lc, rows, desc = run_limit()
                ours, ours_cpu, limit, limit_cpu = ours + ow, ours_cpu + oc, limit + lw, limit_cpu + lc
                print(f"  {x:<22} ours {ow:7.1f} s wall {oc:7.1f} s CPU   limit {lw:7.1f} s wall {lc:7.1f} s CPU",
                      flush=True)
                names = [c[0] for c in desc]
                for row in rows:
                    r = dict(zip(names, row))
                    for rule in rules[x]:
                        theirs[(r["_batch_id"], rule.id)] = r[rule.id]
                    theirs[(r["_batch_id"], x, "passing")] = r["rows_passing"]
            w0, c0 = time.perf_counter(), time.process_time()
            institutions = score_institutions([b for r in runs.values() for b in r.batches])
            ours += time.perf_counter() - w0
            ours_cpu += time.process_time() - c0
        assert not any(r.rule_errors for r in runs.values()), {k: r.rule_errors for k, r in runs.items()}
        assert institutions

        run = SimpleNamespace(results=[g for r in runs.values() for g in r.results],
                              batches=[b for r in runs.values() for b in r.batches])
        mine = {}
        for g in run.results:
            if g.rows_checked:
                mine[(g.batch_id, g.rule_id)] = g.rows_failed
        for b in run.batches:
            if b.rows_checked:
                mine[(b.batch_id, b.dataset, "passing")] = b.rows_passing
        diff = [k for k in set(theirs) | set(mine) if theirs.get(k) != mine.get(k)]
        assert not diff, f"scoring and limit disagree on {len(diff)} counts, e.g. {[(k, theirs.get(k), mine.get(k)) for k in diff[:3]]}"

        # the workload kept its shape: per-rule failure rate, city vs day
        city_rates, day_rates = _rates(base), _rates(run)
        drift = max((abs(day_rates[k] - city_rates[k]) for k in city_rates if k in day_rates), default=0.0)

        with contextlib.closing(connect(s, read_only=True)) as con:
            pd_s, pd_rows, pd_rules, pd_left = gx_pandas(con, datasets, counts, PANDAS_ROWS)
        pandas_day = pd_s * total / max(pd_rows, 1)

        # ours on the same column-map rules GX can run on pandas (the like-for-like figure)
        from quality.scoring import run_dataset_rules

        t0 = time.perf_counter()
        with contextlib.closing(connect(s)) as con:
            for x in datasets:
                subset = [r for r in rules[x] if r.expectation != "unexpected_rows_expectation"]
                if subset:
                    run_dataset_rules(x, None, s, rules=subset, store=False, sync=False, con=con)
        ours_colmap = time.perf_counter() - t0

        gx_s = None
        if GX_SQL:
            from quality.runner import run_table_rules

            t0 = time.perf_counter()
            for x in datasets:
                res = run_table_rules(f"bronze.{x}", rules_for_dataset(x), settings=s)
                assert all(r.status != "ERROR" for r in res), [r for r in res if r.status == "ERROR"][:3]
            gx_s = time.perf_counter() - t0

        failing = sum(g.rows_failed or 0 for g in run.results)
        print(f"limit  (one aggregate pass per table, per rule × institution × batch): {limit:.1f} s wall, "
              f"{limit_cpu:.1f} s CPU ({total / limit / 1e6:.2f} M rows/s)")
        print(f"ours   (quality.scoring, the gate's scoring: same figures per rule × institution × batch): "
              f"{ours:.1f} s wall, {ours_cpu:.1f} s CPU ({total / ours / 1e6:.2f} M rows/s)")
        print(f"counts agree: {len(theirs):,} figures; {failing:,} failing (rule, row) pairs; "
              f"largest per-rule failure-rate drift city→day {drift * 100:.3f} pp")
        print(f"GX on pandas: {pd_rules} column-map rules ({pd_left} SQL rules cannot run on pandas), sample of "
              f"{pd_rows:,} rows in {pd_s:.1f} s → extrapolated to {total:,} rows: {pandas_day:.0f} s "
              f"(linear; loading the day into pandas not counted); ours on the same {pd_rules} rules over the "
              f"whole day: {ours_colmap:.1f} s ({pandas_day / ours_colmap:.1f}× faster, and per institution × batch)")
        if gx_s is not None:
            print(f"GX pushed down to DuckDB (whole tables, per rule only, engine of record): {gx_s:.1f} s")
        print(f"RATIO quality = {ours / limit:.2f}× the limit in wall time, {ours_cpu / limit_cpu:.2f}× in CPU "
              f"(goal ≤ 1.50)")

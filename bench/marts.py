"""The four databases' dbt build: a 1 % daily delta vs a full rebuild, and growth with city size.

    python -m bench marts     # BENCH_MARTS_RESIDENTS (100,000), BENCH_MARTS_BIG (1,000,000; 0 skips),
                              # BENCH_MARTS_DAYS (3), BENCH_MARTS_KEEP (a folder: keep the city
                              # there), BENCH_MARTS_TIMINGS (a JSON file: every model's seconds)

Per city: the synthetic generator writes BENCH_MARTS_DAYS days of feeds, every file is ingested
into bronze (the ingest adapters, without Dagster and without the quality gate: every batch is
read), the seeds are loaded, then

  full   `dbt run --full-refresh`: every staging, intermediate and mart model, from all of bronze;
  delta  1 % of every bronze data set's rows arrive as one new batch per data set — half of them
         corrected re-sends of existing business keys, half new keys — and `dbt run` builds what
         changed: against the row held (only the new batches' rows parsed: a literal batch list
         pushed into the bronze scan; the held rows whose person link changed re-linked) the facts
         and dimensions fct_lab_result, fct_medication_order, fct_diagnosis, fct_procedure,
         fct_exam_report, fct_immunization, dim_department, dim_practitioner, dim_equipment,
         dim_health_record, int_identities_unioned and (re-linked by their keyed ID-number hash)
         fct_chronic_followup, fct_elderly_health_check, fct_maternal_child_visit, fct_vital_event;
         fct_encounter by the keys new batches touched (every version of them); the EMPI
         int_identities_linked (the new batches' identities, those they block with and the
         clusters they touch are read, linked and written back; nothing else of the EMPI's state), dim_person and person_identifier (changed identities),
         person_timeline (the persons whose events changed) and int_code_values_by_batch (each
         staging model with new batches read once, unpivoted; unmapped_code and IND12 sum its
         per-batch counts); views whose SQL did not change are left alone
         (macros/view_unchanged.sql), and so are the comments of the incremental models
         (macros/persist_docs.sql); the other tables rebuild. Every model that writes does so in
         one DuckLake commit (macros/one_commit.sql), in the full rebuild too.

Printed: full and delta wall and CPU time (user + sys of dbt: wall times are inflated on a shared
machine), each split into views, tables, incremental models (dbt's per-model timing) and the time
outside the models (dbt's start, parse, the lake's attach), RATIO delta / full of wall and of CPU
(goal ≤ 5 %), the large facts' own share, and for the big city the full build time and its growth
ratio against the city-size ratio, and its delta ratio. Data tests are not run (they are the same work in both cases).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

RESIDENTS = int(os.environ.get("BENCH_MARTS_RESIDENTS", "100000"))
BIG = int(os.environ.get("BENCH_MARTS_BIG", "1000000"))
DAYS = int(os.environ.get("BENCH_MARTS_DAYS", "3"))
KEEP = os.environ.get("BENCH_MARTS_KEEP")      # a folder: the city is built there and kept
TIMINGS = os.environ.get("BENCH_MARTS_TIMINGS")   # a JSON file: every model's seconds, full and delta
SEED = 20261206
LARGE_FACTS = ("fct_encounter", "fct_lab_result", "fct_medication_order")
_ENV = ("HEALTHLAKE_ROOT", "HEALTHLAKE_LANDING", "HEALTHLAKE_CATALOG", "HEALTHLAKE_DATA_PATH", "HEALTHLAKE_REGISTRY")


class Run(NamedTuple):
    """One dbt invocation: wall and CPU seconds (user + sys of dbt and its children), dbt's own
    elapsed time (run_results: from the first node to the last), and per model its seconds and
    materialization."""
    wall: float
    cpu: float
    elapsed: float
    models: dict[str, float]
    kinds: dict[str, str]

    def by_kind(self) -> dict[str, tuple[int, float]]:
        out: dict[str, tuple[int, float]] = {}
        for m, t in self.models.items():
            n, total = out.get(self.kinds.get(m, "other"), (0, 0.0))
            out[self.kinds.get(m, "other")] = (n + 1, total + t)
        return out

    def summary(self) -> str:
        kinds = ", ".join(f"{k} {n} × {t / n:.2f} s = {t:.1f} s" for k, (n, t) in sorted(self.by_kind().items()))
        return (f"{self.wall:.1f} s wall, {self.cpu:.1f} s CPU; models {kinds}; "
                f"outside the models (dbt start, parse, attach) {self.wall - self.elapsed:.1f} s")


def _dbt(s, *args: str) -> Run:
    from healthlake.config import REPO_ROOT
    from healthlake.dbt import DBT_PROJECT_DIR, dbt_env

    env = {**os.environ, **dbt_env(s)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run([str(Path(sys.executable).with_name("dbt")), *args, "--project-dir", str(DBT_PROJECT_DIR)],
                       cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if r.returncode != 0:
        raise RuntimeError(r.stdout[-4000:] + r.stderr[-2000:])
    run = json.loads((s.dbt_target_dir / "run_results.json").read_text(encoding="utf-8"))
    manifest = json.loads((s.dbt_target_dir / "manifest.json").read_text(encoding="utf-8"))["nodes"]
    models = {x["unique_id"].split(".")[-1]: x["execution_time"] for x in run["results"]
              if x["unique_id"].startswith("model.")}
    kinds = {x["unique_id"].split(".")[-1]: manifest[x["unique_id"]]["config"]["materialized"]
             for x in run["results"] if x["unique_id"] in manifest}
    return Run(wall, cpu, run["elapsed_time"], models, kinds)


def _delta(s, tag: str = "delta") -> int:
    """1 % of each bronze data set as one new batch: half corrected re-sends, half new keys."""
    from catalog.standard import datasets, get_dataset
    from healthlake.lake import connect

    con = connect(s)
    added = 0
    try:
        for name in datasets():
            ds = get_dataset(name)
            last_key = ds.key_elements[-1]
            n = con.execute(f"SELECT count(*) FROM bronze.{name}").fetchone()[0]
            if n < 100:
                continue
            cols = [r[0] for r in con.execute(f"DESCRIBE bronze.{name}").fetchall()]
            exprs = []
            for c in cols:
                if c == last_key:
                    exprs.append(f"CASE WHEN hash(_source_row, _batch_id) % 2 = 0 THEN {c} ELSE {c} || '-{tag[0].upper()}' END")
                elif c == "_batch_id":
                    exprs.append(f"'{tag}-{name}'")
                elif c == "_source_file":
                    exprs.append(f"'{tag}/{name}.csv'")
                elif c == "_source_row":
                    exprs.append("row_number() OVER ()")
                elif c == "_ingested_at":
                    exprs.append("now()")
                else:
                    exprs.append(c)
            con.execute(f"INSERT INTO bronze.{name} SELECT {', '.join(exprs)} FROM bronze.{name} "
                        f"WHERE hash(_source_row, _batch_id, '{tag}') % 100 = 0")
            added += con.execute(f"SELECT count(*) FROM bronze.{name} WHERE _batch_id = '{tag}-{name}'").fetchone()[0]
    finally:
        con.close()
    return added


def build_city(root: Path, residents: int):
    """Generate, ingest; returns (settings, bronze rows, seconds to generate, seconds to ingest)."""
    saved = {k: os.environ.get(k) for k in _ENV}
    for k in _ENV:
        os.environ.pop(k, None)
    os.environ["HEALTHLAKE_ROOT"] = str(root)
    try:
        from healthlake.config import settings
        from healthlake.lake import connect
        from ingest_adapters import ingest_landing
        from synthetic import generate_city

        s = settings()
        t0 = time.perf_counter()
        generate_city(s.city_dir, residents=residents, days=DAYS, seed=SEED)
        t1 = time.perf_counter()
        results = ingest_landing(s)
        t2 = time.perf_counter()
        bad = [r for r in results if r.status not in ("loaded", "skipped")]   # skipped: a byte-identical file
        assert not bad, bad[:3]
        con = connect(s, read_only=True)
        try:
            rows = con.execute("SELECT sum(rows_loaded) FROM ops.ingest_batch").fetchone()[0]
        finally:
            con.close()
        return s, rows, t1 - t0, t2 - t1
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def empi_scope(s) -> str:
    """The EMPI's last run as its run log tells it: mode, dirty identities, scope read and linked."""
    from healthlake.lake import connect

    con = connect(s, read_only=True)
    try:
        identities, seconds = con.execute("SELECT identities, seconds FROM empi.run_log ORDER BY run_at DESC LIMIT 1"
                                          ).fetchone()
    finally:
        con.close()
    sec = json.loads(seconds)
    return (f"EMPI {sec['mode']}: {sec.get('dirty', 0):,} dirty identities, scope {sec.get('scope', identities):,} "
            f"(+{sec.get('context', 0):,} context) of {identities:,} linked and written back")


def full_build(s) -> Run:
    _dbt(s, "seed")
    return _dbt(s, "run", "--full-refresh")


def _write_timings(full: Run, delta: Run) -> None:
    """Per model: full and delta seconds and materialization, slowest delta first (BENCH_MARTS_TIMINGS)."""
    rows = {m: {"kind": delta.kinds.get(m, full.kinds.get(m)), "full": full.models.get(m),
                "delta": delta.models.get(m)} for m in sorted(set(full.models) | set(delta.models),
                                                              key=lambda m: -(delta.models.get(m) or 0))}
    Path(TIMINGS).write_text(json.dumps({"full": {"wall": full.wall, "cpu": full.cpu, "elapsed": full.elapsed},
                                         "delta": {"wall": delta.wall, "cpu": delta.cpu, "elapsed": delta.elapsed},
                                         "models": rows}, indent=1), encoding="utf-8")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench_marts_") as tmp:
        d = KEEP or tmp
        s, rows, gen, ing = build_city(Path(d) / "small", RESIDENTS)
        print(f"city {RESIDENTS:,} residents × {DAYS} days: generated in {gen:.0f} s, {rows:,} bronze rows "
              f"ingested in {ing:.0f} s")
        full = full_build(s)
        added = _delta(s)
        delta = _dbt(s, "run")
        share_full = sum(full.models.get(m, 0) for m in LARGE_FACTS)
        share_delta = sum(delta.models.get(m, 0) for m in LARGE_FACTS)
        print(f"full rebuild of the marts (dbt run --full-refresh, {len(full.models)} models): {full.summary()}")
        print(f"1 % daily delta ({added:,} rows in new batches), dbt run: {delta.summary()}")
        print("  " + empi_scope(s))
        print(f"  large facts {', '.join(LARGE_FACTS)}: {share_full:.1f} s in the full rebuild, "
              f"{share_delta:.1f} s incrementally")
        slowest = sorted(delta.models.items(), key=lambda kv: -kv[1])[:8]
        print("  slowest models of the delta run: " + ", ".join(f"{m} {t:.1f} s" for m, t in slowest))
        print(f"RATIO marts_delta = {delta.wall / full.wall:.3f} of a full rebuild's wall time, "
              f"{delta.cpu / full.cpu:.3f} of its CPU time (goal ≤ 0.05); "
              f"large facts alone {share_delta / max(share_full, 1e-9):.3f}")
        if TIMINGS:
            _write_timings(full, delta)
        if BIG:
            sb, rows_b, gen_b, ing_b = build_city(Path(d) / "big", BIG)
            print(f"city {BIG:,} residents × {DAYS} days: generated in {gen_b:.0f} s, {rows_b:,} bronze rows "
                  f"ingested in {ing_b:.0f} s")
            full_b = full_build(sb)
            print(f"full rebuild of the marts at {BIG:,} residents: {full_b.summary()}")
            print(f"RATIO marts_growth = {full_b.wall / full.wall:.2f}× the wall time, {full_b.cpu / full.cpu:.2f}× the "
                  f"CPU time for {BIG / RESIDENTS:.0f}× the residents ({rows_b / rows:.1f}× the bronze rows)")
            added_b = _delta(sb)
            delta_b = _dbt(sb, "run")
            print(f"1 % daily delta at {BIG:,} residents ({added_b:,} rows in new batches), dbt run: {delta_b.summary()}")
            print("  " + empi_scope(sb))
            slowest = sorted(delta_b.models.items(), key=lambda kv: -kv[1])[:8]
            print("  slowest models of the delta run: " + ", ".join(f"{m} {t:.1f} s" for m, t in slowest))
            print(f"RATIO marts_delta_big = {delta_b.wall / full_b.wall:.3f} of a full rebuild's wall time, "
                  f"{delta_b.cpu / full_b.cpu:.3f} of its CPU time at {BIG:,} residents")

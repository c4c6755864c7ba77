"""The ``healthlake`` console script.

    healthlake demo                         generate the demo city (once) and materialise every asset
    healthlake generate --residents N --days D --seed S --out DIR
    healthlake sql "SELECT …" [--format table|csv|json]   read-only query of the lake
    healthlake query --role ROLE "SELECT …" [--format …]   governed query within a role's clearance (audited)
    healthlake ui                           dagster dev on 127.0.0.1
    healthlake dbt-parse                    build the dbt manifest (done by `make install`)
    healthlake quality gate|held|override|report   the quality office (质控): see quality/cli.py
    healthlake catalog search|show|build|publish|classify   resource directory (资源目录): see catalog/cli.py
    healthlake empi evaluate|review|decide|status   the master patient index: see empi/cli.py
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import time
import unicodedata
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

from healthlake.config import REPO_ROOT, Settings, settings as load_settings

DATABASE_SCHEMAS = ("population", "emr", "health_record", "resource")


def prepare_dagster_home(s: Settings) -> Path:
    """DAGSTER_HOME under the lake root, holding a copy of the repo's dagster.yaml."""
    home = s.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    src, dst = REPO_ROOT / "dagster.yaml", home / "dagster.yaml"
    if not dst.exists() or dst.read_bytes() != src.read_bytes():
        shutil.copyfile(src, dst)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


# ---------------------------------------------------------------- generate
def cmd_generate(args) -> int:
    from synthetic import generate_city

    t0 = time.perf_counter()
    summary = generate_city(Path(args.out), residents=args.residents, days=args.days, seed=args.seed,
                            pacs=args.pacs, frontend_db=args.frontend_db)
    print(json.dumps(summary, ensure_ascii=False, indent=1, default=str))
    print(f"city written to {Path(args.out).resolve()} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 0


def ensure_demo_city(s: Settings) -> bool:
    """Generate the default city into the landing zone unless it is already there; then feed the
    public reference files (../shared/reference, when that folder exists) as the registry's
    "reference" institution (see ``ensure_reference_institution``)."""
    generated = False
    if not s.registry.exists():
        from synthetic import generate_city

        # the demo city also has the hospitals' PACS (DICOM) and the CDC's front-end database (pulled)
        generate_city(s.city_dir, residents=s.demo_residents, days=s.demo_days, seed=s.seed, pacs=True,
                      frontend_db=True)
        generated = True
    ensure_reference_institution(s)
    return generated


def ensure_reference_institution(s: Settings) -> None:
    """Add the reference institution to the registry and deliver its files to the landing zone
    (same bytes on every run: the ingest skips what it already loaded); nothing when
    ../shared/reference is absent."""
    from healthlake.config import SHARED_REFERENCE
    from ingest_adapters.reference_institution import CODE, add_to_registry, deliver_reference

    if not SHARED_REFERENCE.is_dir():
        return
    add_to_registry(s.registry, SHARED_REFERENCE)
    deliver_reference(SHARED_REFERENCE, s.landing, count=False)
    if s.landing_is_s3:   # the ingest reads the S3 landing zone (make demo-s3): deliver there too
        from healthlake.storage import upload_tree

        upload_tree(s, s.landing, CODE)


def delivery_summary(s: Settings, sources: dict[str, dict]) -> list[str]:
    """Lines of the demo summary: batches and rows per delivery format, and the reference
    institution's feeds, lake counts against the counts taken from the sources."""
    from healthlake.lake import connect
    from ingest_adapters.reference_institution import CODE, NAME

    con = connect(s, read_only=True)
    try:
        formats = con.execute(
            "SELECT format, count(DISTINCT institution_code), count(*), sum(rows_read), sum(rows_loaded), "
            "sum(rows_rejected) FROM ops.ingest_batch WHERE status = 'loaded' GROUP BY 1 ORDER BY 4 DESC").fetchall()
        got = {f: (b, r, ld, rj) for f, b, r, ld, rj in con.execute(
            "SELECT feed, count(*), sum(rows_read), sum(rows_loaded), sum(rows_rejected) FROM ops.ingest_batch "
            "WHERE institution_code = ? AND status = 'loaded' GROUP BY 1", [CODE]).fetchall()}
    finally:
        con.close()
    lines = ["\n== 按格式（全部已入库批次）=="]
    for fmt, insts, b, r, ld, rj in formats:
        lines.append(f"  {fmt:<8} 机构 {insts:>2}  批次 {b:>4}  读取 {r:>9,} = 入库 {ld:>9,} + 拒收 {rj:>5,}")
    if not sources:
        return lines
    lines.append(f"\n== 参考机构 {CODE}（{NAME}，../shared/reference）==")
    for feed, c in sources.items():
        b, r, ld, rj = got.get(feed, (0, 0, 0, 0))
        ok = "一致" if r == c["records"] and r == ld + rj else "不一致"
        lines.append(f"  {feed:<20} 源 {c['files']:>3} 个文件 {c['records']:>6,} 条；湖内 {b:>3} 批 读取 {r:>6,} = "
                     f"入库 {ld:>6,} + 拒收 {rj:>3,}（{ok}）")
    return lines


# ---------------------------------------------------------------- demo
def run_all_assets(s: Settings, log_level: str = "INFO"):
    """Materialise every asset (and run every check) in process, recorded in DAGSTER_HOME."""
    import dagster as dg

    from pipelines.definitions import ALL_ASSETS_JOB, build_definitions

    prepare_dagster_home(s)
    with dg.DagsterInstance.get() as instance:
        job = build_definitions().resolve_job_def(ALL_ASSETS_JOB)
        return job.execute_in_process(instance=instance, raise_on_error=False,
                                      run_config={"loggers": {"console": {"config": {"log_level": log_level}}}})


def database_summary(s: Settings) -> list[tuple[str, str, int]]:
    from healthlake.lake import connect, lake_tables, one_transaction

    con = connect(s, read_only=True)
    try:
        with one_transaction(con):  # one DuckLake snapshot read for all the counts, not one per table
            return [(schema, table, con.execute(f'SELECT count(*) FROM "{schema}"."{table}"').fetchone()[0])
                    for schema, table in lake_tables(con)
                    if schema in DATABASE_SCHEMAS + ("bronze", "ops")]
    finally:
        con.close()


def prepare_run() -> None:
    """What the run imports and reads before its first step: Dagster, the definitions' modules, the
    rules catalogue with GX's expectations, GX's Data Docs renderer (~5 s of CPU)."""
    import pipelines.definitions  # noqa: F401
    from great_expectations.render.renderer.page_renderer import ValidationResultsPageRenderer  # noqa: F401
    from great_expectations.render.view.view import DefaultJinjaPageView  # noqa: F401
    from quality.catalogue import load_catalogue

    load_catalogue()


def prepare_city_and_instance(s: Settings) -> tuple[bool, dict[str, dict]]:
    """The demo's groundwork that needs no module of the run (the demo runs it in a process of its
    own): the Dagster instance's storage (a fresh DAGSTER_HOME: its SQLite databases created and
    migrated, ~2 s of mostly waiting on the disk), the demo city (generated once) with the reference
    institution's files delivered, and the reference sources' counts: (city generated now?, counts)."""
    import dagster as dg

    from healthlake.config import SHARED_REFERENCE
    from ingest_adapters.reference_institution import source_counts

    prepare_dagster_home(s)
    with dg.DagsterInstance.get() as instance:
        instance.get_runs(limit=1)
    generated = ensure_demo_city(s)
    return generated, (source_counts(SHARED_REFERENCE) if SHARED_REFERENCE.is_dir() else {})


SMALL_DEMO_CITY = 100_000  # residents: up to this size the demo's DuckDB runs on one thread (cmd_demo)


def step_times(run_id: str) -> list[tuple[str, float, bool]]:
    """(step, wall seconds, succeeded) of each step of a run, in the order they ended, from the
    Dagster instance's event log."""
    import dagster as dg

    kinds = {dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE}
    started, out = {}, []
    with dg.DagsterInstance.get() as instance:
        for entry in instance.all_logs(run_id, of_type=kinds):
            event = entry.dagster_event
            if event.event_type == dg.DagsterEventType.STEP_START:
                started[event.step_key] = entry.timestamp
            elif event.step_key in started:
                out.append((event.step_key, entry.timestamp - started[event.step_key],
                            event.event_type == dg.DagsterEventType.STEP_SUCCESS))
    return out


def cmd_demo(args) -> int:
    import contextlib
    import multiprocessing
    import threading
    from concurrent.futures import ProcessPoolExecutor

    # The default demo city's tables are small (at most some 10,000 rows): DuckDB's parallel
    # operators cost more than they save there (thread start-up and scheduling per scan of each
    # DuckLake table and view). One thread per DuckDB instance in this process
    # (HEALTHLAKE_DUCKDB_THREADS, unless set; not for a large demo city): on the demo lake the
    # catalog step's samples and counts took 9.5 -> 4.5 s CPU, the mart checks 11.5 -> 6.9 s.
    if not os.environ.get("HEALTHLAKE_DUCKDB_THREADS") and load_settings().demo_residents <= SMALL_DEMO_CITY:
        os.environ["HEALTHLAKE_DUCKDB_THREADS"] = "1"
    s = load_settings()
    t0 = time.perf_counter()
    # Before the run, three independent things: the Dagster instance's storage and the city (in a
    # process of its own: ~2 s waiting on the disk, ~3 s of CPU), the run's modules imported in this
    # one (prepare_run, ~5 s of CPU), and, for a lake root without a current dbt manifest (a fresh
    # HEALTHLAKE_ROOT, or a dbt project file changed since), `dbt parse` (a subprocess of ~10 s; a
    # failure is raised again by the definitions' own dbt_project() call in the run).
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        groundwork = pool.submit(prepare_city_and_instance, s)
        from pipelines.defs.dbt.resources import dbt_project

        parse = threading.Thread(target=dbt_project, name="dbt-parse", daemon=True)
        parse.start()
        prepare_run()
        generated, reference = groundwork.result()
    parse.join()
    print(f"城市: {s.city_dir} ({'新生成' if generated else '已存在'}, {s.demo_residents} 居民, {s.demo_days} 天)")
    # dbt's log lines and the run's warnings go to a log file: the terminal gets the summary.
    log_path = s.root / "logs" / f"demo-{datetime.now():%Y%m%d-%H%M%S}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    print("物化全部资产（Dagster 作业 healthlake_all：采集 → 质控闸门 → dbt 四大数据库 → 质控检查 → 资源目录）…\n"
          f"运行日志: {log_path}", flush=True)
    with open(log_path, "w", encoding="utf-8") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        result = run_all_assets(s, log_level="WARNING")
    import dagster as dg

    evaluations = result.get_asset_check_evaluations()
    passed = sum(1 for e in evaluations if e.passed)
    errors = [e for e in evaluations if not e.passed and e.severity == dg.AssetCheckSeverity.ERROR]
    warnings = [e for e in evaluations if not e.passed and e.severity != dg.AssetCheckSeverity.ERROR]
    ingest = result.asset_materializations_for_node("ingest_landing_zone")
    batch = next((m.metadata for m in ingest if m.asset_key.path == ["ops", "ingest_batch"]), {})
    if batch:
        v = {k: getattr(x, "value", x) for k, x in batch.items()}
        print(f"\n== 本次采集 == 文件 {v['files_seen']}：入库 {v['batches_loaded']}，内容重复跳过 "
              f"{v['batches_skipped_same_content']}，失败 {v['batches_failed']}；读取 {v['rows_read']:,} 行 = "
              f"入库 {v['rows_loaded']:,} + 拒收 {v['rows_rejected']:,}")
    pulled = next((e.event_specific_data.materialization.metadata for e in result.get_asset_materialization_events()
                   if e.event_specific_data.materialization.asset_key.path == ["ops", "frontend_pull"]), {})
    if pulled:
        v = {k: getattr(x, "value", x) for k, x in pulled.items()}
        print(f"== 前置机增量抽取 == 数据源 {v['feeds']}：新批次 {v['batches_loaded']}，无新行 {v['feeds_without_new_rows']}，"
              f"失败 {v['feeds_failed']}；读取 {v['rows_read']:,} 行 = 入库 {v['rows_loaded']:,} + 拒收 {v['rows_rejected']:,}")
    for line in delivery_summary(s, reference):
        print(line)
    print("\n== 各库行数 ==")
    by_schema: dict[str, int] = {}
    for schema, table, n in database_summary(s):
        by_schema[schema] = by_schema.get(schema, 0) + n
        if schema in DATABASE_SCHEMAS:
            print(f"  {schema + '.' + table:<40} {n:>10,}")
    for schema in ("bronze",) + DATABASE_SCHEMAS:
        print(f"  合计 {schema:<35} {by_schema.get(schema, 0):>10,}")
    print(f"\n== 质控检查（dbt 测试 + GX 质控规则）== 通过 {passed}，告警 {len(warnings)}，失败 {len(errors)}")
    for label, items in (("失败", errors), ("告警", warnings)):
        for e in items:
            print(f"  {label}: {e.asset_key.to_user_string()} · {e.check_name}")
    from quality.cli import gate_summary

    print(gate_summary(s))
    print(f"\n数据湖目录: {s.catalog}\n数据文件:   {s.data_path}\n质控报告:   {s.reports_dir / 'quality' / 'office.html'}"
          f"\n资源目录:   {s.reports_dir / 'catalog' / 'resource_directory.json'}"
          f"\n查询示例:   .venv/bin/healthlake sql \"SELECT * FROM catalog.resource_directory\"")
    print("\n== 各步骤用时 ==")
    for step, seconds, ok in step_times(result.run_id):
        print(f"  {step:<28} {seconds:>6.1f} s{'' if ok else '  失败（见运行日志）'}")
    print(f"用时 {time.perf_counter() - t0:.1f} s；运行{'成功' if result.success else '失败'}（run {result.run_id}）")
    return 0 if result.success else 1


# ---------------------------------------------------------------- sql
def _display_width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _cell(v) -> str:
    if v is None:
        return "NULL"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def format_table(columns: list[str], rows: list[tuple]) -> str:
    cells = [[_cell(v) for v in r] for r in rows]
    widths = [max([_display_width(c)] + [_display_width(r[i]) for r in cells]) for i, c in enumerate(columns)]

    def line(values):
        return " | ".join(v + " " * (w - _display_width(v)) for v, w in zip(values, widths))

    out = [line(columns), "-+-".join("-" * w for w in widths)] + [line(r) for r in cells]
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out)


def _json_default(v):
    if isinstance(v, (date, datetime)):
        return v.isoformat()
    if isinstance(v, Decimal):
        return str(v)
    return str(v)


def run_sql(query: str, s: Settings | None = None) -> tuple[list[str], list[tuple]]:
    """Run one read-only query against the lake (attached read-only; nothing can be written)."""
    from healthlake.lake import connect

    con = connect(s or load_settings(), read_only=True)
    try:
        rel = con.sql(query)
        if rel is None:
            return [], []
        return list(rel.columns), rel.fetchall()
    finally:
        con.close()


def cmd_sql(args) -> int:
    import duckdb

    try:
        columns, rows = run_sql(args.query)
    except (duckdb.Error, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print_rows(columns, rows, args.format)
    return 0


def print_rows(columns: list[str], rows: list[tuple], fmt: str = "table") -> None:
    """Query results on stdout as an aligned table, CSV or JSON (one formatting for sql and query)."""
    if fmt == "json":
        print(json.dumps([dict(zip(columns, r)) for r in rows], ensure_ascii=False, default=_json_default))
    elif fmt == "csv":
        w = csv.writer(sys.stdout, lineterminator="\n")
        w.writerow(columns)
        w.writerows([[_json_default(v) if isinstance(v, (date, datetime, Decimal)) else v for v in r] for r in rows])
    else:
        print(format_table(columns, rows))


# ---------------------------------------------------------------- query (governed)
def cmd_query(args) -> int:
    """Governed query: checked against the role's clearance, run on its published database, audited."""
    from catalog.access import AccessError
    from catalog.governed import run_governed

    try:
        columns, rows = run_governed(args.query, args.role, user=args.user, authorisation=args.authorisation)
    except AccessError as e:
        print(f"refused: {e}", file=sys.stderr)
        return 3
    except Exception as e:  # no published database yet, or an engine error (bad SQL) after the checks passed
        print(f"error: {e}", file=sys.stderr)
        return 2
    print_rows(columns, rows, args.format)
    return 0


# ---------------------------------------------------------------- ui / dbt
def cmd_ui(args) -> int:
    from healthlake.dbt import apply_dbt_env

    s = load_settings()
    prepare_dagster_home(s)
    apply_dbt_env(s)
    dagster = Path(sys.executable).with_name("dagster")
    os.execv(str(dagster), [str(dagster), "dev", "-m", "pipelines.definitions", "-h", "127.0.0.1", "-p", str(args.port)])
    return 0


def cmd_dbt_parse(args) -> int:
    from pipelines.defs.dbt.resources import dbt_project, manifest_is_stale, parse_manifest

    # dbt_project() parses a missing or stale manifest itself: not a second time (a dbt start, ~5 s)
    parsed = manifest_is_stale(load_settings().dbt_target_dir / "manifest.json")
    project = dbt_project()
    print(f"dbt manifest: {project.manifest_path if parsed else parse_manifest(project)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="healthlake", description="全民健康信息平台数据湖仓与治理流水线")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="generate the demo city (once) and materialise every asset").set_defaults(func=cmd_demo)
    g = sub.add_parser("generate", help="write a synthetic city: registry, landing zone, truth")
    g.add_argument("--residents", type=int, default=3000)
    g.add_argument("--days", type=int, default=3)
    g.add_argument("--seed", type=int, default=20261123)
    g.add_argument("--out", required=True)
    g.add_argument("--pacs", action=argparse.BooleanOptionalAction, default=True,
                   help="the hospitals' PACS deliver DICOM files (default: yes)")
    g.add_argument("--frontend-db", action=argparse.BooleanOptionalAction, default=True,
                   help="the CDC's immunisations go to its front-end database, pulled by the platform (default: yes)")
    g.set_defaults(func=cmd_generate)
    q = sub.add_parser("sql", help="read-only SQL over the lake")
    q.add_argument("query")
    q.add_argument("--format", choices=("table", "csv", "json"), default="table")
    q.set_defaults(func=cmd_sql)
    gq = sub.add_parser("query", help="governed SQL within a role's clearance (published data, audited)")
    gq.add_argument("query")
    gq.add_argument("--role", required=True, help="role from catalog/roles.yaml (public, researcher, analyst, …)")
    gq.add_argument("--user", default=None, help="who is asking (default: the OS user); written to the audit log")
    gq.add_argument("--authorisation", default=None,
                    help="resident's authorisation reference (roles that require it, e.g. clinician)")
    gq.add_argument("--format", choices=("table", "csv", "json"), default="table")
    gq.set_defaults(func=cmd_query)
    u = sub.add_parser("ui", help="dagster dev bound to 127.0.0.1")
    u.add_argument("--port", type=int, default=3000)
    u.set_defaults(func=cmd_ui)
    sub.add_parser("dbt-parse", help="build the dbt manifest").set_defaults(func=cmd_dbt_parse)
    from quality.cli import add_quality_parser

    add_quality_parser(sub)
    from catalog.cli import add_catalog_parser

    add_catalog_parser(sub)
    from empi.cli import add_empi_parser

    add_empi_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

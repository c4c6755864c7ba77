"""Front-end databases (前置机): the registry's database feeds pulled into bronze by their watermark.

A feed of format ``sqlite`` naming a ``database`` (a path, relative to registry.yaml) or of format
``postgres`` (a libpq string or postgresql:// URL, ``${VAR}`` from the environment) is not
delivered as files: ``frontend_pull`` reads the rows whose watermark column is past the one stored
in ``ops.frontend_watermark`` (``ingest_adapters.frontend_db.pull_feed``). Each pull that finds
new rows is one batch: bronze rows with the lineage columns, an ``ops.ingest_batch`` row (rows
read = loaded + rejected), rejects in ``bronze._rejects``, the new watermark, in one transaction.
A pull that finds nothing new is a no-op (no batch, no row; reported ``skipped``). A failed feed
(unreachable, renamed table) fails alone; in the ``frontend_pull`` job the step fails when every
feed failed, so the retry policy tries an unreachable front-end again (in ``healthlake_all`` it
only warns, never holding up the landing zone's ingest downstream).

Where it runs:

* ``healthlake_all`` (``healthlake demo``): before ``ingest_landing_zone`` (which depends on it),
  so the same run's dbt models see the pulled rows.
* ``frontend_pull`` job, on the schedule ``frontend_pull_every_30_min``: every 30 minutes
  (北京时间, ``*/30 * * * *``). The CDC's 前置机 takes the vaccination clinics' records through
  the day; half an hour keeps the immunisation marts at most one ``healthlake_all`` run plus 30
  minutes behind without hammering the front-end machine. The schedule only lands rows in bronze;
  the next ``healthlake_all`` run (or ``ingest_institution`` partition run) builds the marts.
  Running by default where the landing sensor does (S3 landing or PostgreSQL catalog), stopped in
  the embedded demo (start it in the UI).

One pull at a time per lake (``catalog_lock('frontend_pull')``): two concurrent pulls of a feed
would read from the same watermark.
"""

from collections import Counter

import dagster as dg

from healthlake.config import settings

FRONTEND_PULL_KEY = dg.AssetKey(["ops", "frontend_pull"])
FRONTEND_PULL_JOB = "frontend_pull"
FRONTEND_PULL_CRON = "*/30 * * * *"


def pull_all(s=None):
    """Pull every front-end feed of the registry under the lake's pull lock; [] when there is none."""
    from healthlake.lake import catalog_lock, connect, release
    from ingest_adapters.frontend_db import frontend_feeds, pull_frontend
    from ingest_adapters.registry import load_registry

    s = s or settings()
    if not s.registry.exists():
        return []
    registry = load_registry(s.registry)
    if not frontend_feeds(registry):
        return []
    with catalog_lock("frontend_pull", s):
        con = connect(s)
        try:
            return pull_frontend(s, registry, con)
        finally:
            release(con)


@dg.asset(key=FRONTEND_PULL_KEY, group_name="bronze", kinds={"duckdb", "sqlite", "postgres"},
          description="前置机增量抽取：注册表中的前置机数据库（SQLite 文件或 PostgreSQL）按水位列增量入 bronze，"
                      "每次有新行的抽取为一个采集批次（读取=入库+拒收）；无新行时不产生批次",
          retry_policy=dg.RetryPolicy(max_retries=2, delay=30, backoff=dg.Backoff.EXPONENTIAL))
def frontend_pull(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    """Every front-end database feed's new rows into bronze (see the module docstring)."""
    results = pull_all()
    loaded = [r for r in results if r.status == "loaded"]
    skipped = [r for r in results if r.status == "skipped"]
    failed = [r for r in results if r.status == "failed"]
    for r in failed:
        context.log.warning(f"前置机抽取失败 {r.institution_code}.{r.feed}: {r.error}")
    for r in loaded:
        context.log.info(f"前置机 {r.institution_code}.{r.feed}: 读取 {r.rows_read} = 入库 {r.rows_loaded} + 拒收 "
                         f"{r.rows_rejected}；水位 {r.notes.get('watermark_from')} → {r.notes.get('watermark_to')}")
    # In the scheduled job a pull where every feed failed fails the run (retried, visible); in
    # healthlake_all it only warns: the landing zone's ingest downstream must not be skipped.
    if results and len(failed) == len(results) and context.run.job_name == FRONTEND_PULL_JOB:
        raise dg.Failure(description="每个前置机数据源都抽取失败",
                         metadata={"failures": dg.MetadataValue.md(
                             "\n".join(f"- `{r.institution_code}.{r.feed}`: {r.error}" for r in failed))})
    rows = Counter()
    for r in loaded:
        rows[r.dataset] += r.rows_loaded
    return dg.MaterializeResult(metadata={
        "feeds": len(results),
        "batches_loaded": len(loaded),
        "feeds_without_new_rows": len(skipped),
        "feeds_failed": len(failed),
        "rows_read": sum(r.rows_read for r in loaded),
        "rows_loaded": sum(r.rows_loaded for r in loaded),
        "rows_rejected": sum(r.rows_rejected for r in loaded),
        "rows_loaded_by_dataset": dg.MetadataValue.json(dict(sorted(rows.items()))),
        "watermarks": dg.MetadataValue.json({f"{r.institution_code}.{r.feed}": r.notes.get("watermark_to")
                                             for r in loaded + skipped}),
        "failures": dg.MetadataValue.md("\n".join(f"- `{r.institution_code}.{r.feed}`: {r.error}" for r in failed)
                                        or "无"),
    })


frontend_pull_job = dg.define_asset_job(FRONTEND_PULL_JOB, selection=[FRONTEND_PULL_KEY],
                                        description="前置机增量抽取（按水位列），仅入 bronze")


def build_frontend_schedule() -> dg.ScheduleDefinition:
    s = settings()
    production = s.landing_is_s3 or s.catalog_kind == "postgres"
    return dg.ScheduleDefinition(
        name="frontend_pull_every_30_min", job=frontend_pull_job, cron_schedule=FRONTEND_PULL_CRON,
        execution_timezone="Asia/Shanghai",
        default_status=dg.DefaultScheduleStatus.RUNNING if production else dg.DefaultScheduleStatus.STOPPED,
        description="每 30 分钟（北京时间）从前置机数据库增量抽取新行入 bronze")

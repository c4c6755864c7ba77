"""The scheduled maintenance job (nightly): snapshots, small files, old files, cold raw extracts."""


import dagster as dg

from pipelines.defs.maintenance.lake_maintenance import maintain_lake

MAINTENANCE_JOB = "lake_maintenance"
# Steps that rewrite many tables at once share one pool with dbt build: one at a time.
SINGLE_WRITER_POOL = "lake_single_writer"


@dg.op(pool=SINGLE_WRITER_POOL, retry_policy=dg.RetryPolicy(max_retries=2, delay=30),
       description="过期快照、合并小文件、删除无快照引用的文件、原始文件转冷存储")
def maintain_lake_op(context: dg.OpExecutionContext):
    r = maintain_lake()
    context.log.info(f"快照过期 {r.snapshots_expired}，合并 {r.files_merged}，删除文件 {r.files_deleted}"
                     f"（孤儿 {r.orphans_deleted}），转冷 {len(r.cold_moved)}；当前数据文件 {r.data_files_after} 个，"
                     f"{r.live_bytes / 1e6:.1f} MB")
    return dg.Output(None, metadata=r.metadata())


@dg.job(name=MAINTENANCE_JOB, description="数据湖维护：快照保留期、小文件合并、旧文件清理、冷热分离")
def lake_maintenance_job():
    maintain_lake_op()


lake_maintenance_schedule = dg.ScheduleDefinition(
    name="lake_maintenance_nightly", job=lake_maintenance_job, cron_schedule="30 2 * * *",
    execution_timezone="Asia/Shanghai", default_status=dg.DefaultScheduleStatus.RUNNING,
    description="每日 02:30（北京时间）维护数据湖")

"""Ingest: every new landing-zone file into bronze (one asset per standard data set)."""


from collections import Counter

import dagster as dg

from catalog.standard import datasets
from healthlake.config import settings
from ingest_adapters import ingest_landing
from pipelines.defs.ingest.frontend import FRONTEND_PULL_KEY
from pipelines.defs.ingest.partitions import INSTITUTION_PARTITIONS, ingest_institution

INGEST_BATCH_KEY = dg.AssetKey(["ops", "ingest_batch"])
INSTITUTION_KEY = dg.AssetKey(["ops", "institution"])


def bronze_key(dataset: str) -> dg.AssetKey:
    return dg.AssetKey(["bronze", dataset])


def _specs() -> list[dg.AssetSpec]:
    specs = [dg.AssetSpec(bronze_key(name), group_name="bronze", kinds={"duckdb", "csv"},
                          description=f"{d.zh}（{d.description}）：各机构原始值（文本）＋血缘列",
                          metadata={"standard_dataset": name, "domain": d.domain})
             for name, d in datasets().items()]
    # after the front-end pull (pipelines/defs/ingest/frontend.py): its batches join the same
    # ledger, and the run's dbt models then see the pulled rows
    specs.append(dg.AssetSpec(INGEST_BATCH_KEY, group_name="bronze", kinds={"duckdb"}, deps=[FRONTEND_PULL_KEY],
                              description="采集批次台账：每个文件、每次前置机抽取一行（读取=入库+拒收），"
                                          "及 bronze._rejects 拒收明细"))
    specs.append(dg.AssetSpec(INSTITUTION_KEY, group_name="bronze", kinds={"duckdb", "yaml"},
                              description="接入机构登记：来自机构与数据源注册表（registry.yaml）"))
    return specs


@dg.multi_asset(specs=_specs(), name="ingest_landing_zone", can_subset=False)
def ingest_landing_zone(context: dg.AssetExecutionContext):
    """Read every new file of the landing zone into bronze; a failed file never blocks the others."""
    s = settings()
    if s.landing_is_s3:  # production landing zone: institution by institution, archived once loaded
        from ingest_adapters.registry import load_registry

        results = [b for i in load_registry(s.registry).institutions for b in ingest_institution(i.code, s).batches]
    else:
        results = ingest_landing(s)
    loaded = [r for r in results if r.status == "loaded"]
    failed = [r for r in results if r.status == "failed"]
    skipped = [r for r in results if r.status == "skipped"]
    for r in failed:
        context.log.warning(f"批次失败 {r.source_file}: {r.error}")
    rows_by_dataset = Counter()
    for r in loaded:
        rows_by_dataset[r.dataset] += r.rows_loaded
    for name in datasets():
        yield dg.MaterializeResult(asset_key=bronze_key(name), metadata={
            "rows_loaded_this_run": dg.MetadataValue.int(rows_by_dataset.get(name, 0)),
            "batches_loaded_this_run": dg.MetadataValue.int(sum(1 for r in loaded if r.dataset == name)),
        })
    yield dg.MaterializeResult(asset_key=INSTITUTION_KEY, metadata={"registry": str(s.registry)})
    yield dg.MaterializeResult(asset_key=INGEST_BATCH_KEY, metadata={
        "files_seen": len(results),
        "batches_loaded": len(loaded),
        "batches_skipped_same_content": len(skipped),
        "batches_failed": len(failed),
        "rows_read": sum(r.rows_read for r in loaded),
        "rows_loaded": sum(r.rows_loaded for r in loaded),
        "rows_rejected": sum(r.rows_rejected for r in loaded),
        "failures": dg.MetadataValue.md("\n".join(f"- `{r.source_file}`: {r.error}" for r in failed) or "无"),
        "landing_zone": str(s.landing),
    })


# ---------------------------------------------------------------- per institution (production)
INSTITUTION_DELIVERY_KEY = dg.AssetKey(["ops", "institution_delivery"])


@dg.asset(key=INSTITUTION_DELIVERY_KEY, partitions_def=INSTITUTION_PARTITIONS, group_name="bronze",
          kinds={"duckdb", "s3"},
          description="按机构分区的采集：该机构落地区的新文件入 bronze（各机构可并行写入），入库后原始文件归档",
          retry_policy=dg.RetryPolicy(max_retries=3, delay=5, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS))
def institution_delivery(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    """One institution's new landing files into bronze; a failed file never blocks the others."""
    r = ingest_institution(context.partition_key)
    for b in r.batches:
        if b.status == "failed":
            context.log.warning(f"批次失败 {b.source_file}: {b.error}")
    return dg.MaterializeResult(metadata={
        "files_seen": len(r.batches),
        "batches_loaded": r.count("loaded"),
        "batches_skipped_same_content": r.count("skipped"),
        "batches_failed": r.count("failed"),
        "rows_read": r.rows("rows_read"),
        "rows_loaded": r.rows("rows_loaded"),
        "rows_rejected": r.rows("rows_rejected"),
        "archived": len(r.archived),
        "failures": dg.MetadataValue.md("\n".join(f"- `{b.source_file}`: {b.error}" for b in r.batches
                                                  if b.status == "failed") or "无"),
    })

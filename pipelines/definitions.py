"""The one Dagster entry point: loads each domain's definitions and applies policy once.

Load with ``dagster dev -m pipelines.definitions`` (``make ui``) or ``healthlake demo``.
Definitions are built lazily (``@dg.definitions``): nothing reads the environment or the
dbt manifest at import time.
"""

from __future__ import annotations

import dagster as dg

from healthlake.config import settings
from pipelines.defs.catalog.assets import build_catalog_asset
from pipelines.defs.dbt.assets import build_dbt_assets
from pipelines.defs.dbt.resources import dbt_resource
from pipelines.defs.empi.assets import empi_linkage_report
from pipelines.defs.ingest.assets import ingest_landing_zone, institution_delivery
from pipelines.defs.ingest.frontend import build_frontend_schedule, frontend_pull, frontend_pull_job
from pipelines.defs.ingest.sensors import build_landing_sensor, ingest_institution_job
from pipelines.defs.maintenance.jobs import lake_maintenance_job, lake_maintenance_schedule
from pipelines.defs.quality.checks import build_gate_checks, build_quality_checks

ALL_ASSETS_JOB = "healthlake_all"


def executor_for_environment() -> dg.ExecutorDefinition:
    # Embedded default: DuckLake on a SQLite catalog has one writer at a time, so steps run in
    # one process (also ~3 s faster per step than spawning). A PostgreSQL catalog takes
    # parallel writers: multiprocess.
    if settings().catalog_kind == "postgres":
        return dg.multiprocess_executor
    return dg.in_process_executor


def build_definitions() -> dg.Definitions:
    dbt = build_dbt_assets()
    upstream = [*ingest_landing_zone.keys, *dbt.keys]
    # Per-institution ingest (production: sensor-driven, partitioned, parallel) runs in its own job.
    by_institution = dg.AssetSelection.assets(institution_delivery)
    per_institution = ingest_institution_job(institution_delivery.key)
    return dg.Definitions(
        assets=[frontend_pull, ingest_landing_zone, institution_delivery, dbt, empi_linkage_report,
                build_catalog_asset(upstream)],
        asset_checks=[build_gate_checks(), *build_quality_checks()],
        jobs=[dg.define_asset_job(ALL_ASSETS_JOB, selection=dg.AssetSelection.all() - by_institution,
                                  description="采集 → 四大数据库 → 质控 → 资源目录，全流程"),
              per_institution, frontend_pull_job, lake_maintenance_job],
        sensors=[build_landing_sensor(per_institution)],
        schedules=[lake_maintenance_schedule, build_frontend_schedule()],
        resources={"dbt": dbt_resource()},
        executor=executor_for_environment(),
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions()

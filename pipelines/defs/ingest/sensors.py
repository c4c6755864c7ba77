"""The landing sensor: new files in the landing zone → one run per institution with new files.

The registry's institutions become dynamic partitions; a file is "new" when its key or content
identity (S3 ETag, or size+mtime locally) was not seen in an earlier tick. The cursor keeps only the
keys still in the landing zone (on S3, ingested files move to the archive), so it stays small.
A file of an institution the registry does not know is reported, never ingested.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict

import dagster as dg

from healthlake.config import settings
from pipelines.defs.ingest.partitions import INSTITUTION_PARTITIONS

INGEST_INSTITUTION_JOB = "ingest_institution"


def ingest_institution_job(asset_key: dg.AssetKey) -> dg.UnresolvedAssetJobDefinition:
    return dg.define_asset_job(INGEST_INSTITUTION_JOB, selection=[asset_key], partitions_def=INSTITUTION_PARTITIONS,
                               description="按机构采集一个分区（由落地区传感器触发）")


def plan_runs(objects, registry_codes: set[str], seen: dict[str, str]) -> tuple[dict[str, list], list[str], dict]:
    """(new objects by institution, unknown institutions, next cursor) — pure, unit-tested."""
    new, unknown = defaultdict(list), set()
    for o in objects:
        if seen.get(o.key) == o.etag:
            continue
        if o.institution not in registry_codes:
            unknown.add(o.institution)
            continue
        new[o.institution].append(o)
    cursor = {o.key: o.etag for o in objects if o.institution in registry_codes}
    return dict(new), sorted(unknown), cursor


def build_landing_sensor(job: dg.UnresolvedAssetJobDefinition) -> dg.SensorDefinition:
    s = settings()
    production = s.landing_is_s3 or s.catalog_kind == "postgres"

    @dg.sensor(name="landing_sensor", job=job, minimum_interval_seconds=30,
               default_status=dg.DefaultSensorStatus.RUNNING if production else dg.DefaultSensorStatus.STOPPED,
               description="落地区新文件 → 按机构发起采集运行（机构即动态分区）")
    def landing_sensor(context: dg.SensorEvaluationContext):
        from healthlake.storage import landing_store
        from ingest_adapters.errors import RegistryError
        from ingest_adapters.registry import load_registry

        s = settings()
        try:
            registry = load_registry(s.registry)
        except RegistryError as e:
            return dg.SkipReason(f"注册表不可用：{e}")
        codes = {i.code for i in registry.institutions}
        objects = landing_store(s).list()
        seen = json.loads(context.cursor) if context.cursor else {}
        new, unknown, cursor = plan_runs(objects, codes, seen)
        if unknown:
            context.log.warning(f"落地区有未登记机构的文件，未采集：{', '.join(unknown)}")
        known = set(context.instance.get_dynamic_partitions(INSTITUTION_PARTITIONS.name))
        add = sorted(codes - known)
        requests = []
        for code, objs in sorted(new.items()):
            ident = hashlib.sha1("\n".join(f"{o.key}\t{o.etag}" for o in objs).encode()).hexdigest()[:16]
            requests.append(dg.RunRequest(partition_key=code, run_key=f"{code}:{ident}",
                                          tags={"healthlake/new_files": str(len(objs))}))
        return dg.SensorResult(
            run_requests=requests, cursor=json.dumps(cursor, sort_keys=True),
            dynamic_partitions_requests=[INSTITUTION_PARTITIONS.build_add_request(add)] if add else [])

    return landing_sensor

"""Catalog: classification check, resource directory and the per-clearance publication, one step.

One multi-asset downstream of the marts (so ``definitions.py`` wires it with one call):

* check ``every_column_classified`` (blocking): every lake column has a GB/T 39725 category and
  level (``catalog.classification``); content detectors' findings (ID numbers, phones, names in a
  column classified too low) are reported in its metadata and fail it too.
* ``catalog/resource_directory``: the 政务信息资源目录 entries with live figures and column lineage,
  stored in ``lake.catalog`` and exported as JSON and a self-contained HTML portal.
* ``catalog/published``: ``<root>/published/level_1..5.duckdb``, one database per clearance with
  columns above it masked, pseudonymised, generalised or absent. Fails closed: with an
  unclassified column nothing is published (the previous files stay).
"""

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import dagster as dg

from healthlake.config import settings
from healthlake.lake import connect, release

DIRECTORY_KEY = dg.AssetKey(["catalog", "resource_directory"])
PUBLISHED_KEY = dg.AssetKey(["catalog", "published"])


def _findings_md(unclassified, findings) -> str:
    lines = ["| 列 | 问题 |", "|---|---|"]
    lines += [f"| {c} | 未分类分级 |" for c in unclassified[:50]]
    lines += [f"| {f.table}.{f.column} | {f.detector} 命中 {f.match_ratio:.0%}（抽样 {f.sampled}），现为 {f.level} 级，"
              f"应 ≥ {f.expected_level} 级 |" for f in findings[:50]]
    return "\n".join(lines)


CATEGORY_SLUGS = {"个人属性": "personal_attributes", "健康状况": "health_status", "医疗应用": "medical_application",
                  "医疗支付": "medical_payment", "卫生资源": "health_resources", "公共卫生": "public_health"}


def observe_tables(context, entries, asset_keys) -> int:
    """Column schema (Chinese names, GB/T 39725 category and level as tags) and column lineage of
    every lake table that is an asset of this code location, as asset observations: the Dagster UI
    then shows them on the dbt and ingest assets themselves."""
    n = 0
    for e in entries:
        key = dg.AssetKey(e["table"].split("."))
        if key not in asset_keys:
            continue
        columns = [dg.TableColumn(i["name"], i["type"], description=" ".join(x for x in (i["zh"], i["de"] or "") if x)
                                  or None, tags={"level": f"L{i['level']}" if i["level"] else "unclassified",
                                                 "category": CATEGORY_SLUGS.get(i["category"], "unclassified")})
                   for i in e["items"]]
        lineage = {i["name"]: [dg.TableColumnDep(asset_key=dg.AssetKey(c.split(".")[:2]), column_name=c.split(".", 2)[2])
                               for c in i["lineage"]] for i in e["items"] if i["lineage"]}
        metadata = {"dagster/column_schema": dg.TableSchema(columns=columns), "resource_code": e["resource_code"],
                    "share_type": e["share_type"], "max_level": e["max_level"],
                    "dagster/row_count": e["row_count"] if e["row_count"] is not None else 0}
        if lineage:
            metadata["dagster/column_lineage"] = dg.TableColumnLineage(deps_by_column=lineage)
        context.log_event(dg.AssetObservation(asset_key=key, metadata=metadata))
        n += 1
    return n


def build_catalog_asset(upstream: Sequence[dg.AssetKey]) -> dg.AssetsDefinition:
    @dg.multi_asset(
        specs=[
            dg.AssetSpec(DIRECTORY_KEY, deps=list(upstream), group_name="catalog", kinds={"duckdb"},
                         description="数据资源目录：政务信息资源目录字段、数据项（WS 363 数据元、值域、分类分级）、"
                                     "行数、快照时间、贡献机构、质量合格率、列级血缘；JSON 与离线门户"),
            dg.AssetSpec(PUBLISHED_KEY, deps=[DIRECTORY_KEY], group_name="catalog", kinds={"duckdb"},
                         description="分级发布库：每个许可级别一个只读 DuckDB 库，高于许可的列脱敏、假名化、泛化或不发布"),
        ],
        check_specs=[dg.AssetCheckSpec("every_column_classified", asset=PUBLISHED_KEY, blocking=True,
                                       description="湖中每一列都有 GB/T 39725 类别与级别；内容检测未发现定级过低的"
                                                   "身份证件号码、电话、姓名列")],
        name="catalog",
    )
    def catalog(context: dg.AssetExecutionContext):
        from catalog.classification import columns_cached, detect_misclassified, unclassified_columns
        from catalog.directory import build_directory, dbt_models, directory_json_path
        from catalog.publish import classified_tables, publish_all
        from catalog.scan import DEFAULT_WORKERS, lake_scanned

        from quality.runner import ensure_result_table

        s = settings()
        con = connect(s)
        publishing = pool = reader = None
        try:
            # the mart checks of this run may store their results after this step: the directory
            # lists the results table (and classifies it) from the first run on
            ensure_result_table(con)
            # the lake's columns read once, not by each of the three; every table's sample and counts
            # read in one pass by two worker threads (each view computed once), while this thread
            # classifies, resolves the dbt models' column lineage (sqlglot: Python) and checks the
            # samples as they come
            with columns_cached(con), lake_scanned(con):
                unclassified = unclassified_columns(con)
                models = dbt_models(con, s)
                findings = detect_misclassified(con)
                entries = build_directory(con, s, models=models)
                ok = not unclassified and not findings
                classes = classified_tables(con) if ok else None  # the published columns' classes
            if ok:
                # the publication (DuckDB's work: the GIL released) is written while this thread
                # reports the directory to Dagster (no lake writes meanwhile: see catalog.scan); from
                # this connection's instance (the lake's catalog loaded), lower levels two at a time
                # (as many as the scan's workers: one per core, at most two)
                reader = con.cursor()
                pool = ThreadPoolExecutor(1, thread_name_prefix="catalog-publish")
                publishing = pool.submit(publish_all, s, con=reader, workers=DEFAULT_WORKERS, classes=classes)
            observed = observe_tables(context, entries, set(upstream))
            rows = "\n".join(f"| {e['resource_code']} | {e['table']} | {e['name_zh']} | {e['share_type']} | "
                             f"{e['max_level']} | {e['row_count']:,} |" for e in entries)
            yield dg.MaterializeResult(asset_key=DIRECTORY_KEY, metadata={
                "tables": len(entries),
                "assets_observed": observed,
                "directory": dg.MetadataValue.md("| 资源代码 | 表 | 资源名称 | 共享类型 | 最高级别 | 行数 |\n|---|---|---|---|---:|---:|\n"
                                                 + rows),
                "json": dg.MetadataValue.path(str(directory_json_path(s))),
                "portal": dg.MetadataValue.path(str(directory_json_path(s).with_name("index.html"))),
            })
            yield dg.AssetCheckResult(asset_key=PUBLISHED_KEY, check_name="every_column_classified", passed=ok,
                                      severity=dg.AssetCheckSeverity.ERROR, metadata={
                                          "unclassified": len(unclassified), "detector_findings": len(findings),
                                          "details": dg.MetadataValue.md(_findings_md(unclassified, findings))})
            if not ok:
                raise dg.Failure(f"{len(unclassified)} unclassified column(s) and {len(findings)} detector finding(s): "
                                 f"nothing published; classify them in catalog/classification_overrides.yaml or dbt meta",
                                 metadata={"unclassified": ", ".join(unclassified[:20])})
            summary = publishing.result()
        finally:
            if pool is not None:
                pool.shutdown(wait=True)
            if reader is not None:
                release(reader)
            release(con)
        from catalog.audit import audit_head, verify_audit_log

        seq, head = audit_head(s)  # anchors the governed-query audit log: a later truncation is detectable
        chain = verify_audit_log(s)
        yield dg.MaterializeResult(asset_key=PUBLISHED_KEY, metadata={
            "levels": len(summary),
            "files": dg.MetadataValue.md("| 级别 | 表 | 行 | 字节 | 原值 | 脱敏 | 假名化 | 泛化 | 不发布 |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n" + "\n".join(
                f"| {r['level']} | {r['tables']} | {r['rows']:,} | {r['bytes']:,} | " + " | ".join(
                    str(r["columns"].get(t, 0)) for t in ("raw", "masked", "pseudonymised", "generalised", "absent")) + " |"
                for r in summary)),
            "path": dg.MetadataValue.path(str(s.root / "published")),
            "audit_entries": seq, "audit_head_sha256": head, "audit_chain_ok": chain.ok,
        })

    return catalog

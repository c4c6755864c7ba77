"""Catalog: the resource directory listing every lake table with its row count."""


from collections.abc import Sequence

import dagster as dg

from catalog.directory import build_directory
from healthlake.config import settings
from healthlake.lake import connect
from pipelines.defs.dbt.resources import dbt_project


def build_catalog_asset(upstream: Sequence[dg.AssetKey]) -> dg.AssetsDefinition:
    @dg.asset(key=dg.AssetKey(["catalog", "resource_directory"]), group_name="catalog", kinds={"duckdb"},
              deps=list(upstream), description="数据资源目录：湖中每张表的中文名、行数和刷新时间")
    def resource_directory(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        s = settings()
        con = connect(s)
        try:
            rows = build_directory(con, s, dbt_project().manifest_path)
        finally:
            con.close()
        table = "\n".join(f"| {r['schema_name']}.{r['table_name']} | {r['table_zh']} | {r['row_count']:,} |" for r in rows)
        return dg.MaterializeResult(metadata={
            "tables": len(rows),
            "directory": dg.MetadataValue.md("| 表 | 中文名 | 行数 |\n|---|---|---:|\n" + table),
            "json": dg.MetadataValue.path(str(s.reports_dir / "catalog" / "resource_directory.json")),
        })

    return resource_directory

"""The resource directory (数据资源目录): every lake table with its Chinese name and live figures.

This foundation version lists each table with its row count and refresh time; it is stored
in the lake (``catalog.resource_directory``) and exported as JSON for the portal.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import duckdb

from catalog.standard import datasets
from healthlake.config import Settings, settings as load_settings
from healthlake.lake import lake_tables

DATABASES_ZH = {
    "bronze": "贴源层（原始采集）", "ops": "运维台账", "staging": "标准化层", "intermediate": "整合层",
    "population": "全员人口数据库", "emr": "电子病历数据库", "health_record": "居民健康档案数据库",
    "resource": "基础资源数据库", "indicators": "指标库", "quality": "数据质量", "catalog": "数据资源目录",
    "reference": "标准代码表",
}


def _table_names_zh(manifest_path: Path | None) -> dict[tuple[str, str], str]:
    names = {("bronze", k): d.zh for k, d in datasets().items()}
    names[("bronze", "_rejects")] = "拒收记录明细"
    names[("ops", "ingest_batch")] = "采集批次台账"
    names[("ops", "institution")] = "接入机构登记"
    if manifest_path and manifest_path.exists():
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        for node in manifest.get("nodes", {}).values():
            if node.get("resource_type") in ("model", "seed"):
                zh = (node.get("meta") or {}).get("zh") or (node.get("description") or "").split("\n")[0]
                names[(node.get("schema"), node.get("alias") or node.get("name"))] = zh
    return names


def build_directory(con: duckdb.DuckDBPyConnection, s: Settings | None = None,
                    manifest_path: Path | None = None) -> list[dict]:
    """Compute the directory rows, store them in lake.catalog.resource_directory and as JSON."""
    s = s or load_settings()
    names = _table_names_zh(manifest_path)
    now = datetime.now(timezone.utc)
    rows = []
    for schema, table in lake_tables(con):
        if schema == "catalog":
            continue
        count = con.execute(f'SELECT count(*) FROM lake."{schema}"."{table}"').fetchone()[0]
        rows.append({"schema_name": schema, "table_name": table, "database_zh": DATABASES_ZH.get(schema, schema),
                     "table_zh": names.get((schema, table), ""), "row_count": int(count), "refreshed_at": now})
    con.execute("CREATE SCHEMA IF NOT EXISTS catalog")
    con.execute("BEGIN")
    try:
        con.execute("CREATE OR REPLACE TABLE catalog.resource_directory (schema_name VARCHAR, table_name VARCHAR, "
                    "database_zh VARCHAR, table_zh VARCHAR, row_count BIGINT, refreshed_at TIMESTAMPTZ)")
        if rows:
            con.executemany("INSERT INTO catalog.resource_directory VALUES (?, ?, ?, ?, ?, ?)",
                            [tuple(r.values()) for r in rows])
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    out = s.reports_dir / "catalog" / "resource_directory.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps([{**r, "refreshed_at": r["refreshed_at"].isoformat()} for r in rows],
                              ensure_ascii=False, indent=1), encoding="utf-8")
    return rows

"""The resource directory (数据资源目录): one entry per lake table with the 政务信息资源目录 fields.

An entry (``build_entries``) holds the catalogue fields —

| field            | 政务信息资源目录 | from                                                               |
|------------------|----------------|--------------------------------------------------------------------|
| resource_code    | 资源代码        | city division + class + database + sequence (``511000-2-03-004``)  |
| name_zh          | 资源名称        | standard data set / dbt model description                          |
| class_zh         | 分类            | 基础 (population, resource, reference) / 主题 (emr, health_record, indicators) / 部门 (source and internal layers) |
| providers        | 提供方          | contributing institutions (code, name, rows) from the data         |
| summary          | 摘要            | data set / dbt description                                         |
| format           | 格式            | 数据库表 (DuckLake, Parquet)                                        |
| items            | 数据项          | name, Chinese name, type, WS 363 code, value set, category, level, kind, lineage |
| share_type / share_condition / share_method | 共享类型/条件/方式 | from the schema and the highest level      |
| open_attr        | 开放属性        | idem                                                               |
| update_cycle     | 更新周期        | the feeds' cadence (bronze) or the pipeline's                      |
| published_at     | 发布日期        | the per-clearance publication (marts), else the last snapshot      |
| related          | 关联资源        | dbt parents and children                                           |

— and the live figures: ``row_count``, ``last_snapshot_at`` (DuckLake snapshot that last changed
the table: freshness), ``institutions``, ``quality_pass_rate`` (latest mart rule results, or the
bronze batch scores, when the quality schema has them) and column lineage (``catalog.lineage``).

Stored in the lake (``catalog.resource_directory``, ``catalog.data_item``), exported as JSON
(``<reports>/catalog/resource_directory.json``) and as a self-contained HTML portal
(``<reports>/catalog/index.html``, ``catalog.portal``).
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path

import duckdb

from catalog.classification import PUBLISHED_SCHEMAS, _dataset_of, _elements_by_name, classify
from catalog.lineage import latest_manifest, model_lineage
from catalog.standard import datasets
from healthlake.config import Settings, settings as load_settings
from healthlake.lake import lake_tables, one_transaction, quote_ident

__all__ = ["build_directory", "build_entries", "load_directory", "search", "find_entry", "directory_json_path",
           "FIELD_LABELS", "DATABASES_ZH"]

DATABASES_ZH = {
    "bronze": "贴源层（原始采集）", "ops": "运维台账", "staging": "标准化层", "intermediate": "整合层",
    "population": "全员人口数据库", "emr": "电子病历数据库", "health_record": "居民健康档案数据库",
    "resource": "基础资源数据库", "indicators": "指标库", "quality": "数据质量", "catalog": "数据资源目录",
    "reference": "标准代码表", "empi": "主索引（EMPI）",
}
FIELD_LABELS = {
    "resource_code": "资源代码", "name_zh": "资源名称", "table": "表", "database_zh": "所属库", "class_zh": "分类",
    "providers": "提供方", "summary": "摘要", "format": "格式", "items": "数据项", "share_type": "共享类型",
    "share_condition": "共享条件", "share_method": "共享方式", "open_attr": "开放属性", "update_cycle": "更新周期",
    "published_at": "发布日期", "related": "关联资源", "row_count": "行数", "last_snapshot_at": "最近快照时间",
    "institutions": "贡献机构数", "quality_pass_rate": "质量合格率", "max_level": "最高级别",
}
# 政务信息资源分类: 基础信息资源 / 主题信息资源 / 部门信息资源
_CLASS = {"population": ("基础", 1), "resource": ("基础", 1), "reference": ("基础", 1),
          "emr": ("主题", 2), "health_record": ("主题", 2), "indicators": ("主题", 2)}
_SCHEMA_ORDER = ("population", "resource", "reference", "emr", "health_record", "indicators", "bronze", "ops",
                 "staging", "intermediate", "empi", "quality", "catalog")
_INTERNAL = ("bronze", "staging", "intermediate", "empi", "ops")
CITY_CODE = "511000"  # 内江市 (GB/T 2260): the directory's 前段码
_CHANGE = re.compile(r"(?:inserted_into_table|inlined_insert|deleted_from_table|inlined_delete|altered_table|"
                     r"compacted_table|merge_adjacent|flushed_inlined):(\d+)")
_CREATED = re.compile(r'created_table:"([^"]+)"\."([^"]+)"')


def directory_json_path(s: Settings) -> Path:
    return s.reports_dir / "catalog" / "resource_directory.json"


# ------------------------------------------------------------------ live figures
def last_snapshots(con, database: str = "lake") -> dict[tuple[str, str], datetime]:
    """(schema, table) → time of the last DuckLake snapshot that changed it (rows or definition)."""
    meta = f"__ducklake_metadata_{database}"
    try:
        ids = {tid: (s, t) for tid, s, t in con.execute(
            f"SELECT t.table_id, s.schema_name, t.table_name FROM {meta}.ducklake_table t "
            f"JOIN {meta}.ducklake_schema s USING (schema_id)").fetchall()}
        snaps = con.execute(f"SELECT c.changes_made, CAST(s.snapshot_time AS TIMESTAMPTZ) FROM {meta}.ducklake_snapshot_changes c "
                            f"JOIN {meta}.ducklake_snapshot s USING (snapshot_id)").fetchall()
    except duckdb.Error:
        return {}
    out: dict = {}
    for changes, at in snaps:
        touched = {ids[int(i)] for i in _CHANGE.findall(changes or "") if int(i) in ids}
        touched |= set(_CREATED.findall(changes or ""))
        for key in touched:
            if key not in out or at > out[key]:
                out[key] = at
    return out


def _institution_names(con) -> dict[str, str]:
    try:
        return dict(con.execute("SELECT institution_code, institution_name FROM lake.ops.institution").fetchall())
    except duckdb.Error:
        return {}


def _quality_rates(con) -> dict[str, float]:
    """schema.table → quality pass rate: latest mart rule results; bronze batch scores per data set."""
    out = {}
    try:
        for table, rate in con.execute(
                "WITH latest AS (SELECT table_name, max(run_at) AS run_at FROM lake.quality.rule_result GROUP BY 1) "
                "SELECT r.table_name, 1 - sum(r.rows_failed)::DOUBLE / nullif(sum(r.rows_checked), 0) "
                "FROM lake.quality.rule_result r JOIN latest USING (table_name, run_at) GROUP BY 1").fetchall():
            if rate is not None:
                out[table] = round(rate, 4)
    except duckdb.Error:
        pass
    try:
        for dataset, rate in con.execute(
                "SELECT dataset, sum(rows_passing)::DOUBLE / nullif(sum(rows_checked), 0) FROM ("
                "  SELECT * FROM lake.quality.batch_score "
                "  QUALIFY row_number() OVER (PARTITION BY dataset, batch_id ORDER BY run_at DESC) = 1) GROUP BY 1"
        ).fetchall():
            if rate is not None:
                out.setdefault(f"bronze.{dataset}", round(rate, 4))
    except duckdb.Error:
        pass
    return out


def _feed_cadence(con) -> dict[str, str]:
    try:
        return {d: c for d, c in con.execute("SELECT dataset, string_agg(DISTINCT cadence, '/') FROM "
                                             "lake.quality.ref_feed GROUP BY 1").fetchall()}
    except duckdb.Error:
        return {}


def _published_at(s: Settings) -> str | None:
    from catalog.publish import MANIFEST_TABLE, published_path

    path = published_path(1, s)
    if not path.exists():
        return None
    try:
        con = duckdb.connect(str(path), read_only=True)
        try:
            at = con.execute(f"SELECT max(published_at) FROM {MANIFEST_TABLE}").fetchone()[0]
        finally:
            con.close()
        return at.isoformat() if at else None
    except duckdb.Error:
        return None


# ------------------------------------------------------------------ entries
def _element_for(schema: str, table: str, column: str):
    ds = _dataset_of(schema, table)
    if ds:
        for e in datasets()[ds].elements:
            if e.name == column:
                return e
    return _elements_by_name().get(column)


def _names(models) -> dict[tuple[str, str], str]:
    names = {("bronze", k): d.zh for k, d in datasets().items()}
    names[("bronze", "_rejects")] = "拒收记录明细"
    names[("ops", "ingest_batch")] = "采集批次台账"
    names[("ops", "institution")] = "接入机构登记"
    for key, m in models.items():
        names.setdefault(key, m.description.split("：")[0].split("\n")[0][:40] if m.description else "")
    return names


def _sharing(schema: str, max_level: int) -> dict:
    if schema in PUBLISHED_SCHEMAS:
        if max_level <= 1:
            return {"share_type": "无条件共享", "share_condition": "", "open_attr": "无条件开放",
                    "share_method": "分级发布库（published/level_1..5.duckdb，只读）；受控查询 healthlake query"}
        return {"share_type": "有条件共享",
                "share_condition": f"按角色许可级别：许可 ≥ {max_level} 级见全部列原值；低于列级别时姓名/证件号/电话脱敏，"
                                   f"键与标识假名化（可关联），出生日期泛化为年份，其余不发布；临床调阅须居民授权",
                "share_method": "分级发布库（published/level_<许可级别>.duckdb，只读）；受控查询 healthlake query --role（留痕审计）",
                "open_attr": "有条件开放（公众版仅含 1 级列与假名键）"}
    if schema in ("reference", "catalog"):
        return {"share_type": "无条件共享", "share_condition": "", "share_method": "文件下载 / 目录门户",
                "open_attr": "无条件开放"}
    if schema == "quality":
        return {"share_type": "有条件共享", "share_condition": "各机构仅见本机构评分与整改清单",
                "share_method": "质控报告 / 整改清单", "open_attr": "不予开放"}
    return {"share_type": "不予共享", "share_condition": "贴源、中间与主索引层含原始身份信息，仅平台内部治理使用",
            "share_method": "—", "open_attr": "不予开放"}


def _table_counts(con, tables, types) -> dict[tuple[str, str], tuple[bool, list[tuple]]]:
    """(schema, table) → (by institution?, [(institution code or None, rows)]): rows per institution
    and the table's row count in one scan where it has an institution column (NULL: rows without a
    code), else its row count; all tables in one transaction (see ``one_transaction``). Inside
    ``scan.lake_scanned`` the counts are its workers'."""
    from catalog.scan import active_scan, count_rows, institution_column

    scan = active_scan(con, "lake")
    out, read = {}, []
    for schema, table in tables:
        code_col = institution_column(c for c, _ in types.get((schema, table), []))
        if scan is not None and scan.has(schema, table):
            result = scan.result(schema, table)
            if result.code_col == code_col:
                out[(schema, table)] = (code_col is not None, result.counts)
                continue
        read.append((schema, table, code_col))
    if read:
        with one_transaction(con):
            for schema, table, code_col in read:
                out[(schema, table)] = (code_col is not None,
                                        count_rows(con, f"lake.{quote_ident(schema)}.{quote_ident(table)}", code_col))
    return out


def dbt_models(con: duckdb.DuckDBPyConnection, s: Settings, manifest_path: Path | None = None) -> dict:
    """The dbt models' column lineage (``lineage.model_lineage``) from ``manifest_path``, by default
    the lake's latest manifest; none without a manifest."""
    manifest_path = manifest_path or latest_manifest(s.dbt_target_dir)
    return model_lineage(con, manifest_path) if manifest_path else {}


def build_entries(con: duckdb.DuckDBPyConnection, s: Settings | None = None, manifest_path: Path | None = None,
                  with_figures: bool = True, models: dict | None = None) -> list[dict]:
    """Directory entries for every lake table (``lake`` attached on ``con``). ``models``: the dbt
    models' lineage (``dbt_models``) when the caller resolved it already."""
    s = s or load_settings()
    if models is None:
        models = dbt_models(con, s, manifest_path)
    children: dict[str, set] = {}
    for (sch, tbl), m in models.items():
        for p in m.parents:
            children.setdefault(p, set()).add(f"{sch}.{tbl}")
    names = _names(models)
    snaps = last_snapshots(con) if with_figures else {}
    rates = _quality_rates(con) if with_figures else {}
    cadence = _feed_cadence(con)
    inst_names = _institution_names(con)
    published_at = _published_at(s)
    types = {}
    from catalog.classification import lake_columns

    for sch, tbl, col, typ in lake_columns(con, "lake"):  # ordered by table and column_index
        types.setdefault((sch, tbl), []).append((col, typ))
    tables = sorted(lake_tables(con), key=lambda st: (_SCHEMA_ORDER.index(st[0]) if st[0] in _SCHEMA_ORDER else 99, st[1]))
    counts = _table_counts(con, tables, types) if with_figures else {}
    seq: dict[str, int] = {}
    entries = []
    for schema, table in tables:
        key = f"{schema}.{table}"
        model = models.get((schema, table))
        ds = datasets().get(table) if schema == "bronze" else None
        items = []
        for col, typ in types.get((schema, table), []):
            cc = classify(schema, table, col)
            e = _element_for(schema, table, col)
            desc = (model.column_descriptions.get(col) if model else "") or ""
            items.append({"name": col, "zh": (e.zh if e and e.name == col else "") or re.split("[（：(:;；]", desc)[0][:40],
                          "description": desc, "type": typ, "de": e.de if e and e.name == col else None,
                          "value_set": e.value_set if e and e.name == col else None,
                          "category": cc.category if cc else None, "level": cc.level if cc else None,
                          "kind": cc.kind if cc else None, "classified_by": cc.source if cc else None,
                          "lineage": (model.columns.get(col, []) if model else [])})
        levels = [i["level"] for i in items if i["level"]]
        max_level = max(levels, default=1)
        cls_zh, cls_digit = _CLASS.get(schema, ("部门", 3))
        seq[schema] = seq.get(schema, 0) + 1
        db_no = (_SCHEMA_ORDER.index(schema) + 1) if schema in _SCHEMA_ORDER else 99
        entry = {
            "resource_code": f"{CITY_CODE}-{cls_digit}-{db_no:02d}-{seq[schema]:03d}",
            "table": key, "schema": schema, "database_zh": DATABASES_ZH.get(schema, schema),
            "name_zh": names.get((schema, table)) or key, "class_zh": cls_zh,
            "summary": (ds.description if ds else "") or (model.description if model else "") or DATABASES_ZH.get(schema, ""),
            "format": "数据库表（DuckLake，Parquet 数据文件）",
            "items": items, "max_level": max_level, **_sharing(schema, max_level),
            "update_cycle": (f"随采集批次（{cadence[table]}）" if schema == "bronze" and table in cadence
                             else "随采集批次" if schema in ("bronze", "ops") else
                             "按国家标准修订" if schema == "reference" else "每日（随流水线）"),
            "published_at": published_at if schema in PUBLISHED_SCHEMAS else None,
            "related": {"upstream": model.parents if model else [], "downstream": sorted(children.get(key, []))},
            "lineage_error": model.error if model else None,
            "row_count": None, "last_snapshot_at": None, "institutions": None, "providers": [],
            "quality_pass_rate": rates.get(key),
        }
        if with_figures:
            at = snaps.get((schema, table))
            entry["last_snapshot_at"] = at.isoformat() if at else None
            by_code, groups = counts[(schema, table)]
            if by_code:
                providers = [(c, n) for c, n in groups if c is not None]
                entry["row_count"] = sum(int(n) for _, n in groups)
                entry["providers"] = [{"code": c, "name": inst_names.get(c, ""), "rows": int(n)} for c, n in providers]
                entry["institutions"] = len(providers)
            else:
                entry["row_count"] = int(groups[0][1])
        if not entry["providers"]:
            entry["providers"] = [{"code": CITY_CODE, "name": "内江市全民健康信息平台（汇聚）", "rows": entry["row_count"]}]
        if entry["published_at"] is None:
            entry["published_at"] = entry["last_snapshot_at"]
        entries.append(entry)
    return entries


# Arrow types of the rows inserted into the two tables (the SQL INSERT casts them to the tables'
# types, as parameter binding did: last_snapshot_at is an ISO text).
_DIRECTORY_ARROW = ("string", "string", "string", "string", "string", "string", "string", "string", "string",
                    "string", "int32", "int64", "int32", "float64", "string", "timestamp", "string")
_DATA_ITEM_ARROW = ("string", "string", "string", "string", "string", "string", "string", "string", "string",
                    "int32", "string", "list")


def _insert(con, table: str, types: tuple[str, ...], rows: list[tuple]) -> None:
    """All rows in one statement through Arrow: executemany runs one INSERT per row (the demo's
    1,792 data items took ~1.5 s of CPU)."""
    import pyarrow as pa

    made = {"string": pa.string(), "int32": pa.int32(), "int64": pa.int64(), "float64": pa.float64(),
            "timestamp": pa.timestamp("us", tz="UTC"), "list": pa.list_(pa.string())}
    arrays = [pa.array([r[i] for r in rows], type=made[t]) for i, t in enumerate(types)]
    batch = pa.Table.from_arrays(arrays, names=[f"c{i}" for i in range(len(types))])
    con.register("_catalog_rows", batch)
    try:
        con.execute(f"INSERT INTO {table} SELECT * FROM _catalog_rows")
    finally:
        con.unregister("_catalog_rows")


def build_directory(con: duckdb.DuckDBPyConnection, s: Settings | None = None,
                    manifest_path: Path | None = None, models: dict | None = None) -> list[dict]:
    """Compute the entries, store them in lake.catalog (resource_directory, data_item), export JSON + HTML.
    ``models``: see ``build_entries``."""
    from catalog.portal import write_portal

    from catalog.scan import active_scan

    s = s or load_settings()
    now = datetime.now(timezone.utc)
    entries = [e for e in build_entries(con, s, manifest_path, models=models) if e["schema"] != "catalog"]
    scan = active_scan(con, "lake")
    if scan is not None:
        scan.finish()  # its readers' transactions end before this write
    con.execute("CREATE SCHEMA IF NOT EXISTS lake.catalog")
    con.execute("BEGIN")
    try:
        con.execute("CREATE OR REPLACE TABLE lake.catalog.resource_directory (resource_code VARCHAR, schema_name VARCHAR, "
                    "table_name VARCHAR, database_zh VARCHAR, table_zh VARCHAR, class_zh VARCHAR, summary VARCHAR, "
                    "share_type VARCHAR, open_attr VARCHAR, update_cycle VARCHAR, max_level INTEGER, row_count BIGINT, "
                    "institutions INTEGER, quality_pass_rate DOUBLE, last_snapshot_at TIMESTAMPTZ, refreshed_at TIMESTAMPTZ, "
                    "entry_json VARCHAR)")
        con.execute("CREATE OR REPLACE TABLE lake.catalog.data_item (resource_code VARCHAR, schema_name VARCHAR, "
                    "table_name VARCHAR, column_name VARCHAR, column_zh VARCHAR, data_type VARCHAR, de_code VARCHAR, "
                    "value_set VARCHAR, category VARCHAR, level INTEGER, kind VARCHAR, lineage VARCHAR[])")
        if entries:
            _insert(con, "lake.catalog.resource_directory", _DIRECTORY_ARROW,
                    [(e["resource_code"], e["schema"], e["table"].split(".", 1)[1], e["database_zh"], e["name_zh"],
                      e["class_zh"], e["summary"], e["share_type"], e["open_attr"], e["update_cycle"], e["max_level"],
                      e["row_count"], e["institutions"], e["quality_pass_rate"], e["last_snapshot_at"], now,
                      json.dumps(e, ensure_ascii=False, default=str)) for e in entries])
            _insert(con, "lake.catalog.data_item", _DATA_ITEM_ARROW,
                    [(e["resource_code"], e["schema"], e["table"].split(".", 1)[1], i["name"], i["zh"], i["type"],
                      i["de"], i["value_set"], i["category"], i["level"], i["kind"], i["lineage"])
                     for e in entries for i in e["items"]])
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    out = directory_json_path(s)
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {"generated_at": now.isoformat(), "labels": FIELD_LABELS, "entries": entries}
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(doc, ensure_ascii=False, indent=1, default=str), encoding="utf-8")
    tmp.replace(out)
    write_portal(doc, out.with_name("index.html"))
    return entries


# ------------------------------------------------------------------ reading the export
def load_directory(s: Settings | None = None) -> list[dict]:
    path = directory_json_path(s or load_settings())
    if not path.exists():
        raise FileNotFoundError(f"no resource directory at {path}: run the pipeline (healthlake demo) or "
                                f"`healthlake catalog build`")
    doc = json.loads(path.read_text(encoding="utf-8"))
    return doc["entries"] if isinstance(doc, dict) else doc


def search(entries: list[dict], text: str) -> list[tuple[dict, list[str]]]:
    """Entries matching ``text`` (case-insensitive) in names, summary, codes or data items; with where."""
    t = text.strip().lower()
    hits = []
    for e in entries:
        where = [f for f in ("table", "name_zh", "summary", "resource_code", "database_zh")
                 if t in str(e.get(f) or "").lower()]
        where += [f"{i['name']}（{i['zh'] or i['description']}）" for i in e["items"]
                  if any(t in str(i.get(k) or "").lower() for k in ("name", "zh", "description", "de", "value_set"))]
        if where:
            hits.append((e, where))
    hits.sort(key=lambda h: (-(("name_zh" in h[1]) + ("table" in h[1])), h[0]["schema"] not in PUBLISHED_SCHEMAS,
                             h[0]["resource_code"]))
    return hits


def find_entry(entries: list[dict], resource: str) -> dict:
    """An entry by ``schema.table`` or resource code."""
    for e in entries:
        if resource in (e["table"], e["resource_code"]):
            return e
    import difflib

    close = difflib.get_close_matches(resource, [e["table"] for e in entries], n=1)
    raise KeyError(f"no resource '{resource}' in the directory" + (f" (did you mean '{close[0]}'?)" if close else ""))

"""Data classification and grading (数据分类分级, GB/T 39725-2020) of every lake column.

Every column of every lake table gets a category (个人属性 健康状况 医疗应用 医疗支付 卫生资源 公共卫生),
a level 1–5 and a *kind* that says how publishing treats it above a clearance (``catalog.publish``):

| kind          | above the clearance                                  |
|---------------|------------------------------------------------------|
| person_name   | surname + ``*`` (张伟 → 张*)                          |
| id_number     | first 6 + ``********`` + last 4                      |
| phone         | first 3 + ``****`` + last 4                          |
| key           | keyed hash (joins still work)                        |
| identifier    | keyed hash (joins still work)                        |
| birth_date    | year only (published as ``birth_year``)              |
| address       | absent (the division code beside it stays)           |
| value         | absent                                               |

Where a classification comes from, first match wins:

1. ``classification_overrides.yaml``: exact ``schema.table.column`` entries, then glob patterns, in
   file order. Every entry needs a ``reason``.
2. dbt column meta of the model that builds the table (read from the lake's dbt manifest at run
   time, so marts added later classify themselves)::

       columns:
         - name: loinc_code
           meta: {classification: {category: 健康状况, level: 2, kind: value, reason: …}}

   (``meta: {category: …, level: …}`` directly works too; ``reason`` defaults to "dbt meta").
3. Lineage columns (``_batch_id`` …): 医疗应用, level 1.
4. The standard data sets: bronze columns are data elements 1:1; staging, intermediate and mart
   tables are mapped to their data set (``TABLE_DATASETS``) and their columns matched by name.
5. Name rules: ``*_key`` pseudonymous keys (level ≤ 2, category of the identifier they hash),
   ``is_valid_*``/``is_known_*`` quality flags (level 1), institution codes (卫生资源, level 1),
   ``*_name`` of a ``*_code`` (same as the code), derived copies of a column (``<col>_standardised``,
   ``<col>_source``, ``<col>_sent``, ``standard_<col>``, the ``<col>_l``/``<col>_r`` pairs of a
   review queue: same as ``<col>``, same kind).
6. A data element of the same name in any data set (the highest level wins).

A column matched by none is *unclassified*: ``unclassified_columns()`` lists them and the test
suite (and the pipeline's check) fails on any. Content detectors (``detect_misclassified``) sample
each column and flag one classified below level 4 whose values look like GB 11643 ID numbers,
mobile phone numbers or Chinese personal names.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import duckdb

from catalog.standard import CATEGORIES, LINEAGE_COLUMNS, datasets
from healthlake.lake import one_transaction, quote_ident
from healthlake.yamlfile import read_yaml
from synthetic.gb11643 import is_valid as is_valid_id_number

__all__ = ["ColumnClass", "Finding", "ClassificationError", "KINDS", "classify", "classify_table",
           "lake_columns", "classify_lake", "unclassified_columns", "detect_misclassified", "detectors",
           "PUBLISHED_SCHEMAS"]

OVERRIDES_FILE = Path(__file__).with_name("classification_overrides.yaml")
KINDS = ("person_name", "id_number", "phone", "key", "identifier", "birth_date", "address", "value")
# The four databases: the schemas published per clearance. staging/intermediate/bronze are classified
# but never published (they still hold raw identity fields by design).
PUBLISHED_SCHEMAS = ("population", "emr", "health_record", "resource")

# Extra lineage-like bookkeeping columns (not personal data, no clinical content).
_LINEAGE = {c for c, _ in LINEAGE_COLUMNS}

# Which standard data set a staging/intermediate/mart table carries.
TABLE_DATASETS = {
    "population.dim_person": "person", "population.person_identifier": "person",
    "emr.fct_encounter": "encounter", "emr.fct_diagnosis": "diagnosis", "emr.fct_lab_result": "lab_result",
    "emr.fct_medication_order": "prescription",
    "health_record.dim_health_record": "health_record", "health_record.fct_chronic_followup": "chronic_followup",
    "health_record.fct_immunization": "immunization",
    "resource.dim_department": "department", "resource.dim_practitioner": "practitioner",
}
_STAGING_DATASETS = {  # stg_bronze__<plural> / int_<plural>_* → data set
    "persons": "person", "patients": "person", "identities": "person", "encounters": "encounter",
    "diagnoses": "diagnosis", "lab_results": "lab_result", "prescriptions": "prescription",
    "health_records": "health_record", "chronic_followups": "chronic_followup",
    "immunizations": "immunization", "departments": "department", "practitioners": "practitioner",
}


class ClassificationError(ValueError):
    """The classification overrides are malformed (say which entry and what to fix)."""


@dataclass(frozen=True)
class ColumnClass:
    table: str          # schema.table
    column: str
    category: str       # GB/T 39725 category
    level: int          # 1–5
    kind: str           # how publishing treats it above a clearance (see KINDS)
    source: str         # override | lineage | standard | rule
    reason: str         # where the classification comes from, in words

    @property
    def qualified(self) -> str:
        return f"{self.table}.{self.column}"


# ------------------------------------------------------------------ overrides
@lru_cache(maxsize=4)
def _overrides(path: str = str(OVERRIDES_FILE)) -> tuple[dict, list]:
    raw = read_yaml(path) or {}
    exact, patterns = {}, []
    for key, entry in (raw.get("columns") or {}).items():
        if not isinstance(entry, dict):
            raise ClassificationError(f"{key}: expected a mapping with category, level, reason")
        if not str(entry.get("reason") or "").strip():
            raise ClassificationError(f"{key}: every override needs a non-empty 'reason' (why this level)")
        if entry.get("category") not in CATEGORIES:
            raise ClassificationError(f"{key}: category must be one of {', '.join(CATEGORIES)}")
        if not isinstance(entry.get("level"), int) or not 1 <= entry["level"] <= 5:
            raise ClassificationError(f"{key}: level must be an integer 1-5")
        if entry.get("kind", "value") not in KINDS:
            raise ClassificationError(f"{key}: kind must be one of {', '.join(KINDS)}")
        if key.count(".") != 2:
            raise ClassificationError(f"{key}: keys are schema.table.column (globs allowed)")
        (patterns.append((key, entry)) if any(ch in key for ch in "*?[") else exact.__setitem__(key, entry))
    return exact, patterns


def accepted_findings(table: str, column: str) -> set[str]:
    """Detector names an override accepts for this column (e.g. practitioners' names at level 2)."""
    exact, patterns = _overrides()
    key = f"{table}.{column}"
    entry = exact.get(key) or next((e for p, e in patterns if fnmatch.fnmatchcase(key, p)), None)
    return set((entry or {}).get("accept_findings") or [])


# ------------------------------------------------------------------ rules
def _kind_of(element_name: str) -> str:
    if element_name == "name":
        return "person_name"
    if element_name in ("id_number", "phone", "birth_date"):
        return element_name
    if element_name == "address_text":
        return "address"
    if element_name.endswith("_key"):
        return "key"
    if element_name.endswith("_id") or element_name in ("household_id", "licence_number", "source_id"):
        return "identifier"
    return "value"


def _dataset_of(schema: str, table: str) -> str | None:
    if schema == "bronze":
        return table if table in datasets() else None
    if f"{schema}.{table}" in TABLE_DATASETS:
        return TABLE_DATASETS[f"{schema}.{table}"]
    m = re.match(r"^(?:stg_bronze__|int_)([a-z_]+?)(?:_(?:deduplicated|linked|unioned))?$", table)
    return _STAGING_DATASETS.get(m.group(1)) if m else None


@lru_cache(maxsize=1)
def _elements_by_name() -> dict:
    """name → the element with the highest level among data sets defining it."""
    out = {}
    for ds in datasets().values():
        for e in ds.elements:
            if e.name not in out or e.level > out[e.name].level:
                out[e.name] = e
    return out


def _from_element(table, column, e, source, reason, kind=None) -> ColumnClass:
    return ColumnClass(table, column, e.category, e.level, kind or _kind_of(e.name), source, reason)


# ------------------------------------------------------------------ dbt meta
_META_CACHE: dict[tuple[str, float], dict] = {}


_MANIFEST_PATHS: dict[tuple, Path] = {}


def _manifest_path() -> Path | None:
    """The configured lake's dbt manifest. settings() resolves every path (several stat calls): the
    answer is kept per HEALTHLAKE_ROOT and working directory, the only things it depends on here
    (classify() asks once per column: 4,000 times in the demo's catalog step, 2.7 s)."""
    key = (os.environ.get("HEALTHLAKE_ROOT"), os.getcwd())
    if key not in _MANIFEST_PATHS:
        try:
            from healthlake.config import settings

            _MANIFEST_PATHS[key] = settings().dbt_target_dir / "manifest.json"
        except Exception:  # no configuration: no dbt meta (asked again next time)
            return None
    return _MANIFEST_PATHS[key]


def dbt_column_meta(manifest: Path | None = None) -> dict[tuple[str, str, str], dict]:
    """(schema, table, column) → the classification in that column's dbt meta (models and seeds)."""
    manifest = manifest or _manifest_path()
    if manifest is None or not manifest.exists():
        return {}
    key = (str(manifest), manifest.stat().st_mtime)
    if key not in _META_CACHE:
        import json

        out = {}
        nodes = json.loads(manifest.read_text(encoding="utf-8")).get("nodes", {})
        for node in nodes.values():
            if node.get("resource_type") not in ("model", "seed", "snapshot"):
                continue
            table = node.get("alias") or node.get("name")
            for col in (node.get("columns") or {}).values():
                meta = {**((col.get("config") or {}).get("meta") or {}), **(col.get("meta") or {})}
                c = meta.get("classification") if isinstance(meta.get("classification"), dict) else meta
                if "category" in c and "level" in c:
                    where = f"dbt {node.get('name')}.{col.get('name')}"
                    if c["category"] not in CATEGORIES or not isinstance(c["level"], int) or not 1 <= c["level"] <= 5:
                        raise ClassificationError(f"{where}: meta category must be one of {', '.join(CATEGORIES)} "
                                                  f"and level an integer 1-5")
                    if c.get("kind", "value") not in KINDS:
                        raise ClassificationError(f"{where}: meta kind must be one of {', '.join(KINDS)}")
                    out[(node.get("schema"), table, col.get("name"))] = c
        _META_CACHE.clear()
        _META_CACHE[key] = out
    return _META_CACHE[key]


_DERIVED = re.compile(r"^(?:standard_(?P<a>.+)|(?P<b>.+?)_(?:standardised|standardized|source|sent|raw|original|l|r))$")


def classify(schema: str, table: str, column: str) -> ColumnClass | None:
    """The classification of one column, or None when nothing classifies it."""
    t = f"{schema}.{table}"
    key = f"{t}.{column}"
    exact, patterns = _overrides()
    entry = exact.get(key) or next((e for p, e in patterns if fnmatch.fnmatchcase(key, p)), None)
    if entry:
        return ColumnClass(t, column, entry["category"], entry["level"], entry.get("kind", "value"),
                           "override", entry["reason"].strip())
    meta = dbt_column_meta().get((schema, table, column))
    if meta:
        return ColumnClass(t, column, meta["category"], meta["level"], meta.get("kind", "value"), "dbt",
                           str(meta.get("reason") or "dbt 列 meta"))
    if column in _LINEAGE:
        return ColumnClass(t, column, "医疗应用", 1, "value", "lineage", "入湖血缘列（批次、来源文件、行号、时间）")
    ds_name = _dataset_of(schema, table)
    if ds_name:
        ds = datasets()[ds_name]
        for e in ds.elements:
            if e.name == column:
                return _from_element(t, column, e, "standard", f"标准数据集 {ds_name}.{e.name}（{e.zh}）")
    elements = _elements_by_name()
    if column.endswith("_key"):
        base = column[: -len("_key")]
        if base in ("person", "identity"):
            return ColumnClass(t, column, "个人属性", 2, "key", "rule", "个人主索引假名键（密钥哈希，不可逆）")
        e = elements.get(base + "_id") or elements.get(base + "_code")
        category, level = (e.category, min(e.level, 2)) if e else ("医疗应用", 2)
        return ColumnClass(t, column, category, level, "key", "rule", f"{base} 的假名键（md5 哈希）")
    if column.startswith(("is_valid_", "is_known_")):
        return ColumnClass(t, column, "医疗应用", 1, "value", "rule", "数据质量有效性标志（不含原值）")
    if column == "institution_code" or column.endswith("_institution_code"):
        return ColumnClass(t, column, "卫生资源", 1, "value", "rule", "医疗卫生机构代码（公开）")
    if column.endswith("_name"):
        code = column[: -len("_name")] + "_code"
        base = classify(schema, table, code) if code != column else None
        if base and base.source != "rule":
            return ColumnClass(t, column, base.category, base.level, "value", "rule", f"{code} 的名称")
    if column in elements:
        return _from_element(t, column, elements[column], "standard",
                             f"同名数据元 {column}（{elements[column].zh}，取各数据集最高级别）")
    m = _DERIVED.match(column)
    if m:
        base = classify(schema, table, m.group("a") or m.group("b"))
        if base:
            return ColumnClass(t, column, base.category, base.level, base.kind, "rule",
                               f"由 {base.column} 派生（同级别）：{base.reason}")
    return None


# ------------------------------------------------------------------ the lake
# id(connection) → {database: lake_columns(...)} while ``columns_cached`` is open
_columns_cache: dict[int, dict[str, list]] = {}


@contextlib.contextmanager
def columns_cached(con: duckdb.DuckDBPyConnection):
    """Within the block, ``lake_columns`` on ``con`` reads the lake's columns once per database
    instead of once per call: the catalog step asked five times (classification check, detectors,
    lineage, directory).
    For blocks that do not change the lake's columns (or do not read them after changing them)."""
    own = id(con) not in _columns_cache
    if own:
        _columns_cache[id(con)] = {}
    try:
        yield
    finally:
        if own:
            _columns_cache.pop(id(con), None)


def lake_views(con: duckdb.DuckDBPyConnection, database: str = "lake") -> set[tuple[str, str]]:
    """(schema, view) of every view of a database."""
    return set(con.execute("SELECT table_schema, table_name FROM information_schema.tables "
                           "WHERE table_catalog = ? AND table_type = 'VIEW'", [database]).fetchall())


def lake_columns(con: duckdb.DuckDBPyConnection, database: str = "lake") -> list[tuple[str, str, str, str]]:
    """(schema, table, column, type) of every column of every table and view of a database."""
    cache = _columns_cache.get(id(con))
    if cache is not None:
        if database not in cache:
            cache[database] = _lake_columns(con, database)
        return cache[database]
    return _lake_columns(con, database)


def _lake_columns(con: duckdb.DuckDBPyConnection, database: str) -> list[tuple[str, str, str, str]]:
    # information_schema.columns, not duckdb_columns(): the same rows, but duckdb_columns() loads every
    # DuckLake table's statistics (demo lake: 0.9 s of CPU vs 0.02 s)
    return [tuple(r) for r in con.execute(
        "SELECT table_schema, table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_catalog = ? ORDER BY table_schema, table_name, ordinal_position", [database]).fetchall()]


def classify_table(schema: str, table: str, columns) -> dict[str, ColumnClass | None]:
    return {c: classify(schema, table, c) for c in columns}


def classify_lake(con: duckdb.DuckDBPyConnection, database: str = "lake") -> dict[tuple[str, str, str], ColumnClass | None]:
    return {(s, t, c): classify(s, t, c) for s, t, c, _ in lake_columns(con, database)}


def unclassified_columns(con: duckdb.DuckDBPyConnection, database: str = "lake") -> list[str]:
    """Every lake column without a classification, as ``schema.table.column`` (empty = pass)."""
    return [f"{s}.{t}.{c}" for (s, t, c), cc in classify_lake(con, database).items() if cc is None]


# ------------------------------------------------------------------ content detectors
# Common Chinese surnames (百家姓 by population, the ~120 most frequent plus compound ones); enough
# to recognise > 90 % of residents' names without matching ordinary words.
COMMON_SURNAMES = set(
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈"
    "姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤"
    "常温康施文牛樊葛邢安齐易乔伍庞颜倪庄聂章鲁岳翟殷詹申欧耿关兰焦俞左柳甘祝包宁尚符舒阮柯纪梅童凌毕单季"
    "裴霍涂成苗谷盛曲翁冉骆蓝路游辛靳管柴蒙鲍华喻祁蒲房滕屈饶解牟艾尤阳时穆农司卓古吉缪简车项连芦麦褚娄窦"
    "戚岑景党宫费卜冷晏席卫米柏宗瞿桂全佟应臧闵苟邬边卞姬师和仇栾隋商刁沙荣巫寇桑郎甄丛仲虞敖巩明佘池查麻"
    "苑迟邝")
COMPOUND_SURNAMES = ("欧阳", "司马", "诸葛", "上官", "司徒", "东方", "皇甫", "慕容", "夏侯", "尉迟", "公孙", "令狐")
_HAN = re.compile(r"^[\u4e00-\u9fff]{2,4}$")
_PHONE = re.compile(r"^1[3-9]\d{9}$")


# Words of clinical value sets that look like names (a common surname + one or two characters).
NOT_NAMES = frozenset("阳性 阴性 弱阳性 强阳性 高血压 高血糖 高血脂 高危 高度 常规 常见 明显 明确 全血 全部 单次 单胎 双胎 "
                      "双侧 左侧 右侧 应答 时间 文化 安全 平均 余量 和平 黄疸 包块 戴镜 康复 万元 龙胆".split())


def looks_like_name(v: str) -> bool:
    v = v.strip()
    if not _HAN.match(v) or v in NOT_NAMES:
        return False
    if v[:2] in COMPOUND_SURNAMES:
        return 3 <= len(v) <= 4
    return len(v) <= 3 and v[0] in COMMON_SURNAMES


def detectors() -> dict:
    """name → (predicate over a non-null text value, the level at which such values belong)."""
    return {
        "gb11643_id_number": (lambda v: len(v.strip()) == 18 and is_valid_id_number(v), 4),
        "mobile_phone": (lambda v: bool(_PHONE.match(v.strip())), 4),
        "chinese_name": (looks_like_name, 4),
    }


@dataclass(frozen=True)
class Finding:
    table: str
    column: str
    detector: str
    match_ratio: float
    sampled: int
    level: int | None       # the column's current level (None: unclassified)
    expected_level: int


MIN_DISTINCT_MATCHES = 3


def detect_misclassified(con: duckdb.DuckDBPyConnection, database: str = "lake", sample: int = 1000,
                         threshold: float = 0.5, schemas=None) -> list[Finding]:
    """Columns whose sampled values look like IDs, phones or names but whose level is below theirs.

    Samples ``sample`` rows per table (reservoir sample, fixed seed), and for each text column
    flags it when ≥ ``threshold`` of its non-null sampled values match a detector, with at least
    ``MIN_DISTINCT_MATCHES`` different matching values (a code table's few words are not personal
    data), unless the override accepts that detector for the column (``accept_findings``).
    """
    det = detectors()
    by_table: dict[tuple[str, str], list[str]] = {}
    for s, t, c, typ in lake_columns(con, database):
        if (schemas is None or s in schemas) and typ == "VARCHAR":
            by_table.setdefault((s, t), []).append(c)
    # One sample per table (all its text columns at once: ``sample_rows``), all in one transaction.
    # Only the columns a finding could come from are checked: classified below a detector's level
    # and that detector not accepted for them (the demo lake: 1,109 of 1,213 text columns).
    checks = {}
    for (s, t), cols in by_table.items():
        for i, c in enumerate(cols):
            cc = classify(s, t, c)
            accepted = accepted_findings(f"{s}.{t}", c)
            active = [(name, pred, expected) for name, (pred, expected) in det.items()
                      if (cc is None or cc.level < expected) and name not in accepted]
            if active:
                checks.setdefault((s, t), []).append((i, c, cc, active))
    # Inside ``scan.lake_scanned`` its workers read the samples (the same queries): each table is
    # checked here as soon as its sample is there
    from catalog.scan import active_scan

    scan = active_scan(con, database, sample)
    scanned = [k for k in checks if scan is not None and scan.sample_columns(*k) == tuple(by_table[k])]
    read = [k for k in checks if k not in scanned]
    samples = {}
    if read:
        views = lake_views(con, database)
        with one_transaction(con):
            for s, t in read:
                samples[(s, t)] = sample_rows(con, f"{quote_ident(database)}.{quote_ident(s)}.{quote_ident(t)}",
                                              by_table[(s, t)], sample,
                                              (s, t) in views)
    per_table = {k: _check_sample(k, checks[k], rows, threshold) for k, rows in samples.items()}
    if scanned:
        for k, result in scan.as_completed(scanned):
            per_table[k] = _check_sample(k, checks[k], result.sample, threshold)
    return [f for k in checks for f in per_table[k]]


def sample_rows(con: duckdb.DuckDBPyConnection, rel: str, cols, sample: int, is_view: bool) -> list[tuple]:
    """The detectors' sample of ``cols`` of one table or view (``rel``: its SQL name).

    A table of at most ``sample`` rows is its own sample (a reservoir that large keeps every row;
    the detectors do not depend on the order): read as it is, up to one row more to know, and only
    a larger table is sampled (the reservoir costs half as much again as reading; demo lake, 129
    tables: 14.1 → 9.5 s CPU). A view is computed whole for its reservoir anyway (and for LIMIT as
    far as its plan needs: a deduplicating view, all of it): sampled at once, never read twice. The
    reservoir of a view of at most ``sample`` rows keeps every row, as reading it would."""
    select = f"SELECT {', '.join(quote_ident(c) for c in cols)} FROM {rel}"
    reservoir = f"{select} USING SAMPLE reservoir({int(sample)} ROWS) REPEATABLE (7)"
    if is_view:
        return con.execute(reservoir).fetchall()
    rows = con.execute(f"{select} LIMIT {int(sample) + 1}").fetchall()
    if len(rows) > sample:
        rows = con.execute(reservoir).fetchall()
    return rows


def _check_sample(key, checks, rows, threshold: float) -> list[Finding]:
    """The findings of one table's sampled columns. Each distinct value is tested once (a column of
    codes holds few): the ratio counts every sampled value, as testing each would."""
    s, t = key
    findings = []
    for i, c, cc, active in checks:
        counts = Counter(r[i] for r in rows)
        counts.pop(None, None)
        n = sum(counts.values())
        if not n:
            continue
        for name, pred, expected in active:
            matched = [(v, k) for v, k in counts.items() if pred(str(v))]
            # IDs, phones and names are many different values; two repeated words are a value set
            if len(matched) < MIN_DISTINCT_MATCHES:
                continue
            ratio = sum(k for _, k in matched) / n
            if ratio >= threshold:
                findings.append(Finding(f"{s}.{t}", c, name, round(ratio, 4), n, cc.level if cc else None, expected))
    return findings

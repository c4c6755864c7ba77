"""Reference data the bronze rules join to, kept as small tables in ``lake.quality``.

The rules on the standard data sets (``quality/rules/bronze.*.yaml``) check codes against national
code tables and need to know, per feed, which elements it sends and at what cadence. Those facts
are data, not code: they come from the dbt seeds (copies of ``../shared/reference``), from
``quality/reference/*.csv`` (tables the quality office owns) and from the feed registry. Rules
refer to them by their full name (``lake.quality.ref_icd10_category``...), so a rule's SQL is the
same in GX, in the grouped scoring and in a DuckDB shell.

| table | from | columns |
|---|---|---|
| ref_division | dbt seed gbt2260_divisions_sichuan | code, name_zh, level |
| ref_icd10_category | dbt seed icd10_categories | code (3 characters), name_zh |
| ref_ethnicity | dbt seed gb3304_ethnicity | code, name_zh |
| ref_marital_status | dbt seed gbt2261_2_marital_status | code, name_zh |
| ref_payment_method | dbt seed ws445_payment_method | code, name_zh |
| ref_lab_item | quality/reference/lab_items.csv | ref_item_code, ref_item_name, ref_unit, plausible_low, plausible_high |
| ref_feed | the feed registry | institution_code, feed, dataset, cadence, max_lag_days, quality_threshold |
| ref_feed_element | the feed registry | institution_code, feed, dataset, element |

``sync_reference`` rewrites a table only when its content changed, all of them in one transaction
(a DuckLake commit is a snapshot: one when something changed, none for an unchanged run).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

from healthlake.config import REPO_ROOT, Settings, settings as load_settings
from healthlake.lake import LAKE

__all__ = ["sync_reference", "REFERENCE_TABLES", "CADENCE_MAX_LAG_DAYS", "SEEDS_DIR", "OWN_REFERENCE_DIR"]

SEEDS_DIR = REPO_ROOT / "dbt_project" / "seeds"
OWN_REFERENCE_DIR = Path(__file__).with_name("reference")
SCHEMA = "quality"

# Delivery lag allowed per cadence, in days between the data's date (from the file name) and its
# ingestion. ``on_change`` dictionaries (departments, staff) have no due date: not checked.
CADENCE_MAX_LAG_DAYS = {"daily": 1, "weekly": 7, "monthly": 31, "quarterly": 92, "on_change": None}

REFERENCE_TABLES: dict[str, tuple[tuple[str, str], ...]] = {
    "ref_division": (("code", "VARCHAR"), ("name_zh", "VARCHAR"), ("level", "VARCHAR")),
    "ref_icd10_category": (("code", "VARCHAR"), ("name_zh", "VARCHAR")),
    "ref_ethnicity": (("code", "VARCHAR"), ("name_zh", "VARCHAR")),
    "ref_marital_status": (("code", "VARCHAR"), ("name_zh", "VARCHAR")),
    "ref_payment_method": (("code", "VARCHAR"), ("name_zh", "VARCHAR")),
    # ref_ prefixes: a rule's correlated subquery must not shadow the batch's item_code/unit columns
    "ref_lab_item": (("ref_item_code", "VARCHAR"), ("ref_item_name", "VARCHAR"), ("ref_unit", "VARCHAR"),
                     ("plausible_low", "DOUBLE"), ("plausible_high", "DOUBLE")),
    "ref_feed": (("institution_code", "VARCHAR"), ("feed", "VARCHAR"), ("dataset", "VARCHAR"),
                 ("cadence", "VARCHAR"), ("max_lag_days", "INTEGER"), ("quality_threshold", "DOUBLE")),
    "ref_feed_element": (("institution_code", "VARCHAR"), ("feed", "VARCHAR"), ("dataset", "VARCHAR"),
                         ("element", "VARCHAR")),
}


def _csv(path: Path, columns: Sequence[str]) -> list[tuple]:
    with open(path, encoding="utf-8", newline="") as f:
        return [tuple(row[c] or None for c in columns) for row in csv.DictReader(f)]


def _seed_rows() -> dict[str, list[tuple]]:
    return {
        "ref_division": _csv(SEEDS_DIR / "gbt2260_divisions_sichuan.csv", ("division_code", "division_name", "division_level")),
        "ref_icd10_category": _csv(SEEDS_DIR / "icd10_categories.csv", ("category_code", "name_zh")),
        "ref_ethnicity": _csv(SEEDS_DIR / "gb3304_ethnicity.csv", ("code", "name_zh")),
        "ref_marital_status": _csv(SEEDS_DIR / "gbt2261_2_marital_status.csv", ("code", "name_zh")),
        "ref_payment_method": _csv(SEEDS_DIR / "ws445_payment_method.csv", ("code", "name_zh")),
        "ref_lab_item": [(c, n, u, float(lo), float(hi)) for c, n, u, lo, hi in _csv(
            OWN_REFERENCE_DIR / "lab_items.csv", ("item_code", "item_name", "unit", "plausible_low", "plausible_high"))],
    }


def _registry_rows(registry) -> dict[str, list[tuple]]:
    feeds, elements = [], []
    for inst in registry.institutions:
        for feed in inst.feeds:
            threshold = feed.options.get("quality_threshold")
            feeds.append((inst.code, feed.id, feed.dataset, feed.cadence, CADENCE_MAX_LAG_DAYS.get(feed.cadence),
                          None if threshold is None else float(threshold)))
            elements.extend((inst.code, feed.id, feed.dataset, e) for e in sorted(feed.mapping))
    return {"ref_feed": feeds, "ref_feed_element": elements}


def _sort_key(row: tuple) -> tuple:
    return tuple("" if v is None else str(v) for v in row)


_ARROW_TYPES = {"VARCHAR": "string", "DOUBLE": "float64", "INTEGER": "int32"}


def _insert(con, name: str, cols, rows: list[tuple]) -> None:
    """All rows in one statement through Arrow (executemany runs one INSERT per row: 2,047 for the
    ICD-10 categories)."""
    import pyarrow as pa

    schema = pa.schema([(c, getattr(pa, _ARROW_TYPES[t])()) for c, t in cols])
    batch = pa.Table.from_pylist([dict(zip((c for c, _ in cols), r)) for r in rows], schema=schema)
    con.register("_quality_reference_rows", batch)
    try:
        con.execute(f"INSERT INTO {name} SELECT * FROM _quality_reference_rows")
    finally:
        con.unregister("_quality_reference_rows")


def sync_reference(con, settings: Settings | None = None, registry=None) -> list[str]:
    """Create/refresh the ``lake.quality.ref_*`` tables; returns the names of those that changed.

    The registry defaults to the configured one (``HEALTHLAKE_REGISTRY``); without a registry file
    the feed tables are left empty (element-presence and timeliness rules then check nothing).
    One transaction for all of them: one DuckLake snapshot when something changed, not one per table.
    """
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {LAKE}.{SCHEMA}")
    rows = _seed_rows()
    if registry is None:
        s = settings or load_settings()
        if s.registry.exists():
            from ingest_adapters.registry import load_registry

            registry = load_registry(s.registry)
    rows.update(_registry_rows(registry) if registry is not None else {"ref_feed": [], "ref_feed_element": []})
    changed: list[str] = []
    con.execute("BEGIN")
    try:
        for table, wanted in rows.items():
            name, cols = f"{LAKE}.{SCHEMA}.{table}", REFERENCE_TABLES[table]
            con.execute(f"CREATE TABLE IF NOT EXISTS {name} ({', '.join(f'{c} {t}' for c, t in cols)})")
            wanted = set(wanted)
            current = con.execute(f"SELECT * FROM {name}").fetchall()
            if len(current) == len(wanted) and set(current) == wanted:  # the same rows, no duplicate
                continue
            con.execute(f"DELETE FROM {name}")
            if wanted:
                _insert(con, name, cols, sorted(wanted, key=_sort_key))
            changed.append(table)
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    return changed

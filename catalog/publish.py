"""Publish the four databases per clearance: ``<root>/published/level_<L>.duckdb``, L = 1…5.

Each file holds the mart tables of ``population``, ``emr``, ``health_record`` and ``resource``.
A column at or below L is copied as-is; a column above L is transformed by its kind
(``catalog.classification``), so its raw values are never written to that file:

| kind                 | published form above L                                      | treatment     |
|----------------------|-------------------------------------------------------------|---------------|
| person_name          | surname + ``*`` (张伟 → 张*, 欧阳娜娜 → 欧阳*)                 | masked        |
| id_number            | first 6 + ``********`` + last 4                             | masked        |
| phone                | first 3 + ``****`` + last 4                                 | masked        |
| key, identifier      | ``md5(secret || value)``: same value → same hash, joins work | pseudonymised |
| birth_date           | ``birth_year`` (INTEGER)                                    | generalised   |
| address              | ``<name>_county``: the address cut after its county-level   | generalised   |
|                      | division (内江市市中区城东街道… → 内江市市中区), else NULL       |               |
| value                | column absent                                               | absent        |

The secret is ``HEALTHLAKE_PUBLISH_SECRET`` (a demo default otherwise; set it in production and
keep it away from analysts: with it, a pseudonym can be confirmed against a guessed value).

Every file also holds ``catalog.published_column``: one row per published column with its
source column, category, level and treatment; the governed query path reads its classification
from there. A file is written under a temporary name and renamed into place, so readers never see
a half-written database. Unclassified columns fail the publication (fail closed).
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import duckdb

from catalog.classification import COMPOUND_SURNAMES, PUBLISHED_SCHEMAS, ColumnClass, classify, lake_columns
from healthlake.config import Settings, settings as load_settings
from healthlake.lake import connect, one_transaction, quote_ident

__all__ = ["publish_all", "publish_level", "published_path", "publish_secret", "PublishError",
           "PublishedColumn", "column_expression", "LEVELS"]

LEVELS = (1, 2, 3, 4, 5)
DEMO_SECRET = "healthlake-demo-publish-secret"  # demo only; production sets HEALTHLAKE_PUBLISH_SECRET
MANIFEST_TABLE = "catalog.published_column"
DISABLED_COMPRESSION = "fsst,dict_fsst"  # see publish_level
COUNTY_PATTERN = r"^((?:[^省市]{1,8}省)?[^省市]{1,8}?[市州盟].{1,6}?[区县市旗])"


class PublishError(RuntimeError):
    """Publishing refused (e.g. an unclassified column): fix the classification and publish again."""


@dataclass(frozen=True)
class PublishedColumn:
    schema: str
    table: str
    column: str          # name in the published table
    source_column: str   # name in the lake
    category: str
    level: int
    kind: str
    treatment: str       # raw | masked | pseudonymised | generalised | absent
    expression: str | None  # SQL over the lake column; None when absent


def publish_secret() -> str:
    return os.environ.get("HEALTHLAKE_PUBLISH_SECRET") or DEMO_SECRET


def published_path(level: int, s: Settings | None = None) -> Path:
    s = s or load_settings()
    return s.root / "published" / f"level_{int(level)}.duckdb"


def _lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def column_expression(cc: ColumnClass, clearance: int, secret: str) -> PublishedColumn:
    """How one lake column is published at one clearance."""
    schema, table = cc.table.split(".", 1)
    c = quote_ident(cc.column)

    def out(treatment, expression, name=cc.column):
        return PublishedColumn(schema, table, name, cc.column, cc.category, cc.level, cc.kind, treatment, expression)

    if cc.level <= clearance:
        return out("raw", c)
    if cc.kind == "person_name":
        compounds = ", ".join(_lit(x) for x in COMPOUND_SURNAMES)
        return out("masked", f"CASE WHEN {c} IS NULL THEN NULL WHEN left(trim({c}), 2) IN ({compounds}) "
                             f"THEN left(trim({c}), 2) || '*' ELSE left(trim({c}), 1) || '*' END")
    if cc.kind == "id_number":
        return out("masked", f"CASE WHEN {c} IS NULL THEN NULL WHEN length(trim({c})) >= 15 "
                             f"THEN left(trim({c}), 6) || '********' || right(trim({c}), 4) ELSE '********' END")
    if cc.kind == "phone":
        return out("masked", f"CASE WHEN {c} IS NULL THEN NULL WHEN length(trim({c})) >= 11 "
                             f"THEN left(trim({c}), 3) || '****' || right(trim({c}), 4) ELSE '****' END")
    if cc.kind in ("key", "identifier"):
        return out("pseudonymised", f"md5({_lit(secret)} || CAST({c} AS VARCHAR))")
    if cc.kind == "birth_date":
        return out("generalised", f"CAST(year(TRY_CAST({c} AS DATE)) AS INTEGER)", name="birth_year")
    if cc.kind == "address":
        # [省] + 市/州/盟 + the first county-level unit (区, 县, 县级市, 旗); nothing finer ever survives
        county = f"regexp_extract(trim({c}), '{COUNTY_PATTERN}', 1)"
        base = cc.column[: -len("_text")] if cc.column.endswith("_text") else cc.column
        return out("generalised", f"nullif({county}, '')", name=f"{base}_county")
    return out("absent", None)


def classified_tables(con) -> dict[tuple[str, str], list[ColumnClass]]:
    """Every published table of the lake → the classification of each of its columns (read once
    for all clearances). Unclassified columns refuse the publication (fail closed)."""
    tables: dict[tuple[str, str], list[ColumnClass]] = {}
    unclassified = []
    for s, t, c, _ in lake_columns(con):
        if s not in PUBLISHED_SCHEMAS:
            continue
        cc = classify(s, t, c)
        if cc is None:
            unclassified.append(f"{s}.{t}.{c}")
            continue
        tables.setdefault((s, t), []).append(cc)
    if unclassified:
        raise PublishError(f"{len(unclassified)} unclassified column(s), nothing published: "
                           f"{', '.join(unclassified[:10])}; classify them in catalog/classification_overrides.yaml")
    return tables


def plan(con, clearance: int, secret: str, classes=None) -> dict[tuple[str, str], list[PublishedColumn]]:
    """Every published table of the lake → its columns at this clearance (absent ones included)."""
    classes = classified_tables(con) if classes is None else classes
    return {key: [column_expression(cc, clearance, secret) for cc in ccs] for key, ccs in classes.items()}


def publish_level(con, clearance: int, s: Settings, secret: str | None = None, classes=None,
                  source: str = "lake") -> dict:
    """One clearance's database; ``classes``: ``classified_tables(con)`` when several levels are published.
    ``source``: the attached database the mart tables are read from (``publish_all`` reads the lake
    once, for the level that holds every column as it is, and the other levels from that file)."""
    secret = secret or publish_secret()
    tables = plan(con, clearance, secret, classes)
    final = published_path(clearance, s)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    for p in (tmp, Path(str(tmp) + ".wal")):
        p.unlink(missing_ok=True)
    t0 = time.perf_counter()
    # FSST (and dictionary+FSST) compression re-encodes strings, so raw values would not appear as
    # bytes even where they are present: the byte scan that proves their absence (tests) would then
    # prove nothing. Strings are stored plain or dictionary-encoded instead; measured on the demo
    # city (3,000 residents): the level-5 file grows from 4.73 MB to 5.26 MB (+11 %).
    con.execute(f"SET disabled_compression_methods = '{DISABLED_COMPRESSION}'")
    # one alias per level: the levels of publish_all are written side by side, on cursors of one
    # DuckDB instance, whose attached databases they all see
    pub = f"pub_{int(clearance)}"
    con.execute(f"ATTACH {_lit(str(tmp))} AS {pub}")
    try:
        # one transaction: reads of the lake, writes to pub only
        with one_transaction(con):
            rows, counts = _write_level(con, tables, clearance, source, pub)
        con.execute(f"CHECKPOINT {pub}")
    finally:
        con.execute(f"DETACH {pub}")
    os.replace(tmp, final)
    treatments: dict[str, int] = {}
    for cols in tables.values():
        for pc in cols:
            treatments[pc.treatment] = treatments.get(pc.treatment, 0) + 1
    return {"level": clearance, "path": str(final), "tables": counts, "rows": rows, "columns": treatments,
            "bytes": final.stat().st_size, "seconds": round(time.perf_counter() - t0, 2)}


def _write_level(con, tables, clearance: int, source: str, pub: str) -> tuple[int, int]:
    """The tables and the manifest of one clearance into the attached ``pub``; (rows, tables)."""
    con.execute(f"CREATE SCHEMA {pub}.catalog")
    con.execute(f"CREATE TABLE {pub}.{MANIFEST_TABLE} (schema_name VARCHAR, table_name VARCHAR, column_name VARCHAR, "
                "source_column VARCHAR, category VARCHAR, level INTEGER, kind VARCHAR, treatment VARCHAR, "
                "clearance INTEGER, published_at TIMESTAMPTZ)")
    now = datetime.now(timezone.utc)
    rows = counts = 0
    manifest: list[tuple] = []
    for schema in sorted({sch for sch, _ in tables}):
        con.execute(f"CREATE SCHEMA {pub}.{quote_ident(schema)}")
    for (schema, table), cols in sorted(tables.items()):
        present = [pc for pc in cols if pc.expression is not None]
        select = ", ".join(f"{pc.expression} AS {quote_ident(pc.column)}" for pc in present)
        con.execute(f"CREATE TABLE {pub}.{quote_ident(schema)}.{quote_ident(table)} AS SELECT {select} "
                    f"FROM {source}.{quote_ident(schema)}.{quote_ident(table)}")
        manifest += [(pc.schema, pc.table, pc.column if pc.expression else None, pc.source_column,
                      pc.category, pc.level, pc.kind, pc.treatment, clearance, now) for pc in cols]
        counts += 1
        rows += con.execute(f"SELECT count(*) FROM {pub}.{quote_ident(schema)}.{quote_ident(table)}").fetchone()[0]
    _insert_manifest(con, manifest, pub)
    return rows, counts


def _insert_manifest(con, rows: list[tuple], pub: str) -> None:
    """All manifest rows of a level in one insert (executemany runs one statement per row)."""
    import pyarrow as pa

    names = ["schema_name", "table_name", "column_name", "source_column", "category", "level", "kind", "treatment",
             "clearance", "published_at"]
    batch = pa.Table.from_pylist([dict(zip(names, r)) for r in rows], schema=pa.schema(
        [(n, pa.int32() if n in ("level", "clearance") else pa.timestamp("us", tz="UTC") if n == "published_at"
          else pa.string()) for n in names]))
    con.register("_published_columns", batch)
    try:
        con.execute(f"INSERT INTO {pub}.{MANIFEST_TABLE} SELECT * FROM _published_columns")
    finally:
        con.unregister("_published_columns")


def publish_all(s: Settings | None = None, levels=LEVELS, con=None, workers: int = 1, classes=None) -> list[dict]:
    """Write one database per clearance level from the lake's marts; returns a summary per level.

    The highest level, when every column is at or below it, is a copy of the marts (every column
    raw): it is written first, from the lake, and the lower levels read the marts from that file
    instead of the lake (one DuckLake read per table, not one per table and level; the same rows,
    in the same order). Otherwise every level reads the lake.

    ``con``: the lake connection to read from (the catalog step's, whose DuckDB instance has the
    lake's catalog loaded already); by default a read-only connection of its own. ``workers``: the
    lower levels are written by that many threads at once, each on a cursor of the connection's
    instance (each level is a file of its own; a query releases the GIL). ``classes``:
    ``classified_tables(con)`` when the caller has it (the lake's columns read once).
    """
    s = s or load_settings()
    own = con is None
    con = connect(s, read_only=True) if own else con
    previous = con.execute("SELECT current_setting('disabled_compression_methods')").fetchone()[0]
    try:
        classes = classified_tables(con) if classes is None else classes
        top = max(levels, default=None)
        if top is None or any(cc.level > top for ccs in classes.values() for cc in ccs):
            return _publish_levels(con, list(levels), s, classes, "lake", workers)
        done = {top: publish_level(con, top, s, classes=classes)}
        con.execute(f"ATTACH {_lit(str(published_path(top, s)))} AS pub_source (READ_ONLY)")
        try:
            rest = [level for level in levels if level not in done]
            done.update({r["level"]: r for r in _publish_levels(con, rest, s, classes, "pub_source", workers)})
        finally:
            con.execute("DETACH pub_source")
        return [done[level] for level in levels]
    finally:
        # the setting is the instance's (GLOBAL): as it was for the instance's other users
        with contextlib.suppress(duckdb.Error):
            con.execute(f"SET disabled_compression_methods = {_lit(previous)}" if previous
                        else "RESET disabled_compression_methods")
        if own:
            con.close()


def _publish_levels(con, levels: list[int], s: Settings, classes, source: str, workers: int) -> list[dict]:
    """``publish_level`` of each level, by up to ``workers`` threads on cursors of ``con``'s instance."""
    workers = max(1, min(int(workers), len(levels)))
    if workers == 1:
        return [publish_level(con, level, s, classes=classes, source=source) for level in levels]
    from concurrent.futures import ThreadPoolExecutor

    def one(level):
        with con.cursor() as cur:  # a connection of its own on the same instance (its attached files)
            return publish_level(cur, level, s, classes=classes, source=source)

    with ThreadPoolExecutor(workers, thread_name_prefix="publish") as pool:
        return list(pool.map(one, levels))

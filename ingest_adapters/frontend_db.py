"""Front-end database (前置机) feeds: a SQLite file or a PostgreSQL database read through DuckDB's
sqlite_scanner / postgres_scanner, incrementally by a watermark column.

Registry (one table per feed; the mapping is element → source column, as for files)::

    - id: vaccination
      format: sqlite                      # or postgres
      database: cdc_frontend.sqlite       # sqlite: a path (relative to the registry file);
                                          # postgres: a libpq string or postgresql:// URL, ${VAR}s
                                          # expanded from the environment (keep passwords there)
      schema: public                      # postgres only (default public)
      table: vaccination_record
      watermark: updated_at               # a column that grows when a row is written
      dataset: immunization
      mapping: {immunization_id: record_no, ...}

``pull_frontend()`` pulls every such feed; each pull that finds new rows is one batch (an
``ops.ingest_batch`` row, rows read = loaded + rejected). A pull that finds nothing new is a
no-op: no batch row, no bronze row, the watermark unchanged; its result is ``skipped`` (logged),
as for a file delivered twice. A failed pull is a failed batch. A pull reads the rows whose watermark is ``>=`` the stored one and
drops those already loaded at exactly the stored value (their row hashes are kept in
``ops.frontend_watermark_seen``), so rows sharing the previous maximum are neither lost nor
doubled. The bronze insert, the rejects, the new watermark, the seen hashes and the batch row
commit in one DuckLake transaction: a crash before COMMIT leaves the old watermark and no rows,
so the next pull reads the same rows again; nothing is skipped or loaded twice.

Limits, by design of any watermark: a row written later with a watermark *below* the stored one
(a clock behind, a long transaction) is not seen; pick a watermark the source sets on commit
(an autoincrement id, a trigger-maintained ``updated_at``). Rows whose watermark is NULL cannot be
pulled incrementally: they are counted in the result's notes (``null_watermark_rows``) and logged
on every pull, not loaded. A row whose business key is NULL is rejected (``MISSING KEY``).

A SQLite file dropped in the landing zone (``format: sqlite`` feed) is read whole as one
delivery by ``open_sqlite``, like any other file.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
import time
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlparse

import duckdb

from catalog.standard import bronze_ddl, get_dataset
from healthlake.config import Settings, postgres_url_to_libpq, settings as load_settings
from healthlake.lake import quote_ident
from ingest_adapters.bookkeeping import ensure_ops_tables, record_batch, sync_institutions
from ingest_adapters.errors import IngestError, UnreadableFileError
from ingest_adapters.ingest import BatchResult
from ingest_adapters.registry import Feed, Registry, load_registry
from ingest_adapters.scan import SourceScan

log = logging.getLogger(__name__)

__all__ = ["FRONTEND_FORMATS", "FrontendError", "open_postgres", "open_sqlite", "pull_feed", "pull_frontend"]

FRONTEND_FORMATS = ("sqlite", "postgres")
SRC = "_frontend_src"

FRONTEND_DDL = (
    """CREATE TABLE IF NOT EXISTS ops.frontend_watermark (
        institution_code VARCHAR, feed VARCHAR, source VARCHAR, table_name VARCHAR, watermark_column VARCHAR,
        watermark_type VARCHAR, watermark_value VARCHAR, rows_at_watermark BIGINT, batch_id VARCHAR,
        updated_at TIMESTAMP WITH TIME ZONE)""",
    """CREATE TABLE IF NOT EXISTS ops.frontend_watermark_seen (
        institution_code VARCHAR, feed VARCHAR, row_hash UBIGINT)""",
)


class FrontendError(IngestError):
    """A front-end database feed cannot be pulled (unreachable, missing table or column)."""


def _lit(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _suggest(name: str, options) -> str:
    close = difflib.get_close_matches(str(name), [str(o) for o in options], n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _source(feed: Feed, registry: Registry | None) -> tuple[str, str, str]:
    """(attach target, DuckDB type, label without secrets) of a feed's database."""
    where = f"feed {feed.id}"
    for option in ("database", "table", "watermark"):
        if not feed.options.get(option):
            raise FrontendError(f"{where}: a {feed.format} feed needs '{option}' in the registry")
    db = os.path.expandvars(str(feed.options["database"]))
    if feed.format == "sqlite":
        path = Path(db)
        if not path.is_absolute() and registry is not None and registry.path is not None:
            path = Path(registry.path).parent / path
        if not path.exists():
            raise FrontendError(f"{where}: front-end SQLite database {path} does not exist")
        return str(path), "sqlite", f"sqlite:{path.name}/{feed.options['table']}"
    libpq = postgres_url_to_libpq(db) if db.startswith(("postgres://", "postgresql://")) else db
    parts = dict(p.split("=", 1) for p in libpq.split() if "=" in p)
    schema = feed.options.get("schema", "public")
    label = (f"postgres://{parts.get('host', 'localhost')}:{parts.get('port', '5432')}/{parts.get('dbname', '')}"
             f"/{schema}.{feed.options['table']}")
    return libpq, "postgres", label


def _redact(message: str, target: str | None, label: str | None) -> str:
    """No password in an error: DuckDB's postgres errors quote the whole connection string."""
    if target and label:
        message = message.replace(target, label)
    message = re.sub(r"(password\s*=\s*)('[^']*'|\S+)", r"\1***", message, flags=re.I)
    return re.sub(r"(postgres(?:ql)?://[^:/@\s]+):[^@\s]+@", r"\1:***@", message)


def _columns(con, schema: str, table: str, label: str) -> dict[str, str]:
    # DESCRIBE the one table: duckdb_columns() would walk every attached catalog (the lake's too:
    # 2.3 s of a 2.9 s pull on the demo lake)
    try:
        cols = {r[0]: r[1] for r in con.execute(f"DESCRIBE {SRC}.{quote_ident(schema)}.{quote_ident(table)}").fetchall()}
    except duckdb.CatalogException:
        cols = {}
    if not cols:
        tables = sorted({r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() "
                                                   "WHERE database_name = ? AND schema_name = ?", [SRC, schema]).fetchall()})
        raise FrontendError(f"{label}: no table '{table}' in the front-end database{_suggest(table, tables)}; "
                            f"its tables: {', '.join(tables) or '(none)'}")
    return cols


def _pull_sql(elements, feed: Feed, schema: str, table: str, wm: str, wm_type: str, since: str | None) -> str:
    casts = ", ".join(f"CAST({quote_ident(feed.mapping[e])} AS VARCHAR) AS {quote_ident(e)}" for e in elements)
    where = f"{quote_ident(wm)} IS NOT NULL" + (f" AND {quote_ident(wm)} >= CAST({_lit(since)} AS {wm_type})" if since is not None else "")
    return (f"SELECT {casts}, {quote_ident(wm)} AS __wm FROM {SRC}.{quote_ident(schema)}.{quote_ident(table)} WHERE {where}")


def pull_feed(con: duckdb.DuckDBPyConnection, institution: str, feed: Feed, registry: Registry | None = None) -> BatchResult:
    """Pull one front-end feed's new rows into bronze. Never raises: a failure is the batch's."""
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    batch_id = f"{institution}.{feed.id}.pull-{started:%Y%m%dT%H%M%S%fZ}"
    result = BatchResult(batch_id=batch_id, institution_code=institution, feed=feed.id, dataset=feed.dataset,
                         source_file=f"{feed.format}:{feed.options.get('table', '?')}", status="failed")
    batch = {"batch_id": batch_id, "institution_code": institution, "feed": feed.id, "dataset": feed.dataset,
             "format": feed.format, "encoding": None, "source_file": result.source_file, "started_at": started,
             "rows_read": 0, "rows_loaded": 0, "rows_rejected": 0}
    attached = False
    target = label = None
    try:
        target, kind, label = _source(feed, registry)
        result.source_file = batch["source_file"] = label
        ds = get_dataset(feed.dataset)
        con.execute(bronze_ddl(ds.name))
        for ddl in FRONTEND_DDL:
            con.execute(ddl)
        try:
            con.execute(f"ATTACH {_lit(target)} AS {SRC} (TYPE {kind}, READ_ONLY)")
        except duckdb.Error as e:
            raise FrontendError(f"cannot open the front-end database {label}: "
                                f"{_redact(str(e).splitlines()[0], target, label)}") from None
        attached = True
        schema = "main" if kind == "sqlite" else str(feed.options.get("schema", "public"))
        table, wm = str(feed.options["table"]), str(feed.options["watermark"])
        cols = _columns(con, schema, table, label)
        if wm not in cols:
            raise FrontendError(f"{label}: no watermark column '{wm}'{_suggest(wm, cols)}; its columns: {', '.join(cols)}")
        missing = [c for c in feed.mapping.values() if c not in cols]
        if missing:
            raise FrontendError(f"{label}: the table lacks the mapped columns {missing}; its columns: {', '.join(cols)}")
        wm_type = cols[wm]
        elements = [e for e in ds.element_names if e in feed.mapping]
        state = con.execute("SELECT watermark_value FROM ops.frontend_watermark WHERE institution_code = ? AND feed = ?",
                            [institution, feed.id]).fetchone()
        since = state[0] if state else None

        hash_expr = "hash(" + ", ".join(quote_ident(e) for e in elements) + ")"
        con.execute(f"CREATE OR REPLACE TEMP TABLE _fe_pull AS SELECT *, {hash_expr} AS __hash "
                    f"FROM ({_pull_sql(elements, feed, schema, table, wm, wm_type, since)})")
        null_wm = con.execute(f"SELECT count(*) FROM {SRC}.{quote_ident(schema)}.{quote_ident(table)} WHERE {quote_ident(wm)} IS NULL").fetchone()[0]
        if since is not None:
            # rows at exactly the previous maximum that were already loaded (same content)
            con.execute(f"DELETE FROM _fe_pull WHERE __wm = CAST(? AS {wm_type}) AND __hash IN "
                        f"(SELECT row_hash FROM ops.frontend_watermark_seen WHERE institution_code = ? AND feed = ?)",
                        [since, institution, feed.id])
        keys = ds.key_elements
        # record numbers in watermark order, ties by business key: stable across pulls
        order = ", ".join(["__wm"] + [quote_ident(k) for k in keys] + ["__hash"])
        con.execute(f"CREATE OR REPLACE TEMP TABLE _fe_rows AS SELECT *, row_number() OVER (ORDER BY {order}) "
                    "AS __ord FROM _fe_pull")
        missing_key = " OR ".join(f"{quote_ident(k)} IS NULL" for k in keys) or "false"
        new_max = con.execute("SELECT CAST(max(__wm) AS VARCHAR) FROM _fe_rows").fetchone()[0]
        if new_max is None:   # nothing new: a no-op (no batch row), reported as skipped
            last = con.execute("SELECT batch_id FROM ops.frontend_watermark WHERE institution_code = ? AND feed = ?",
                               [institution, feed.id]).fetchone()
            result.status, result.batch_id = "skipped", last[0] if last else None
            result.notes = {"watermark_from": since, "watermark_to": since, "null_watermark_rows": null_wm,
                            "nothing_new": True}
            log.info("%s: nothing new since watermark %s=%s", label, wm, since)
            if null_wm:
                log.warning("%s: %d rows have a NULL watermark (%s) and cannot be pulled incrementally",
                            label, null_wm, wm)
            return result
        raw_line = "concat_ws('|', " + ", ".join(f"coalesce({quote_ident(e)}, '')" for e in elements) + ")"
        rejects = con.execute(f"SELECT __ord, {raw_line} FROM _fe_rows WHERE {missing_key} ORDER BY __ord").fetchall()
        lineage = ["_institution_code", "_feed", "_batch_id", "_source_file", "_source_row", "_ingested_at", "_row_hash"]
        cols_sql = ", ".join(quote_ident(c) for c in elements + lineage)
        con.execute("BEGIN")
        try:
            loaded = con.execute(
                f"INSERT INTO bronze.{ds.name} ({cols_sql}) SELECT {', '.join(quote_ident(e) for e in elements)}, ?, ?, ?, ?, "
                f"__ord, ?::TIMESTAMPTZ, __hash FROM _fe_rows WHERE NOT ({missing_key}) ORDER BY __ord",
                [institution, feed.id, batch_id, label, started]).fetchone()[0]
            if rejects:
                reason = f"the business key {keys} is NULL"
                con.executemany("INSERT INTO bronze._rejects VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                [(batch_id, institution, feed.id, ds.name, label, n, line, "MISSING KEY", reason, started)
                                 for n, line in rejects])
            if new_max is not None:
                keep_old = since is not None and con.execute(
                    f"SELECT CAST(? AS {wm_type}) = CAST(? AS {wm_type})", [since, new_max]).fetchone()[0]
                if not keep_old:
                    con.execute("DELETE FROM ops.frontend_watermark_seen WHERE institution_code = ? AND feed = ?",
                                [institution, feed.id])
                con.execute(f"INSERT INTO ops.frontend_watermark_seen SELECT ?, ?, __hash FROM _fe_rows "
                            f"WHERE __wm = CAST(? AS {wm_type})", [institution, feed.id, new_max])
                at_max = con.execute("SELECT count(*) FROM ops.frontend_watermark_seen WHERE institution_code = ? "
                                     "AND feed = ?", [institution, feed.id]).fetchone()[0]
                con.execute("DELETE FROM ops.frontend_watermark WHERE institution_code = ? AND feed = ?",
                            [institution, feed.id])
                con.execute("INSERT INTO ops.frontend_watermark VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, now())",
                            [institution, feed.id, label, table, wm, wm_type, new_max, at_max, batch_id])
            read = loaded + len(rejects)
            batch.update(rows_read=read, rows_loaded=loaded, rows_rejected=len(rejects), status="loaded",
                         finished_at=datetime.now(timezone.utc))
            record_batch(con, batch)
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
        result.status = "loaded"
        result.rows_read, result.rows_loaded, result.rows_rejected = batch["rows_read"], loaded, len(rejects)
        result.notes = {"watermark_from": since, "watermark_to": new_max or since, "null_watermark_rows": null_wm}
        if null_wm:
            log.warning("%s: %d rows have a NULL watermark (%s) and cannot be pulled incrementally", label, null_wm, wm)
    except Exception as e:  # noqa: BLE001 — a failed pull fails only its own feed
        result.status, result.error = "failed", _redact(f"{type(e).__name__}: {e}", target, label)
        log.warning("pull %s.%s failed: %s", institution, feed.id, result.error)
        batch.update(status="failed", error=result.error, finished_at=datetime.now(timezone.utc))
        try:
            record_batch(con, batch)
        except duckdb.Error as e2:
            log.error("could not record the failed pull %s: %s", batch_id, e2)
    finally:
        for temp in ("_fe_rows", "_fe_pull"):
            try:
                con.execute(f"DROP TABLE IF EXISTS temp.{temp}")
            except duckdb.Error:
                pass
        if attached:
            try:
                con.execute(f"DETACH {SRC}")
            except duckdb.Error:
                pass
        result.seconds = time.perf_counter() - t0
    return result


def frontend_feeds(registry: Registry) -> list[tuple[str, Feed]]:
    """Feeds pulled from a database: every postgres feed, and sqlite feeds naming a ``database``
    (a sqlite feed without one receives SQLite files in the landing zone instead)."""
    return [(i.code, f) for i in registry.institutions for f in i.feeds
            if f.format == "postgres" or (f.format == "sqlite" and f.options.get("database"))]


def pull_frontend(s: Settings | None = None, registry: Registry | None = None,
                  con: duckdb.DuckDBPyConnection | None = None, institutions: list[str] | None = None) -> list[BatchResult]:
    """Pull every front-end database feed of the registry (optionally only some institutions)."""
    from healthlake.lake import connect

    s = s or load_settings()
    registry = registry or load_registry(s.registry)
    own = con is None
    con = con or connect(s)
    try:
        ensure_ops_tables(con)
        sync_institutions(con, registry)
        return [pull_feed(con, code, feed, registry) for code, feed in frontend_feeds(registry)
                if institutions is None or code in institutions]
    finally:
        if own:
            con.close()


# ----------------------------------------------------------------------- delivered as a file

def open_sqlite(con: duckdb.DuckDBPyConnection, path: Path, feed: Feed, workdir: Path) -> SourceScan:
    """A SQLite file delivered to the landing zone: the feed's whole table, as text, one delivery."""
    table = feed.options.get("table")
    if not table:
        raise UnreadableFileError(f"{Path(path).name}: the sqlite feed {feed.id} names no 'table'", path=str(path))
    if Path(path).read_bytes()[:16] != b"SQLite format 3\x00":
        raise UnreadableFileError(f"{Path(path).name}: not a SQLite database file", path=str(path))
    try:
        cols = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM sqlite_scan({_lit(str(path))}, {_lit(table)})").fetchall()]
    except duckdb.Error as e:
        raise UnreadableFileError(f"{Path(path).name}: cannot read table '{table}': {str(e).splitlines()[0]}",
                                  path=str(path)) from None
    wm = feed.options.get("watermark")
    order = f" ORDER BY {quote_ident(wm)}" if wm in cols else ""
    casts = ", ".join(f"CAST({quote_ident(c)} AS VARCHAR) AS {quote_ident(c)}" for c in cols)
    return SourceScan(columns=cols, from_sql=f"(SELECT {casts} FROM sqlite_scan({_lit(str(path))}, {_lit(table)}){order})")


def open_postgres(con, path: Path, feed: Feed, workdir: Path) -> SourceScan:
    raise UnreadableFileError(f"{Path(path).name}: a postgres feed is pulled from its database (pull_frontend), "
                              f"not delivered as a file", path=str(path))

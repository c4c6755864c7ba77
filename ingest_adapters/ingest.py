"""Ingest landing-zone files into bronze: read → map onto the standard data set → lineage
columns → accounting. A file's rows, rejects and batch row are written in one DuckLake
transaction; a landing zone's small files are loaded in groups, one transaction per group
(DuckLake's per-transaction costs dominate small files), and a group where any file fails is
rolled back and loaded file by file.

Landing layout: ``<landing>/<institution_code>/<feed_id>/<file>``. A file whose content
(sha256) was already loaded for its feed is skipped; a failed file records a failed batch
and never blocks the other files.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import duckdb

from catalog.standard import bronze_ddl, datasets, get_dataset
from healthlake.config import Settings, settings as load_settings
from healthlake.lake import quote_ident
from ingest_adapters.bookkeeping import (INDEX_TABLE, batch_states, cached_loaded, ensure_ops_tables,
                                          record_batch, sync_institutions)
from ingest_adapters.errors import IngestError
from ingest_adapters.filescan import sha256_file
from ingest_adapters.multi import ORDINAL, MultiScan
from ingest_adapters.readers import get_reader, is_multi_dataset
from ingest_adapters.registry import Registry, load_registry
from ingest_adapters.scan import STREAMED_LINEAGE, Reject, SourceScan, streamed_column

log = logging.getLogger(__name__)
REPLACEMENT = "\ufffd"


@dataclass
class BatchResult:
    batch_id: str | None
    institution_code: str | None
    feed: str | None
    dataset: str | None
    source_file: str
    status: str  # loaded | failed | skipped
    rows_read: int = 0
    rows_loaded: int = 0
    rows_rejected: int = 0
    error: str | None = None
    seconds: float = 0.0
    notes: dict = field(default_factory=dict)


def landing_files(landing: Path) -> Iterator[Path]:
    """Every regular file under the landing zone, in a stable order (hidden files skipped)."""
    if not landing.exists():
        return
    for p in sorted(landing.rglob("*")):
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(landing).parts):
            yield p


def ensure_bronze_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Create the ops tables and the bronze table of every standard data set that is missing, and add
    the data elements a newer standard brought to an existing bronze table (as NULL for the rows
    already loaded: nothing is rewritten).

    One catalog query when everything exists (the common case: every ingest run calls this)."""
    columns: dict[str, set[str]] = {}
    for schema, table, column in con.execute(
            "SELECT table_schema, table_name, column_name FROM information_schema.columns "
            "WHERE table_catalog = current_database() AND table_schema IN ('ops', 'bronze')").fetchall():
        columns.setdefault(f"{schema}.{table}", set()).add(column)
    if not {"ops.institution", "ops.ingest_batch", "bronze._rejects", INDEX_TABLE} <= columns.keys():
        ensure_ops_tables(con)
    for name in datasets():
        have = columns.get(f"bronze.{name}")
        if have is None:
            con.execute(bronze_ddl(name))
            continue
        for column, sql_type in get_dataset(name).bronze_columns():
            if column not in have:
                log.info("bronze.%s: adding the new data element %s", name, column)
                con.execute(f"ALTER TABLE bronze.{quote_ident(name)} ADD COLUMN {quote_ident(column)} {sql_type}")


def _renumber_sql(table: str) -> str:
    # Scanned rows are numbered 1..n in file order, skipping rejected records. With the
    # rejected record numbers r_1 < r_2 < ..., the k-th loaded row is record
    # k + #{j : r_j - j < k}.
    return (f"UPDATE {table} SET _source_row = _source_row + "
            f"(SELECT count(*) FROM _reject_gaps g WHERE g.t < {table}._source_row) WHERE _batch_id = ?")


def _batch_id(institution: str | None, feed: str | None, sha: str) -> str:
    return f"{institution or 'unknown'}.{feed or 'unknown'}.{sha[:16]}"


def _place(path: Path, s: Settings) -> tuple[str, str | None, str | None]:
    """The file's landing-relative path, and its institution and feed (``<institution>/<feed>/<file>``;
    None for a file not that deep)."""
    rel = path.relative_to(s.landing).as_posix()
    parts = rel.split("/")
    return (rel, parts[0], parts[1]) if len(parts) > 2 else (rel, None, None)


def _outside_landing(path: Path, s: Settings) -> bool:
    """A symbolic link (or a crafted name) that leads out of the landing zone: never read."""
    return not path.resolve().is_relative_to(s.landing.resolve())


@dataclass
class _Group:
    """Files loaded in one transaction: their hashes and lake states, read before the first load."""
    shas: dict[Path, str]
    states: dict[str, tuple[str | None, bool]]
    loaded: dict[tuple[str, str, str], str] = field(default_factory=dict)  # content loaded in the group


def ingest_file(con: duckdb.DuckDBPyConnection, registry: Registry, path: Path, s: Settings,
                group: _Group | None = None) -> BatchResult:
    """Load one landing file in a transaction of its own, or, in a ``group``, in the caller's open
    transaction: then any error is raised (``_GroupAborted``) instead of recorded, and the caller
    rolls the group back and loads its files one by one."""
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    rel, institution, feed_id = _place(path, s)
    result = BatchResult(batch_id=None, institution_code=institution, feed=feed_id, dataset=None,
                         source_file=rel, status="failed")
    batch = {"source_file": rel, "started_at": started, "institution_code": result.institution_code,
             "feed": result.feed, "rows_read": 0, "rows_loaded": 0, "rows_rejected": 0}
    scan = None
    in_transaction = False
    try:
        if _outside_landing(path, s):
            raise IngestError(f"{rel}: resolves to {path.resolve()}, outside the landing zone")
        sha = group.shas[path] if group is not None else sha256_file(path)
        batch.update(sha256=sha, bytes=path.stat().st_size)
        result.batch_id = batch["batch_id"] = _batch_id(result.institution_code, result.feed, sha)
        if institution is None:
            raise IngestError(f"{rel}: not under <institution_code>/<feed_id>/ in the landing zone")
        feed = registry.institution(result.institution_code).feed(result.feed)
        ds = get_dataset(feed.dataset)
        # a multi-data-set feed (hl7v2, fhir) records its data sets comma-separated
        result.dataset = batch["dataset"] = ",".join(feed.datasets)
        batch.update(format=feed.format, encoding=feed.encoding)
        content = (result.institution_code, result.feed, sha)
        done = cached_loaded(con, *content)
        if done is None and group is not None:
            done = group.loaded.get(content)  # the same content twice in one group: loaded once
            if done is None:
                done, batch["earlier_failed"] = group.states[result.batch_id]
        elif done is None:
            # The check, the reader's lake lookups, the rows, the rejects and the batch row share one
            # transaction: DuckLake reads its catalog once per transaction (~30 ms after each commit),
            # so a city's hundreds of small files would otherwise spend most of their time there.
            con.execute("BEGIN")
            in_transaction = True
            done, batch["earlier_failed"] = batch_states(con, [content + (result.batch_id,)])[result.batch_id]
        if done:
            result.status, result.batch_id = "skipped", done
            return result

        if is_multi_dataset(feed.format):
            scan = get_reader(feed.format)(con, path, feed, s.root / "work", institution_code=result.institution_code)
            _load_multi(con, scan, feed, batch, result, started)
        else:
            scan = get_reader(feed.format)(con, path, feed, s.root / "work")
            while True:
                try:
                    _load_single(con, scan, feed, ds, batch, result, started)
                    break
                except _ReadAgain as again:
                    if group is not None:
                        raise
                    log.info("%s: read again (%s)", rel, again)
                    con.execute("ROLLBACK")
                    con.execute("BEGIN")
                    # same file, another parser or a larger record limit (one file in many: read twice)
                    scan = scan.read_again()
            result.status, result.notes = "loaded", dict(scan.notes)
            result.rows_read, result.rows_loaded, result.rows_rejected = batch["rows_read"], batch["rows_loaded"], batch["rows_rejected"]
        scan.cleanup()  # inside the transaction: releasing a registered scan then costs no catalog read
        scan = None
        if group is None:
            con.execute("COMMIT")
            in_transaction = False
        else:
            group.loaded[content] = result.batch_id
    except Exception as e:  # noqa: BLE001 — any error fails this file's batch, never the others
        if group is not None:
            raise _GroupAborted(rel) from e
        if in_transaction:
            in_transaction = False
            con.execute("ROLLBACK")
        result.status, result.error = "failed", f"{type(e).__name__}: {e}"
        log.warning("batch %s failed: %s", rel, result.error)
        batch.update(status="failed", error=result.error, finished_at=datetime.now(timezone.utc))
        batch.setdefault("batch_id", f"{result.institution_code or 'unknown'}.{result.feed or 'unknown'}.unreadable")
        result.batch_id = batch["batch_id"]
        record_batch(con, batch)
    finally:
        if in_transaction:  # skipped: nothing was written
            con.execute("ROLLBACK")
        if scan is not None:
            scan.cleanup()
        result.seconds = time.perf_counter() - t0
    return result


class _GroupAborted(Exception):
    """A file of a group failed (or needs a second read): the group is rolled back and its files
    are loaded one by one, each in its own transaction, where a failure is recorded as usual."""


# A DuckLake commit costs ~15-35 ms and a transaction's first lake statement ~20 ms (the catalog is
# read again after every commit): most of a city's files are small, so they are loaded in groups,
# one transaction per group.
GROUP_FILES = 64
GROUP_BYTES = 32 * 1024 * 1024


def _groups(paths) -> Iterator[list[Path]]:
    group, size = [], 0
    for p in paths:
        n = p.stat().st_size if p.is_file() else 0
        if group and (len(group) >= GROUP_FILES or size + n > GROUP_BYTES):
            yield group
            group, size = [], 0
        group.append(p)
        size += n
    if group:
        yield group


def _ingest_group(con: duckdb.DuckDBPyConnection, registry: Registry, paths: list[Path], s: Settings) -> list[BatchResult]:
    """The group's files in one transaction; if one fails, each file again in its own."""
    if len(paths) > 1 and not any(_outside_landing(p, s) for p in paths):
        try:
            shas = {p: sha256_file(p) for p in paths}
        except OSError:
            return [ingest_file(con, registry, p, s) for p in paths]  # each file's error recorded alone
        keys = []
        for p, sha in shas.items():
            _, institution, feed = _place(p, s)
            if institution is not None:
                keys.append((institution, feed, sha, _batch_id(institution, feed, sha)))
        con.execute("BEGIN")
        try:
            group = _Group(shas, batch_states(con, keys))
            results = [ingest_file(con, registry, p, s, group) for p in paths]
            con.execute("COMMIT")
            return results
        except (_GroupAborted, duckdb.Error) as e:  # a file failed; or the commit (a conflict)
            try:
                con.execute("ROLLBACK")
            except duckdb.TransactionException:
                pass  # a failed COMMIT has already ended the transaction (an invalidated database raises)
            log.info("group of %d files rolled back (%s): loading them one by one", len(paths), e)
    return [ingest_file(con, registry, p, s) for p in paths]


class _ReadAgain(Exception):
    """The scan could not load the file (its parser gave up, or a record exceeded its record limit)
    and the reader offers another scan of it (``SourceScan.read_again``)."""


def _load_single(con, scan: SourceScan, feed, ds, batch: dict, result: BatchResult, started: datetime) -> None:
    """One file of a single-data-set feed: its rows, rejects and batch row (in the caller's transaction)."""
    missing = [src for src in feed.mapping.values() if src not in scan.columns]
    if missing:
        raise IngestError(f"header drift: the file lacks the mapped columns {missing}; "
                          f"its columns are {scan.columns}")
    elements = [e for e in ds.element_names if e in feed.mapping]
    select = ", ".join(f"{quote_ident(feed.mapping[e])} AS {quote_ident(e)}" for e in elements)
    hash_expr = "hash(" + ", ".join(quote_ident(e) for e in elements) + ")"
    table = f"bronze.{ds.name}"
    cols = elements + ["_institution_code", "_feed", "_batch_id", "_source_file", "_source_row",
                       "_ingested_at", "_row_hash"]
    numbered_by = scan.ordinal_column or scan.sequence_column
    ordinal = quote_ident(numbered_by) if numbered_by else "row_number() OVER ()"
    lineage = {"_institution_code": result.institution_code, "_feed": result.feed, "_batch_id": result.batch_id,
               "_source_file": batch["source_file"]}
    if scan.lineage_values is not None:
        scan.lineage_values.update(lineage)
        select += "".join(f", {quote_ident(streamed_column(c))} AS {quote_ident(c)}" for c in STREAMED_LINEAGE)
        lineage_sql, params = ", ".join(quote_ident(c) for c in lineage), [started]
    else:
        lineage_sql, params = ", ".join("?" for _ in lineage), [*lineage.values(), started]
    insert = (f"INSERT INTO {table} ({', '.join(quote_ident(c) for c in cols)}) "
              f"SELECT {', '.join(quote_ident(e) for e in elements)}, {lineage_sql}, __ord, ?::TIMESTAMPTZ, {hash_expr} "
              f"FROM (SELECT {ordinal} AS __ord, {select} FROM {scan.from_sql})")
    try:
        inserted = con.execute(insert, params).fetchone()[0]
        while scan.next_part():
            inserted += con.execute(insert, params).fetchone()[0]
    except Exception as e:
        if scan.read_again is not None and scan.gave_up() is not None:
            raise _ReadAgain(scan.gave_up()) from e
        # DuckDB 1.5 cuts an over-long record at the limit, possibly inside a UTF-8 character, and
        # then fails storing it as a reject: read the file again with the wider limit
        if scan.read_again is not None and isinstance(e, duckdb.InvalidInputException) and "Invalid unicode" in str(e):
            raise _ReadAgain("a record over the record limit") from e
        raise
    rejects = scan.rejects(con)
    if scan.read_again is not None and any(r.error_type == "LINE SIZE OVER MAXIMUM" for r in rejects):
        raise _ReadAgain("a record over the record limit")
    if rejects and not scan.ordinal_column:
        gaps = [(r - j,) for j, r in enumerate(sorted({x.source_row for x in rejects}), start=1)]
        con.execute("CREATE OR REPLACE TEMP TABLE _reject_gaps (t BIGINT)")
        con.executemany("INSERT INTO _reject_gaps VALUES (?)", gaps)
        con.execute(_renumber_sql(table), [result.batch_id])
        con.execute("DROP TABLE _reject_gaps")
    moved = 0
    if scan.replaced_bytes:
        moved = _reject_undecodable(con, table, elements, feed.delimiter, feed.encoding, result.batch_id, rejects)
    _write_rejects(con, rejects, batch, started)
    batch.update(rows_loaded=inserted - moved, rows_rejected=len(rejects), status="loaded",
                 rows_read=inserted - moved + len(rejects), finished_at=datetime.now(timezone.utc))
    record_batch(con, batch)


def _load_multi(con, scan: MultiScan, feed, batch: dict, result: BatchResult, started: datetime) -> None:
    """One file of a multi-data-set feed: every data set's rows, its rejects, its batch row
    and the reader's own bookkeeping (in the caller's transaction). Rows read/loaded/rejected count
    source records (messages, resources); the rows per data set are in the result's notes."""
    lineage = ["_institution_code", "_feed", "_batch_id", "_source_file", "_source_row", "_ingested_at", "_row_hash"]
    names = []
    try:
        rows_by_dataset = {}
        for i, (dataset, table) in enumerate(scan.tables.items()):
            if table.num_rows == 0:
                rows_by_dataset[dataset] = 0
                continue
            elements = [c for c in table.column_names if c != ORDINAL]
            name = f"_hl_multi_{i}"
            con.register(name, table)
            names.append(name)
            hash_expr = "hash(" + ", ".join(quote_ident(e) for e in elements) + ")"
            cols = elements + lineage
            rows_by_dataset[dataset] = con.execute(
                f"INSERT INTO bronze.{dataset} ({', '.join(quote_ident(c) for c in cols)}) "
                f"SELECT {', '.join(quote_ident(e) for e in elements)}, ?, ?, ?, ?, {ORDINAL}, ?::TIMESTAMPTZ, {hash_expr} "
                f"FROM {name} ORDER BY {ORDINAL}",
                [result.institution_code, result.feed, batch["batch_id"], batch["source_file"], started]).fetchone()[0]
        if scan.on_commit is not None:
            scan.on_commit(con, batch["batch_id"])
        _write_rejects(con, scan.rejects, batch, started)
        batch.update(rows_read=scan.records, rows_loaded=scan.loaded, rows_rejected=len(scan.rejects),
                     status="loaded", finished_at=datetime.now(timezone.utc))
        record_batch(con, batch)
    finally:
        for name in names:
            try:
                con.unregister(name)
            except duckdb.Error:
                pass
    result.status, result.notes = "loaded", dict(scan.notes, rows_by_dataset=rows_by_dataset)
    result.rows_read, result.rows_loaded, result.rows_rejected = scan.records, scan.loaded, len(scan.rejects)


def _reject_undecodable(con, table, elements, delimiter, encoding, batch_id, rejects: list[Reject]) -> int:
    """Move rows holding bytes that were not valid in the declared encoding to the rejects."""
    cond = " OR ".join(f"contains({quote_ident(e)}, '{REPLACEMENT}')" for e in elements)
    raw = "concat_ws(" + "'" + delimiter.replace("'", "''") + "', " + ", ".join(f"coalesce({quote_ident(e)}, '')" for e in elements) + ")"
    rows = con.execute(f"SELECT _source_row, {raw} FROM {table} WHERE _batch_id = ? AND ({cond}) ORDER BY 1",
                       [batch_id]).fetchall()
    for source_row, line in rows:
        rejects.append(Reject(source_row=source_row, raw_line=line, error_type="INVALID ENCODING",
                              reason=f"bytes that are not valid {encoding.upper()} (shown as U+FFFD)"))
    if rows:
        con.execute(f"DELETE FROM {table} WHERE _batch_id = ? AND ({cond})", [batch_id])
    return len(rows)


def _write_rejects(con, rejects: list[Reject], batch: dict, at: datetime) -> None:
    if not rejects:
        return
    con.executemany(
        "INSERT INTO bronze._rejects VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(batch["batch_id"], batch["institution_code"], batch["feed"], batch.get("dataset"), batch["source_file"],
          r.source_row, r.raw_line, r.error_type, r.reason, at) for r in sorted(rejects, key=lambda r: r.source_row)])


def ingest_landing(s: Settings | None = None, registry: Registry | None = None,
                   con: duckdb.DuckDBPyConnection | None = None) -> list[BatchResult]:
    """Ingest every new file of the landing zone. Returns one result per file."""
    from healthlake.lake import connect, release

    s = s or load_settings()
    registry = registry or load_registry(s.registry)
    own = con is None
    con = con or connect(s)
    try:
        ensure_bronze_tables(con)
        sync_institutions(con, registry)
        from ingest_adapters.bookkeeping import known_loaded

        with known_loaded(con):  # content loaded before: one query, not one per file
            return [r for group in _groups(landing_files(s.landing)) for r in _ingest_group(con, registry, group, s)]
    finally:
        if own:
            release(con)

"""Ingestion bookkeeping in the lake: ops.institution, ops.ingest_batch, bronze._rejects.

For every batch: rows_read = rows_loaded + rows_rejected.
"""

from __future__ import annotations

import contextlib

import duckdb

from ingest_adapters.registry import Registry

OPS_DDL = (
    """CREATE TABLE IF NOT EXISTS ops.institution (
        institution_code VARCHAR, institution_name VARCHAR, kind VARCHAR, level VARCHAR,
        division_code VARCHAR, feed_count INTEGER, registered_at TIMESTAMP WITH TIME ZONE)""",
    """CREATE TABLE IF NOT EXISTS ops.ingest_batch (
        batch_id VARCHAR, institution_code VARCHAR, feed VARCHAR, dataset VARCHAR, format VARCHAR,
        encoding VARCHAR, source_file VARCHAR, sha256 VARCHAR, bytes BIGINT, rows_read BIGINT,
        rows_loaded BIGINT, rows_rejected BIGINT, status VARCHAR, error VARCHAR,
        started_at TIMESTAMP WITH TIME ZONE, finished_at TIMESTAMP WITH TIME ZONE)""",
    """CREATE TABLE IF NOT EXISTS bronze._rejects (
        batch_id VARCHAR, institution_code VARCHAR, feed VARCHAR, dataset VARCHAR, source_file VARCHAR,
        source_row BIGINT, raw_line VARCHAR, error_type VARCHAR, reason VARCHAR,
        rejected_at TIMESTAMP WITH TIME ZONE)""",
)

# Identifiers of the FHIR resources loaded so far, per institution: references in later files resolve
# against it (ingest_adapters/fhir.py).
INDEX_TABLE = "ops.fhir_resource_index"
INDEX_DDL = (f"CREATE TABLE IF NOT EXISTS {INDEX_TABLE} (institution_code VARCHAR, resource_type VARCHAR, "
             "resource_id VARCHAR, full_url VARCHAR, identifier_system VARCHAR, identifier_value VARCHAR, "
             "key_value VARCHAR, batch_id VARCHAR)")

BATCH_COLUMNS = ("batch_id", "institution_code", "feed", "dataset", "format", "encoding", "source_file", "sha256",
                 "bytes", "rows_read", "rows_loaded", "rows_rejected", "status", "error", "started_at", "finished_at")


def ensure_ops_tables(con: duckdb.DuckDBPyConnection) -> None:
    for ddl in OPS_DDL + (INDEX_DDL,):
        con.execute(ddl)


def sync_institutions(con: duckdb.DuckDBPyConnection, registry: Registry) -> None:
    """Replace ops.institution with the registry's institutions (one transaction)."""
    rows = [(i.code, i.name, i.kind, i.level, i.division_code, len(i.feeds)) for i in registry.institutions]
    current = con.execute("SELECT institution_code, institution_name, kind, level, division_code, feed_count "
                          "FROM ops.institution ORDER BY 1").fetchall()
    if sorted(rows) == [tuple(r) for r in current]:
        return  # unchanged: no new snapshot
    con.execute("BEGIN")
    try:
        con.execute("DELETE FROM ops.institution")
        con.executemany("INSERT INTO ops.institution VALUES (?, ?, ?, ?, ?, ?, now())", rows)
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise


# connection id → {(institution, feed, sha256): batch id} loaded when ``known_loaded`` began
_known: dict[int, dict[tuple[str, str, str], str]] = {}


@contextlib.contextmanager
def known_loaded(con: duckdb.DuckDBPyConnection):
    """Within the block, ``cached_loaded`` on ``con`` answers "already loaded" for the content loaded
    before the block, from one query: a re-run over an unchanged landing zone of hundreds of files
    then opens no transaction per file. Only that positive answer is cached: a loaded batch stays
    loaded. Content not loaded then is looked up again (``batch_states``) in its file's transaction,
    so a concurrent writer's load is seen as before."""
    rows = con.execute("SELECT institution_code, feed, sha256, min(batch_id) FROM ops.ingest_batch "
                       "WHERE status = 'loaded' GROUP BY ALL").fetchall()
    _known[id(con)] = {(i, f, s): b for i, f, s, b in rows}
    try:
        yield
    finally:
        _known.pop(id(con), None)


def cached_loaded(con: duckdb.DuckDBPyConnection, institution: str, feed: str, sha256: str) -> str | None:
    """The batch id that loaded this content before the ``known_loaded`` block began (no lake query)."""
    return _known.get(id(con), {}).get((institution, feed, sha256))


def batch_states(con: duckdb.DuckDBPyConnection,
                 keys: list[tuple[str, str, str, str]]) -> dict[str, tuple[str | None, bool]]:
    """For each (institution, feed, sha256, batch id), in one lake query: the batch id that already
    loaded this content for this feed (if any), and whether an earlier attempt of the batch failed
    (its row is then replaced by ``record_batch``). Keyed by the batch id asked for."""
    if not keys:
        return {}
    loaded: dict[tuple[str, str, str], str] = {}
    failed: set[str] = set()
    for bid, inst, feed, sha, status in con.execute(
            "SELECT batch_id, institution_code, feed, sha256, status FROM ops.ingest_batch "
            "WHERE list_contains(?, batch_id) OR (status = 'loaded' AND list_contains(?, sha256))",
            [sorted({k[3] for k in keys}), sorted({k[2] for k in keys})]).fetchall():
        if status == "loaded":
            k = (inst, feed, sha)
            loaded[k] = bid if k not in loaded else min(loaded[k], bid)
        else:
            failed.add(bid)
    return {bid: (loaded.get((inst, feed, sha)), bid in failed) for inst, feed, sha, bid in keys}


def record_batch(con: duckdb.DuckDBPyConnection, batch: dict) -> None:
    """Write the batch row, replacing an earlier failed attempt of the same batch unless the batch
    says it has none (``earlier_failed`` False: a DELETE on the lake costs ~30 ms even when it finds nothing)."""
    if batch.get("earlier_failed", True):
        con.execute("DELETE FROM ops.ingest_batch WHERE batch_id = ? AND status <> 'loaded'", [batch["batch_id"]])
    con.execute(f"INSERT INTO ops.ingest_batch ({', '.join(BATCH_COLUMNS)}) VALUES ({', '.join('?' * len(BATCH_COLUMNS))})",
                [batch.get(c) for c in BATCH_COLUMNS])

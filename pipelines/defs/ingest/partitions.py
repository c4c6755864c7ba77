"""Ingest per institution: one dynamic partition per registered institution.

Several institutions' partitions can be materialised at once (multiprocess executor, PostgreSQL
catalog): each partition holds a catalog lock named after its institution, so the same file is
never loaded by two runs at once, and DuckLake merges the concurrent inserts into the shared
bronze tables. Setting up a fresh lake (tables, ops.institution) happens under one global lock.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import dagster as dg

from healthlake.config import Settings, settings as load_settings
from healthlake.lake import catalog_lock, connect, with_retries
from healthlake.storage import landing_store

log = logging.getLogger(__name__)

INSTITUTION_PARTITIONS = dg.DynamicPartitionsDefinition(name="institution")


@dataclass
class PartitionResult:
    institution: str
    batches: list = field(default_factory=list)  # ingest_adapters.BatchResult
    archived: list[str] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for b in self.batches if b.status == status)

    def rows(self, attr: str) -> int:
        return sum(getattr(b, attr) for b in self.batches if b.status == "loaded")


def prepare_lake(con, registry, s: Settings) -> None:
    """Bronze/ops tables and ops.institution, once for all writers (creates of the same name conflict)."""
    from ingest_adapters.bookkeeping import sync_institutions
    from ingest_adapters.ingest import ensure_bronze_tables

    def run():
        ensure_bronze_tables(con)
        sync_institutions(con, registry)

    with catalog_lock("prepare", s):
        with_retries(run, what="prepare lake")


class _Connection:
    """One lake connection for a partition (connecting costs 1–5 s), renewed after a transient error."""

    def __init__(self, s: Settings):
        self.s, self.con = s, None

    def get(self):
        if self.con is None:
            self.con = connect(self.s)
        return self.con

    def drop(self) -> None:
        from healthlake.lake import release

        release(self.con)
        self.con = None


def ingest_institution(code: str, s: Settings | None = None, registry=None) -> PartitionResult:
    """Ingest every landing file of one institution; archive what is loaded (S3 landing)."""
    from ingest_adapters.ingest import ingest_file
    from ingest_adapters.registry import load_registry

    s = s or load_settings()
    registry = registry or load_registry(s.registry)
    registry.institution(code)  # unknown code: a clear error naming the closest one
    store = landing_store(s)
    out = PartitionResult(code)
    lake = _Connection(s)

    def guarded(fn):
        def run():
            try:
                return fn(lake.get())
            except Exception:
                lake.drop()
                raise
        return run

    try:
        with_retries(guarded(lambda con: prepare_lake(con, registry, s)), what="prepare lake")
        with catalog_lock(f"institution:{code}", s):
            for obj in with_retries(lambda: store.list(code), what=f"list landing {code}"):
                path = with_retries(lambda: store.fetch(obj.key), what=f"fetch {obj.key}")

                def attempt(con):
                    r = ingest_file(con, registry, path, s)
                    # ingest_file records any error as a failed batch; a transient one is tried again
                    # (the failed attempt's batch row is replaced when the file loads).
                    if r.status == "failed" and _transient(r.error):
                        raise _Transient(r.error)
                    return r

                try:
                    r = with_retries(guarded(attempt), what=f"ingest {obj.key}")
                except _Transient as e:
                    raise RuntimeError(f"{obj.key}: still failing after retries: {e}") from None
                out.batches.append(r)
                if r.status in ("loaded", "skipped"):
                    archived = with_retries(lambda: store.archive(obj.key), what=f"archive {obj.key}")
                    if archived:
                        out.archived.append(archived)
                    store.release(obj.key)
    finally:
        lake.drop()
    return out


class _Transient(RuntimeError):
    pass


def _transient(error: str | None) -> bool:
    from healthlake.lake import is_transient

    return bool(error) and is_transient(RuntimeError(error))


def ingest_parallel(codes: list[str], workers: int = 4) -> list[PartitionResult]:
    """Ingest several institutions at once, one process per writer (what the multiprocess executor
    does with concurrent partition runs). The environment (HEALTHLAKE_*) is inherited."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    if workers <= 1:
        return [ingest_institution(c) for c in codes]
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(ingest_institution, codes))

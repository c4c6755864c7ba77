"""One pass over every lake table for the catalog step, on worker threads: the content detectors'
sample (``classification.detect_misclassified``) and the directory's row counts per institution
(``directory.build_entries``) of each table, read together.

    with columns_cached(con), lake_scanned(con):      # the workers start here
        findings = detect_misclassified(con)          # each table's sample as soon as it is read
        entries = build_directory(con, s)             # the counts, read by then

Most of that time is DuckDB's (the demo lake's 41 views: planning a view of views costs more than
computing its few thousand rows); a query releases the GIL, so each worker reads its tables on a
cursor of its own (a connection of the same instance) while the others, and the calling thread's
Python (classification, lineage, the detectors), run on the other cores. Each worker reads its
tables in one transaction (see ``lake.one_transaction``). Nothing may write to the lake while they
read: on the SQLite catalog a reader that meets a writer's commit fails ("database is locked"),
so ``directory.build_directory`` waits for the scan (``LakeScan.finish``) before it stores.

A view is computed once: copied into a temporary table of the worker's cursor, which its sample
and its counts read (the same rows, the same queries as reading it),
then dropped. A table whose sample is all of it (fewer rows than the sample's size) is counted
from those rows (``counted``), not by a second query. The answers are those of the plain functions: they use the scan only for a table
whose sample was asked with the same columns and size, else they read the table themselves.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections import Counter
from concurrent.futures import Future, as_completed
from dataclasses import dataclass

import duckdb

from healthlake.lake import one_transaction, quote_ident

__all__ = ["lake_scanned", "active_scan", "LakeScan", "TableScan", "count_rows", "counted", "institution_column",
           "DEFAULT_WORKERS"]

# Two cursors: the demo machine's two cores (each query on one thread: HEALTHLAKE_DUCKDB_THREADS=1).
DEFAULT_WORKERS = max(1, min(2, os.cpu_count() or 1))
INSTITUTION_COLUMNS = ("_institution_code", "institution_code")

# id(connection) → the scan open on it (``lake_scanned``)
_scans: dict[int, LakeScan] = {}


def institution_column(columns) -> str | None:
    """The column a table's rows are counted by per institution, if it has one."""
    names = set(columns)
    return next((c for c in INSTITUTION_COLUMNS if c in names), None)


def count_rows(con, rel: str, code_col: str | None) -> list[tuple]:
    """[(institution code or None, rows)] by ``code_col`` (NULL last: rows without a code), else
    [(None, rows)]: the directory's live figures of one table."""
    if code_col:
        return con.execute(f"SELECT {quote_ident(code_col)}, count(*) FROM {rel} GROUP BY 1 ORDER BY 1 NULLS LAST").fetchall()
    return [(None, con.execute(f"SELECT count(*) FROM {rel}").fetchone()[0])]


def counted(rows: list[tuple], columns, code_col: str | None) -> list[tuple] | None:
    """``count_rows`` of a table from all its rows (``columns``: theirs), when they hold the code
    column: the same groups in the same order (DuckDB sorts text by code point, as Python does)."""
    if code_col is None:
        return [(None, len(rows))]
    if code_col not in columns:
        return None
    i = list(columns).index(code_col)
    groups = Counter(r[i] for r in rows)
    return sorted(groups.items(), key=lambda g: (g[0] is None, g[0] or ""))


@dataclass(frozen=True)
class TableScan:
    sample: list[tuple] | None        # the sampled rows of the text columns (LakeScan.sample_columns)
    code_col: str | None              # counted by this column (None: the row count only)
    counts: list[tuple]               # count_rows(...)


class LakeScan:
    """The samples and counts of every table of ``database``, read by ``workers`` threads (views
    first: they cost the most); ``result(schema, table)`` waits for one table."""

    def __init__(self, con: duckdb.DuckDBPyConnection, database: str = "lake", sample: int = 1000,
                 workers: int = DEFAULT_WORKERS):
        from catalog.classification import lake_columns, lake_views

        self.database, self.sample = database, int(sample)
        columns: dict[tuple[str, str], list[tuple[str, str]]] = {}
        for s, t, c, typ in lake_columns(con, database):
            columns.setdefault((s, t), []).append((c, typ))
        views = lake_views(con, database)
        self._futures: dict[tuple[str, str], Future] = {}
        self._text: dict[tuple[str, str], tuple[str, ...]] = {}
        jobs: queue.Queue = queue.Queue()
        for key in sorted(columns, key=lambda k: k not in views):  # views first, then in lake order
            cols = columns[key]
            self._futures[key] = Future()
            self._text[key] = tuple(c for c, typ in cols if typ == "VARCHAR")
            jobs.put((key, key in views, self._text[key], institution_column(c for c, _ in cols)))
        self._cursors = [con.cursor() for _ in range(max(1, min(int(workers), len(self._futures) or 1)))]
        for _ in self._cursors:
            jobs.put(None)
        self._threads = [threading.Thread(target=self._work, args=(cur, jobs), name=f"lake-scan-{i}", daemon=True)
                         for i, cur in enumerate(self._cursors)]
        for t in self._threads:
            t.start()

    def _work(self, cur: duckdb.DuckDBPyConnection, jobs: queue.Queue) -> None:
        from catalog.classification import sample_rows

        n, job = 0, ()
        try:
            with one_transaction(cur):
                while (job := jobs.get()) is not None:
                    (s, t), is_view, text_cols, code_col = job
                    future = self._futures[(s, t)]
                    if not future.set_running_or_notify_cancel():
                        continue
                    try:
                        rel = f"{quote_ident(self.database)}.{quote_ident(s)}.{quote_ident(t)}"
                        temp = None
                        if is_view and text_cols:  # computed once, for its sample and its counts
                            temp, n = f"_lake_scan_{n}", n + 1
                            cur.execute(f"CREATE OR REPLACE TEMP TABLE {temp} AS SELECT * FROM {rel}")
                            rel = f"temp.main.{temp}"
                        rows = sample_rows(cur, rel, text_cols, self.sample, is_view) if text_cols else None
                        counts = None
                        if rows is not None and not is_view and len(rows) < self.sample:
                            counts = counted(rows, text_cols, code_col)  # the sample is the whole table
                        if counts is None:
                            counts = count_rows(cur, rel, code_col)
                        if temp:
                            cur.execute(f"DROP TABLE temp.main.{temp}")
                        future.set_result(TableScan(rows, code_col, counts))
                    except Exception as e:  # noqa: BLE001 — handed to whoever asks for this table
                        future.set_exception(e)
                        # a failed statement aborts the transaction: the next tables in a new one
                        with contextlib.suppress(duckdb.Error):
                            cur.execute("ROLLBACK")
                        cur.execute("BEGIN TRANSACTION")
        except BaseException as e:  # noqa: BLE001 — this worker stopped: the tables it would have read
            if job and not self._futures[job[0]].done():
                self._futures[job[0]].set_exception(e)
            while job is not None:  # up to its end-of-work mark (one per worker)
                job = jobs.get()
                if job is not None and self._futures[job[0]].set_running_or_notify_cancel():
                    self._futures[job[0]].set_exception(e)

    def has(self, schema: str, table: str) -> bool:
        return (schema, table) in self._futures

    def sample_columns(self, schema: str, table: str) -> tuple[str, ...] | None:
        """The text columns sampled of a table (all of them, in the lake's order), None: not scanned."""
        return self._text.get((schema, table))

    def result(self, schema: str, table: str) -> TableScan:
        """One table's sample and counts (waits for them; raises what reading it raised)."""
        return self._futures[(schema, table)].result()

    def as_completed(self, keys):
        """(key, TableScan) of these (schema, table) keys, in the order they are read."""
        futures = {self._futures[key]: key for key in keys}
        for future in as_completed(futures):
            yield futures[future], future.result()

    def finish(self) -> None:
        """Wait until every table is read and the workers' transactions are over (before writing
        to the lake: a reader's open transaction must not meet the writer's commit)."""
        for t in self._threads:
            t.join()

    def close(self) -> None:
        """Stop reading (tables not begun are cancelled), wait for the workers, close their cursors."""
        for f in self._futures.values():
            f.cancel()
        self.finish()
        for cur in self._cursors:
            with contextlib.suppress(duckdb.Error):
                cur.close()


@contextlib.contextmanager
def lake_scanned(con: duckdb.DuckDBPyConnection, database: str = "lake", sample: int = 1000,
                 workers: int = DEFAULT_WORKERS):
    """Within the block, ``detect_misclassified(con, database, sample)`` and the directory's counts
    on ``con`` take each table's sample and counts from one ``LakeScan`` begun on entry. For blocks
    that do not change the lake's data before reading those (the scan reads the lake as it was)."""
    scan = LakeScan(con, database, sample, workers)
    previous = _scans.get(id(con))
    _scans[id(con)] = scan
    try:
        yield scan
    finally:
        if previous is None:
            _scans.pop(id(con), None)
        else:
            _scans[id(con)] = previous
        scan.close()


def active_scan(con: duckdb.DuckDBPyConnection, database: str = "lake", sample: int | None = None) -> LakeScan | None:
    """The scan open on ``con`` for this database (and sample size), if any."""
    scan = _scans.get(id(con))
    if scan is None or scan.database != database or (sample is not None and scan.sample != int(sample)):
        return None
    return scan

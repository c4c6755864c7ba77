"""Lake maintenance: expire snapshots, compact small files, delete files no snapshot needs,
and move old raw extracts to cold storage.

DuckLake never deletes a data file by itself: every snapshot keeps the files it read, so without
this job the lake grows with every delivery and every dbt rebuild. The steps, in DuckLake's own
CHECKPOINT order (DuckLake for DuckDB 1.5.5):

1. ``ducklake_flush_inlined_data``    small inserts kept in the catalog → Parquet
2. ``ducklake_expire_snapshots``      snapshots older than the retention (time travel ends there)
3. ``ducklake_merge_adjacent_files``  many small files of a table → few larger ones
4. ``ducklake_rewrite_data_files``    files with many deleted rows → rewritten without them
5. ``ducklake_cleanup_old_files``     files only expired snapshots used (after a grace period, so
                                      a query still reading them finishes first)
6. ``ducklake_delete_orphaned_files`` files the catalog does not know (a writer killed mid-commit)

Each step is its own catalog transaction; a step that loses a commit race to a writer is retried.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from healthlake.config import Settings, settings as load_settings
from healthlake.lake import LAKE, catalog_lock, connect, release, with_retries

# Files scheduled for deletion (or orphaned) are kept this long after they left the last
# snapshot, so that a query that started before still finds them. 0 in tests.
DEFAULT_GRACE = timedelta(hours=1)
# A data file is rewritten without its deleted rows once this share of its rows is deleted
# (DuckLake's own default leaves files alone until almost all rows are gone; every delete file
# left in place is one more file for every reader to open).
REWRITE_DELETE_THRESHOLD = 0.05


@dataclass
class MaintenanceResult:
    snapshots_before: int = 0
    snapshots_expired: int = 0
    files_merged: int = 0
    files_rewritten: int = 0
    files_deleted: int = 0
    orphans_deleted: int = 0
    data_files_before: int = 0
    data_files_after: int = 0
    live_bytes: int = 0
    cold_moved: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def metadata(self) -> dict:
        return {k: (len(v) if isinstance(v, list) else v) for k, v in self.__dict__.items()}


def _ts(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f+00")


def _count(con, sql: str) -> int:
    return con.execute(sql).fetchone()[0] or 0


def lake_file_stats(con) -> tuple[int, int]:
    """(data files, bytes) referenced by the current snapshot."""
    row = con.execute(f"SELECT count(*), coalesce(sum(file_size_bytes), 0) FROM __ducklake_metadata_{LAKE}.ducklake_data_file "
                      "WHERE end_snapshot IS NULL").fetchone()
    return int(row[0]), int(row[1])


def maintain_lake(s: Settings | None = None, *, expire_older_than: datetime | None = None,
                  delete_older_than: datetime | None = None, merge: bool = True,
                  move_cold: bool = True, today=None, con=None,
                  rewrite_delete_threshold: float = REWRITE_DELETE_THRESHOLD) -> MaintenanceResult:
    """Run every maintenance step once. Defaults: retention HEALTHLAKE_SNAPSHOT_RETENTION_DAYS,
    grace one hour; tests and the 30-day simulation pass explicit cut-offs."""
    s = s or load_settings()
    t0 = time.perf_counter()
    now = datetime.now(timezone.utc)
    expire_before = expire_older_than or now - timedelta(days=s.snapshot_retention_days)
    delete_before = delete_older_than or now - DEFAULT_GRACE
    out = MaintenanceResult()
    # One maintainer at a time (two cleanups would race to delete the same files).
    with catalog_lock("maintenance", s):
        own = con is None
        con = con or connect(s)
        try:
            meta = f"__ducklake_metadata_{LAKE}"
            out.snapshots_before = _count(con, f"SELECT count(*) FROM {meta}.ducklake_snapshot")
            out.data_files_before = _count(con, f"SELECT count(*) FROM {meta}.ducklake_data_file WHERE end_snapshot IS NULL")

            def call(sql):
                return with_retries(lambda: con.execute(sql).fetchall(), what=sql.split("(")[0])

            call(f"CALL ducklake_flush_inlined_data('{LAKE}')")
            out.snapshots_expired = len(call(
                f"CALL ducklake_expire_snapshots('{LAKE}', older_than => TIMESTAMPTZ '{_ts(expire_before)}')"))
            if merge:
                out.files_merged = len(call(f"CALL ducklake_merge_adjacent_files('{LAKE}')"))
                out.files_rewritten = len(call(
                    f"CALL ducklake_rewrite_data_files('{LAKE}', delete_threshold => {float(rewrite_delete_threshold)})"))
            out.files_deleted = len(call(
                f"CALL ducklake_cleanup_old_files('{LAKE}', older_than => TIMESTAMPTZ '{_ts(delete_before)}')"))
            out.orphans_deleted = len(call(
                f"CALL ducklake_delete_orphaned_files('{LAKE}', older_than => TIMESTAMPTZ '{_ts(delete_before)}')"))
            out.data_files_after, out.live_bytes = lake_file_stats(con)
        finally:
            if own:
                release(con)
    if move_cold and s.landing_is_s3:
        from healthlake.storage import S3Landing

        out.cold_moved = S3Landing(s).move_cold(today=today)
    out.seconds = time.perf_counter() - t0
    return out

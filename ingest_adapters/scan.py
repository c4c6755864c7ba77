"""What a reader hands to the ingest: a SQL scan of the source rows and its rejects."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import duckdb


@dataclass
class Reject:
    source_row: int  # 1-based data record number in the file (header not counted)
    raw_line: str | None
    error_type: str
    reason: str


STREAMED_LINEAGE = ("_institution_code", "_feed", "_batch_id", "_source_file")


def streamed_column(lineage_column: str) -> str:
    """The scan's column that carries a streamed lineage value (SourceScan.lineage_values)."""
    return f"__hl{lineage_column}"


@dataclass
class SourceScan:
    """A readable source.

    ``from_sql`` is a FROM-clause expression yielding one row per loaded source record,
    with the source's own column names (all VARCHAR), in file order. After the scan has
    been consumed, ``rejects(con)`` returns the records it could not load.

    Record numbers (``_source_row``): when ``ordinal_column`` names a column of the scan,
    it holds each record's own number (e.g. the Excel sheet row) and is used as is;
    when ``sequence_column`` does, it numbers the loaded records 1..n in file order;
    otherwise the ingest numbers the scanned rows 1..n in order (so a reader needs only to
    keep file order). A sequence is renumbered around the rejected records.
    """

    columns: list[str]
    from_sql: str
    rejects: Callable[[duckdb.DuckDBPyConnection], list[Reject]] = lambda con: []
    replaced_bytes: int = 0  # undecodable byte sequences replaced by U+FFFD while transcoding
    cleanup: Callable[[], None] = lambda: None
    notes: dict = field(default_factory=dict)
    ordinal_column: str | None = None
    sequence_column: str | None = None
    # When not None, the scan itself yields the per-file lineage values as columns of one value each
    # (``STREAMED_LINEAGE``, named by ``streamed_column``), read from this dict, which the ingest fills in
    # before it reads the scan: a streamed scan hands them over as run-end encoded Arrow arrays, which the
    # lake writes with less work than SQL constants (3M rows, one thread: 0.57 -> 0.36 s of CPU).
    lineage_values: dict[str, str] | None = None
    # A scan read in parts, one INSERT each (``from_sql`` then names the current part): registers the
    # next part and returns True, or returns False when the scan is read whole.
    next_part: Callable[[], bool] = lambda: False
    # Another scan of the same file, for when this one cannot load it: the ingest rolls back and reads
    # the file again with it. A scan whose parser gave up (``gave_up()`` returns why) needs it, and so
    # does a record over the scan's record limit (error type LINE SIZE OVER MAXIMUM).
    read_again: Callable[[], "SourceScan"] | None = None
    gave_up: Callable[[], str | None] = lambda: None

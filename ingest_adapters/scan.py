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


@dataclass
class SourceScan:
    """A readable source.

    ``from_sql`` is a FROM-clause expression yielding one row per loaded source record,
    with the source's own column names (all VARCHAR), in file order. After the scan has
    been consumed, ``rejects(con)`` returns the records it could not load. When
    ``ordinal_has_gaps`` is false, the n-th scanned row is data record n; otherwise the
    ingest renumbers scanned rows around the rejected records.
    """

    columns: list[str]
    from_sql: str
    rejects: Callable[[duckdb.DuckDBPyConnection], list[Reject]] = lambda con: []
    replaced_bytes: int = 0  # undecodable byte sequences replaced by U+FFFD while transcoding
    cleanup: Callable[[], None] = lambda: None
    notes: dict = field(default_factory=dict)

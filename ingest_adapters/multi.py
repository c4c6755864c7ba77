"""What a multi-data-set reader (HL7 v2 messages, FHIR resources) hands to the ingest.

One file is one batch that may fill several bronze tables. The accounting unit is the
source *record* (a message, a resource): rows read = records in scope, each either loaded
(it gave at least one bronze row, in one or more data sets) or rejected with a reason. A
record's bronze rows all carry its ordinal in the file as ``_source_row``; an HL7 ORU
message with three OBX gives three ``lab_result`` rows with the same ``_source_row``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import duckdb
import pyarrow as pa

from catalog.standard import Dataset
from ingest_adapters.errors import RegistryError
from ingest_adapters.registry import Feed
from ingest_adapters.scan import Reject

ORDINAL = "__ord"


class Rows:
    """Rows per data set, in the elements each feed mapping gives, kept as Python lists."""

    def __init__(self, feed: Feed):
        self.columns = {m.dataset: list(m.elements) for m in feed.mappings}
        self.data: dict[str, list[list]] = {d: [[] for _ in range(len(c) + 1)] for d, c in self.columns.items()}

    def add(self, dataset: str, ordinal: int, values: list[str | None]) -> None:
        cols = self.data[dataset]
        cols[0].append(ordinal)
        for i, v in enumerate(values, start=1):
            cols[i].append(v)

    def counts(self) -> dict[str, int]:
        return {d: len(cols[0]) for d, cols in self.data.items()}

    def tables(self) -> dict[str, pa.Table]:
        out = {}
        for d, cols in self.data.items():
            names = [ORDINAL] + self.columns[d]
            arrays = [pa.array(cols[0], pa.int64())] + [pa.array(c, pa.string()) for c in cols[1:]]
            out[d] = pa.Table.from_arrays(arrays, names=names)
        return out


@dataclass
class MultiScan:
    """``tables``: data set -> Arrow table of ``__ord`` (record ordinal) + mapped element
    columns (text). ``records`` = records in scope = loaded + len(rejects). ``on_commit`` runs
    inside the batch's transaction (e.g. to index the file's FHIR resources for later files)."""

    tables: dict[str, pa.Table]
    records: int
    loaded: int
    rejects: list[Reject]
    notes: dict = field(default_factory=dict)
    on_commit: Callable[[duckdb.DuckDBPyConnection, str], None] | None = None
    cleanup: Callable[[], None] = lambda: None

    def __post_init__(self):
        if self.records != self.loaded + len(self.rejects):
            raise AssertionError(f"reader accounting: {self.records} records != {self.loaded} loaded + "
                                 f"{len(self.rejects)} rejected")


class MappingChecker:
    """Validates one data set's mapping of a multi-data-set feed; ``options`` are the
    per-data-set keys the format understands besides data elements."""

    options: frozenset[str] = frozenset()

    def __call__(self, where: str, ds: Dataset, elements: dict[str, str], options: dict) -> None:
        raise NotImplementedError


def fail(message: str) -> RegistryError:
    return RegistryError(message)

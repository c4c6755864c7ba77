"""One registry of readers: ``get_reader("csv")``. An unknown name suggests the closest one."""

from __future__ import annotations

import difflib
from typing import Callable

from ingest_adapters.errors import UnknownReaderError

_READERS: dict[str, str] = {
    # format name -> "module:function"; modules are imported when first used.
    "csv": "ingest_adapters.delimited:open_csv",
    "excel": "ingest_adapters.excel:open_excel",
    "json": "ingest_adapters.jsonl:open_json",
    "ndjson": "ingest_adapters.jsonl:open_ndjson",
}


# Feed options each format understands (beyond id, dataset, format, mapping, encoding,
# delimiter, quote, cadence); the registry refuses others, suggesting the closest.
READER_OPTIONS: dict[str, frozenset[str]] = {
    "csv": frozenset(),
    "excel": frozenset({"sheet", "header_row"}),
    "json": frozenset({"records_path"}),
    "ndjson": frozenset(),
}
# Options any feed may carry: documentation of its value formats, its quality threshold.
COMMON_OPTIONS = frozenset({"value_formats", "quality_threshold", "description"})


def reader_options(name: str) -> frozenset[str]:
    return READER_OPTIONS.get(name, frozenset()) | COMMON_OPTIONS


def reader_names() -> list[str]:
    return sorted(_READERS)


def get_reader(name: str) -> Callable:
    if name not in _READERS:
        close = difflib.get_close_matches(name, _READERS, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise UnknownReaderError(f"no reader for format '{name}'{hint}; known: {', '.join(reader_names())}")
    module, func = _READERS[name].split(":")
    import importlib

    return getattr(importlib.import_module(module), func)

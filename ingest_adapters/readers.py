"""One registry of readers: ``get_reader("csv")``. An unknown name suggests the closest one."""

from __future__ import annotations

import difflib
import functools
import os
from typing import Callable

from ingest_adapters.errors import UnknownReaderError

_READERS: dict[str, str] = {
    # format name -> "module:function"; modules are imported when first used.
    "csv": "ingest_adapters.delimited:open_csv",
    "excel": "ingest_adapters.excel:open_excel",
    "json": "ingest_adapters.jsonl:open_json",
    "ndjson": "ingest_adapters.jsonl:open_ndjson",
    "hl7v2": "ingest_adapters.hl7v2:open_hl7v2",
    "fhir": "ingest_adapters.fhir:open_fhir",
    "dicom": "ingest_adapters.dicom:open_dicom",
    "sqlite": "ingest_adapters.frontend_db:open_sqlite",
    "postgres": "ingest_adapters.frontend_db:open_postgres",
}

# Formats whose one file fills several data sets (a message or resource per row unit): their
# registry mapping is keyed by data set and checked by the reader's own MappingChecker.
_MULTI_DATASET: dict[str, str] = {
    "hl7v2": "ingest_adapters.hl7v2:MAPPING_CHECKER",
    "fhir": "ingest_adapters.fhir:MAPPING_CHECKER",
}


# Feed options each format understands (beyond id, dataset, format, mapping, encoding,
# delimiter, quote, cadence); the registry refuses others, suggesting the closest.
READER_OPTIONS: dict[str, frozenset[str]] = {
    "csv": frozenset(),
    "excel": frozenset({"sheet", "header_row"}),
    "json": frozenset({"records_path"}),
    "ndjson": frozenset(),
    "hl7v2": frozenset({"message_types"}),
    "fhir": frozenset(),
    "dicom": frozenset(),
    "sqlite": frozenset({"database", "table", "watermark"}),
    "postgres": frozenset({"database", "schema", "table", "watermark"}),
}
# Options any feed may carry: documentation of its value formats, its quality threshold.
COMMON_OPTIONS = frozenset({"value_formats", "quality_threshold", "description"})


def reader_options(name: str) -> frozenset[str]:
    return READER_OPTIONS.get(name, frozenset()) | COMMON_OPTIONS


def reader_names() -> list[str]:
    return sorted(_READERS)


def is_multi_dataset(name: str) -> bool:
    return name in _MULTI_DATASET


def multi_dataset_checker(name: str):
    """The mapping checker of a multi-data-set format, or None for single-data-set formats."""
    if name not in _MULTI_DATASET:
        return None
    import importlib

    module, attr = _MULTI_DATASET[name].split(":")
    return getattr(importlib.import_module(module), attr)


@functools.cache
def use_jemalloc() -> None:
    """Make Arrow's jemalloc pool the process's default (once per process), unless the operator chose
    one (``ARROW_DEFAULT_MEMORY_POOL``) or the build lacks it. Arrow's default, mimalloc, gives large
    buffers (the CSV reader's 4 MB blocks as read from the file, the parsed columns) fresh transparent
    huge pages, which the kernel zeroes 2 MB at a time: in perf profiles of ``bench ingest_csv``'s
    ingest (5M rows) the kernel's page clearing took 10-14 % of the CPU samples with mimalloc, 1.3 %
    with jemalloc. Six runs each, interleaved: kernel time 1.5-1.75 s -> 0.7-1.2 s, median wall time
    4.47 -> 4.37 s (user time rose by ~0.25 s: smaller pages). Passing the pool to the CSV reader alone
    does not do it: the reader's file reads allocate from the default pool."""
    if os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        return
    import pyarrow as pa

    if pa.default_memory_pool().backend_name == "jemalloc":
        return
    try:
        pa.set_memory_pool(pa.jemalloc_memory_pool())
    except NotImplementedError:
        pass


def get_reader(name: str) -> Callable:
    if name not in _READERS:
        close = difflib.get_close_matches(name, _READERS, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise UnknownReaderError(f"no reader for format '{name}'{hint}; known: {', '.join(reader_names())}")
    module, func = _READERS[name].split(":")
    import importlib

    use_jemalloc()
    return getattr(importlib.import_module(module), func)

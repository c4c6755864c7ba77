"""Collect institution extracts into bronze (数据采集)."""

from ingest_adapters.errors import IngestError, RegistryError, UnknownReaderError, UnreadableFileError
from ingest_adapters.ingest import BatchResult, ingest_file, ingest_landing
from ingest_adapters.readers import get_reader, reader_names
from ingest_adapters.registry import Registry, load_registry, parse_registry

__all__ = [
    "BatchResult", "IngestError", "Registry", "RegistryError", "UnknownReaderError", "UnreadableFileError",
    "get_reader", "ingest_file", "ingest_landing", "load_registry", "parse_registry", "reader_names",
]

"""The standard data sets (标准数据集): loaded once from ``standard_datasets.yaml``.

Bronze tables are built from them: every data element as VARCHAR (source values kept as
text), followed by the lineage columns every bronze row carries.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from healthlake.yamlfile import read_yaml

STANDARD_FILE = Path(__file__).with_name("standard_datasets.yaml")

# Lineage columns on every bronze row, in order, with their DuckDB types.
LINEAGE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("_institution_code", "VARCHAR"),
    ("_feed", "VARCHAR"),
    ("_batch_id", "VARCHAR"),
    ("_source_file", "VARCHAR"),
    ("_source_row", "BIGINT"),
    ("_ingested_at", "TIMESTAMP WITH TIME ZONE"),
    # DuckDB's 64-bit hash of the row's mapped values, for spotting unchanged re-sent records.
    # Not md5: md5 over the concatenated row cost 0.9 s per 1M rows, 40 % of the ingest
    # (bench/ingest_csv.py); hash() costs 0.5 s. Stable for the pinned DuckDB (1.5.5).
    ("_row_hash", "UBIGINT"),
)

CATEGORIES = ("个人属性", "健康状况", "医疗应用", "医疗支付", "卫生资源", "公共卫生")
TYPES = ("string", "date", "timestamp", "integer", "decimal")


class StandardError(ValueError):
    """A standard data set definition or a reference to it is wrong."""


@dataclass(frozen=True)
class Element:
    name: str
    zh: str
    type: str
    category: str
    level: int
    de: str | None = None
    value_set: str | None = None
    required: bool = False
    key: bool = False


@dataclass(frozen=True)
class Dataset:
    name: str
    zh: str
    domain: str
    description: str
    elements: tuple[Element, ...] = field(default_factory=tuple)

    @property
    def element_names(self) -> list[str]:
        return [e.name for e in self.elements]

    @property
    def key_elements(self) -> list[str]:
        return [e.name for e in self.elements if e.key]

    def element(self, name: str) -> Element:
        for e in self.elements:
            if e.name == name:
                return e
        raise StandardError(f"data set '{self.name}' has no data element '{name}'{_suggest(name, self.element_names)}")

    def bronze_columns(self) -> list[tuple[str, str]]:
        return [(e.name, "VARCHAR") for e in self.elements] + list(LINEAGE_COLUMNS)


def _suggest(name: str, options) -> str:
    close = difflib.get_close_matches(name, list(options), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


@lru_cache(maxsize=1)
def datasets() -> dict[str, Dataset]:
    raw = read_yaml(STANDARD_FILE)["datasets"]
    out = {}
    for name, d in raw.items():
        elements = []
        for e in d["elements"]:
            el = Element(**e)
            if el.type not in TYPES:
                raise StandardError(f"{name}.{el.name}: unknown type '{el.type}'{_suggest(el.type, TYPES)}")
            if el.category not in CATEGORIES:
                raise StandardError(f"{name}.{el.name}: unknown GB/T 39725 category '{el.category}'")
            if not 1 <= el.level <= 5:
                raise StandardError(f"{name}.{el.name}: level {el.level} is outside 1-5")
            elements.append(el)
        out[name] = Dataset(name=name, zh=d["zh"], domain=d["domain"], description=d.get("description", ""),
                            elements=tuple(elements))
    return out


def get_dataset(name: str) -> Dataset:
    ds = datasets()
    if name not in ds:
        raise StandardError(f"unknown standard data set '{name}'{_suggest(name, ds)}; known: {', '.join(ds)}")
    return ds[name]


def bronze_ddl(dataset: str, schema: str = "bronze") -> str:
    cols = ", ".join(f'"{c}" {t}' for c, t in get_dataset(dataset).bronze_columns())
    return f"CREATE TABLE IF NOT EXISTS {schema}.{dataset} ({cols})"

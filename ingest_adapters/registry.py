"""The feed registry: institutions and the feeds they send, per deployment (YAML).

Loaded and validated with clear errors: an unknown format, data set or data element
suggests the closest name.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from catalog.standard import StandardError, get_dataset
from ingest_adapters.errors import RegistryError

INSTITUTION_KINDS = ("hospital", "maternal_child", "township_health_centre", "community_health_centre", "cdc", "other")
ENCODINGS = ("utf-8", "utf-8-sig", "gb18030", "gbk")


def _suggest(name, options) -> str:
    close = difflib.get_close_matches(str(name), [str(o) for o in options], n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


@dataclass(frozen=True)
class Feed:
    id: str
    dataset: str
    format: str
    mapping: dict[str, str]
    encoding: str = "utf-8"
    delimiter: str = ","
    quote: str = '"'
    cadence: str = "daily"
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Institution:
    code: str
    name: str
    kind: str
    level: str
    division_code: str
    feeds: tuple[Feed, ...]

    def feed(self, feed_id: str) -> Feed:
        for f in self.feeds:
            if f.id == feed_id:
                return f
        raise RegistryError(f"institution {self.code} has no feed '{feed_id}'{_suggest(feed_id, [f.id for f in self.feeds])}")


@dataclass(frozen=True)
class Registry:
    deployment: dict
    institutions: tuple[Institution, ...]
    path: Path | None = None

    def institution(self, code: str) -> Institution:
        for i in self.institutions:
            if i.code == code:
                return i
        raise RegistryError(f"institution '{code}' is not in the registry{_suggest(code, [i.code for i in self.institutions])}")


def _feed(inst_code: str, raw: dict) -> Feed:
    from ingest_adapters.readers import reader_names, reader_options  # late: readers import this module

    where = f"institution {inst_code} feed {raw.get('id', '?')}"
    for key in ("id", "dataset", "format", "mapping"):
        if key not in raw:
            raise RegistryError(f"{where}: missing '{key}'")
    if raw["format"] not in reader_names():
        raise RegistryError(f"{where}: unknown format '{raw['format']}'{_suggest(raw['format'], reader_names())}; "
                            f"known: {', '.join(reader_names())}")
    try:
        ds = get_dataset(raw["dataset"])
    except StandardError as e:
        raise RegistryError(f"{where}: {e}") from None
    mapping = {str(k): str(v) for k, v in (raw["mapping"] or {}).items()}
    for element in mapping:
        if element not in ds.element_names:
            raise RegistryError(f"{where}: data set '{ds.name}' has no data element '{element}'"
                                f"{_suggest(element, ds.element_names)}")
    missing_keys = [k for k in ds.key_elements if k not in mapping]
    if missing_keys:
        raise RegistryError(f"{where}: the mapping must give the business key {missing_keys} of '{ds.name}'")
    encoding = str(raw.get("encoding", "utf-8")).lower()
    if encoding not in ENCODINGS:
        raise RegistryError(f"{where}: unknown encoding '{encoding}'{_suggest(encoding, ENCODINGS)}")
    known = {"id", "dataset", "format", "mapping", "encoding", "delimiter", "quote", "cadence"}
    allowed = reader_options(raw["format"])
    for option in raw:
        if option not in known and option not in allowed:
            raise RegistryError(f"{where}: unknown option '{option}' for format {raw['format']}"
                                f"{_suggest(option, sorted(known | allowed))}")
    return Feed(id=str(raw["id"]), dataset=ds.name, format=raw["format"], mapping=mapping, encoding=encoding,
                delimiter=str(raw.get("delimiter", ",")), quote=str(raw.get("quote", '"')),
                cadence=str(raw.get("cadence", "daily")),
                options={k: v for k, v in raw.items() if k not in known})


def parse_registry(data: dict, path: Path | None = None) -> Registry:
    if not isinstance(data, dict) or "institutions" not in data:
        raise RegistryError(f"{path or 'registry'}: expected a mapping with 'institutions'")
    institutions, seen = [], set()
    for raw in data["institutions"]:
        code = str(raw.get("code", ""))
        if not code:
            raise RegistryError(f"{path or 'registry'}: an institution has no code")
        if code in seen:
            raise RegistryError(f"institution code {code} appears twice")
        seen.add(code)
        kind = raw.get("kind", "other")
        if kind not in INSTITUTION_KINDS:
            raise RegistryError(f"institution {code}: unknown kind '{kind}'{_suggest(kind, INSTITUTION_KINDS)}")
        feeds = tuple(_feed(code, f) for f in raw.get("feeds") or [])
        ids = [f.id for f in feeds]
        if len(set(ids)) != len(ids):
            raise RegistryError(f"institution {code}: duplicate feed ids {ids}")
        institutions.append(Institution(code=code, name=str(raw.get("name", code)), kind=kind,
                                        level=str(raw.get("level", "未定级")),
                                        division_code=str(raw.get("division_code", "")), feeds=feeds))
    return Registry(deployment=data.get("deployment") or {}, institutions=tuple(institutions), path=path)


def load_registry(path: Path) -> Registry:
    path = Path(path)
    if not path.exists():
        raise RegistryError(f"no feed registry at {path}: generate a city (`healthlake generate`) or set HEALTHLAKE_REGISTRY")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise RegistryError(f"{path}: not valid YAML: {e}") from None
    return parse_registry(data, path)

"""The feed registry: institutions and the feeds they send, per deployment (YAML).

Loaded and validated with clear errors: an unknown format, data set or data element
suggests the closest name.

Most formats fill one standard data set per feed: ``dataset: person`` and ``mapping:
{element: source column}``. Message and resource formats (``hl7v2``, ``fhir``) fill several
at once, so their mapping is keyed by data set, each with its own element paths and a few
per-data-set options (e.g. HL7 ``segment: OBX``, FHIR ``resource: Observation``)::

    format: hl7v2
    mapping:
      person:     {patient_id: PID-3.1, name: PID-5.1}
      lab_result: {segment: OBX, messages: [ORU^R01], lab_result_id: "{MSH-10}-{OBX-1}", ...}
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path

from catalog.standard import StandardError, get_dataset
from healthlake.yamlfile import YAMLError, read_yaml
from ingest_adapters.errors import RegistryError

INSTITUTION_KINDS = ("hospital", "maternal_child", "township_health_centre", "community_health_centre", "cdc", "other")
ENCODINGS = ("utf-8", "utf-8-sig", "gb18030", "gbk")


def _suggest(name, options) -> str:
    close = difflib.get_close_matches(str(name), [str(o) for o in options], n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


@dataclass(frozen=True)
class DatasetMapping:
    """How a multi-data-set feed fills one standard data set: element -> source path, and
    the reader's per-data-set options (which segment or resource gives the rows, filters)."""
    dataset: str
    elements: dict[str, str]
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Feed:
    id: str
    dataset: str  # a multi-data-set feed: its first data set
    format: str
    mapping: dict[str, str]  # a multi-data-set feed: its first data set's elements
    encoding: str = "utf-8"
    delimiter: str = ","
    quote: str = '"'
    cadence: str = "daily"
    options: dict = field(default_factory=dict)
    # Multi-data-set formats (hl7v2, fhir): every data set the feed fills, in mapping order.
    mappings: tuple[DatasetMapping, ...] = ()

    @property
    def datasets(self) -> list[str]:
        return [m.dataset for m in self.mappings] if self.mappings else [self.dataset]


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

    from ingest_adapters.readers import multi_dataset_checker

    where = f"institution {inst_code} feed {raw.get('id', '?')}"
    for key in ("id", "format", "mapping"):
        if key not in raw:
            raise RegistryError(f"{where}: missing '{key}'")
    if raw["format"] not in reader_names():
        raise RegistryError(f"{where}: unknown format '{raw['format']}'{_suggest(raw['format'], reader_names())}; "
                            f"known: {', '.join(reader_names())}")
    checker = multi_dataset_checker(raw["format"])
    if checker is not None:
        return _multi_feed(where, raw, checker)
    if "dataset" not in raw:
        raise RegistryError(f"{where}: missing 'dataset'")
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


def _common_options(where: str, raw: dict, known: set[str]) -> tuple[str, dict]:
    from ingest_adapters.readers import reader_options

    encoding = str(raw.get("encoding", "utf-8")).lower()
    if encoding not in ENCODINGS:
        raise RegistryError(f"{where}: unknown encoding '{encoding}'{_suggest(encoding, ENCODINGS)}")
    allowed = reader_options(raw["format"])
    for option in raw:
        if option not in known and option not in allowed:
            raise RegistryError(f"{where}: unknown option '{option}' for format {raw['format']}"
                                f"{_suggest(option, sorted(known | allowed))}")
    return encoding, {k: v for k, v in raw.items() if k not in known}


def _multi_feed(where: str, raw: dict, checker) -> Feed:
    """A feed whose mapping is keyed by data set (hl7v2, fhir). ``checker(where, dataset,
    elements, options)`` is the reader's own validation of paths and per-data-set options."""
    mapping = raw["mapping"]
    if not isinstance(mapping, dict) or not mapping:
        raise RegistryError(f"{where}: format {raw['format']} needs a mapping keyed by data set, e.g. "
                            f"mapping: {{person: {{patient_id: ...}}, encounter: {{...}}}}")
    mappings = []
    for name, spec in mapping.items():
        try:
            ds = get_dataset(str(name))
        except StandardError as e:
            raise RegistryError(f"{where}: mapping: {e}") from None
        if not isinstance(spec, dict) or not spec:
            raise RegistryError(f"{where}: mapping.{ds.name} must map data elements to source paths, got {spec!r}")
        elements, options = {}, {}
        reader_keys = checker.options
        for k, v in spec.items():
            k = str(k)
            if k in ds.element_names:
                if not isinstance(v, str) or not v.strip():
                    raise RegistryError(f"{where}: mapping.{ds.name}.{k} must be a source path (text), got {v!r}")
                elements[k] = v
            elif k in reader_keys:
                options[k] = v
            else:
                raise RegistryError(f"{where}: data set '{ds.name}' has no data element '{k}'"
                                    f"{_suggest(k, ds.element_names + sorted(reader_keys))} "
                                    f"(and {raw['format']} has no such mapping option; options: "
                                    f"{', '.join(sorted(reader_keys))})")
        missing_keys = [k for k in ds.key_elements if k not in elements]
        if missing_keys:
            raise RegistryError(f"{where}: mapping.{ds.name} must give the business key {missing_keys}")
        checker(f"{where}: mapping.{ds.name}", ds, elements, options)
        mappings.append(DatasetMapping(dataset=ds.name, elements=elements, options=options))
    if "dataset" in raw and raw["dataset"] not in [m.dataset for m in mappings]:
        raise RegistryError(f"{where}: 'dataset: {raw['dataset']}' is not one of the mapped data sets "
                            f"{[m.dataset for m in mappings]} (a {raw['format']} feed may omit 'dataset')")
    known = {"id", "dataset", "format", "mapping", "encoding", "cadence"}
    encoding, options = _common_options(where, raw, known)
    return Feed(id=str(raw["id"]), dataset=mappings[0].dataset, format=raw["format"], mapping=dict(mappings[0].elements),
                encoding=encoding, cadence=str(raw.get("cadence", "daily")), options=options, mappings=tuple(mappings))


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
        data = read_yaml(path)
    except YAMLError as e:
        raise RegistryError(f"{path}: not valid YAML: {e}") from None
    return parse_registry(data, path)

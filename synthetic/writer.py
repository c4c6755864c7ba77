"""Writing extract files: value formats, CSV quoting, encodings, injected defects, bookkeeping.

One ``FeedFile`` per feed per delivery day. Every row goes through ``Sink.emit``, which applies the
institution's defect profile, formats the values the institution's way, writes the physical line
and records what it did in the truth (defects, identities, the ledger behind summary.json).
"""

from __future__ import annotations

import codecs
from datetime import date
from pathlib import Path

from synthetic.defects import BAD_SEX, apply_row_defects, draw_malformed
from synthetic.feeds import Feed
from synthetic.rng import rng
from synthetic.truth import Truth

UNDECODABLE = b"\xff\xfe?"   # FF is never valid in UTF-8 or GB18030; '?' keeps FE from eating the next byte
_MARK = "\x00"                # placeholder for the undecodable bytes while the line is text
_PREFERRED_TARGETS = ("name", "department_name", "drug_name", "item_name", "diagnosis_name", "vaccine_name",
                      "title", "unit", "frequency")


def _date_iso(v):
    return "" if v is None else f"{v.year:04d}-{v.month:02d}-{v.day:02d}"


def _date_compact(v):
    return "" if v is None else f"{v.year:04d}{v.month:02d}{v.day:02d}"


def _ts_iso(v):
    return "" if v is None else (f"{v.year:04d}-{v.month:02d}-{v.day:02d} "
                                 f"{v.hour:02d}:{v.minute:02d}:{v.second:02d}")


def _ts_compact(v):
    return "" if v is None else f"{v.year:04d}{v.month:02d}{v.day:02d}{v.hour:02d}{v.minute:02d}{v.second:02d}"


_SEX_CODE = {"1": "1", "2": "2", BAD_SEX: "3"}
_SEX_TEXT = {"1": "男", "2": "女", BAD_SEX: "不明"}


def _sex_code(v):
    return "" if v is None else _SEX_CODE.get(v, v)


def _sex_text(v):
    return "" if v is None else _SEX_TEXT.get(v, v)


def _text(v):
    return "" if v is None else str(v)


def formatters(feed: Feed) -> list:
    inst = feed.inst
    out = []
    for element, typ in zip(feed.elements, feed.types):
        if element == "sex_code":
            out.append(_sex_text if inst.sex_format == "text" else _sex_code)
        elif typ == "date":
            out.append(_date_compact if inst.date_format == "compact" else _date_iso)
        elif typ == "timestamp":
            out.append(_ts_compact if inst.date_format == "compact" else _ts_iso)
        else:
            out.append(_text)
    return out


def quote(s: str) -> str:
    """Minimal CSV quoting: only fields holding the delimiter, a quote or a line break."""
    if "," in s or '"' in s or "\n" in s or "\r" in s:
        return '"' + s.replace('"', '""') + '"'
    return s


def defect_target(feed, plain: list[int]) -> int:
    """The field a malformed-value defect goes into: the first preferred element among the
    ``plain`` field positions (values the format writes unescaped), else the last plain one."""
    for name in _PREFERRED_TARGETS:
        if name in feed.elements:
            j = feed.elements.index(name)
            if j in plain:
                return j
    return plain[-1] if plain else 0


class FeedFile:
    """A CSV extract (the other formats: synthetic/formats.py, same interface)."""

    malformations = frozenset({"malformed_ragged", "malformed_bad_quote", "malformed_undecodable"})

    def __init__(self, landing: Path, seed: int, feed: Feed, day: date):
        self.feed = feed
        self.rel = feed.file_name(day)
        path = landing / self.rel
        path.parent.mkdir(parents=True, exist_ok=True)
        inst = feed.inst
        self.encoding = "utf-8" if inst.encoding == "utf-8-sig" else inst.encoding
        self.eol = inst.eol
        self.fh = open(path, "wb", buffering=1 << 16)
        if inst.encoding == "utf-8-sig":
            self.fh.write(codecs.BOM_UTF8)
        self.fh.write((",".join(quote(c) for c in feed.columns) + self.eol).encode(self.encoding))
        self.fmts = formatters(feed)
        self.rng = rng(seed, "defects", inst.code, feed.id, day.isoformat())
        self.rows = 0
        self.duplicates: list[tuple[bytes, str, list]] = []

    def line(self, fields: list[str], malformed: str | None) -> tuple[bytes, str]:
        """The physical line, and the element a malformation sits in ('' when none or ragged)."""
        parts = [quote(f) for f in fields]
        element = ""
        if malformed == "malformed_ragged":
            parts.append("补录")
        elif malformed:
            j = self._target(fields)
            element = self.feed.elements[j]
            if malformed == "malformed_bad_quote":
                parts[j] = f'"{fields[j]}"x'
            else:
                parts[j] = fields[j] + _MARK
        data = (",".join(parts) + self.eol).encode(self.encoding)
        if malformed == "malformed_undecodable":
            data = data.replace(_MARK.encode(), UNDECODABLE)
        return data, element

    def _target(self, fields: list[str]) -> int:
        return defect_target(self.feed, [j for j, f in enumerate(fields) if f and quote(f) == f])

    def write(self, data: bytes) -> None:
        self.fh.write(data)

    def close(self) -> bool:
        self.fh.close()
        return True


def open_feed_file(landing: Path, seed: int, feed: Feed, day: date):
    if feed.format == "csv":
        return FeedFile(landing, seed, feed, day)
    from synthetic.formats import FILE_CLASSES

    return FILE_CLASSES[feed.format](landing, seed, feed, day)


class Sink:
    """Routes rows to the open day's files and keeps the truth."""

    IDENTITY_DATASETS = ("person", "health_record", "immunization")

    def __init__(self, landing: Path, seed: int, truth: Truth, rates: dict[str, dict], residents: int):
        self.landing = landing
        self.seed = seed
        self.truth = truth
        self.rates = rates
        self.files: dict[tuple[str, str], FeedFile] = {}
        self.valid_id_persons = bytearray(residents)
        self.files_written = 0
        self.files_per_feed: dict[tuple[str, str], int] = {}   # (institution, data set) -> files delivered

    def open_day(self, feeds: list[Feed], day: date) -> None:
        assert not self.files, "close the previous day first"
        for feed in feeds:
            self.files[(feed.inst.code, feed.dataset)] = open_feed_file(self.landing, self.seed, feed, day)

    def close_day(self) -> None:
        for ff in self.files.values():
            self._flush_duplicates(ff)
            if ff.close():
                self.files_written += 1
                k = (ff.feed.inst.code, ff.feed.dataset)
                self.files_per_feed[k] = self.files_per_feed.get(k, 0) + 1
        self.files = {}

    def emit(self, inst, dataset: str, values: dict, key: str, *, first: bool = True,
             person_idx: int | None = None, id_defect: str = "none") -> None:
        ff = self.files[(inst.code, dataset)]
        feed = ff.feed
        rates = self.rates[inst.code]
        defects = apply_row_defects(ff.rng, rates, dataset, values, feed.mapping)
        if id_defect != "none" and "id_number" in feed.mapping:
            defects.append(("id_number", id_defect))
        fields = [fmt(values.get(e)) for e, fmt in zip(feed.elements, ff.fmts)]
        malformed = draw_malformed(ff.rng, rates)
        if malformed not in ff.malformations:
            malformed = None   # a format that cannot carry it (a workbook, a SQLite row, a FHIR resource)
        data, where = ff.line(fields, malformed)
        ff.write(data)
        ff.rows += 1
        t = self.truth
        for element, defect in defects:
            t.defect(feed, ff.rel, ff.rows, key, element, defect)
        if malformed:
            t.defect(feed, ff.rel, ff.rows, key, where, malformed)
        t.ledger.row(inst.code, dataset, key, first=first, malformed=malformed is not None)
        if first and dataset in self.IDENTITY_DATASETS:
            t.identity(inst.code, dataset, key, values.get("id_number") or "", person_idx, id_defect)
        if malformed is None:
            if dataset in ("person", "health_record") and id_defect == "none" and person_idx is not None:
                self.valid_id_persons[person_idx] = 1
            if ff.rng.random() < rates["duplicate_row"]:
                ff.duplicates.append((data, key, defects))

    def _flush_duplicates(self, ff: FeedFile) -> None:
        feed = ff.feed
        for data, key, defects in ff.duplicates:
            ff.write(data)
            ff.rows += 1
            for element, defect in defects:
                self.truth.defect(feed, ff.rel, ff.rows, key, element, defect)
            self.truth.defect(feed, ff.rel, ff.rows, key, "", "duplicate_row")
            self.truth.ledger.duplicate(feed.inst.code, feed.dataset)
        ff.duplicates = []


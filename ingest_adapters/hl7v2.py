"""HL7 v2 messages (hospital HIS/LIS interfaces): ADT, ORU^R01, VXU^V04, ORM/OML orders.

A file holds one or more messages: ``\\r``, ``\\n`` or ``\\r\\n`` segment separators, with
or without MLLP framing (``0x0b`` message ``0x1c 0x0d``), with or without batch envelopes
(FHS/BHS/BTS/FTS, skipped). Each message is parsed with python-hl7 (``hl7.parse``).

One message fills several standard data sets at once; the feed's mapping says how, per
data set, with HL7 field paths::

    mapping:
      person:     {patient_id: "PID-3[5=MR].1", name: PID-5.1, sex_code: PID-8, birth_date: PID-7}
      encounter:  {encounter_id: PV1-19.1, patient_id: PID-3.1, visit_type_code: PV1-2, visit_at: PV1-44}
      lab_result: {segment: OBX, messages: [ORU^R01], lab_result_id: "{MSH-10}-{OBX-1}", item_code: OBX-3.1,
                   result_value: OBX-5, unit: OBX-6.1, reference_range: OBX-7, abnormal_flag: OBX-8, ...}

Paths: ``SEG-field[(repetition)|[component=value]][.component[.subcomponent]]``; without a
component the whole field (first repetition) is taken as text. ``{path}`` inside a text
builds a value from several fields; ``a | b`` takes the first non-empty. Escapes (\\F\\ \\S\\
\\T\\ \\R\\ \\E\\, \\Xhh..\\ in the message's character set, \\.br\\) are resolved per value.

Rows: a data set with ``segment: OBX`` gives one row per OBX; other segments in its paths
are read from the nearest one before that OBX (its OBR, its PID), else the message's first.
Without ``segment`` a data set gives one row per message that holds the segment of its
business key. ``messages: [ORU^R01]`` limits a data set to those message types.

Accounting: the unit is the message (``_source_row`` = its ordinal in the file). A message
without MSH, with a broken segment, wrong encoding characters, bytes invalid in its
character set, or a type the feed does not collect (feed option ``message_types``) is
rejected with the reason and the raw message; the rest of the file loads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import duckdb
import hl7

from catalog.standard import Dataset
from ingest_adapters.errors import UnreadableFileError
from ingest_adapters.multi import MappingChecker, MultiScan, Rows, fail
from ingest_adapters.registry import Feed
from ingest_adapters.scan import Reject

__all__ = ["open_hl7v2", "split_messages", "unescape", "MAPPING_CHECKER", "DEFAULT_MESSAGE_TYPES"]

# What a feed collects unless its option message_types says otherwise.
DEFAULT_MESSAGE_TYPES = ("ADT^A01", "ADT^A03", "ADT^A04", "ADT^A08", "ORU^R01", "VXU^V04", "ORM^O01", "OML^O21",
                         "OMG^O19")
ENVELOPE = (b"FHS", b"BHS", b"BTS", b"FTS")
SB, EB = b"\x0b", b"\x1c"

# MSH-18 character set -> Python codec (HL7 table 0211 and what Chinese HIS put there).
CHARSETS = {"ASCII": "ascii", "8859/1": "latin-1", "UNICODE UTF-8": "utf-8", "UTF-8": "utf-8", "UTF8": "utf-8",
            "GB 18030-2000": "gb18030", "GB18030": "gb18030", "GB 18030": "gb18030", "GBK": "gbk",
            "GB2312": "gb18030", "CNS 11643-1992": "big5"}

_PATH = re.compile(r"^(?P<seg>[A-Z][A-Z0-9]{2})-(?P<field>\d{1,3})"
                   r"(?:\((?P<rep>\d{1,3})\)|\[(?P<fc>\d{1,2})=(?P<fv>[^\]]*)\])?"
                   r"(?:\.(?P<comp>\d{1,3})(?:\.(?P<sub>\d{1,3}))?)?$")
_TEMPLATE = re.compile(r"\{([^{}]+)\}")
_SEGMENT_ID = re.compile(r"^[A-Z][A-Z0-9]{2}$")


# ------------------------------------------------------------------ paths

@dataclass(frozen=True)
class Path7:
    seg: str
    field: int
    rep: int = 1
    filter: tuple[int, str] | None = None  # (component, value): the first repetition whose component equals value
    comp: int | None = None
    sub: int | None = None


def parse_path(text: str) -> Path7:
    m = _PATH.match(text.strip())
    if not m:
        raise ValueError(f"'{text}' is not an HL7 field path like PID-5.1, PID-3(2).1 or PID-3[5=MR].1")
    return Path7(seg=m["seg"], field=int(m["field"]), rep=int(m["rep"] or 1),
                 filter=(int(m["fc"]), m["fv"]) if m["fc"] else None,
                 comp=int(m["comp"]) if m["comp"] else None, sub=int(m["sub"]) if m["sub"] else None)


@dataclass(frozen=True)
class Expr:
    """An element's source: alternatives (``a | b``), each a path or a template of paths."""
    alternatives: tuple[tuple[str | Path7, ...], ...]  # each: literal text and paths, concatenated

    @property
    def segments(self) -> list[str]:
        return [p.seg for alt in self.alternatives for p in alt if isinstance(p, Path7)]


def parse_expr(text: str) -> Expr:
    alts = []
    for alt in text.split(" | "):
        alt = alt.strip()
        if "{" in alt:
            parts, pos = [], 0
            for m in _TEMPLATE.finditer(alt):
                if m.start() > pos:
                    parts.append(alt[pos:m.start()])
                parts.append(parse_path(m.group(1)))
                pos = m.end()
            if pos < len(alt):
                parts.append(alt[pos:])
            if not any(isinstance(p, Path7) for p in parts) or "{" in "".join(p for p in parts if isinstance(p, str)):
                raise ValueError(f"'{alt}' is not a template like '{{MSH-10}}-{{OBX-1}}'")
            alts.append(tuple(parts))
        else:
            alts.append((parse_path(alt),))
    return Expr(tuple(alts))


class _Checker(MappingChecker):
    options = frozenset({"segment", "messages"})

    def __call__(self, where: str, ds: Dataset, elements: dict[str, str], options: dict) -> None:
        for element, text in elements.items():
            try:
                parse_expr(text)
            except ValueError as e:
                raise fail(f"{where}.{element}: {e}") from None
        seg = options.get("segment")
        if seg is not None and not (isinstance(seg, str) and _SEGMENT_ID.match(seg)):
            raise fail(f"{where}.segment: '{seg}' is not a segment id like OBX")
        msgs = options.get("messages")
        if msgs is not None:
            if isinstance(msgs, str):
                msgs = [msgs]
            for t in msgs:
                if not re.match(r"^[A-Z0-9]{3}(\^[A-Z0-9]{3})?$", str(t)):
                    raise fail(f"{where}.messages: '{t}' is not a message type like ORU^R01 or ORU")


MAPPING_CHECKER = _Checker()


# ------------------------------------------------------------------ splitting a file into messages

def split_messages(data: bytes) -> tuple[list[tuple[list[bytes], str | None]], dict]:
    """The file's messages as (segment lines, problem) in file order; ``problem`` is a
    reason to reject the chunk (no MSH, text outside MLLP frames) or None."""
    notes = {"mllp": False, "envelope_segments": 0}
    data = data.removeprefix(b"\xef\xbb\xbf")
    chunks: list[tuple[bytes, str | None]] = []
    if SB in data:
        notes["mllp"] = True
        pos = 0
        while pos < len(data):
            start = data.find(SB, pos)
            if start < 0:
                if data[pos:].strip():
                    chunks.append((data[pos:], "text after the last MLLP frame (no 0x0b start block)"))
                break
            if data[pos:start].strip():
                chunks.append((data[pos:start], "text outside MLLP framing (before a 0x0b start block)"))
            end = data.find(EB, start + 1)
            if end < 0:
                chunks.append((data[start + 1:], "MLLP frame without its 0x1c end block: the message is truncated"))
                break
            chunks.append((data[start + 1:end], None))
            pos = end + 1
            if data[pos:pos + 1] == b"\r":
                pos += 1
    else:
        chunks.append((data, None))
    messages: list[tuple[list[bytes], str | None]] = []
    for chunk, problem in chunks:
        lines = [ln for ln in re.split(rb"\r\n|\r|\n", chunk) if ln.strip()]
        if problem:
            messages.append((lines, problem))
            continue
        current: list[bytes] | None = None
        orphans: list[bytes] = []
        for ln in lines:
            if ln[:3] in ENVELOPE:
                notes["envelope_segments"] += 1
                continue
            if ln.startswith(b"MSH"):
                if orphans:
                    messages.append((orphans, "segments without an MSH header: not part of any message"))
                    orphans = []
                current = [ln]
                messages.append((current, None))
            elif current is None:
                orphans.append(ln)
            else:
                current.append(ln)
        if orphans:
            messages.append((orphans, "segments without an MSH header: not part of any message"))
    return messages, notes


# ------------------------------------------------------------------ one message

def _charset(msh_line: bytes, default: str) -> str:
    text = msh_line.decode("latin-1")
    if len(text) < 4:
        return default
    fields = text.split(text[3])
    if len(fields) > 17 and fields[17].strip():
        name = fields[17].split(text[4] if len(text) > 4 else "^")[0].strip().upper()
        return CHARSETS.get(name, default)
    return default


def unescape(text: str, enc: str, esc: str, seps: tuple[str, str, str, str]) -> str:
    """Resolve HL7 escapes: \\F\\ \\S\\ \\T\\ \\R\\ \\E\\, \\Xhh..\\ (bytes in ``enc``), \\.br\\;
    highlighting (\\H\\ \\N\\) and unknown sequences are dropped."""
    if esc not in text:
        return text
    field_sep, comp, rep, sub = seps
    table = {"F": field_sep, "S": comp, "R": rep, "T": sub, "E": esc, ".br": "\n", ".sp": "\n", "H": "", "N": ""}
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if c != esc:
            out.append(c)
            i += 1
            continue
        j = text.find(esc, i + 1)
        if j < 0:  # an unpaired escape character: keep it as is
            out.append(text[i:])
            break
        code = text[i + 1:j]
        if code in table:
            out.append(table[code])
        elif code[:1] == "X" and len(code) > 1 and len(code) % 2 == 1:
            try:
                out.append(bytes.fromhex(code[1:]).decode(enc))
            except (ValueError, UnicodeDecodeError):
                out.append(text[i:j + 1])  # not decodable: keep the escape so nothing is lost
        else:
            out.append("")
        i = j + 1
    return "".join(out)


class _Message:
    def __init__(self, msg: hl7.Message, enc: str):
        self.msg, self.enc = msg, enc
        self.ids = [str(seg[0]) for seg in msg]
        msh = msg[0]
        enc_chars = str(msh[2])
        self.field_sep = str(msh[1])
        self.esc = enc_chars[2] if len(enc_chars) > 2 else "\\"
        self.seps = (self.field_sep, enc_chars[0], enc_chars[1], enc_chars[3] if len(enc_chars) > 3 else "&")
        self.type = self.get(Path7("MSH", 9, comp=1), 0) or ""
        event = self.get(Path7("MSH", 9, comp=2), 0) or ""
        self.type_event = f"{self.type}^{event}" if event else self.type

    def index(self, seg: str, before: int | None) -> int | None:
        """The segment ``seg`` nearest before position ``before``, else the message's first."""
        if before is not None:
            for i in range(before, -1, -1):
                if self.ids[i] == seg:
                    return i
        try:
            return self.ids.index(seg)
        except ValueError:
            return None

    def get(self, p: Path7, at: int | None) -> str | None:
        if at is None:
            return None
        seg = self.msg[at]
        if p.field >= len(seg):
            return None
        node = seg[p.field]
        if p.seg == "MSH" and p.field in (1, 2):
            return str(node)
        if isinstance(node, str):
            reps = [node]
        else:
            reps = list(node)
        if p.filter is not None:
            fc, fv = p.filter
            rep = next((r for r in reps if self._leaf(r, fc, None) == fv), None)
        else:
            rep = reps[p.rep - 1] if p.rep - 1 < len(reps) else None
        if rep is None:
            return None
        if p.comp is None:
            text = rep if isinstance(rep, str) else str(rep)
            value = self._unescape(text)
        else:
            value = self._leaf(rep, p.comp, p.sub)
        return value if value else None

    def _leaf(self, rep, comp: int, sub: int | None) -> str | None:
        node = rep
        for idx in (comp, sub or 1):
            if isinstance(node, str):
                if idx != 1:
                    return None
                continue
            if idx - 1 >= len(node):
                return None
            node = node[idx - 1]
        while not isinstance(node, str):  # deeper than asked: its first leaf
            node = node[0] if len(node) else ""
        return self._unescape(node)

    def _unescape(self, text: str) -> str:
        return unescape(text, self.enc, self.esc, self.seps)


def _check_structure(text: str) -> str | None:
    """Why the message text is not well-formed HL7 (None when it is)."""
    if len(text) < 8:
        return "MSH segment too short to hold the field separator and encoding characters"
    fs = text[3]
    if fs.isalnum() or fs.isspace():
        return f"MSH-1 field separator '{fs}' is not a separator character"
    enc = text[4:].split(fs, 1)[0]
    if len(enc) not in (4, 5) or len(set(enc)) != len(enc) or any(c.isalnum() or c.isspace() or c == fs for c in enc):
        return (f"MSH-2 encoding characters '{enc}' are wrong: expected 4 distinct separator characters "
                f"such as '^~\\&' (component, repetition, escape, subcomponent)")
    for n, seg in enumerate(text.split("\r"), start=1):
        sid = seg[:3]
        if not _SEGMENT_ID.match(sid) or (len(seg) > 3 and seg[3] != fs):
            shown = seg if len(seg) <= 40 else seg[:40] + "…"
            return (f"segment {n} '{shown}' is not an HL7 segment (expected a 3-character segment id "
                    f"followed by '{fs}')")
    return None


# ------------------------------------------------------------------ the reader

@dataclass
class _DatasetPlan:
    dataset: str
    elements: list[str]
    exprs: list[Expr]
    segment: str | None
    anchor: str | None
    messages: frozenset[str] | None


def _plans(feed: Feed) -> list[_DatasetPlan]:
    from catalog.standard import get_dataset

    plans = []
    for m in feed.mappings:
        ds = get_dataset(m.dataset)
        exprs = [parse_expr(m.elements[e]) for e in m.elements]
        key_segments = [s for e, x in zip(m.elements, exprs) if e in ds.key_elements for s in x.segments]
        seg = m.options.get("segment")
        anchor = seg or next((s for s in key_segments if s != "MSH"), None)
        msgs = m.options.get("messages")
        if isinstance(msgs, str):
            msgs = [msgs]
        plans.append(_DatasetPlan(m.dataset, list(m.elements), exprs, seg, anchor,
                                  frozenset(str(t) for t in msgs) if msgs else None))
    return plans


def _value(msg: _Message, expr: Expr, at: int | None) -> str | None:
    for alt in expr.alternatives:
        if len(alt) == 1 and isinstance(alt[0], Path7):
            v = msg.get(alt[0], msg.index(alt[0].seg, at))
        else:
            parts = []
            for part in alt:
                if isinstance(part, str):
                    parts.append(part)
                else:
                    parts.append(msg.get(part, msg.index(part.seg, at)) or "")
            v = "".join(parts) if any(isinstance(p, Path7) and msg.get(p, msg.index(p.seg, at))
                                      for p in alt) else None
        if v:
            return v
    return None


def open_hl7v2(con: duckdb.DuckDBPyConnection, path: Path, feed: Feed, work_dir: Path, *,
               institution_code: str | None = None) -> MultiScan:
    path = Path(path)
    data = path.read_bytes()
    if not data.strip():
        raise UnreadableFileError("the file is empty" + (" (0 bytes)" if not data else " (only whitespace)"),
                                  path=str(path))
    if b"MSH" not in data:
        raise UnreadableFileError("no MSH segment anywhere in the file: it is not HL7 v2 (every message starts "
                                  "with an MSH header)", path=str(path))
    types = feed.options.get("message_types") or DEFAULT_MESSAGE_TYPES
    collected = frozenset([types] if isinstance(types, str) else (str(t) for t in types))
    plans = _plans(feed)
    rows = Rows(feed)
    rejects: list[Reject] = []
    by_type: dict[str, int] = {}
    messages, notes = split_messages(data)
    loaded = 0
    for ordinal, (lines, problem) in enumerate(messages, start=1):
        raw_bytes = b"\r".join(lines)
        enc = _charset(lines[0], feed.encoding) if lines and lines[0].startswith(b"MSH") else feed.encoding

        def reject(error_type: str, reason: str, text: str | None = None):
            rejects.append(Reject(source_row=ordinal, error_type=error_type, reason=f"message {ordinal}: {reason}",
                                  raw_line=text if text is not None else raw_bytes.decode(enc, "replace")))

        if problem:
            reject("NO MSH" if "MSH" in problem else "BAD FRAMING", problem)
            continue
        try:
            text = raw_bytes.decode(enc)
        except UnicodeDecodeError as e:
            reject("INVALID ENCODING", f"bytes that are not valid {enc.upper()} ({e.reason} at byte {e.start})")
            continue
        problem = _check_structure(text)
        if problem:
            reject("WRONG ENCODING CHARACTERS" if problem.startswith("MSH-") else "BAD SEGMENT", problem, text)
            continue
        try:
            msg = _Message(hl7.parse(text), enc)
        except Exception as e:  # noqa: BLE001 — python-hl7 raises several kinds on malformed text
            reject("PARSE ERROR", f"python-hl7 could not parse it: {type(e).__name__}: {e}", text)
            continue
        t = msg.type_event
        if t not in collected and msg.type not in collected:
            reject("UNKNOWN MESSAGE TYPE", f"message type '{t or '(empty MSH-9)'}' is not collected by this feed; "
                                           f"collected: {', '.join(sorted(collected))}", text)
            continue
        produced = 0
        pending = []
        for plan in plans:
            if plan.messages is not None and t not in plan.messages and msg.type not in plan.messages:
                continue
            if plan.segment is not None:
                anchors = [i for i, sid in enumerate(msg.ids) if sid == plan.segment]
            elif plan.anchor is not None:
                anchors = [None] if plan.anchor in msg.ids else []
            else:
                anchors = [None]
            for at in anchors:
                pending.append((plan.dataset, [_value(msg, x, at) for x in plan.exprs]))
                produced += 1
        if not produced:
            reject("NO DATA", f"message type '{t}' fills none of the feed's data sets "
                              f"({', '.join(f'{p.dataset} needs {p.segment or p.anchor}' for p in plans)})", text)
            continue
        for dataset, values in pending:
            rows.add(dataset, ordinal, values)
        by_type[t] = by_type.get(t, 0) + 1
        loaded += 1
    notes.update(messages=len(messages), message_types=by_type)
    return MultiScan(tables=rows.tables(), records=len(messages), loaded=loaded, rejects=rejects, notes=notes)

"""JSON and NDJSON extracts (the township centres' 基本公卫系统 exports).

``format: json`` is one JSON document: an array of record objects, or an object holding the
array under a key given by the feed option ``records_path`` (dotted, e.g. ``data.items``).
``format: ndjson`` is one JSON object per line. Both are parsed in Python, streamed: NDJSON
line by line, a whole document element by element (records_path is walked without loading
the rest), so memory holds one batch of records, not the file.

Each record is flattened to text columns: nested objects give dotted names
(``patient.name``), arrays of scalars are joined with ``;``, other arrays are kept as JSON
text; numbers are rendered by value without scientific notation (``1e5`` → ``100000``,
``12.50`` → ``12.5``), booleans as ``true``/``false``, ``null`` as NULL. The columns are
the union of the records' keys in first-seen order. Exporters omit null fields, so a mapped
key that no record holds is scanned as NULL, unless it maps a key or required element: then
the ingest reports header drift.

Accounting: a record is each non-blank NDJSON line, or each element of the records array.
A line that is not valid JSON, a record that is not an object and a record holding bytes
that are not valid in the feed's encoding are rejected with their record number, raw text
and reason; the rest loads. A whole document that is not valid JSON fails its batch with
the line and column of the error.

DuckDB's ``read_ndjson(ignore_errors=true)`` was not used: in 1.5.5 it turns a bad line
into an all-NULL row without saying which, and an unfinished object swallows the next,
valid line (seen: 5 lines, 1 bad → 2 NULL rows). The price of Python: a 1M-line, 262 MB
NDJSON parses in ~10 s (orjson ~1.6 s, flattening ~5 s, Arrow ~2 s) where DuckDB's
read_ndjson → Parquet takes 2.1 s without flattening or rejects.
"""

from __future__ import annotations

import codecs
import itertools
import json
import os
import shutil
import threading
from decimal import Decimal
from pathlib import Path
from typing import BinaryIO, Iterator

import duckdb
import orjson
import pyarrow as pa

from catalog.standard import get_dataset
from ingest_adapters.errors import UnreadableFileError
from ingest_adapters.registry import Feed
from ingest_adapters.scan import Reject, SourceScan

__all__ = ["open_json", "open_ndjson", "render_number"]

BATCH_ROWS = 50_000  # records per Arrow batch: ~10 MB of text for a 12-column record
BATCH_BYTES = 64 << 20  # …or fewer when records are big: an Arrow string array holds at most 2 GiB
CHUNK = 1 << 20  # bytes read at a time from a whole JSON document
_scan_ids = itertools.count(1)
_DECODER = json.JSONDecoder()

# Bytes that are not valid in the declared encoding become U+FFFD and are counted per thread.
_local = threading.local()


def _count_replace(exc: UnicodeDecodeError):
    _local.count = getattr(_local, "count", 0) + 1
    return ("\ufffd", exc.end)


codecs.register_error("healthlake_json_replace", _count_replace)


def render_number(v: int | float) -> str:
    """A JSON number as text: integers exactly, floats by the shortest text that reads back
    to the same value, never in scientific notation (1e-07 → '0.0000001', 1.0 → '1')."""
    if type(v) is int:
        return str(v)
    if v != v or v in (float("inf"), float("-inf")):
        return repr(v)
    if v.is_integer():
        return str(int(v))
    s = repr(v)
    return format(Decimal(s), "f") if "e" in s else s


def _kind(v) -> str:
    if isinstance(v, dict):
        return "an object"
    if isinstance(v, list):
        return "an array"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, bool):
        return "a boolean"
    if v is None:
        return "null"
    return "a number"


def _scalar_text(v) -> str | None:
    t = type(v)
    if t is str:
        return v
    if v is None:
        return None
    if t is bool:
        return "true" if v else "false"
    return render_number(v)


def _json_text(v) -> str:
    try:
        return orjson.dumps(v).decode()
    except orjson.JSONEncodeError:  # integers beyond 64 bits
        return json.dumps(v, ensure_ascii=False, separators=(",", ":"))


class _KeyCollision(Exception):
    pass


def _list_text(v: list) -> str:
    for e in v:
        if type(e) in (dict, list):  # arrays of objects or of arrays: kept as JSON text (no explode yet)
            return _json_text(v)
    return ";".join("" if e is None else _scalar_text(e) for e in v)


def _flatten(obj: dict, out: dict, prefix: str) -> None:
    # The hot loop of the reader (~1 µs a key): types tested by identity, commonest first.
    for k, v in obj.items():
        t = type(v)
        if t is str:
            val = v
        elif t is dict:
            _flatten(v, out, prefix + k + ".")  # an empty object adds no column
            continue
        elif t is int:
            val = str(v)
        elif t is float:
            val = render_number(v)
        elif v is None:
            val = None
        elif t is bool:
            val = "true" if v else "false"
        elif t is list:
            val = _list_text(v)
        else:
            val = str(v)
        key = prefix + k
        if key in out:
            raise _KeyCollision(key)
        out[key] = val


class _Records:
    """Flattened records → Arrow batches (spilled to disk beyond the first) → one scan.

    The columns are only known once every record has been seen, so each batch keeps its
    own columns and is padded with NULLs to the union when DuckDB scans it.
    """

    def __init__(self, work_dir: Path, path: Path):
        self.path = path
        self.work_dir = work_dir
        self.spill_dir: Path | None = None
        self.columns: dict[str, None] = {}
        self.rows: list[dict] = []
        self.batches: list[pa.RecordBatch | Path] = []
        self.rejects: list[Reject] = []
        self.records = 0
        self.loaded = 0
        self.batch_bytes = 0

    def add(self, value, where: str, size: int) -> tuple[str, str] | None:
        """Take record number ``self.records + 1``; ``where`` names it in a reason ('line 7').
        ``size`` is its length in the file. Returns (error_type, reason) when it cannot be
        loaded: the caller then rejects it."""
        if type(value) is not dict:
            return "NOT AN OBJECT", f"{where} is {_kind(value)}, not a JSON object"
        out: dict = {}
        try:
            _flatten(value, out, "")
        except _KeyCollision as e:
            return "KEY COLLISION", (f"{where}: two keys flatten to the column '{e.args[0]}' "
                                     f"(a dotted key beside a nested object)")
        self.records += 1
        cols = self.columns
        if not out.keys() <= cols.keys():
            for k in out:
                if k not in cols:
                    cols[k] = None
        self.rows.append(out)
        self.loaded += 1
        self.batch_bytes += size
        if len(self.rows) >= BATCH_ROWS or self.batch_bytes >= BATCH_BYTES:
            self._flush()
        return None

    def reject(self, raw: str | None, error_type: str, reason: str) -> None:
        """Reject record number ``self.records + 1``."""
        self.records += 1
        self.rejects.append(Reject(source_row=self.records, raw_line=raw, error_type=error_type, reason=reason))

    def _flush(self) -> None:
        if not self.rows:
            return
        # dicts → struct array → columns, in C++ (2.5x faster than a list per column); a key
        # missing from a record is NULL
        struct = pa.struct([(k, pa.string()) for k in self.columns])
        batch = pa.RecordBatch.from_struct_array(pa.array(self.rows, type=struct))
        self.rows, self.batch_bytes = [], 0
        self.batches.append(batch)
        if len(self.batches) > 1:  # more than one batch: keep them on disk, not in memory
            if self.spill_dir is None:
                self.work_dir.mkdir(parents=True, exist_ok=True)
                self.spill_dir = self.work_dir / f"{self.path.name}.{os.getpid()}.{next(_scan_ids)}.json-spill"
                self.spill_dir.mkdir()
            for i, b in enumerate(self.batches):
                if isinstance(b, pa.RecordBatch):
                    f = self.spill_dir / f"{i:06d}.arrow"
                    with pa.OSFile(str(f), "wb") as sink, pa.ipc.new_stream(sink, b.schema) as w:
                        w.write_batch(b)
                    self.batches[i] = f

    def scan(self, con: duckdb.DuckDBPyConnection, feed: Feed, notes: dict) -> SourceScan:
        self._flush()
        columns = list(self.columns)
        absent = _absent_mapped(feed, columns, has_records=self.loaded > 0)
        columns += absent
        schema = pa.schema([(c, pa.string()) for c in columns])
        batches = list(self.batches)

        def padded() -> Iterator[pa.RecordBatch]:
            for b in batches:
                if isinstance(b, Path):
                    with pa.memory_map(str(b)) as src:
                        b = pa.ipc.open_stream(src).read_next_batch()
                have = set(b.schema.names)
                yield pa.RecordBatch.from_arrays(
                    [b.column(c) if c in have else pa.nulls(b.num_rows, pa.string()) for c in columns], schema=schema)

        name = f"_hl_json_{os.getpid()}_{next(_scan_ids)}"
        con.register(name, pa.RecordBatchReader.from_batches(schema, padded()))
        spill, rejects = self.spill_dir, self.rejects

        def cleanup():
            try:
                con.unregister(name)
            except duckdb.Error:
                pass
            if spill is not None:
                shutil.rmtree(spill, ignore_errors=True)

        notes = dict(notes, records=self.records, loaded=self.loaded)
        if absent:
            notes["absent_keys"] = absent
        return SourceScan(columns=columns, from_sql=name, rejects=lambda c: rejects, cleanup=cleanup, notes=notes)

    def discard(self) -> None:
        if self.spill_dir is not None:
            shutil.rmtree(self.spill_dir, ignore_errors=True)


def _absent_mapped(feed: Feed, columns: list[str], has_records: bool) -> list[str]:
    """Mapped source keys that no record holds, to be scanned as NULL columns.

    JSON exporters omit null fields, so a key missing from every record of a small file is
    not header drift. The business key and required elements are the exception: a file
    whose records all lack them has drifted, and the ingest says so. A file with no records
    at all gets every mapped column.
    """
    have = set(columns)
    strict = set()
    if has_records:
        ds = get_dataset(feed.dataset)
        strict = {feed.mapping[e.name] for e in ds.elements if (e.key or e.required) and e.name in feed.mapping}
    out = []
    for src in feed.mapping.values():
        if src not in have and src not in strict and src not in out:
            out.append(src)
    return out


def _check_nonempty(path: Path) -> None:
    if path.stat().st_size == 0:
        raise UnreadableFileError("the file is empty (0 bytes)", path=str(path))


def _check_encoding(encoding: str, path: Path) -> None:
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise UnreadableFileError(f"unknown encoding '{encoding}'", path=str(path)) from None


# ---------------------------------------------------------------- NDJSON

def _parse_line(line: bytes, encoding: str) -> tuple[object, str | None, str | None]:
    """(value, error_type, reason) of one NDJSON line; value is None on error."""
    if encoding in ("utf-8", "utf-8-sig"):
        try:
            return orjson.loads(line), None, None
        except orjson.JSONDecodeError:
            pass
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            return None, "INVALID ENCODING", f"bytes that are not valid UTF-8 ({e.reason} at byte {e.start})"
    else:
        try:
            text = line.decode(encoding)
        except UnicodeDecodeError as e:
            return None, "INVALID ENCODING", (f"bytes that are not valid {encoding.upper()} "
                                              f"({e.reason} at byte {e.start})")
        try:
            return orjson.loads(text), None, None
        except orjson.JSONDecodeError:
            pass
    # orjson refuses integers beyond 64 bits, which are valid JSON; the standard parser has the
    # better-known error messages for what is really invalid.
    try:
        return json.loads(text.rstrip("\r\n"), parse_constant=_no_constant), None, None
    except json.JSONDecodeError as e:
        return None, "INVALID JSON", f", column {e.colno}: {e.msg}"
    except ValueError as e:
        return None, "INVALID JSON", str(e)


def _no_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def _bom(encoding: str) -> bytes:
    return "\ufeff".encode("utf-8" if encoding == "utf-8-sig" else encoding)


def open_ndjson(con: duckdb.DuckDBPyConnection, path: Path, feed: Feed, work_dir: Path) -> SourceScan:
    path = Path(path)
    _check_nonempty(path)
    encoding = feed.encoding
    _check_encoding(encoding, path)
    records = _Records(work_dir, path)
    lines = blank = 0
    utf8 = encoding in ("utf-8", "utf-8-sig")
    loads, JSONDecodeError, add = orjson.loads, orjson.JSONDecodeError, records.add  # bound once: the per-line loop
    try:
        with open(path, "rb", buffering=1 << 20) as f:
            for lineno, line in enumerate(f, start=1):
                if lineno == 1:
                    line = line.removeprefix(_bom(encoding))
                if not line.strip():
                    blank += 1
                    continue
                lines += 1
                if lines == 1 and line.strip() in (b"[", b"{"):
                    raise UnreadableFileError("the first line opens a JSON document spread over many lines: declare "
                                              "the feed's format as json (NDJSON holds one object per line)",
                                              path=str(path))
                where = f"line {lineno}"
                if utf8:
                    try:  # the fast path: orjson validates UTF-8 itself
                        value, etype = loads(line), None
                    except JSONDecodeError:
                        value, etype, reason = _parse_line(line, encoding)
                else:
                    value, etype, reason = _parse_line(line, encoding)
                if etype is None:
                    failed = add(value, where, len(line))
                    if failed is None:
                        continue
                    etype, reason = failed
                else:
                    reason = f"{where}{reason}" if reason.startswith(",") else f"{where}: {reason}"
                records.reject(line.decode(encoding, "replace").rstrip("\r\n"), etype, reason)
        if lines == 0:
            raise UnreadableFileError("the file holds no JSON lines (only blank lines)", path=str(path))
        if records.loaded == 0:
            kinds = ", ".join(sorted({r.error_type for r in records.rejects}))
            raise UnreadableFileError(
                f"no line of the file is a JSON object ({kinds} on all {lines} lines): is it one JSON document "
                f"(format: json) rather than NDJSON (one object per line)? First: {records.rejects[0].reason}",
                path=str(path))
    except BaseException:
        records.discard()
        raise
    return records.scan(con, feed, {"encoding": encoding, "lines": lines, "blank_lines": blank})


# ---------------------------------------------------------------- whole JSON documents

_WS = " \t\n\r"


class _Doc:
    """A JSON document read in chunks: whitespace, single values (via the standard
    parser's ``raw_decode``) and punctuation, with line/column for errors."""

    def __init__(self, f: BinaryIO, encoding: str, path: Path):
        self.f, self.path = f, path
        self.dec = codecs.getincrementaldecoder(encoding)(errors="healthlake_json_replace")
        self.buf, self.pos, self.eof, self.first = "", 0, False, True
        self.line0, self.col0 = 1, 0  # line number and 0-based column of buf[0]

    def _more(self, at_least: int = 0) -> bool:
        if self.eof:
            return False
        if self.pos:  # drop consumed text, keeping line accounting
            dropped = self.buf[:self.pos]
            nl = dropped.count("\n")
            if nl:
                self.line0 += nl
                self.col0 = len(dropped) - dropped.rfind("\n") - 1
            else:
                self.col0 += len(dropped)
            self.buf, self.pos = self.buf[self.pos:], 0
        data = self.f.read(max(CHUNK, at_least))
        text = self.dec.decode(data, final=not data)
        if self.first and text:
            text, self.first = text.lstrip("\ufeff"), False
        self.buf += text
        self.eof = not data
        return True

    def where(self, pos: int) -> str:
        nl = self.buf.count("\n", 0, pos)
        if nl:
            return f"line {self.line0 + nl}, column {pos - self.buf.rfind(chr(10), 0, pos)}"
        return f"line {self.line0}, column {self.col0 + pos + 1}"

    def error(self, msg: str, pos: int | None = None, hint: str = "") -> UnreadableFileError:
        return UnreadableFileError(f"not valid JSON at {self.where(self.pos if pos is None else pos)}: {msg}{hint}",
                                   path=str(self.path))

    def peek(self) -> str:
        """The next non-whitespace character ('' at the end)."""
        while True:
            b, p, n = self.buf, self.pos, len(self.buf)
            while p < n and b[p] in _WS:
                p += 1
            self.pos = p
            if p < n:
                return b[p]
            if not self._more():
                return ""

    def take(self, chars: str, what: str) -> str:
        c = self.peek()
        if not c or c not in chars:
            raise self.error(f"expecting {what}" + (f", found '{c}'" if c else ", found the end of the file"))
        self.pos += 1
        return c

    def value(self) -> tuple[object, str]:
        """The next value and its raw text."""
        self.peek()
        while True:
            try:
                v, end = _DECODER.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as e:
                # Incomplete only when the error is near the end of what has been read (an
                # unterminated string can start anywhere); otherwise it is a real error and
                # reading on would only load the rest of the file.
                if not self.eof and (e.msg.startswith("Unterminated string") or len(self.buf) - e.pos < 64):
                    self._more(len(self.buf))
                    continue
                raise self.error(e.msg, e.pos) from None
            if end == len(self.buf) and not self.eof:  # a number may go on in the next chunk
                self._more(len(self.buf))
                continue
            raw = self.buf[self.pos:end]
            self.pos = end
            return v, raw

    def key(self) -> str:
        if self.peek() != '"':
            raise self.error("expecting a property name in double quotes")
        return self.value()[0]

    def members(self) -> Iterator[str]:
        """Keys of the object just opened; the caller consumes each key's value."""
        if self.peek() == "}":
            self.pos += 1
            return
        while True:
            k = self.key()
            self.take(":", "':'")
            yield k
            if self.take(",}", "',' or '}'") == "}":
                return


def _document_records(doc: _Doc, records_path: str | None) -> Iterator[tuple[object, str]]:
    c = doc.peek()
    if not c:
        raise UnreadableFileError("the file holds no JSON value (only whitespace)", path=str(doc.path))
    path = records_path.split(".") if records_path else []
    open_objects = []  # the objects walked into, to finish after the records
    for i, step in enumerate(path):
        here = f"'{'.'.join(path[:i])}'" if i else "the top level"
        if c != "{":
            raise UnreadableFileError(f"records_path '{records_path}': {here} is {_kind(doc.value()[0])}, "
                                      f"not an object", path=str(doc.path))
        doc.pos += 1
        members, seen = doc.members(), []
        for k in members:
            if k == step:
                break
            seen.append(f"{k} ({_kind(doc.value()[0])})")
        else:
            raise UnreadableFileError(f"records_path '{records_path}': no key '{step}' in {here}; "
                                      f"its keys are: {', '.join(seen) or 'none'}", path=str(doc.path))
        open_objects.append(members)
        c = doc.peek()
    if c != "[":
        if not path and c == "{":
            doc.pos += 1
            keys = [f"{k} ({_kind(doc.value()[0])})" for k in doc.members()]
            if doc.peek() == "{":
                raise UnreadableFileError("the file holds one JSON object per line: declare the feed's format "
                                          "as ndjson", path=str(doc.path))
            raise UnreadableFileError(f"the file holds one JSON object, not an array of records: set the feed "
                                      f"option records_path to the key of the records array; its keys are: "
                                      f"{', '.join(keys) or 'none'}", path=str(doc.path))
        where = f"records_path '{records_path}' leads to" if path else "the file holds"
        raise UnreadableFileError(f"{where} {_kind(doc.value()[0])}, not an array of records", path=str(doc.path))
    doc.pos += 1
    if doc.peek() == "]":
        doc.pos += 1
    else:
        while True:
            yield doc.value()
            if doc.take(",]", "',' or ']' after a record") == "]":
                break
    # The document must end well-formed: a file cut after the records is still a broken file.
    for members in reversed(open_objects):
        for _k in members:
            doc.value()
    if doc.peek():
        raise doc.error("extra data after the JSON document",
                        hint=" (one JSON value per line? declare the feed's format as ndjson)")


def open_json(con: duckdb.DuckDBPyConnection, path: Path, feed: Feed, work_dir: Path) -> SourceScan:
    path = Path(path)
    _check_nonempty(path)
    encoding = feed.encoding
    _check_encoding(encoding, path)
    records_path = feed.options.get("records_path")
    if records_path is not None and (not isinstance(records_path, str) or not records_path.strip(".")):
        raise UnreadableFileError(f"feed option records_path must be a dotted key like 'data.items', "
                                  f"got {records_path!r}", path=str(path))
    records = _Records(work_dir, path)
    _local.count = 0
    try:
        with open(path, "rb") as f:
            doc = _Doc(f, encoding, path)
            for value, raw in _document_records(doc, records_path):
                where = f"record {records.records + 1}"
                if _local.count and "\ufffd" in raw:
                    failed = ("INVALID ENCODING", f"{where}: bytes that are not valid {encoding.upper()} "
                                                  f"(shown as U+FFFD)")
                else:
                    failed = records.add(value, where, len(raw))
                if failed is not None:
                    records.reject(raw, *failed)
    except BaseException:
        records.discard()
        raise
    return records.scan(con, feed, {"encoding": encoding, "records_path": records_path,
                                    "replaced_characters": _local.count})

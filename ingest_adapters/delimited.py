"""Delimited text (CSV/TSV) in UTF-8, UTF-8 with BOM or GB18030/GBK.

DuckDB reads the file with an explicit dialect (no sniffing: a sniffer that meets a bad
row guesses the wrong quote) and every column as VARCHAR, so IDs and phone numbers stay
text. Malformed records (ragged, bad quoting, invalid UTF-8) go to DuckDB's rejects
tables with their record number and raw line; the rest of the file loads.
Legacy encodings are transcoded to UTF-8 first (see transcode.py).

The rows reach the lake as Arrow batches in file order, numbered here (``SEQUENCE``): DuckDB's
CSV scanner has no record-number column, and numbering inside the lake's INSERT
(``row_number() OVER ()``) makes the whole insert single-threaded — half the speed of a bare
COPY of the same file. Two parsers produce the batches:

- A large file without a single quote character (most machine exports: a field is quoted only
  when it holds the delimiter, a quote or a newline) is parsed by Arrow's streaming CSV reader
  with quoting off. Without quotes a CSV record is a line split at the delimiter, so both
  parsers read the same values. Arrow's reader parses on a thread of its own, ahead of the lake's
  threads, into Arrow arrays the lake scans as they are; DuckDB's parser must export its vectors
  to Arrow on the lake's threads (``bench ingest_csv``, 5M rows, runs of one day: 0.58× of a bare
  COPY through DuckDB's parser, 0.70–0.82× through Arrow's, the file's sha256 included; the
  machine's speed varies from day to day, the median of 5 pairs was 0.67× on 7 Dec). It rejects
  nothing: at the first record it cannot read as is (a ragged line, invalid UTF-8, a record
  longer than its block) it gives up, and the ingest reads the file again with DuckDB's parser
  (``SourceScan.read_again``), which rejects that record with its reason and loads the rest.
- Every other file is parsed on an in-memory DuckDB of its own, in parallel, with its rejects.
"""

from __future__ import annotations

import codecs
import csv
import itertools
import os
import threading
from pathlib import Path
from typing import Callable

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

from ingest_adapters.errors import UnreadableFileError
from ingest_adapters.filescan import holds_byte
from ingest_adapters.registry import Feed
from ingest_adapters.scan import STREAMED_LINEAGE, Reject, SourceScan, streamed_column
from ingest_adapters.transcode import ASCII_BELOW_0X30_KEPT, transcode_to_utf8

_scan_ids = itertools.count(1)
# DuckDB's default record limit (2 MB) keeps its read buffers small and the scan fast. A file with a
# longer record (a 10 MB report text) is read again with this limit (SourceScan.read_again).
WIDE_LINE_SIZE = 64 * 1024 * 1024
SEQUENCE = "__hl_sequence"  # 1..n over the loaded records, in file order
BATCH_ROWS = 245760  # rows per Arrow batch between the parser and the lake (2 DuckDB vectors × 60)
PARSE_AHEAD = "64MB"
# Arrow's reader for quote-free files of at least this size (a smaller file costs little either way,
# and is often loaded in a group, where a second read means reloading the whole group)
ARROW_MIN_BYTES = 8 * 1024 * 1024
ARROW_BLOCK_BYTES = 4 * 1024 * 1024  # a longer record makes Arrow's reader give up (DuckDB reads it)
# The lake's INSERT keeps the Arrow batches it has read alive until the statement ends (its values point
# into them): a file is inserted in parts of about this much Arrow data, one statement each, in the same
# transaction. A 2.2 GB file (18M rows): the ingest's peak RSS 1.06 GB in parts of 512 MB; the same
# batches in one INSERT statement alone: 1.86 GB.
PART_BYTES = 512 * 1024 * 1024


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def read_header(path: Path, delimiter: str, quote: str) -> list[str]:
    """The header record of a UTF-8 file, parsed with the same dialect as the data."""
    with open(path, "rb") as raw:
        line = raw.readline(1 << 20)  # the header ends at the first newline (a header has no quoted newlines)
    try:
        text = line.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UnreadableFileError(f"the header line is not valid UTF-8 ({e.reason} at byte {e.start}): "
                                  f"is the feed's declared encoding right?", path=str(path)) from None
    try:
        first = next(csv.reader([text.rstrip("\r\n")], delimiter=delimiter, quotechar=quote), None)
    except csv.Error as e:
        raise UnreadableFileError(f"the header line cannot be parsed: {e}", path=str(path)) from None
    if not first or all(not c.strip() for c in first):
        raise UnreadableFileError("the file is empty: no header line", path=str(path))
    names = [c.strip() for c in first]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise UnreadableFileError(f"the header repeats the columns {dupes}", path=str(path))
    return names


def open_csv(con: duckdb.DuckDBPyConnection, path: Path, feed: Feed, work_dir: Path) -> SourceScan:
    path = Path(path)
    if path.stat().st_size == 0:
        raise UnreadableFileError("the file is empty (0 bytes)", path=str(path))
    encoding = feed.encoding
    readable, cleanup, replaced = path, (lambda: None), 0
    if encoding not in ("utf-8", "utf-8-sig"):
        work_dir.mkdir(parents=True, exist_ok=True)
        readable = work_dir / f"{path.stem}.{os.getpid()}.{next(_scan_ids)}.utf8.csv"
        try:
            replaced = transcode_to_utf8(path, readable, encoding)
        except LookupError:
            raise UnreadableFileError(f"unknown encoding '{encoding}'", path=str(path)) from None

        def cleanup(p=readable):
            p.unlink(missing_ok=True)

    columns = read_header(readable, feed.delimiter, feed.quote)

    def duckdb_scan() -> SourceScan:
        scan, release = _scan(con, readable, columns, feed, replaced, cleanup, {"encoding": encoding}, None)

        def widened() -> SourceScan:
            release()
            return _scan(con, readable, columns, feed, replaced, cleanup,
                         {"encoding": encoding, "max_record_bytes": WIDE_LINE_SIZE}, WIDE_LINE_SIZE)[0]

        scan.read_again = widened
        return scan

    if readable.stat().st_size >= ARROW_MIN_BYTES and _quote_free(path, readable, feed):
        return _arrow_scan(con, readable, columns, feed, replaced, cleanup, {"encoding": encoding}, duckdb_scan)
    return duckdb_scan()


def _quote_free(path: Path, readable: Path, feed: Feed) -> bool:
    """True when the file holds no quote character at all (and Arrow's reader takes the dialect)."""
    quote = feed.quote.encode()
    if len(feed.delimiter) != 1 or len(quote) != 1 or feed.delimiter in "\r\n":
        return False
    # In UTF-8 and the GB encodings an ASCII byte below 0x30 is never part of another character: the
    # delivered file answers for its UTF-8 copy (for a double quote, from what the ingest's hashing noted)
    kept = quote < b"0" and codecs.lookup(feed.encoding).name in ASCII_BELOW_0X30_KEPT
    return not holds_byte(path if kept else readable, quote)


def _lineage_schema(columns: list[str], value_type: pa.DataType) -> pa.Schema:
    return pa.schema([pa.field(c, value_type) for c in columns] + [pa.field(SEQUENCE, pa.int64())]
                     + [pa.field(streamed_column(c), pa.run_end_encoded(pa.int32(), pa.string()))
                        for c in STREAMED_LINEAGE])


def _numbered(batches, schema: pa.Schema, values: dict[str, str]):
    """The batches with their record numbers (1..n in file order) and the file's lineage values."""
    loaded = 0
    for batch in batches:
        n = batch.num_rows
        constants = [pa.RunEndEncodedArray.from_arrays(pa.array([n], pa.int32()), pa.array([values.get(c)], pa.string()))
                     for c in STREAMED_LINEAGE]
        yield pa.RecordBatch.from_arrays(
            batch.columns + [pa.array(np.arange(loaded + 1, loaded + 1 + n))] + constants, schema=schema)
        loaded += n


class _Parts:
    """A file's batches registered on the lake connection as ``name``, a part at a time: each part ends
    after ``PART_BYTES`` of Arrow data; ``next_part()`` registers the next one (False when none is left)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, name: str, schema: pa.Schema, batches):
        self.con, self.name, self.schema = con, name, schema
        self.batches = iter(batches)
        self.exhausted = False
        self._register()

    def _part(self):
        size = 0
        for batch in self.batches:
            yield batch
            size += batch.nbytes
            if size >= PART_BYTES:
                return
        self.exhausted = True

    def _register(self) -> None:
        self.con.register(self.name, pa.RecordBatchReader.from_batches(self.schema, self._part()))

    def next_part(self) -> bool:
        if self.exhausted:
            return False
        self._register()
        return True

    def release(self) -> None:
        try:
            self.con.unregister(self.name)
        except duckdb.Error:
            pass


def _arrow_scan(con: duckdb.DuckDBPyConnection, readable: Path, columns: list[str], feed: Feed, replaced: int,
                cleanup, notes: dict, duckdb_scan: Callable[[], SourceScan]) -> SourceScan:
    """A quote-free file through Arrow's streaming CSV reader, which gives up at the first record it
    cannot take as is; the ingest then reads the file with ``duckdb_scan``."""
    name = f"_hl_csv_{next(_scan_ids)}"
    schema = _lineage_schema(columns, pa.string())
    values: dict[str, str] = {}
    gave_up: list[str] = []

    def batches():
        try:
            reader = pa_csv.open_csv(
                readable,
                read_options=pa_csv.ReadOptions(column_names=columns, skip_rows=1, block_size=ARROW_BLOCK_BYTES),
                # as DuckDB's dialect for a file without quotes: empty lines skipped, an empty field NULL
                parse_options=pa_csv.ParseOptions(delimiter=feed.delimiter, quote_char=False,
                                                  ignore_empty_lines=True),
                convert_options=pa_csv.ConvertOptions(column_types={c: pa.string() for c in columns},
                                                      strings_can_be_null=True, null_values=[""]))
            yield from reader
        except (pa.ArrowException, OSError) as e:
            gave_up.append(f"{type(e).__name__}: {e}")
            raise

    parts = _Parts(con, name, schema, _numbered(batches(), schema, values))

    def read_again() -> SourceScan:
        parts.release()
        return duckdb_scan()

    def close():
        parts.release()
        cleanup()

    return SourceScan(columns=columns, from_sql=name, replaced_bytes=replaced, cleanup=close,
                      notes=dict(notes, parser="arrow"), sequence_column=SEQUENCE, lineage_values=values,
                      next_part=parts.next_part, read_again=read_again,
                      gave_up=lambda: gave_up[0] if gave_up else None)


_parser_db: tuple[int, duckdb.DuckDBPyConnection] | None = None
_parser_lock = threading.Lock()


def _parser() -> duckdb.DuckDBPyConnection:
    """A connection (cursor) of its own on this process's in-memory parser database, created once:
    a new DuckDB instance costs about 15 ms, a cursor 0.5 ms (and a city delivers hundreds of files)."""
    global _parser_db
    with _parser_lock:
        if _parser_db is None or _parser_db[0] != os.getpid():
            db = duckdb.connect()  # in memory, no extensions: read_csv is DuckDB's own
            # string views hand the parsed values over without copying them into Arrow's contiguous buffers
            db.execute("SET enable_progress_bar = false; SET produce_arrow_string_view = true")
            # the parser's threads run ahead of the lake by up to this much: with DuckDB's default
            # (~1 MB) a streamed result is produced by one thread at a time
            db.execute(f"SET streaming_buffer_size = '{PARSE_AHEAD}'")
            _parser_db = (os.getpid(), db)
        return _parser_db[1].cursor()


def _scan(con: duckdb.DuckDBPyConnection, readable: Path, columns: list[str], feed: Feed, replaced: int,
          cleanup, notes: dict, max_line_size: int | None) -> tuple[SourceScan, Callable[[], None]]:
    """The scan, and what releases its parser (not the file)."""
    cols = "{" + ", ".join(f"{_sql_str(c)}: 'VARCHAR'" for c in columns) + "}"
    read_sql = (
        f"SELECT * FROM read_csv({_sql_str(str(readable))}, header=true, auto_detect=false, columns={cols}, "
        f"delim={_sql_str(feed.delimiter)}, quote={_sql_str(feed.quote)}, escape={_sql_str(feed.quote)}, "
        f"strict_mode=true, store_rejects=true, rejects_table='rejects', rejects_scan='rejects_scan'"
        + (f", max_line_size={max_line_size}" if max_line_size else "") + ")"
    )
    parser = _parser()
    name = f"_hl_csv_{next(_scan_ids)}"
    schema = _lineage_schema(columns, pa.string_view())
    values: dict[str, str] = {}

    # the lake's threads take the batches from this one stream in turn (each batch is then hashed and
    # encoded in parallel); the query starts when the lake's INSERT reads the first batch
    def batches():
        yield from parser.execute(read_sql).to_arrow_reader(BATCH_ROWS)

    parts = _Parts(con, name, schema, _numbered(batches(), schema, values))

    def rejects(_con: duckdb.DuckDBPyConnection) -> list[Reject]:
        rows = parser.execute(
            "SELECT line, any_value(csv_line ORDER BY column_idx NULLS LAST), "
            "string_agg(DISTINCT error_type, '; '), string_agg(error_message, '; ') "
            "FROM rejects GROUP BY line ORDER BY line").fetchall()
        # DuckDB's `line` counts records with the header as line 1 (a quoted newline does not count).
        return [Reject(source_row=int(line) - 1, raw_line=raw, error_type=etype, reason=msg)
                for line, raw, etype, msg in rows]

    def release():
        parts.release()
        parser.close()

    def close():
        release()
        cleanup()

    return SourceScan(columns=columns, from_sql=name, rejects=rejects, replaced_bytes=replaced,
                      cleanup=close, notes=dict(notes, parser="duckdb"), sequence_column=SEQUENCE,
                      lineage_values=values, next_part=parts.next_part), release

"""Delimited text (CSV/TSV) in UTF-8, UTF-8 with BOM or GB18030/GBK.

DuckDB reads the file with an explicit dialect (no sniffing: a sniffer that meets a bad
row guesses the wrong quote) and every column as VARCHAR, so IDs and phone numbers stay
text. Malformed records (ragged, bad quoting, invalid UTF-8) go to DuckDB's rejects
tables with their record number and raw line; the rest of the file loads.
Legacy encodings are transcoded to UTF-8 first (see transcode.py).
"""

from __future__ import annotations

import csv
import itertools
import os
from pathlib import Path

import duckdb

from ingest_adapters.errors import UnreadableFileError
from ingest_adapters.registry import Feed
from ingest_adapters.scan import Reject, SourceScan
from ingest_adapters.transcode import transcode_to_utf8

_scan_ids = itertools.count(1)
# DuckDB's default record limit (2 MB) keeps its read buffers small and the scan fast. A file with a
# longer record (a 10 MB report text) is read again with this limit (SourceScan.widened).
WIDE_LINE_SIZE = 64 * 1024 * 1024


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
    scan = _scan(readable, columns, feed, replaced, cleanup, {"encoding": encoding}, max_line_size=None)
    scan.widened = lambda: _scan(readable, columns, feed, replaced, cleanup,
                                 {"encoding": encoding, "max_record_bytes": WIDE_LINE_SIZE}, WIDE_LINE_SIZE)
    return scan


def _scan(readable: Path, columns: list[str], feed: Feed, replaced: int, cleanup, notes: dict,
          max_line_size: int | None) -> SourceScan:
    n = next(_scan_ids)
    rej_table, rej_scan = f"_rej_errors_{n}", f"_rej_scans_{n}"
    cols = "{" + ", ".join(f"{_sql_str(c)}: 'VARCHAR'" for c in columns) + "}"
    from_sql = (
        f"read_csv({_sql_str(str(readable))}, header=true, auto_detect=false, columns={cols}, "
        f"delim={_sql_str(feed.delimiter)}, quote={_sql_str(feed.quote)}, escape={_sql_str(feed.quote)}, "
        f"strict_mode=true, store_rejects=true, rejects_table={_sql_str(rej_table)}, "
        f"rejects_scan={_sql_str(rej_scan)}" + (f", max_line_size={max_line_size}" if max_line_size else "") + ")"
    )

    def rejects(c: duckdb.DuckDBPyConnection) -> list[Reject]:
        try:
            rows = c.execute(
                f"SELECT line, any_value(csv_line ORDER BY column_idx NULLS LAST), "
                f"string_agg(DISTINCT error_type, '; '), string_agg(error_message, '; ') "
                f"FROM {rej_table} GROUP BY line ORDER BY line").fetchall()
        except duckdb.CatalogException:
            return []
        finally:
            c.execute(f"DROP TABLE IF EXISTS {rej_table}")
            c.execute(f"DROP TABLE IF EXISTS {rej_scan}")
        # DuckDB's `line` counts records with the header as line 1 (a quoted newline does not count).
        return [Reject(source_row=int(line) - 1, raw_line=raw, error_type=etype, reason=msg)
                for line, raw, etype, msg in rows]

    return SourceScan(columns=columns, from_sql=from_sql, rejects=rejects, replaced_bytes=replaced,
                      cleanup=cleanup, notes=notes)

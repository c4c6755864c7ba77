"""Excel workbooks (.xlsx, .xlsm, and legacy .xls) read with python-calamine.

Feed options:
  ``sheet``       sheet name, or 0-based index among all sheets; default: the first visible sheet.
  ``header_row``  1-based row of the header; default: the first of the first 30 rows whose
                  cells are mostly non-empty text, so title rows above the header
                  ("内江市第一人民医院 科室字典 2026年10月") are skipped.

What a cell becomes (all text, like every bronze column):
  - text as is; an empty cell is NULL; a formula gives the value Excel cached when the file
    was saved (a formula never calculated, or an error such as #DIV/0!, reads as NULL);
  - numbers without scientific notation, whole numbers without '.0' (1.0 → '1',
    13800138000 → '13800138000'), others to Excel's 15 significant digits
    (0.1 + 0.2 → '0.3');
  - dates and times (numbers with a date format: how Excel stores them) as ISO text
    'YYYY-MM-DD', 'YYYY-MM-DD HH:MM:SS' or 'HH:MM:SS', rounded to the second;
  - booleans as 'true' / 'false'.
Merged cells (calamine gives the value in the top-left cell only): in the header, the value
fills the whole merged range, and a header cell merged downwards makes the header span
those rows, its column names joined with '.' ("联系方式.电话"); in the data, the value fills
down the first column of the range. Blank rows (empty or whitespace-only cells) are not
records: they are skipped and counted in the notes. Columns without a header that hold data
are named ``column_<letter>``.

A number of 16 or more digits in a mapped column (an 18-digit ID number typed into a number
cell) has lost its last digits: Excel keeps 15 significant digits. Such a row is rejected
with its cell reference; a number cannot bring back the digits. Leading zeros of a code
stored as a number ('0101' → 101) are lost too, but cannot be detected.

Calamine reads a whole sheet into memory (a 200k × 10 sheet is a few hundred MB of Python
objects at most): Excel's own limit is 1,048,576 rows.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import os
import re
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa
import python_calamine as calamine

from ingest_adapters.errors import UnreadableFileError
from ingest_adapters.registry import Feed
from ingest_adapters.scan import Reject, SourceScan

__all__ = ["open_excel", "cell_text"]

HEADER_SCAN_ROWS = 30
EXCEL_DIGITS = 15  # Excel keeps 15 significant digits of a number
_scan_ids = itertools.count(1)
_ZIP = b"PK\x03\x04"
_OLE2 = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


def _rounded(v):
    """A datetime or time rounded to the second (Excel stores times as fractions of a day)."""
    if v.microsecond >= 500_000:
        if isinstance(v, dt.datetime):
            return v.replace(microsecond=0) + dt.timedelta(seconds=1)
        full = dt.datetime.combine(dt.date(2000, 1, 1), v.replace(microsecond=0)) + dt.timedelta(seconds=1)
        return full.time()
    return v.replace(microsecond=0)


def cell_text(v) -> str | None:
    """The text of one calamine cell value (see the module docstring)."""
    t = type(v)
    if t is str:
        return v if v else None
    if t is float:
        if v.is_integer():
            return str(int(v))
        if not math.isfinite(v):
            return None
        s = f"{v:.{EXCEL_DIGITS}g}"
        return format(Decimal(s), "f") if "e" in s else s
    if t is bool:
        return "true" if v else "false"
    if t is int:
        return str(v)
    if t is dt.datetime:
        return f"{_rounded(v):%Y-%m-%d %H:%M:%S}"
    if t is dt.date:
        return v.isoformat()
    if t is dt.time:
        return f"{_rounded(v):%H:%M:%S}"
    if t is dt.timedelta:  # durations ([h]:mm:ss formats)
        secs = round(v.total_seconds())
        sign, secs = ("-", -secs) if secs < 0 else ("", secs)
        return f"{sign}{secs // 3600}:{secs % 3600 // 60:02d}:{secs % 60:02d}"
    return str(v)


def column_letter(i: int) -> str:
    """0-based column index → Excel letters (0 → A, 26 → AA)."""
    s = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        s = chr(65 + r) + s
    return s


_CJK = r"[\u3000-\u303f\u3400-\u9fff\uff00-\uffef]"


def _header_text(v) -> str:
    """A header cell as a column name: trimmed; a line break inside a Chinese name is
    dropped ("身份证\\n号码" → "身份证号码"), elsewhere it becomes one space."""
    s = cell_text(v) or ""
    s = re.sub(rf"(?<={_CJK})\s*[\r\n]+\s*(?={_CJK})", "", s.strip())
    return re.sub(r"\s*[\r\n]+\s*", " ", s)


def _not_a_workbook(path: Path, head: bytes) -> UnreadableFileError:
    sample = head.removeprefix(b"\xef\xbb\xbf")
    text = None
    for enc in ("utf-8", "gb18030"):
        try:
            text = sample.decode(enc)
            break
        except UnicodeDecodeError as e:
            if e.start > len(sample) - 4:  # cut in the middle of a character at the end of the sample
                text = sample[:e.start].decode(enc, "replace")
                break
    if text is not None and text.strip() and not any(ch < " " and ch not in "\t\r\n" for ch in text):
        low = text.lstrip().lower()
        if low.startswith(("<html", "<!doctype", "<table", "<?xml", "<meta")):
            return UnreadableFileError(
                f"not an Excel workbook: the file is HTML/XML text renamed to {path.suffix or 'an Excel name'} (some "
                f"systems export a web page as .xls); ask for a real .xlsx export or a CSV", path=str(path))
        first = text.strip().splitlines()[0][:60]
        return UnreadableFileError(
            f"not an Excel workbook: the file is text starting with {first!r} (a CSV renamed to "
            f"{path.suffix or 'an Excel name'}?); declare the feed's format as csv or ask for a real workbook",
            path=str(path))
    return UnreadableFileError(f"not an Excel workbook: unknown file signature {head[:8].hex(' ')} "
                               f"(expected an xlsx zip or a legacy .xls)", path=str(path))


def _is_panic(e: BaseException) -> bool:
    # calamine is Rust: a malformed file can make it panic, which pyo3 raises as PanicException,
    # a BaseException that `except Exception` would let through and end the whole ingest run.
    return type(e).__name__ == "PanicException"


def _open_workbook(path: Path):
    if path.stat().st_size == 0:
        raise UnreadableFileError("the file is empty (0 bytes)", path=str(path))
    with open(path, "rb") as f:
        head = f.read(512)
    if head.startswith(_ZIP):
        kind = "xlsx"
    elif head.startswith(_OLE2):
        kind = "xls"
    else:
        raise _not_a_workbook(path, head)
    try:
        with open(path, "rb") as f:  # from the content, not the extension: an .xls renamed .xlsx still reads
            return calamine.CalamineWorkbook.from_filelike(f), kind
    except calamine.PasswordError:
        raise UnreadableFileError("the workbook is password-protected: ask the institution for an unprotected "
                                  "export", path=str(path)) from None
    except BaseException as e:
        if not isinstance(e, calamine.CalamineError) and not _is_panic(e):
            raise
        what = ("an incomplete or damaged xlsx (zip) archive: truncated in transfer?" if kind == "xlsx"
                else "a damaged legacy .xls (or an encrypted workbook)")
        raise UnreadableFileError(f"cannot open the workbook: {what} ({type(e).__name__}: {e})",
                                  path=str(path)) from None


def _choose_sheet(wb, option, path: Path) -> str:
    names = list(wb.sheet_names)
    listing = ", ".join(f"{i}: {n!r}" for i, n in enumerate(names))
    if option is None:
        visible = [m.name for m in wb.sheets_metadata
                   if m.visible == calamine.SheetVisibleEnum.Visible and m.typ == calamine.SheetTypeEnum.WorkSheet]
        if not (visible or names):
            raise UnreadableFileError("the workbook has no sheets", path=str(path))
        return (visible or names)[0]
    if isinstance(option, bool) or not isinstance(option, (int, str)):
        raise UnreadableFileError(f"feed option sheet must be a sheet name or a 0-based index, got {option!r}",
                                  path=str(path))
    if isinstance(option, int):
        if not 0 <= option < len(names):
            raise UnreadableFileError(f"no sheet at index {option}: the workbook's sheets are {listing}",
                                      path=str(path))
        return names[option]
    if option not in names:
        stripped = [n for n in names if n.strip() == option.strip()]
        if len(stripped) == 1:
            return stripped[0]
        raise UnreadableFileError(f"no sheet named {option!r}: the workbook's sheets are {listing}", path=str(path))
    return option


def _find_header(rows: list[list], sheet: str, path: Path) -> int:
    sample = rows[:HEADER_SCAN_ROWS]
    widest = max((sum(1 for v in r if v != "") for r in sample), default=0)
    if widest == 0:
        raise UnreadableFileError(f"sheet {sheet!r} is empty in its first {HEADER_SCAN_ROWS} rows", path=str(path))
    need = max(2 if widest > 1 else 1, math.ceil(widest / 2))
    for i, r in enumerate(sample):
        filled = [v for v in r if v != ""]
        texts = sum(1 for v in filled if type(v) is str)
        if texts >= need and texts >= 0.8 * len(filled):
            return i
    raise UnreadableFileError(f"no header row in the first {HEADER_SCAN_ROWS} rows of sheet {sheet!r} (a row "
                              f"whose cells are mostly text): set the feed option header_row", path=str(path))


def _header(rows: list[list], h0: int, merges, width: int, path: Path) -> tuple[int, list[str]]:
    """(last header row, column names); empty names where a column has no header."""
    merges = [m for m in merges if m[0][0] < len(rows) and m[0][1] < width]  # formatting beyond the data
    h1 = h0
    grown = True
    while grown:  # a header cell merged downwards makes the header span those rows
        grown = False
        for (r0, _c0), (r1, _c1) in merges:
            bottom = min(r1, len(rows) - 1)
            if h0 <= r0 <= h1 < bottom:
                h1, grown = bottom, True
    filled_right: set[int] = set()
    for (r0, c0), (r1, c1) in merges:
        if h0 <= r0 <= h1:
            top = rows[r0][c0]
            for r in range(r0, min(r1, h1) + 1):
                for c in range(c0, min(c1, width - 1) + 1):
                    if rows[r][c] == "":
                        rows[r][c] = top
            filled_right.update(range(c0 + 1, c1 + 1))
    names, seen = [], {}
    for c in range(width):
        parts: list[str] = []
        for r in range(h0, h1 + 1):
            t = _header_text(rows[r][c])
            if t and (not parts or parts[-1] != t):
                parts.append(t)
        name = ".".join(parts)
        if name and name in seen:
            if c not in filled_right:
                raise UnreadableFileError(f"the header (row {h0 + 1}) repeats the column {name!r} in columns "
                                          f"{column_letter(seen[name][0])} and {column_letter(c)}", path=str(path))
            seen[name].append(c)
            name = f"{name}.{len(seen[name])}"  # the 2nd, 3rd… column under one merged header cell
        elif name:
            seen[name] = [c]
        names.append(name)
    return h1, names


def open_excel(con: duckdb.DuckDBPyConnection, path: Path, feed: Feed, work_dir: Path) -> SourceScan:
    path = Path(path)
    header_opt = feed.options.get("header_row")
    if header_opt is not None and (isinstance(header_opt, bool) or not isinstance(header_opt, int) or header_opt < 1):
        raise UnreadableFileError(f"feed option header_row must be a 1-based row number, got {header_opt!r}",
                                  path=str(path))
    wb, kind = _open_workbook(path)
    try:
        sheet = _choose_sheet(wb, feed.options.get("sheet"), path)
        try:
            ws = wb.get_sheet_by_name(sheet)
            rows = ws.to_python(skip_empty_area=False)  # absolute positions, as merged ranges are
            merges = ws.merged_cell_ranges or []
        except BaseException as e:
            if not isinstance(e, calamine.CalamineError) and not _is_panic(e):
                raise
            raise UnreadableFileError(f"cannot read sheet {sheet!r}: {type(e).__name__}: {e}", path=str(path)) from None
    finally:
        wb.close()
    width = max((len(r) for r in rows), default=0)
    for r in rows:  # calamine gives a rectangle; pad anything shorter all the same
        if len(r) < width:
            r.extend([""] * (width - len(r)))
    if width == 0:
        raise UnreadableFileError(f"sheet {sheet!r} is empty", path=str(path))

    if header_opt is not None:
        if header_opt > len(rows) or all(v == "" for v in rows[header_opt - 1]):
            raise UnreadableFileError(f"header_row {header_opt} of sheet {sheet!r} is empty (the sheet has "
                                      f"{len(rows)} rows)", path=str(path))
        h0 = header_opt - 1
    else:
        h0 = _find_header(rows, sheet, path)
    h1, names = _header(rows, h0, merges, width, path)

    for (r0, c0), (r1, _c1) in merges:  # merged data cells: the value fills down the range's first column
        if h1 < r0 < len(rows) and c0 < width:
            top = rows[r0][c0]
            for r in range(r0 + 1, min(r1, len(rows) - 1) + 1):
                if rows[r][c0] == "":
                    rows[r][c0] = top

    data, excel_rows = [], []  # non-blank rows below the header, and their 1-based Excel row numbers
    for i in range(h1 + 1, len(rows)):  # a row of empty or whitespace-only cells looks blank: it is not a record
        if any(v.strip() if type(v) is str else True for v in rows[i]):
            data.append(rows[i])
            excel_rows.append(i + 1)
    blank = excel_rows[-1] - (h1 + 1) - len(data) if data else 0  # blank rows between records (trailing ones aside)
    del rows

    keep = []
    for c, name in enumerate(names):
        if name:
            keep.append((c, name))
        elif any(r[c] != "" for r in data):
            keep.append((c, f"column_{column_letter(c)}"))
    columns = [n for _, n in keep]

    # Numbers of 16+ digits in mapped columns lost precision in Excel: reject their rows.
    mapped = set(feed.mapping.values())
    rejected: dict[int, Reject] = {}
    limit = 10.0 ** EXCEL_DIGITS
    for c, name in keep:
        if name not in mapped:
            continue
        for k, r in enumerate(data):
            v = r[c]
            if type(v) is float and abs(v) >= limit and k not in rejected:
                ref = f"{column_letter(c)}{excel_rows[k]}"
                rejected[k] = Reject(
                    source_row=k + 1, raw_line="\t".join(cell_text(x) or "" for x in r),
                    error_type="NUMBER PRECISION LOST",
                    reason=f"cell {ref} ({name}) holds {cell_text(v)} as a number: Excel keeps {EXCEL_DIGITS} "
                           f"significant digits, so an ID number stored as a number has lost its last digits; "
                           f"the institution must export the column as text")
    if rejected:
        data = [r for k, r in enumerate(data) if k not in rejected]

    table = pa.Table.from_arrays([pa.array([cell_text(r[c]) for r in data], pa.string()) for c, _ in keep],
                                 schema=pa.schema([(n, pa.string()) for n in columns]))
    del data
    view = f"_hl_excel_{os.getpid()}_{next(_scan_ids)}"
    con.register(view, table)
    rejects = sorted(rejected.values(), key=lambda x: x.source_row)

    def cleanup():
        try:
            con.unregister(view)
        except duckdb.Error:
            pass

    notes = {"workbook": kind, "sheet": sheet, "header_row": h0 + 1, "header_rows": h1 - h0 + 1,
             "first_data_row": excel_rows[0] if excel_rows else None, "records": len(excel_rows),
             "blank_rows_skipped": blank, "merged_ranges": len(merges)}
    return SourceScan(columns=columns, from_sql=view, rejects=lambda c: rejects, cleanup=cleanup, notes=notes)

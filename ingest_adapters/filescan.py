"""One read of a landing file: its sha256 (the content key of a delivery) and whether it holds a
double quote, which decides the CSV reader's parser (delimited.py). The ingest hashes every file
before reading it; remembering the second fact for the file as it is on disk saves the reader its
own pass over a large file (~0.1 s per 600 MB)."""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from pathlib import Path

CHUNK = 4 * 1024 * 1024
_QUOTE = b'"'
_REMEMBERED = 1024
_holds_quote: OrderedDict[tuple, bool] = OrderedDict()


def _identity(path: Path, st: os.stat_result) -> tuple:
    return (str(Path(path).resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def sha256_file(path: Path) -> str:
    """The file's sha256 (hex); notes on the way whether it holds a double quote."""
    h, quote = hashlib.sha256(), False
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        st = os.fstat(f.fileno())
        while n := f.readinto(buf):
            h.update(view[:n])
            quote = quote or buf.find(_QUOTE, 0, n) >= 0
    _holds_quote[_identity(path, st)] = quote
    while len(_holds_quote) > _REMEMBERED:
        _holds_quote.popitem(last=False)
    return h.hexdigest()


def holds_double_quote(path: Path) -> bool | None:
    """Whether the file holds a double quote, if it was hashed as it is now; None if unknown."""
    try:
        return _holds_quote.get(_identity(path, os.stat(path)))
    except OSError:
        return None

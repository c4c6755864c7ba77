"""One read of a landing file: its sha256 (the content key of a delivery) and whether it holds a
double quote, which decides the CSV reader's parser (delimited.py). The ingest hashes every file
before reading it; remembering the second fact for the file as it is on disk saves the reader its
own pass over a large file (~0.1 s per 600 MB)."""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from pathlib import Path
from typing import BinaryIO, Iterator

CHUNK = 4 * 1024 * 1024
_QUOTE = b'"'
_REMEMBERED = 1024
_holds_quote: OrderedDict[tuple, bool] = OrderedDict()


def _identity(path: Path, st: os.stat_result) -> tuple:
    return (str(Path(path).resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _chunks(f: BinaryIO) -> Iterator[tuple[bytearray, int]]:
    """The file's bytes in one reused buffer (no mapping of the file, no copies): (buffer, bytes in it)."""
    buf = bytearray(CHUNK)
    while n := f.readinto(buf):
        yield buf, n


def sha256_file(path: Path) -> str:
    """The file's sha256 (hex); notes on the way whether it holds a double quote."""
    h, quote = hashlib.sha256(), False
    with open(path, "rb", buffering=0) as f:
        st = os.fstat(f.fileno())
        for buf, n in _chunks(f):
            h.update(memoryview(buf)[:n])
            quote = quote or buf.find(_QUOTE, 0, n) >= 0
    _holds_quote[_identity(path, st)] = quote
    while len(_holds_quote) > _REMEMBERED:
        _holds_quote.popitem(last=False)
    return h.hexdigest()


def holds_byte(path: Path, byte: bytes) -> bool:
    """Whether the file holds ``byte``: for a double quote, as noted when the file (as it is now) was
    hashed; otherwise read until the first one."""
    if byte == _QUOTE:
        try:
            known = _holds_quote.get(_identity(path, os.stat(path)))
        except OSError:
            known = None
        if known is not None:
            return known
    with open(path, "rb", buffering=0) as f:
        return any(buf.find(byte, 0, n) >= 0 for buf, n in _chunks(f))

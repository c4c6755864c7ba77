"""The ingest's one read of a file: sha256 and whether it holds a double quote, remembered for the
file as it is on disk (the CSV reader's choice of parser relies on it)."""

from __future__ import annotations

import hashlib
import os

from ingest_adapters import filescan
from ingest_adapters.filescan import CHUNK, holds_byte, sha256_file


def remembered(p):
    return filescan._holds_quote.get(filescan._identity(p, p.stat()))


def test_sha256_and_the_quote_are_noted_for_the_file_as_it_is(tmp_path):
    p = tmp_path / "a.csv"
    data = b"x" * (CHUNK + 10) + b'"' + b"y" * 5  # the quote in the second chunk
    p.write_bytes(data)
    assert remembered(p) is None  # not hashed yet
    assert sha256_file(p) == hashlib.sha256(data).hexdigest()
    assert remembered(p) is True and holds_byte(p, b'"') is True
    p.write_bytes(b"a,b\n1,2\n")  # changed (size): unknown until hashed again
    assert remembered(p) is None
    assert sha256_file(p) == hashlib.sha256(b"a,b\n1,2\n").hexdigest()
    assert remembered(p) is False and holds_byte(p, b'"') is False
    st = p.stat()
    p.write_bytes(b'a,"\n1,2\n')  # same size, rewritten: the modification time tells
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert remembered(p) is None
    assert holds_byte(p, b'"') is True  # read, not remembered
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    assert sha256_file(empty) == hashlib.sha256(b"").hexdigest() and holds_byte(empty, b'"') is False


def test_other_bytes_are_read_for_until_the_first(tmp_path):
    p = tmp_path / "b.csv"
    p.write_bytes(b"a|b\n" * (CHUNK // 4) + b"'x'\n")  # a single quote past the first chunk
    assert holds_byte(p, b"'") is True and holds_byte(p, b"~") is False


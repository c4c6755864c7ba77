"""The ingest's one read of a file: sha256 and whether it holds a double quote, remembered for the
file as it is on disk (the CSV reader's choice of parser relies on it)."""

from __future__ import annotations

import hashlib
import os

from ingest_adapters.filescan import CHUNK, holds_double_quote, sha256_file


def test_sha256_and_the_quote_are_noted_for_the_file_as_it_is(tmp_path):
    p = tmp_path / "a.csv"
    data = b"x" * (CHUNK + 10) + b'"' + b"y" * 5  # the quote in the second chunk
    p.write_bytes(data)
    assert holds_double_quote(p) is None  # not hashed yet
    assert sha256_file(p) == hashlib.sha256(data).hexdigest()
    assert holds_double_quote(p) is True
    p.write_bytes(b"a,b\n1,2\n")  # changed (size): unknown until hashed again
    assert holds_double_quote(p) is None
    assert sha256_file(p) == hashlib.sha256(b"a,b\n1,2\n").hexdigest()
    assert holds_double_quote(p) is False
    st = p.stat()
    p.write_bytes(b'a,"\n1,2\n')  # same size, rewritten: the modification time tells
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert holds_double_quote(p) is None
    assert holds_double_quote(tmp_path / "missing.csv") is None
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    assert sha256_file(empty) == hashlib.sha256(b"").hexdigest() and holds_double_quote(empty) is False

"""GB18030 → UTF-8: a large file is transcoded in parts in parallel, with exactly the output and the
replacement count of one pass over the whole file."""

import random

from ingest_adapters import transcode


def _gb_file(path, lines: int, seed: int) -> bytes:
    rnd = random.Random(seed)
    words = ["心血管内科", "妇产科", "王小东", "𠀀𠀁", "ḿ", "门诊,住院", "abc", "€", ""]
    out = ["\ufeff".encode("gb18030")]  # a GB18030 BOM (84 31 95 33)
    for i in range(lines):
        row = f"{i},{rnd.choice(words)},{rnd.choice(words)}".encode("gb18030")
        if i % 97 == 5:
            row += b"\x81"          # a lead byte cut off by the newline
        if i % 131 == 7:
            row += b"\x81\x20bad"   # an invalid two-byte sequence
        out.append(row + (b"\r\n" if i % 2 else b"\n"))
    data = b"".join(out)
    path.write_bytes(data)
    return data


def test_parallel_parts_equal_one_pass(tmp_path, monkeypatch):
    src = tmp_path / "big.csv"
    data = _gb_file(src, 20000, 1)
    one = tmp_path / "one.csv"
    n_one = transcode.transcode_range(src, one, "gb18030", 0, len(data))
    assert n_one > 0 and not one.read_text(encoding="utf-8").startswith("\ufeff")

    monkeypatch.setattr(transcode, "PARALLEL_BYTES", 1)
    monkeypatch.setattr(transcode.os, "cpu_count", lambda: 4)
    parts = transcode._parts(src, len(data), 4)
    assert len(parts) == 4 and parts[0][0] == 0 and parts[-1][1] == len(data)
    assert all(data[b - 1:b] == b"\n" for _, b in parts[:-1])  # every cut just after a newline
    par = tmp_path / "par.csv"
    assert transcode.transcode_to_utf8(src, par, "gb18030") == n_one
    assert par.read_bytes() == one.read_bytes()
    assert not list(tmp_path.glob("par.csv.part*"))  # the parts' files are gone


def test_a_file_without_newlines_or_in_another_encoding_is_one_part(tmp_path, monkeypatch):
    monkeypatch.setattr(transcode, "PARALLEL_BYTES", 1)
    src = tmp_path / "one_line.csv"
    src.write_bytes("内科".encode("gb18030") * 1000)
    assert transcode._parts(src, src.stat().st_size, 4) == [(0, src.stat().st_size)]
    out = tmp_path / "out.csv"
    assert transcode.transcode_to_utf8(src, out, "gb18030") == 0
    assert out.read_text(encoding="utf-8") == "内科" * 1000
    # UTF-16: a 0x0A byte may be half of a character, so the file is never split
    u16 = tmp_path / "u16.csv"
    u16.write_bytes(("a,\u0a0a\n" * 100).encode("utf-16"))
    transcode.transcode_to_utf8(u16, out, "utf-16")
    assert out.read_text(encoding="utf-8") == "a,\u0a0a\n" * 100

"""Streaming transcoding of legacy encodings (GB18030/GBK) to UTF-8.

DuckDB's `encodings` extension misreads characters that straddle its buffer boundary
(DESIGN.md, DuckDB 1.5.5), so legacy-encoded extracts are transcoded first, in chunks,
with bounded memory. Undecodable bytes become U+FFFD and are counted: the rows holding
them are then rejected by the ingest with their reason, while the rest of the file loads.

A large file in a GB encoding is transcoded in parts, one per core, in parallel (Python's
decoders hold the GIL, so the other parts run as processes of this same file, which imports
nothing of the project). The parts end after a newline byte: in GB18030, GBK and GB2312 the
byte 0x0A is never part of a multi-byte character, so each part decodes exactly as it would
inside the whole file, and the parts' outputs joined are the whole file's output.
"""

from __future__ import annotations

import codecs
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

REPLACEMENT = "\ufffd"
CHUNK = 4 * 1024 * 1024
PARALLEL_BYTES = 32 * 1024 * 1024  # a smaller file is transcoded in one part
# encodings in which a 0x0A byte is always a newline (not UTF-16/32, not ISO-2022): their multi-byte
# characters use bytes from 0x30 up only (GB18030's four-byte ones 0x30-0x39 in second and fourth place)
SPLITTABLE = {"gb18030", "gbk", "gb2312"}
# codec names in which every byte below 0x30 (newline, quotes, tab, comma) is that ASCII character
ASCII_BELOW_0X30_KEPT = frozenset({"utf-8", "utf-8-sig", *SPLITTABLE})

# Error handlers are registered globally by name; the counter is per thread.
_local = threading.local()


def _counting_replace(exc: UnicodeDecodeError):
    _local.count = getattr(_local, "count", 0) + 1
    return (REPLACEMENT, exc.end)


codecs.register_error("healthlake_count_replace", _counting_replace)


def transcode_to_utf8(src: Path, dst: Path, encoding: str) -> int:
    """Write ``src`` decoded from ``encoding`` as UTF-8 to ``dst``; return how many
    undecodable byte sequences were replaced by U+FFFD. A leading BOM is dropped."""
    size = os.path.getsize(src)
    parts = _parts(src, size, os.cpu_count() or 1) \
        if size >= PARALLEL_BYTES and codecs.lookup(encoding).name in SPLITTABLE else [(0, size)]
    if len(parts) == 1:
        return transcode_range(src, dst, encoding, 0, size)
    outputs = [Path(f"{dst}.part{i}") for i in range(1, len(parts))]
    workers = [subprocess.Popen([sys.executable, "-S", __file__, str(src), str(out), encoding, str(a), str(b)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for out, (a, b) in zip(outputs, parts[1:])]
    try:
        replaced = transcode_range(src, dst, encoding, *parts[0])
        for w in workers:
            out, err = w.communicate()
            if w.returncode != 0:
                raise OSError(f"transcoding a part of {src} failed: {err.strip()[-500:]}")
            replaced += int(out)
        with open(dst, "ab") as joined:
            for out in outputs:
                with open(out, "rb") as part:
                    _append(part, joined)
        return replaced
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait()
        for out in outputs:
            out.unlink(missing_ok=True)


def transcode_range(src: Path, dst: Path, encoding: str, start: int, end: int) -> int:
    """Bytes ``start``..``end`` of ``src`` decoded, written to ``dst`` as UTF-8 (a BOM dropped
    at the start of the file); the number of undecodable sequences replaced."""
    _local.count = 0
    decoder = codecs.getincrementaldecoder(encoding)(errors="healthlake_count_replace")
    first = start == 0
    left = end - start
    with open(src, "rb") as fin, open(dst, "w", encoding="utf-8", newline="") as fout:
        fin.seek(start)
        while True:
            chunk = fin.read(min(CHUNK, left))
            left -= len(chunk)
            text = decoder.decode(chunk, final=not chunk)
            if first and text:
                text = text.lstrip("\ufeff")
                first = False
            if text:
                fout.write(text)
            if not chunk:
                break
    return _local.count


def _parts(src: Path, size: int, n: int) -> list[tuple[int, int]]:
    """Up to ``n`` byte ranges of about equal size, each but the last ending just after a newline."""
    cuts = [0]
    with open(src, "rb") as f:
        for i in range(1, n):
            pos = max(size * i // n, cuts[-1])
            f.seek(pos)
            while True:
                block = f.read(1 << 20)
                if not block:
                    pos = size
                    break
                nl = block.find(b"\n")
                if nl >= 0:
                    pos += nl + 1
                    break
                pos += len(block)
            if pos >= size:
                break
            cuts.append(pos)
    cuts.append(size)
    return list(zip(cuts, cuts[1:]))


def _append(src, dst) -> None:
    try:
        while os.copy_file_range(src.fileno(), dst.fileno(), 1 << 30):
            pass
    except OSError:  # a file system without copy_file_range
        shutil.copyfileobj(src, dst, 16 << 20)


if __name__ == "__main__":  # one part, in a worker process: prints the number of replacements
    _src, _dst, _encoding, _start, _end = sys.argv[1:6]
    print(transcode_range(Path(_src), Path(_dst), _encoding, int(_start), int(_end)))

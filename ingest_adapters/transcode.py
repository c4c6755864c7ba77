"""Streaming transcoding of legacy encodings (GB18030/GBK) to UTF-8.

DuckDB's `encodings` extension misreads characters that straddle its buffer boundary
(DESIGN.md, DuckDB 1.5.5), so legacy-encoded extracts are transcoded first, in chunks,
with bounded memory. Undecodable bytes become U+FFFD and are counted: the rows holding
them are then rejected by the ingest with their reason, while the rest of the file loads.
"""

from __future__ import annotations

import codecs
import threading
from pathlib import Path

REPLACEMENT = "\ufffd"
CHUNK = 4 * 1024 * 1024

# Error handlers are registered globally by name; the counter is per thread.
_local = threading.local()


def _counting_replace(exc: UnicodeDecodeError):
    _local.count = getattr(_local, "count", 0) + 1
    return (REPLACEMENT, exc.end)


codecs.register_error("healthlake_count_replace", _counting_replace)


def transcode_to_utf8(src: Path, dst: Path, encoding: str) -> int:
    """Write ``src`` decoded from ``encoding`` as UTF-8 to ``dst``; return how many
    undecodable byte sequences were replaced by U+FFFD. A leading BOM is dropped."""
    _local.count = 0
    decoder = codecs.getincrementaldecoder(encoding)(errors="healthlake_count_replace")
    first = True
    with open(src, "rb") as fin, open(dst, "w", encoding="utf-8", newline="") as fout:
        while True:
            chunk = fin.read(CHUNK)
            text = decoder.decode(chunk, final=not chunk)
            if first and text:
                text = text.lstrip("\ufeff")
                first = False
            if text:
                fout.write(text)
            if not chunk:
                break
    return _local.count

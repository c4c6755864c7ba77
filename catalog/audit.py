"""The audit log of governed queries: append-only JSON lines, hash-chained.

Every governed query, allowed or refused, is one line of ``<root>/audit/governed_queries.jsonl``::

    {"seq": 12, "at": "2026-11-23T13:20:01.123456+00:00", "user": "li", "role": "analyst",
     "sql_sha256": "…", "tables": ["emr.fct_encounter"], "columns": ["emr.fct_encounter.visit_at"],
     "rows": 42, "outcome": "allowed", "reason": null, "prev_sha256": "…"}

(``tables``/``columns`` are the resolved ones read by an allowed query; for a refused query, the
names as written in it, unresolved: what it tried to read.)

``prev_sha256`` is the sha256 of the previous line's bytes (without its newline; 64 zeros on the
first line), so editing, deleting or reordering any line breaks the chain from there on:
``verify_audit_log()`` walks it. A chain alone cannot reveal lines cut off the *end*: anchor the
head (``audit_head()``: last ``seq`` and its line's hash) elsewhere — the pipeline's catalog step
records it in its Dagster metadata — and pass it back as ``verify_audit_log(anchor=…)``. The file is opened with ``O_APPEND`` and written under an
exclusive ``flock`` (read the last line, append one line, in one critical section), so concurrent
writers in several processes keep one chain. The SQL itself is not stored (only its hash): a
refused query may hold the very values it tried to probe for.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from healthlake.config import Settings, settings as load_settings

__all__ = ["audit_path", "append_entry", "read_entries", "verify_audit_log", "audit_head", "ChainCheck", "GENESIS"]

GENESIS = "0" * 64
_TAIL = 64 * 1024  # bytes read from the end to find the last line; one line is far shorter


def audit_path(s: Settings | None = None) -> Path:
    s = s or load_settings()
    return s.root / "audit" / "governed_queries.jsonl"


def _sha(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


def _last_line(fd: int) -> bytes | None:
    size = os.fstat(fd).st_size
    if size == 0:
        return None
    start = max(0, size - _TAIL)
    data = os.pread(fd, size - start, start).rstrip(b"\n")
    return data.rsplit(b"\n", 1)[-1]


def append_entry(entry: dict, s: Settings | None = None, path: Path | None = None) -> dict:
    """Append one entry (the ``at``, ``seq`` and ``prev_sha256`` fields are filled in); returns it."""
    path = path or audit_path(s)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        rfd = os.open(path, os.O_RDONLY)
        try:
            last = _last_line(rfd)
        finally:
            os.close(rfd)
        prev = _sha(last) if last else GENESIS
        seq = json.loads(last)["seq"] + 1 if last else 1
        record = {"seq": seq, "at": datetime.now(timezone.utc).isoformat(), **entry, "prev_sha256": prev}
        line = json.dumps(record, ensure_ascii=False, sort_keys=False, default=str).encode("utf-8")
        os.write(fd, line + b"\n")
        os.fsync(fd)
        return record
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def read_entries(s: Settings | None = None, path: Path | None = None) -> list[dict]:
    path = path or audit_path(s)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


@dataclass(frozen=True)
class ChainCheck:
    ok: bool
    entries: int
    bad_line: int | None = None  # 1-based line number where the chain first breaks
    reason: str | None = None


def audit_head(s: Settings | None = None, path: Path | None = None) -> tuple[int, str]:
    """(seq, sha256 of the last line): record it elsewhere to detect a truncated log later."""
    path = path or audit_path(s)
    if not path.exists():
        return 0, GENESIS
    fd = os.open(path, os.O_RDONLY)
    try:
        last = _last_line(fd)
    finally:
        os.close(fd)
    return (json.loads(last)["seq"], _sha(last)) if last else (0, GENESIS)


def verify_audit_log(s: Settings | None = None, path: Path | None = None,
                     anchor: tuple[int, str] | None = None) -> ChainCheck:
    """Walk the hash chain; the first line whose ``prev_sha256`` or ``seq`` does not follow breaks it.

    ``anchor`` (an earlier ``audit_head()``): that line must still be in the chain, unchanged.
    """
    path = path or audit_path(s)
    if not path.exists():
        if anchor and anchor[0] > 0:
            return ChainCheck(False, 0, None, f"log missing; the anchor expects {anchor[0]} entries")
        return ChainCheck(ok=True, entries=0)
    prev, n = GENESIS, 0
    anchored = anchor is None or anchor[0] == 0
    data = path.read_bytes()
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the newline that ends the last line
    for n, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except ValueError:
            return ChainCheck(False, n - 1, n, "not a JSON line")
        if record.get("prev_sha256") != prev:
            return ChainCheck(False, n - 1, n, "prev_sha256 does not match the previous line (edited, "
                                               "deleted or reordered lines)")
        if record.get("seq") != n:
            return ChainCheck(False, n - 1, n, f"seq {record.get('seq')} where {n} was expected")
        prev = _sha(line)
        if anchor and n == anchor[0]:
            if prev != anchor[1]:
                return ChainCheck(False, n - 1, n, "the anchored line was changed")
            anchored = True
    if not anchored:
        return ChainCheck(False, n, n + 1, f"truncated: the anchor expects at least {anchor[0]} entries, found {n}")
    return ChainCheck(ok=True, entries=n)

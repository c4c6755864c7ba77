"""One read-only lake connection per test, shared by a test module's queries and closed before
every ingest (and after every test, by the autouse fixture in conftest.py): a reader holding the
SQLite catalog open would make the ingest's commit wait."""

from __future__ import annotations

from healthlake.lake import connect
from ingest_adapters import ingest_landing as _ingest_landing

_READER: dict = {}


def q(s, sql, params=()):
    if "con" not in _READER:
        _READER["con"] = connect(s, read_only=True)
    return _READER["con"].execute(sql, list(params)).fetchall()


def close_reader() -> None:
    con = _READER.pop("con", None)
    if con is not None:
        con.close()


def ingest_landing(s):
    close_reader()
    return _ingest_landing(s)

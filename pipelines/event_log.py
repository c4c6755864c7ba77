"""The embedded Dagster instance's event log: Dagster's SQLite event log with its connections kept.

``dagster.yaml`` (the embedded demo instance) names ``PooledSqliteEventLogStorage``: the same files
(``storage/<run_id>.db`` per run and ``storage/index.db``), the same schema and queries as Dagster's
``SqliteEventLogStorage``, so ``dagster dev`` and every Dagster tool read it as usual. What differs is
how it connects. Dagster's class builds an engine, opens, commits and closes a SQLite connection for
every event it stores (a run of ``healthlake_all`` stores ~1,100); closing the last connection of a
WAL database checkpoints it, and each commit syncs the WAL to disk: about 50 ms per event on a busy
machine, the largest fixed cost of the demo's run after dbt. Here each shard keeps one open
connection (the storage's own lock serialises its use, as Dagster's does) with
``synchronous=NORMAL``: in WAL mode a commit is durable against a crash of the process, and only an
operating-system crash or power loss may drop the last events (the run itself is in the lake).
A few recently used shards stay open; the others are closed. Production (PostgreSQL storage,
``dagster.production.yaml``) does not use it.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as db
from dagster import Field, StringSource
from dagster._core.storage.event_log import SqliteEventLogStorage
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool, StaticPool

OPEN_SHARDS = 8


def default_base_dir() -> str:
    """Where Dagster's default SQLite storage keeps the event logs: ``$DAGSTER_HOME/history/runs/``."""
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        raise RuntimeError("PooledSqliteEventLogStorage without base_dir needs DAGSTER_HOME")
    return os.path.join(os.path.abspath(os.path.expanduser(home)), "history", "runs", "")


class PooledSqliteEventLogStorage(SqliteEventLogStorage):
    """``SqliteEventLogStorage`` with one open connection per shard (see the module docstring)."""

    def __init__(self, base_dir: str | None = None, inst_data=None):
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        self._engines_pid = os.getpid()
        super().__init__(base_dir or default_base_dir(), inst_data=inst_data)

    @classmethod
    def config_type(cls):
        return {"base_dir": Field(StringSource, is_required=False)}

    @classmethod
    def from_config_value(cls, inst_data, config_value) -> PooledSqliteEventLogStorage:
        return cls(inst_data=inst_data, **config_value)

    def _engine(self, shard: str) -> Engine:
        if self._engines_pid != os.getpid():  # a forked child: its parent's connections are not its own
            self._engines, self._engines_pid = OrderedDict(), os.getpid()
        engine = self._engines.pop(shard, None)
        if engine is None:
            conn_string = self.conn_string_for_shard(shard)
            if shard not in self._initialized_dbs:
                init = db.create_engine(conn_string, poolclass=NullPool,
                                        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS})
                self._initdb(init)
                init.dispose()
                self._initialized_dbs.add(shard)
            engine = db.create_engine(conn_string, poolclass=StaticPool,
                                      connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS,
                                                    "check_same_thread": False})
            db.event.listen(engine, "connect", _synchronous_normal)
        self._engines[shard] = engine
        while len(self._engines) > OPEN_SHARDS:
            self._engines.popitem(last=False)[1].dispose()
        return engine

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        with self._db_lock:
            with self._engine(shard).connect() as conn:
                with conn.begin():
                    yield conn

    def dispose(self) -> None:
        super().dispose()
        with self._db_lock:
            while self._engines:
                self._engines.popitem()[1].dispose()


def _synchronous_normal(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()

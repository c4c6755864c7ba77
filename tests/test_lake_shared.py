"""connect() on the embedded (SQLite catalog) lake: cursors of one DuckDB instance per process, lake
and mode, each still a connection of its own. (An invalidated instance: tests/test_lake_invalidated.py.)"""

import shutil

import duckdb
import pytest

from healthlake import lake


def test_connections_share_one_instance_per_mode_and_keep_their_own_transactions(lake_env):
    a, b = lake.connect(lake_env), lake.connect(lake_env)
    # one instance: a table of the in-memory database made through one cursor is seen by the other
    a.execute("CREATE TABLE memory.main.probe AS SELECT 42 AS x")
    assert b.execute("SELECT x FROM memory.main.probe").fetchall() == [(42,)]
    # each cursor is its own connection: default database, transactions, temporary tables
    assert a.execute("SELECT current_database()").fetchone()[0] == lake.LAKE
    a.execute("CREATE TABLE bronze.t (x INTEGER)")
    a.execute("BEGIN")
    a.execute("INSERT INTO bronze.t VALUES (1)")
    a.execute("CREATE TEMP TABLE only_a AS SELECT 1")
    assert b.execute("SELECT count(*) FROM bronze.t").fetchone()[0] == 0     # not committed yet
    with pytest.raises(duckdb.CatalogException):
        b.execute("SELECT * FROM only_a")
    a.execute("COMMIT")
    assert b.execute("SELECT count(*) FROM bronze.t").fetchone()[0] == 1
    assert b.execute("SELECT current_setting('ducklake_max_retry_count')").fetchone()[0] == \
        lake.DUCKLAKE_RETRY["ducklake_max_retry_count"]
    # closing a connection (release) leaves the instance to the next one
    lake.release(a)
    c = lake.connect(lake_env)
    assert c.execute("SELECT x FROM memory.main.probe").fetchall() == [(42,)]
    # read-only is an instance of its own, and cannot write
    r = lake.connect(lake_env, read_only=True)
    assert r.execute("SELECT count(*) FROM bronze.t").fetchone()[0] == 1
    with pytest.raises(duckdb.CatalogException):
        r.execute("SELECT * FROM memory.main.probe")
    with pytest.raises(duckdb.Error, match="read-only"):
        r.execute("INSERT INTO bronze.t VALUES (2)")
    for con in (b, c, r):
        lake.release(con)


def test_a_second_connection_opens_no_new_instance(lake_env, monkeypatch):
    # a new instance costs ~0.6 s of CPU (extensions' signatures, ATTACH): counted, not timed
    lake.release(lake.connect(lake_env))
    opened = []
    real = lake._new_instance
    monkeypatch.setattr(lake, "_new_instance", lambda *a, **k: opened.append(a) or real(*a, **k))
    for _ in range(5):
        lake.release(lake.connect(lake_env))
    assert opened == []
    lake.release(lake.connect(lake_env, read_only=True))   # another mode is an instance of its own
    assert len(opened) == 1


def test_a_replaced_catalog_is_a_new_instance_not_the_old_files(lake_env):
    con = lake.connect(lake_env)
    con.execute("CREATE TABLE bronze.old AS SELECT 1 AS x")
    lake.release(con)
    shutil.rmtree(lake_env.root / "lake")          # a fresh lake at the same path (a restore, a rerun)
    con = lake.connect(lake_env)
    assert not lake.table_exists(con, "bronze", "old")
    con.execute("CREATE TABLE bronze.new AS SELECT 2 AS x")
    lake.release(con)
    r = lake.connect(lake_env, read_only=True)
    assert r.execute("SELECT x FROM bronze.new").fetchall() == [(2,)]
    lake.release(r)


def test_duckdb_threads_setting_applies_to_the_lake_instances(lake_env, monkeypatch):
    """HEALTHLAKE_DUCKDB_THREADS (healthlake demo: 1) sets the threads of the process's DuckDB
    instances; unset, DuckDB's default; a changed setting is an instance of its own."""
    from healthlake.config import settings

    default = lake.connect(lake_env)
    n_default = default.execute("SELECT current_setting('threads')").fetchone()[0]
    monkeypatch.setenv("HEALTHLAKE_DUCKDB_THREADS", "1")
    one = settings()
    assert one.duckdb_threads == 1 and lake.duckdb_config(one)["threads"] == 1
    for read_only in (False, True):
        con = lake.connect(one, read_only=read_only)
        assert con.execute("SELECT current_setting('threads')").fetchone()[0] == 1
        lake.release(con)
    assert default.execute("SELECT current_setting('threads')").fetchone()[0] == n_default
    monkeypatch.setenv("HEALTHLAKE_DUCKDB_THREADS", "")
    assert settings().duckdb_threads is None and "threads" not in lake.duckdb_config(settings())
    lake.release(default)

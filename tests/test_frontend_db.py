"""Front-end databases (前置机): a CDC immunisation front-end in SQLite and in a real PostgreSQL
server, pulled incrementally by a watermark; ties at the watermark, crash safety, broken feeds."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import yaml

from healthlake.lake import connect
from ingest_adapters import load_registry
from ingest_adapters.frontend_db import pull_frontend

MAPPING = {"immunization_id": "record_no", "id_number": "id_card", "name": "child_name", "birth_date": "birthday",
           "vaccine_code": "vaccine", "vaccine_name": "vaccine_name", "dose_seq": "dose", "vaccinated_date": "given_on",
           "vaccinating_institution_code": "site"}
COLUMNS = ("record_no", "id_card", "child_name", "birthday", "vaccine", "vaccine_name", "dose", "given_on", "site",
           "updated_at")


def record(i: int, updated_at: str, name="王小明") -> tuple:
    return (f"JZ{i:06d}", f"51100220240101{i:04d}", name, "2024-01-01", "0101", "乙肝疫苗", i % 3 + 1,
            "2026-11-20", "CDC01", updated_at)


def registry_for(s, feeds: list[dict]):
    s.registry.parent.mkdir(parents=True, exist_ok=True)
    s.registry.write_text(yaml.safe_dump({"institutions": [{
        "code": "CDC01", "name": "内江市疾病预防控制中心", "kind": "cdc", "division_code": "511000",
        "feeds": feeds}]}, allow_unicode=True), encoding="utf-8")
    return load_registry(s.registry)


def sqlite_feed(db: str, table="vaccination", watermark="updated_at", feed_id="vaccination") -> dict:
    return {"id": feed_id, "format": "sqlite", "database": db, "table": table, "watermark": watermark,
            "dataset": "immunization", "mapping": MAPPING, "cadence": "daily"}


def make_sqlite(path: Path, rows) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE IF NOT EXISTS vaccination (record_no TEXT PRIMARY KEY, id_card TEXT, child_name TEXT, "
                   "birthday TEXT, vaccine TEXT, vaccine_name TEXT, dose INTEGER, given_on TEXT, site TEXT, "
                   "updated_at TIMESTAMP)")
        db.executemany(f"INSERT OR REPLACE INTO vaccination VALUES ({', '.join('?' * len(COLUMNS))})", rows)


@pytest.fixture
def con(lake_env):
    """One lake connection per test, shared by the pulls and the checks (connecting costs ~1 s)."""
    c = connect(lake_env)
    yield c
    c.close()


def q(con, sql, *params):
    return con.execute(sql, list(params)).fetchall()


# ------------------------------------------------------------------ SQLite

def test_sqlite_pulls_are_incremental_and_rows_tied_at_the_watermark_are_neither_lost_nor_doubled(lake_env, con):
    s = lake_env
    db = s.registry.parent / "cdc_frontend.sqlite"
    db.parent.mkdir(parents=True, exist_ok=True)
    make_sqlite(db, [record(1, "2026-11-20 08:00:00"), record(2, "2026-11-20 09:00:00"),
                     record(3, "2026-11-20 09:00:00")])
    registry = registry_for(s, [sqlite_feed("cdc_frontend.sqlite")])  # relative to the registry file

    (r1,) = pull_frontend(s, registry, con)
    assert (r1.status, r1.rows_read, r1.rows_loaded, r1.rows_rejected) == ("loaded", 3, 3, 0), r1.error
    assert r1.notes["watermark_to"] == "2026-11-20 09:00:00"
    # a row committed later with the same watermark as the previous maximum, one newer row,
    # and one row updated in place (its watermark moves on): all three are new
    make_sqlite(db, [record(4, "2026-11-20 09:00:00"), record(5, "2026-11-20 10:00:00"),
                     record(1, "2026-11-20 11:00:00", name="王晓明")])
    (r2,) = pull_frontend(s, registry, con)
    assert (r2.rows_read, r2.rows_loaded) == (3, 3), r2.error
    (r3,) = pull_frontend(s, registry, con)  # nothing new: a no-op, no batch row
    assert (r3.status, r3.rows_read, r3.batch_id) == ("skipped", 0, r2.batch_id)

    assert q(con, "SELECT immunization_id, name, dose_seq, vaccinated_date, _source_file FROM bronze.immunization "
                "ORDER BY _batch_id, _source_row") == [
        ("JZ000001", "王小明", "2", "2026-11-20", "sqlite:cdc_frontend.sqlite/vaccination"),
        ("JZ000002", "王小明", "3", "2026-11-20", "sqlite:cdc_frontend.sqlite/vaccination"),
        ("JZ000003", "王小明", "1", "2026-11-20", "sqlite:cdc_frontend.sqlite/vaccination"),
        ("JZ000004", "王小明", "2", "2026-11-20", "sqlite:cdc_frontend.sqlite/vaccination"),
        ("JZ000005", "王小明", "3", "2026-11-20", "sqlite:cdc_frontend.sqlite/vaccination"),
        ("JZ000001", "王晓明", "2", "2026-11-20", "sqlite:cdc_frontend.sqlite/vaccination")]
    assert q(con, "SELECT rows_read, rows_loaded, rows_rejected, status FROM ops.ingest_batch ORDER BY started_at") == \
        [(3, 3, 0, "loaded"), (3, 3, 0, "loaded")]
    assert q(con, "SELECT watermark_value, rows_at_watermark FROM ops.frontend_watermark") == [("2026-11-20 11:00:00", 1)]
    # every bronze row carries the lineage columns
    assert q(con, "SELECT count(*) FROM bronze.immunization WHERE _institution_code IS NULL OR _feed IS NULL OR "
                "_batch_id IS NULL OR _source_row IS NULL OR _ingested_at IS NULL OR _row_hash IS NULL") == [(0,)]


def test_a_crash_before_commit_leaves_the_watermark_and_the_rows_as_they_were(lake_env, con, monkeypatch):
    s = lake_env
    db = s.registry.parent / "fe.sqlite"
    db.parent.mkdir(parents=True, exist_ok=True)
    make_sqlite(db, [record(1, "2026-11-20 08:00:00")])
    registry = registry_for(s, [sqlite_feed(str(db))])
    pull_frontend(s, registry, con)
    make_sqlite(db, [record(2, "2026-11-20 09:00:00")])

    import ingest_adapters.frontend_db as fe

    real, calls = fe.record_batch, []

    def crash(con, batch):  # the last statement before COMMIT; the failed batch is then recorded
        calls.append(batch["status"])
        if len(calls) == 1:
            raise RuntimeError("power cut")
        real(con, batch)

    monkeypatch.setattr(fe, "record_batch", crash)
    (r,) = pull_frontend(s, registry, con)
    assert r.status == "failed" and "power cut" in r.error and calls == ["loaded", "failed"]
    assert q(con, "SELECT count(*) FROM bronze.immunization") == [(1,)]
    assert q(con, "SELECT watermark_value FROM ops.frontend_watermark") == [("2026-11-20 08:00:00",)]
    monkeypatch.undo()
    (r,) = pull_frontend(s, registry, con)
    assert (r.status, r.rows_loaded) == ("loaded", 1)
    assert q(con, "SELECT immunization_id FROM bronze.immunization ORDER BY 1") == [("JZ000001",), ("JZ000002",)]


def test_rows_without_a_business_key_are_rejected_and_null_watermarks_are_reported(lake_env, con):
    s = lake_env
    db = s.registry.parent / "fe.sqlite"
    db.parent.mkdir(parents=True, exist_ok=True)
    make_sqlite(db, [record(1, "2026-11-20 08:00:00"), record(2, None)])
    with sqlite3.connect(db) as c:
        c.execute("INSERT INTO vaccination (record_no, vaccine, updated_at) VALUES (NULL, '0101', '2026-11-20 08:30:00')")
    registry = registry_for(s, [sqlite_feed(str(db))])
    (r,) = pull_frontend(s, registry, con)
    assert (r.rows_read, r.rows_loaded, r.rows_rejected, r.notes["null_watermark_rows"]) == (2, 1, 1, 1)
    assert q(con, "SELECT source_row, error_type FROM bronze._rejects") == [(2, "MISSING KEY")]


def test_broken_feeds_fail_alone_with_a_clear_reason(lake_env, con):
    s = lake_env
    db = s.registry.parent / "fe.sqlite"
    db.parent.mkdir(parents=True, exist_ok=True)
    make_sqlite(db, [record(1, "2026-11-20 08:00:00")])
    registry = registry_for(s, [
        sqlite_feed(str(db), feed_id="ok"),
        sqlite_feed(str(db), table="vacination", feed_id="typo_table"),
        sqlite_feed(str(db), watermark="update_at", feed_id="typo_watermark"),
        sqlite_feed(str(s.registry.parent / "gone.sqlite"), feed_id="missing_file"),
        {"id": "no_dsn", "format": "postgres", "table": "vaccination", "watermark": "updated_at",
         "dataset": "immunization", "mapping": MAPPING},
    ])
    results = {r.feed: r for r in pull_frontend(s, registry, con)}
    assert results["ok"].status == "loaded" and results["ok"].rows_loaded == 1
    assert "no table 'vacination'" in results["typo_table"].error and "did you mean 'vaccination'" in results["typo_table"].error
    assert "no watermark column 'update_at'" in results["typo_watermark"].error
    assert "did you mean 'updated_at'" in results["typo_watermark"].error
    assert "does not exist" in results["missing_file"].error
    assert "needs 'database'" in results["no_dsn"].error
    assert sorted(q(con, "SELECT feed, status FROM ops.ingest_batch")) == [
        ("missing_file", "failed"), ("no_dsn", "failed"), ("ok", "loaded"), ("typo_table", "failed"),
        ("typo_watermark", "failed")]


def test_a_sqlite_file_delivered_to_the_landing_zone_loads_whole(lake_env, con):
    from ingest_adapters import ingest_landing

    s = lake_env
    registry = registry_for(s, [dict(sqlite_feed("unused.sqlite"), database=None) | {"id": "dump"}])
    path = s.landing / "CDC01" / "dump" / "vaccination_20261120.sqlite"
    path.parent.mkdir(parents=True)
    make_sqlite(path, [record(i, f"2026-11-20 0{i}:00:00") for i in range(1, 4)])
    (r,) = ingest_landing(s, registry, con)
    assert (r.status, r.rows_read, r.rows_loaded) == ("loaded", 3, 3), r.error


# ------------------------------------------------------------------ PostgreSQL (a real server)

@pytest.fixture
def postgres():
    from healthlake.servers import ServerError, postgres as pg_server, postgres_bin_dir

    try:
        postgres_bin_dir()
    except ServerError as e:
        pytest.skip(f"PostgreSQL server binaries missing: {e}")
    with pg_server() as server:  # 127.0.0.1, a free port, stopped by PID
        yield server.url()


def test_postgres_front_end_pulled_incrementally_and_an_unreachable_one_fails_alone(lake_env, con, postgres, monkeypatch):
    import psycopg2

    s = lake_env
    monkeypatch.setenv("CDC_FRONTEND_DSN", postgres)
    pg = psycopg2.connect(postgres)
    pg.autocommit = True
    with pg.cursor() as cur:
        cur.execute("CREATE SCHEMA cdc; CREATE TABLE cdc.vaccination (record_no text PRIMARY KEY, id_card text, "
                    "child_name text, birthday date, vaccine text, vaccine_name text, dose int, given_on date, "
                    "site text, updated_at timestamptz)")
        cur.executemany(f"INSERT INTO cdc.vaccination VALUES ({', '.join(['%s'] * len(COLUMNS))})",
                        [record(1, "2026-11-20 08:00:00+08"), record(2, "2026-11-20 09:00:00+08")])
    feed = {"id": "vaccination", "format": "postgres", "database": "${CDC_FRONTEND_DSN}", "schema": "cdc",
            "table": "vaccination", "watermark": "updated_at", "dataset": "immunization", "mapping": MAPPING}
    from healthlake.servers import free_port

    down = dict(feed, id="down", database=f"postgresql://postgres:s3cret-pw@127.0.0.1:{free_port()}/postgres")
    registry = registry_for(s, [feed, down])

    results = {r.feed: r for r in pull_frontend(s, registry, con)}
    assert (results["vaccination"].status, results["vaccination"].rows_loaded) == ("loaded", 2), results["vaccination"].error
    assert results["down"].status == "failed" and "cannot open the front-end database postgres://127.0.0.1" in results["down"].error
    assert "s3cret-pw" not in results["down"].error  # DuckDB quotes the connection string: redacted
    with pg.cursor() as cur:  # a tie at the watermark and a newer row
        cur.executemany(f"INSERT INTO cdc.vaccination VALUES ({', '.join(['%s'] * len(COLUMNS))})",
                        [record(3, "2026-11-20 09:00:00+08"), record(4, "2026-11-21 07:00:00+08")])
    results = {r.feed: r for r in pull_frontend(s, registry, con)}
    assert (results["vaccination"].rows_read, results["vaccination"].rows_loaded) == (2, 2)
    (r,) = [r for r in pull_frontend(s, registry, con) if r.feed == "vaccination"]
    assert (r.status, r.rows_read) == ("skipped", 0)
    pg.close()
    assert q(con, "SELECT immunization_id, birth_date, _source_file FROM bronze.immunization ORDER BY 1") == [
        (f"JZ00000{i}", "2024-01-01", "postgres://127.0.0.1:%s/postgres/cdc.vaccination" % postgres.rsplit(":", 1)[1].split("/")[0])
        for i in range(1, 5)]
    # the DSN stays in the environment: no password or DSN in the lineage or the batch rows
    assert q(con, "SELECT count(*) FROM ops.ingest_batch WHERE source_file LIKE '%${%' OR error LIKE '%s3cret%'") == [(0,)]

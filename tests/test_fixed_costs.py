"""The helpers that cut the demo's fixed costs keep the answers they replace (plain DuckDB, no lake)."""

import duckdb
import pytest

from catalog.classification import columns_cached, lake_columns
from healthlake.lake import one_transaction
from ingest_adapters.bookkeeping import BATCH_COLUMNS, OPS_DDL, batch_states, cached_loaded, known_loaded, record_batch


@pytest.fixture
def con():
    c = duckdb.connect()
    c.execute("ATTACH ':memory:' AS lake")
    yield c
    c.close()


def test_one_transaction_commits_once_and_rolls_back_on_error(con):
    con.execute("CREATE TABLE lake.t (x INTEGER)")
    with one_transaction(con):
        con.execute("INSERT INTO lake.t VALUES (1)")
        ids = {con.execute("SELECT txid_current()").fetchone()[0] for _ in range(3)}
        assert len(ids) == 1                       # every statement in the same transaction
    assert con.execute("SELECT count(*) FROM lake.t").fetchone()[0] == 1
    with pytest.raises(duckdb.Error):
        with one_transaction(con):
            con.execute("INSERT INTO lake.t VALUES (2)")
            con.execute("SELECT * FROM lake.no_such_table")
    assert con.execute("SELECT count(*) FROM lake.t").fetchone()[0] == 1   # rolled back


def test_lake_columns_are_read_once_inside_columns_cached(con):
    con.execute("CREATE TABLE lake.a (x INTEGER, y VARCHAR)")
    fresh = lake_columns(con)
    with columns_cached(con):
        assert lake_columns(con) == fresh
        con.execute("CREATE TABLE lake.b (z INTEGER)")
        assert lake_columns(con) == fresh            # the block's first answer
    assert ("main", "b", "z", "INTEGER") in lake_columns(con)   # read again outside the block


def test_known_loaded_answers_loaded_content_and_still_looks_up_the_rest(con):
    con.execute("CREATE SCHEMA lake.ops")
    con.execute("USE lake")
    con.execute(OPS_DDL[1])

    def add(batch_id, sha, status="loaded"):
        row = {"batch_id": batch_id, "institution_code": "I1", "feed": "f", "sha256": sha, "status": status}
        con.execute(f"INSERT INTO ops.ingest_batch ({', '.join(BATCH_COLUMNS)}) VALUES "
                    f"({', '.join('?' * len(BATCH_COLUMNS))})", [row.get(c) for c in BATCH_COLUMNS])

    add("I1.f.aaa", "aaa")
    add("I1.f.bbb", "bbb", status="failed")
    with known_loaded(con):
        assert cached_loaded(con, "I1", "f", "aaa") == "I1.f.aaa"
        assert cached_loaded(con, "I1", "f", "bbb") is None          # failed: not loaded
        assert cached_loaded(con, "I2", "f", "aaa") is None          # another institution's feed
        add("I1.f.ccc", "ccc")                                        # loaded after the block began:
        assert cached_loaded(con, "I1", "f", "ccc") is None          # not cached, but the lake query sees it
        assert batch_states(con, [("I1", "f", "ccc", "I1.f.ccc")]) == {"I1.f.ccc": ("I1.f.ccc", False)}
    assert cached_loaded(con, "I1", "f", "aaa") is None              # nothing cached outside the block
    # several files in one query: loaded content (for its own institution and feed only) and a failed attempt
    assert batch_states(con, [("I1", "f", "aaa", "I1.f.aaa"), ("I2", "f", "aaa", "I2.f.aaa"),
                              ("I1", "f", "bbb", "I1.f.bbb"), ("I1", "f", "ddd", "I1.f.ddd")]) == {
        "I1.f.aaa": ("I1.f.aaa", False), "I2.f.aaa": (None, False), "I1.f.bbb": (None, True), "I1.f.ddd": (None, False)}
    assert batch_states(con, []) == {}
    # the failed attempt's row is replaced when the batch loads
    loaded, failed = batch_states(con, [("I1", "f", "bbb", "I1.f.bbb")])["I1.f.bbb"]
    record_batch(con, {"batch_id": "I1.f.bbb", "institution_code": "I1", "feed": "f", "sha256": "bbb",
                       "status": "loaded", "earlier_failed": failed})
    assert con.execute("SELECT status FROM ops.ingest_batch WHERE batch_id = 'I1.f.bbb'").fetchall() == [("loaded",)]

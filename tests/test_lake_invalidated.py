"""A DuckDB fatal error in the middle of an ingest: the database instance is invalidated with a
DuckLake transaction open. Closing that connection would abort the process (std::terminate);
the ingest must instead abandon it, retry on a new connection (PostgreSQL catalog: the file
loads in the same run) or fail cleanly (SQLite catalog: the rerun loads it), and exit with status 1.

The fatal error is real: DuckDB 1.5.5 raises an internal error (and invalidates its database) on a
Parquet scan keyed by field ids with ``file_row_number`` over a file without field ids. In
production the same invalidation came from the PostgreSQL catalog restarting mid-commit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.test_ingest_csv import inst, put, query, write_registry

CHILD = textwrap.dedent("""
    import json, sys
    import ingest_adapters.ingest as ingest
    from pipelines.defs.ingest.partitions import ingest_institution

    real, fired = ingest.record_batch, []
    parquet = sys.argv[1]

    def record_batch_after_a_fatal_error(con, batch):
        if parquet and not fired and batch.get("status") == "loaded":
            fired.append(batch["source_file"])  # inside the file's open DuckLake transaction
            con.execute("COPY (SELECT 1 AS a) TO '" + parquet + "'")
            try:
                con.execute("SELECT * FROM read_parquet('" + parquet + "', schema=MAP {1: {name: 'a', "
                            "type: 'INTEGER', default_value: NULL}}, file_row_number=true)").fetchall()
            except Exception as e:
                print("provoked:", type(e).__name__, file=sys.stderr, flush=True)
        return real(con, batch)

    ingest.record_batch = record_batch_after_a_fatal_error
    r = ingest_institution("H1")
    print(json.dumps({"fired": fired, "batches": [[b.source_file, b.status] for b in r.batches]}), flush=True)
    sys.exit(0)
""")


def _ingest_in_a_child(parquet: Path | None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    return subprocess.run([sys.executable, "-c", CHILD, str(parquet or "")], env=env,
                          capture_output=True, text=True, timeout=180)


def _batches(p: subprocess.CompletedProcess) -> dict:
    assert p.stdout.strip(), p.stderr[-4000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def _deliver(s) -> None:
    write_registry(s, [inst("H1")])
    put(s, "H1", "a.csv", b"KSDM,KSMC,KSLB\n01,a,x\n02,b,y\n")
    put(s, "H1", "b.csv", b"KSDM,KSMC,KSLB\n03,c,z\n")


def _assert_each_file_loaded_once(s) -> None:
    # the invalidated transaction left nothing behind: every file once, every batch loaded
    assert query(s, "SELECT _source_file, count(*) FROM bronze.department GROUP BY 1 ORDER BY 1") == [
        ("H1/dict_dept/a.csv", 2), ("H1/dict_dept/b.csv", 1)]
    assert query(s, "SELECT source_file, status FROM ops.ingest_batch ORDER BY 1") == [
        ("H1/dict_dept/a.csv", "loaded"), ("H1/dict_dept/b.csv", "loaded")]


def _assert_abandoned_not_aborted(p: subprocess.CompletedProcess) -> None:
    # 1, not -6 (SIGABRT from closing the invalidated connection): it is abandoned, never destroyed
    assert p.returncode == 1, (p.returncode, p.stderr[-3000:])
    assert "provoked: InternalException" in p.stderr
    assert "abandoned" in p.stderr and "transient error" in p.stderr


def test_postgres_catalog_an_invalidated_database_is_abandoned_and_the_file_retried_on_a_new_connection(
        lake_env, tmp_path, monkeypatch):
    from healthlake.config import settings
    from healthlake.servers import postgres

    with postgres() as pg:
        monkeypatch.setenv("HEALTHLAKE_CATALOG", pg.create_database("ducklake"))
        monkeypatch.setenv("HEALTHLAKE_DATA_PATH", str(tmp_path / "data") + "/")
        s = settings()
        _deliver(s)
        p = _ingest_in_a_child(tmp_path / "no_field_ids.parquet")
        _assert_abandoned_not_aborted(p)
        out = _batches(p)
        assert out["fired"] == ["H1/dict_dept/a.csv"]  # the fatal error hit the first file, in its transaction
        assert sorted(out["batches"]) == [["H1/dict_dept/a.csv", "loaded"], ["H1/dict_dept/b.csv", "loaded"]]
        _assert_each_file_loaded_once(s)


def test_sqlite_catalog_an_invalidated_database_fails_the_run_cleanly_and_the_rerun_converges(lake_env, tmp_path):
    # The abandoned connection keeps its SQLite catalog transaction (and lock) until the process
    # ends, so the retries in the same process find the catalog locked and the run fails cleanly.
    s = lake_env
    _deliver(s)
    p = _ingest_in_a_child(tmp_path / "no_field_ids.parquet")
    _assert_abandoned_not_aborted(p)
    assert "database is locked" in p.stderr
    rerun = _ingest_in_a_child(None)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert sorted(_batches(rerun)["batches"]) == [["H1/dict_dept/a.csv", "loaded"], ["H1/dict_dept/b.csv", "loaded"]]
    _assert_each_file_loaded_once(s)

"""Faults on the production topology (PostgreSQL catalog, S3 data and landing zone).

- SIGKILL of the pipeline at random points of ingest (8), dbt (6) and publish (6), then a rerun.
  After every ingest kill every table is readable, no row is there twice, and for every loaded
  batch rows read = rows loaded + rows rejected = its bronze and reject rows; after every dbt or
  publish kill the mart and the published database are still there, whole. After the rerun every
  delivered file is loaded exactly once with all its records and is in the raw archive, and the
  mart agrees with the ledger.
- The S3 server killed and restarted while an ingest runs: retries, nothing lost.
- PostgreSQL restarted while an ingest runs: the run fails cleanly or recovers; a rerun converges.
- Backup and restore: catalog dump + data files → another server → identical query results.

Steps run in children of a fork server (``fault_worker.py serve``) that has imported the pipeline
and parsed the dbt project once, so a kill point lands in the step's work, not in Python's
imports. Kill delays are random (seeded: FAULT_SEED) within the step's measured length.
"""

from __future__ import annotations

import hashlib
import os
import queue
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from healthlake.config import REPO_ROOT, settings
from healthlake.lake import connect

from .conftest import use_production_lake
from .test_s3_postgres import pick_institutions

SEED = int(os.environ.get("FAULT_SEED", "20261123"))
INGEST_KILLS, DBT_KILLS, PUBLISH_KILLS = 8, 6, 6  # 20 kill points
DBT_BUILD = ("dbt", "build", "--select", "+dim_institution", "--indirect-selection", "cautious")
DBT_RUN = ("dbt", "run", "--select", "+dim_institution")  # the killed runs: models only
WORKER = Path(__file__).with_name("fault_worker.py")
PROTOCOL = re.compile(r"^(ready|started (\d+)|exit (\d+) (-?\d+))$")


class ForkServer:
    """``fault_worker.py serve``: runs each step in a fresh child that the test may SIGKILL."""

    def __init__(self, logs: Path):
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
        self.logs = logs
        self.proc = subprocess.Popen([sys.executable, str(WORKER), "serve", str(logs)], cwd=REPO_ROOT, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, bufsize=1, start_new_session=True)
        self.lines: queue.Queue = queue.Queue()
        self.tail: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        self._expect("ready", timeout=180)

    def _read(self) -> None:
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            if PROTOCOL.match(line):
                self.lines.put(line)
            else:
                self.tail = (self.tail + [line])[-40:]
        self.lines.put("eof")

    def _expect(self, what: str, timeout: float | None) -> str:
        line = self.lines.get(timeout=timeout)
        if not line.startswith(what):
            raise AssertionError(f"fork server: expected {what!r}, got {line!r}\n" + "\n".join(self.tail))
        return line

    def run(self, *cmd: str, kill_after: float | None = None, timeout: float = 300) -> tuple[int, float, bool]:
        """Run a step; SIGKILL it after ``kill_after`` s if it is still running. (rc, seconds, killed)"""
        self.proc.stdin.write(" ".join(cmd) + "\n")
        self.proc.stdin.flush()
        pid = int(self._expect("started", timeout=180).split()[1])  # the first dbt command parses
        t0 = time.perf_counter()
        killed = False
        try:
            line = self.lines.get(timeout=kill_after if kill_after is not None else timeout)
        except queue.Empty:
            if kill_after is None:
                raise
            os.kill(pid, signal.SIGKILL)
            killed = True
            line = self._expect("exit", timeout=30)
        seconds = time.perf_counter() - t0
        assert line.startswith(f"exit {pid} "), (line, "\n".join(self.tail), self.log(cmd[0]))
        return int(line.split()[2]), seconds, killed

    def log(self, step: str) -> str:
        logs = sorted(self.logs.glob(f"*-{step}.log"))
        return logs[-1].read_text(errors="replace")[-3000:] if logs else ""

    def ok(self, *cmd: str) -> float:
        rc, seconds, _ = self.run(*cmd)
        assert rc == 0, (cmd, self.log(cmd[0]))
        return seconds

    def close(self) -> None:
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


class Deliveries:
    """What institutions delivered: key → (institution, feed, sha256, records)."""

    def __init__(self, city: Path):
        self.city, self.files = city, {}

    def deliver(self, codes: list[str], round_no: int) -> int:
        """Upload the institutions' files as delivery ``round_no``. Round 0 is every file as generated;
        a later round is every file with records, its last record repeated ``round_no`` times, under a
        new name (new content: a new batch). Returns the number of files."""
        from healthlake.storage import S3Landing

        store, n = S3Landing(settings()), 0
        work = settings().root / "deliveries" / str(round_no)
        for code in codes:
            for f in sorted((self.city / "landing" / code).rglob("*")):
                if not f.is_file():
                    continue
                data = f.read_bytes()
                nl = b"\r\n" if b"\r\n" in data else b"\n"
                lines = data.rstrip(b"\r\n").split(nl)
                if round_no:
                    if len(lines) < 2:
                        continue  # a header without records would be the same content again
                    data = data.rstrip(b"\r\n") + nl + nl.join([lines[-1]] * round_no) + nl
                    lines += [lines[-1]] * round_no
                rel = f.relative_to(self.city / "landing")
                key = (rel.parent / f"{f.stem}_r{round_no}{f.suffix}").as_posix()
                dest = work / key
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(data)
                store.put(key, dest)
                self.files[key] = (rel.parts[0], rel.parts[1], hashlib.sha256(data).hexdigest(), len(lines) - 1)
                n += 1
        return n

    def assert_all_loaded_once(self, con, suffix: str = "") -> None:
        """Every delivered file (``suffix``: of one round) loaded exactly once with all its records,
        gone from the landing zone and kept in the raw archive."""
        from healthlake.storage import S3Landing, minio_client, split_url

        files = {k: v for k, v in self.files.items() if k.endswith(suffix + ".csv")} if suffix else self.files
        loaded = {(i, f, sha): (n, src) for i, f, sha, n, src in con.execute(
            "SELECT institution_code, feed, sha256, rows_read, source_file FROM ops.ingest_batch "
            "WHERE status = 'loaded'").fetchall()}
        for key, (inst, feed, sha, records) in files.items():
            assert (inst, feed, sha) in loaded, f"{key}: delivered, never loaded"
            assert loaded[(inst, feed, sha)] == (records, key), (key, records, loaded[(inst, feed, sha)])
        s = settings()
        assert S3Landing(s).list() == []
        bucket, prefix = split_url(s.archive_url)
        archived = {o.object_name[len(prefix):].partition("/")[2]
                    for o in minio_client(s).list_objects(bucket, prefix=prefix, recursive=True)}
        assert set(files) <= archived, sorted(set(files) - archived)[:5]


def assert_consistent(con, mart: bool = False) -> dict:
    """No corrupt table, no row twice, and the ledger agrees with bronze for every loaded batch."""
    tables = [f'{a}.{b}' for a, b in con.execute("SELECT schema_name, table_name FROM duckdb_tables() "
                                                  "WHERE database_name = 'lake' ORDER BY ALL").fetchall()]
    bronze = [t for t in tables if t.startswith("bronze.") and t != "bronze._rejects"]
    # every table readable; no bronze row twice
    found = con.execute(" UNION ALL ".join(
        f"SELECT '{t}', count(*), " + ("count(*) - count(DISTINCT (_batch_id, _source_row))" if t in bronze else "0")
        + f" FROM lake.{t}" for t in tables)).fetchall()
    counts = {t: n for t, n, _ in found}
    assert [(t, d) for t, _, d in found if d] == [], "rows twice"
    if mart:
        assert "resource.dim_institution" in counts, "the mart is gone"
    # the ledger: rows read = loaded + rejected, one loaded row per batch, bronze and rejects as
    # recorded, and no bronze row without a loaded batch (a killed ingest left nothing behind)
    union = " UNION ALL ".join(f"SELECT _batch_id FROM {t}" for t in bronze)
    bad = con.execute(
        "WITH i AS (SELECT * FROM ops.ingest_batch WHERE status = 'loaded'), "
        f"b AS (SELECT _batch_id AS batch_id, count(*) AS n FROM ({union}) GROUP BY 1), "
        "r AS (SELECT batch_id, count(*) AS n FROM bronze._rejects GROUP BY 1) "
        "SELECT coalesce(i.batch_id, b.batch_id, r.batch_id), i.rows_read, i.rows_loaded, b.n, i.rows_rejected, r.n "
        "FROM i FULL JOIN b USING (batch_id) FULL JOIN r USING (batch_id) "
        "WHERE i.batch_id IS NULL OR i.rows_read <> i.rows_loaded + i.rows_rejected "
        "OR i.rows_loaded <> coalesce(b.n, 0) OR i.rows_rejected <> coalesce(r.n, 0)").fetchall()
    assert bad == [], bad
    assert con.execute("SELECT count(*) - count(DISTINCT batch_id) FROM ops.ingest_batch "
                       "WHERE status = 'loaded'").fetchone()[0] == 0
    return counts


def assert_published_readable() -> None:
    import duckdb

    from catalog.publish import published_path

    p = published_path(5)
    if p.exists():
        con = duckdb.connect(str(p), read_only=True)
        try:
            assert con.execute("SELECT count(*) FROM catalog.published_column").fetchone()[0] > 0
        finally:
            con.close()


@pytest.fixture(scope="module")
def fault_lake(servers, tiny_city, tmp_path_factory):
    """A production lake with round 0 of two institutions ingested, and a fork server for the steps."""
    with pytest.MonkeyPatch.context() as mp:
        root = tmp_path_factory.mktemp("faults")
        env = use_production_lake(servers, root, tiny_city / "registry.yaml", mp)
        codes = pick_institutions(tiny_city / "registry.yaml", 2)
        deliveries = Deliveries(tiny_city)
        deliveries.deliver(codes, 0)
        fork = ForkServer(root / "logs")
        try:
            fork.ok("ingest", *codes)
            yield {"codes": codes, "city": tiny_city, "env": env, "servers": servers, "fork": fork,
                   "deliveries": deliveries, "rounds": iter(range(1, 1000))}
        finally:
            fork.close()


@pytest.fixture
def lake_con(fault_lake):
    con = connect(read_only=True)
    yield con
    con.close()


def kill_points(fork: ForkServer, rng: random.Random, wanted: int, step, length: float,
                before=None, check=None) -> list[float]:
    """SIGKILL ``step()`` (the command) at ``wanted`` random points of its length (a run that finished
    first does not count); ``before`` and ``check`` run before and after each run."""
    killed, attempts = [], 0
    while len(killed) < wanted and attempts < 3 * wanted:
        attempts += 1
        if before:
            before()
        delay = rng.uniform(0.05, 0.9 * length)
        cmd = step()
        t0 = time.perf_counter()
        rc, seconds, was_killed = fork.run(*cmd, kill_after=delay)
        print(f"{cmd[0]}: {'killed' if was_killed else 'finished'} after {seconds:.1f} s (aimed at {delay:.1f} s)",
              end="", file=sys.stderr)
        if was_killed:
            killed.append(round(delay, 2))
        else:
            assert rc == 0, (cmd, fork.log(cmd[0]))
            length = min(length, seconds)  # faster than measured: aim within this run's length
        if check:
            check()
        print(f", round {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    assert len(killed) == wanted, (cmd, killed, attempts)
    return killed


def test_sigkill_during_ingest_then_rerun_converges(fault_lake, lake_con):
    fork, codes, deliveries = fault_lake["fork"], fault_lake["codes"], fault_lake["deliveries"]
    rng = random.Random(SEED)
    rounds = fault_lake["rounds"]
    # the length of one delivery's ingest (one institution a round), measured unkilled
    deliveries.deliver(codes[:1], next(rounds))
    length = fork.ok("ingest", codes[0])
    current = []

    def deliver():  # each killed run ingests a new delivery of one institution (and what is left of it)
        n = next(rounds)
        current[:] = [codes[n % len(codes)]]
        deliveries.deliver(current, n)

    kill_points(fork, rng, INGEST_KILLS, lambda: ("ingest", *current), length, before=deliver,
                check=lambda: assert_consistent(lake_con))
    fork.ok("ingest", *codes)  # the rerun
    assert_consistent(lake_con)
    deliveries.assert_all_loaded_once(lake_con)


def test_maintenance_after_the_kills_deletes_orphans_and_nothing_needed(fault_lake, lake_con):
    """The maintenance job on PostgreSQL + S3 deletes what killed writers left (Parquet files
    written, never committed) and nothing a table needs."""
    from datetime import datetime, timezone

    from pipelines.defs.maintenance.lake_maintenance import maintain_lake

    r = maintain_lake(delete_older_than=datetime.now(timezone.utc), move_cold=False)
    print(f"maintenance after the kills: {r.metadata()}", file=sys.stderr)
    assert stored_objects() == referenced_files(lake_con)  # no orphan left, nothing needed deleted
    assert_consistent(lake_con)
    fault_lake["deliveries"].assert_all_loaded_once(lake_con)


def stored_objects() -> int:
    from healthlake.storage import minio_client, split_url

    s = settings()
    bucket, prefix = split_url(s.data_path)
    return sum(1 for _ in minio_client(s).list_objects(bucket, prefix=prefix, recursive=True))


def referenced_files(con) -> int:
    """Files the catalog knows: data and delete files of the current and retained snapshots, and
    those merged away, waiting for their grace period to pass before they are deleted."""
    meta = "__ducklake_metadata_lake"
    return con.execute(f"SELECT (SELECT count(*) FROM {meta}.ducklake_data_file) + "
                       f"(SELECT count(*) FROM {meta}.ducklake_delete_file) + "
                       f"(SELECT count(*) FROM {meta}.ducklake_files_scheduled_for_deletion)").fetchone()[0]


def assert_mart_whole(con) -> None:
    """The mart is there and readable, no half-swapped dbt relation left, the published database (if
    any) whole: the old file or the new one."""
    tables = [t for (t,) in con.execute("SELECT table_name FROM duckdb_tables() WHERE database_name = 'lake' "
                                        "AND schema_name = 'resource'").fetchall()]
    assert "dim_institution" in tables and not [t for t in tables if "__dbt" in t], tables
    assert con.execute("SELECT count(*) FROM resource.dim_institution").fetchone()[0] > 0
    assert_published_readable()


def ensure_mart(fault_lake, con) -> None:
    """The mart built (by the dbt test, or here when a test runs alone)."""
    if not con.execute("SELECT count(*) FROM duckdb_tables() WHERE database_name = 'lake' "
                       "AND schema_name = 'resource' AND table_name = 'dim_institution'").fetchone()[0]:
        fault_lake["fork"].ok(*DBT_BUILD)


def test_sigkill_during_dbt_then_rerun_converges(fault_lake, lake_con):
    fork = fault_lake["fork"]
    rng = random.Random(SEED + 1)
    length = fork.ok(*DBT_BUILD)  # seeds, models and dbt's tests, unkilled
    kill_points(fork, rng, DBT_KILLS, lambda: DBT_RUN, length, check=lambda: assert_mart_whole(lake_con))
    fork.ok(*DBT_RUN)  # the rerun
    assert_consistent(lake_con, mart=True)
    assert_mart_whole(lake_con)
    ledger = dict(lake_con.execute("SELECT institution_code, sum(rows_loaded) FROM ops.ingest_batch "
                                   "WHERE status = 'loaded' GROUP BY 1").fetchall())
    mart = dict(lake_con.execute("SELECT institution_code, rows_loaded FROM resource.dim_institution").fetchall())
    assert {c: mart[c] for c in ledger} == ledger


def test_sigkill_during_publish_then_rerun_converges(fault_lake, lake_con):
    from catalog.publish import published_path

    fork = fault_lake["fork"]
    rng = random.Random(SEED + 2)
    ensure_mart(fault_lake, lake_con)
    length = fork.ok("publish")
    before = published_path(5).stat().st_mtime_ns
    kill_points(fork, rng, PUBLISH_KILLS, lambda: ("publish",), length, check=lambda: assert_mart_whole(lake_con))
    fork.ok("publish")  # the rerun
    assert published_path(5).stat().st_mtime_ns > before
    assert_mart_whole(lake_con)


def _archived_any(suffix: str) -> bool:
    from healthlake.storage import minio_client, split_url

    s = settings()
    bucket, prefix = split_url(s.archive_url)
    objects = minio_client(s).list_objects(bucket, prefix=prefix, recursive=True)
    return any(o.object_name.endswith(suffix) for o in objects)


def test_s3_server_killed_and_restarted_mid_ingest(fault_lake, lake_con):
    s3, fork = fault_lake["servers"][0], fault_lake["fork"]
    codes, deliveries = fault_lake["codes"], fault_lake["deliveries"]
    n = next(fault_lake["rounds"])
    deliveries.deliver(codes, n)
    outage = {}

    def outage_after_first_file():
        deadline = time.monotonic() + 120
        while not _archived_any(f"_r{n}.csv") and time.monotonic() < deadline:
            time.sleep(0.05)
        s3.kill()  # SIGKILL: no graceful shutdown
        outage["at"] = time.monotonic()
        time.sleep(2.0)
        s3.start()
        outage["back"] = time.monotonic()

    t = threading.Thread(target=outage_after_first_file)
    t.start()
    rc, _, _ = fork.run("ingest", *codes)
    ended = time.monotonic()
    t.join()
    assert ended > outage["at"], "the ingest ended before the S3 server was killed: nothing was tested"
    assert rc == 0, fork.log("ingest")  # retried through the outage
    assert_consistent(lake_con)
    deliveries.assert_all_loaded_once(lake_con, f"_r{n}")


def test_postgres_restarted_mid_ingest_fails_cleanly_and_rerun_converges(fault_lake):
    pg, fork = fault_lake["servers"][1], fault_lake["fork"]
    codes, deliveries = fault_lake["codes"], fault_lake["deliveries"]
    n = next(fault_lake["rounds"])
    deliveries.deliver(codes, n)
    restarted = {}

    def restart_after_first_file():
        deadline = time.monotonic() + 120
        while not _archived_any(f"_r{n}.csv") and time.monotonic() < deadline:
            time.sleep(0.05)
        pg.restart()  # fast shutdown: every session is cut off
        restarted["at"] = time.monotonic()

    t = threading.Thread(target=restart_after_first_file)
    t.start()
    first, _, _ = fork.run("ingest", *codes, timeout=300)  # 0 (recovered) or 1 (failed cleanly); a hang is not
    t.join()
    assert first in (0, 1), fork.log("ingest")
    fork.ok("ingest", *codes)  # the rerun converges
    con = connect(read_only=True)  # the catalog's sessions were cut: a new connection
    try:
        assert_consistent(con)
        deliveries.assert_all_loaded_once(con, f"_r{n}")
    finally:
        con.close()


def test_backup_and_restore_elsewhere_gives_identical_results(fault_lake, lake_con, tmp_path):
    from healthlake.backup import backup_lake, restore_lake
    from healthlake.servers import Postgres, SeaweedFS, production_env

    queries = ["SELECT institution_code, dataset, sum(rows_loaded), sum(rows_rejected) FROM ops.ingest_batch "
               "GROUP BY ALL ORDER BY ALL",
               "SELECT _batch_id, _source_row, _row_hash FROM bronze.person ORDER BY ALL",
               "SELECT institution_code, institution_name, division_code FROM ops.institution ORDER BY ALL",
               "SELECT * EXCLUDE (registered_at) FROM resource.dim_institution ORDER BY ALL"]

    def answers():
        con = connect(read_only=True)
        try:
            return [con.execute(q).fetchall() for q in queries]
        finally:
            con.close()

    ensure_mart(fault_lake, lake_con)
    before = answers()
    assert before[1], "nothing to back up"
    # through the CLI entry, as an operator would
    backup = tmp_path / "backup"
    r = subprocess.run([sys.executable, "-m", "healthlake.backup", "backup", str(backup)], cwd=REPO_ROOT,
                       env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (backup / "catalog.dump").exists() and any((backup / "data").rglob("*.parquet"))
    with pytest.raises(Exception, match="not empty"):
        backup_lake(backup)  # never over an earlier backup
    # elsewhere: another S3 server and another PostgreSQL, nothing shared with the original
    with _server_dirs() as (d1, d2):
        s3b, pgb = SeaweedFS(d1).start(), Postgres(d2).start()
        try:
            with pytest.MonkeyPatch.context() as mp:
                for k, v in production_env(s3b, pgb, bucket="restored", database="restored").items():
                    mp.setenv(k, v)
                manifest = restore_lake(backup, settings())
                assert manifest["files"] > 0
                assert answers() == before
                with pytest.raises(Exception, match="not empty"):
                    restore_lake(backup, settings())  # never over a lake
        finally:
            s3b.kill()
            pgb.stop()


class _server_dirs:
    def __enter__(self):
        import tempfile

        self.dirs = [Path(tempfile.mkdtemp(prefix=p)) for p in ("healthlake-s3b-", "healthlake-pgb-")]
        for d in self.dirs:
            d.chmod(0o755)
        return self.dirs

    def __exit__(self, *exc):
        import shutil

        for d in self.dirs:
            shutil.rmtree(d, ignore_errors=True)

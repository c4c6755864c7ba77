"""The embedded instance's event log (dagster.yaml → pipelines/event_log.py): Dagster's own SQLite
event-log files, written through one open connection per file."""

import shutil

import dagster as dg
from dagster._core.storage.event_log import SqliteEventLogStorage

from healthlake.config import REPO_ROOT
from pipelines.event_log import PooledSqliteEventLogStorage


@dg.asset
def probe(context) -> int:
    for i in range(20):
        context.log.info(f"event {i}")
    return 1


@dg.asset_check(asset=probe)
def probe_checked() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=True)


def test_the_demo_instance_stores_dagsters_own_event_log_files(tmp_path, monkeypatch):
    home = tmp_path / "dagster"
    home.mkdir()
    shutil.copyfile(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    job = dg.Definitions(assets=[probe], asset_checks=[probe_checked]).resolve_implicit_global_asset_job_def()
    with dg.DagsterInstance.get() as instance:
        storage = instance.event_log_storage
        assert isinstance(storage, PooledSqliteEventLogStorage)
        used = []
        real = storage._engine

        def engine(shard):
            e = real(shard)
            used.append((shard, id(e)))
            return e

        monkeypatch.setattr(storage, "_engine", engine)
        result = job.execute_in_process(instance=instance)
        assert result.success
        stored = instance.all_logs(result.run_id)
        assert sum(e.user_message.startswith("event ") for e in stored) == 20
        # every event of the run through the same engine (one open connection) per file: the run's, the index
        assert len(used) > 30 and len(set(used)) == len({shard for shard, _ in used}) == 2
    # Dagster's own storage class reads the same files: the run's events, the asset and its check
    plain = SqliteEventLogStorage(str(home / "history" / "runs"))
    assert [e.user_message for e in plain.get_logs_for_run(result.run_id)] == [e.user_message for e in stored]
    assert plain.get_latest_materialization_events([probe.key])[probe.key] is not None
    check = dg.AssetCheckKey(probe.key, "probe_checked")
    assert plain.get_asset_check_execution_history(check, limit=1)[0].status.value == "SUCCEEDED"
    plain.dispose()

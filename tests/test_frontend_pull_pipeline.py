"""The front-end pull through Dagster: the synthetic CDC's 前置机 database (generate_city
frontend_db=True) grows by a day's rows; the ``frontend_pull`` job loads only the new rows each
time, accounts for them (rows read = loaded + rejected, lineage), and is a no-op when nothing is new."""

from __future__ import annotations

import shutil
import sqlite3

import dagster as dg
import yaml

from synthetic import generate_city
from synthetic.formats import FRONTEND_DB, frontend_path
from tests.lake_reader import close_reader, q

CDC = next(iter(FRONTEND_DB))


def run_pull(instance) -> dict:
    """One run of the scheduled ``frontend_pull`` job (its asset alone: no dbt manifest to parse)."""
    from pipelines.defs.ingest.frontend import FRONTEND_PULL_JOB, FRONTEND_PULL_KEY, frontend_pull, frontend_pull_job

    close_reader()
    defs = dg.Definitions(assets=[frontend_pull], jobs=[frontend_pull_job])
    result = defs.resolve_job_def(FRONTEND_PULL_JOB).execute_in_process(instance=instance)
    assert result.success
    (m,) = [e.event_specific_data.materialization for e in result.get_asset_materialization_events()
            if e.event_specific_data.materialization.asset_key == FRONTEND_PULL_KEY]
    return {k: getattr(v, "value", v) for k, v in m.metadata.items()}


def test_the_frontend_pull_is_incremental_and_a_no_op_when_nothing_is_new(lake_env):
    s = lake_env
    generate_city(s.city_dir, 4000, 2, 7, frontend_db=True)   # 2 + 1 immunisations
    registry = yaml.safe_load(s.registry.read_text(encoding="utf-8"))
    (feed,) = [f for i in registry["institutions"] if i["code"] == CDC for f in i["feeds"] if f["dataset"] == "immunization"]
    assert (feed["format"], feed["database"], feed["watermark"]) == ("sqlite", frontend_path(CDC), "seq")
    assert not (s.landing / CDC / feed["id"]).exists()   # not delivered as files any more
    db = s.city_dir / frontend_path(CDC)
    full = db.with_suffix(".full")
    shutil.copyfile(db, full)
    with sqlite3.connect(full) as c:
        days = c.execute(f'SELECT sync_time, count(*), max(seq) FROM "{feed["table"]}" GROUP BY 1 ORDER BY 1').fetchall()
    assert len(days) == 2 and all(n > 0 for _, n, _ in days)
    (day1, n1, seq1), (_, n2, _) = days
    with sqlite3.connect(db) as c:   # the front-end machine as it was after the first day
        c.execute(f'DELETE FROM "{feed["table"]}" WHERE sync_time > ?', [day1])

    with dg.DagsterInstance.ephemeral() as instance:
        first = run_pull(instance)
        assert (first["batches_loaded"], first["rows_read"], first["rows_loaded"], first["rows_rejected"]) == (1, n1, n1, 0)
        shutil.copyfile(full, db)   # the second day's rows arrive
        second = run_pull(instance)
        assert (second["batches_loaded"], second["rows_read"], second["rows_loaded"]) == (1, n2, n2)
        assert second["watermarks"] == {f"{CDC}.{feed['id']}": str(seq1 + n2)}
        third = run_pull(instance)   # unchanged source: nothing loaded, no batch
        assert (third["batches_loaded"], third["feeds_without_new_rows"], third["rows_read"]) == (0, 1, 0)

    batches = q(s, "SELECT rows_read, rows_loaded, rows_rejected, status, format FROM ops.ingest_batch "
                   "WHERE institution_code = ? AND feed = ? ORDER BY started_at", [CDC, feed["id"]])
    assert batches == [(n1, n1, 0, "loaded", "sqlite"), (n2, n2, 0, "loaded", "sqlite")]
    # every row of the front-end table once, with its lineage; the second batch holds only day 2's rows
    key_column = feed["mapping"]["immunization_id"]
    with sqlite3.connect(full) as c:
        source = sorted(c.execute(f'SELECT "{key_column}", sync_time > ? FROM "{feed["table"]}"', [day1]).fetchall())
    got = q(s, "SELECT immunization_id, _batch_id, _source_row FROM bronze.immunization ORDER BY _batch_id, _source_row")
    first_batch = got[0][1]
    assert sorted((k, b != first_batch) for k, b, _ in got) == [(k, bool(later)) for k, later in source]
    assert q(s, "SELECT count(*) FROM bronze.immunization WHERE _institution_code IS NULL OR _feed IS NULL OR "
                "_source_file IS NULL OR _source_row IS NULL OR _ingested_at IS NULL OR _row_hash IS NULL") == [(0,)]
    assert q(s, "SELECT watermark_value FROM ops.frontend_watermark") == [(str(seq1 + n2),)]


def test_the_pull_runs_before_the_landing_ingest_and_on_a_schedule(lake_env):
    from pipelines.definitions import ALL_ASSETS_JOB, build_definitions
    from pipelines.defs.ingest.assets import INGEST_BATCH_KEY
    from pipelines.defs.ingest.frontend import FRONTEND_PULL_CRON, FRONTEND_PULL_JOB, FRONTEND_PULL_KEY

    defs = build_definitions()
    graph = defs.resolve_asset_graph()
    assert FRONTEND_PULL_KEY in graph.get(INGEST_BATCH_KEY).parent_keys   # the demo's marts see the pulled rows
    all_job = defs.resolve_job_def(ALL_ASSETS_JOB)
    assert "ops__frontend_pull" in {n.name for n in all_job.graph.nodes}
    (schedule,) = [sc for sc in defs.schedules if sc.job_name == FRONTEND_PULL_JOB]
    assert (schedule.cron_schedule, schedule.execution_timezone) == (FRONTEND_PULL_CRON, "Asia/Shanghai")

"""The quality gate end to end through Dagster on a tiny city: after the ingest the batches are scored
per institution and batch; a batch below its threshold is held back from the marts while every other
batch goes on; an override (CLI, recorded with who and why) or a corrected re-delivery releases it on
the next run.

One module-scoped city (200 residents × 1 day; only the practitioner and department feeds delivered).
The job runs the ingest, the gate checks and the dbt path of one mart (resource.dim_practitioner,
whose rows carry their _batch_id), twice.
"""

from __future__ import annotations

import contextlib
import csv
import os
import shutil

import pytest

from healthlake.config import settings as load_settings
from healthlake.lake import connect
from ingest_adapters.registry import load_registry

RESIDENTS, DAYS, SEED = 200, 1, 5
ENV = ("HEALTHLAKE_ROOT", "HEALTHLAKE_CATALOG", "HEALTHLAKE_DATA_PATH", "HEALTHLAKE_REGISTRY", "HEALTHLAKE_LANDING",
       "DAGSTER_HOME", "HEALTHLAKE_QUALITY_THRESHOLD")
MARTS = ("dim_practitioner", "dim_department", "dim_institution")
DELIVERED = {"practitioner", "department"}          # the bronze data sets of those marts


def run_job(s):
    import dagster as dg

    from healthlake.cli import prepare_dagster_home
    from pipelines.definitions import ALL_ASSETS_JOB, build_definitions
    from pipelines.defs.ingest.assets import ingest_landing_zone

    prepare_dagster_home(s)
    defs = build_definitions()
    # the mart, the marts its relationship tests read, and everything upstream of them
    marts = dg.AssetSelection.assets(*(dg.AssetKey(["resource", m]) for m in MARTS)).upstream()
    keys = {*ingest_landing_zone.keys, *marts.resolve(defs.resolve_asset_graph())}
    with dg.DagsterInstance.get() as instance:
        job = defs.resolve_job_def(ALL_ASSETS_JOB)
        return job.execute_in_process(instance=instance, raise_on_error=False, asset_selection=sorted(keys))


def q(s, sql, params=None):
    with contextlib.closing(connect(s, read_only=True)) as con:
        return con.execute(sql, params or []).fetchall()


def checks(result, name):
    return {e.asset_key.to_user_string(): e for e in result.get_asset_check_evaluations() if e.check_name == name}


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    from synthetic import generate_city

    root = tmp_path_factory.mktemp("gate") / "root"
    with pytest.MonkeyPatch.context() as mp:
        for var in ENV:
            mp.delenv(var, raising=False)
        mp.setenv("HEALTHLAKE_ROOT", str(root))
        # only the data tests of the selected models (not relationships into marts this job does not build)
        mp.setenv("DBT_INDIRECT_SELECTION", "cautious")
        s = load_settings()
        generate_city(s.city_dir, residents=RESIDENTS, days=DAYS, seed=SEED)
        # Only the feeds of the marts the job builds are delivered: the gate's logic is the same for
        # every data set (test_quality_bronze scores them all), and ingesting and scoring the other
        # formats' files would double the module's time.
        reg = load_registry(s.registry)
        for inst in reg.institutions:
            for feed in inst.feeds:
                if not set(feed.datasets) & DELIVERED:
                    shutil.rmtree(s.landing / inst.code / feed.id, ignore_errors=True)
        first = run_job(s)
        yield s, first


def test_blocking_gate_check_decides_every_batch_before_dbt(city):
    s, first = city
    assert first.success
    gate = checks(first, "quality_gate")
    assert {"bronze/person", "bronze/encounter", "bronze/practitioner"} <= set(gate)
    assert all(e.passed for e in gate.values())
    # every loaded batch has a decision, and the check is the blocking kind
    assert q(s, "SELECT count(*) FROM ops.ingest_batch b ANTI JOIN quality.batch_gate g USING (batch_id) "
                "WHERE b.status = 'loaded'") == [(0,)]
    from pipelines.defs.quality.checks import build_gate_checks

    blocking = {(c.asset_key.to_user_string(), c.name): c.blocking for c in build_gate_checks().check_specs}
    assert blocking[("bronze/practitioner", "quality_gate")] and not blocking[("bronze/practitioner", "batches_held")]
    held = checks(first, "batches_held")
    assert not held["bronze/practitioner"].passed
    assert held["bronze/practitioner"].severity.value == "ERROR"
    md = held["bronze/practitioner"].metadata["held_batches"].value
    assert "511" in md and "合格率" in md


def test_held_batch_absent_from_the_mart_other_institutions_present(city):
    s, _ = city
    decisions = dict(q(s, "SELECT batch_id, decision FROM quality.batch_gate WHERE dataset = 'practitioner'"))
    held = [b for b, d in decisions.items() if d == "held"]
    promoted = [b for b, d in decisions.items() if d == "promoted"]
    assert held and promoted
    in_mart = {b for (b,) in q(s, "SELECT DISTINCT _batch_id FROM resource.dim_practitioner")}
    assert in_mart == set(promoted)
    # a held institution's practitioners are absent; other institutions' are all there
    held_insts = {i for (i,) in q(s, "SELECT DISTINCT _institution_code FROM bronze.practitioner "
                                     "WHERE _batch_id IN (SELECT unnest(?::VARCHAR[]))", [held])}
    mart_insts = {i for (i,) in q(s, "SELECT DISTINCT institution_code FROM resource.dim_practitioner")}
    assert not held_insts & mart_insts
    ok = q(s, "SELECT count(DISTINCT (_institution_code, practitioner_id)) FROM bronze.practitioner "
              "WHERE _batch_id IN (SELECT unnest(?::VARCHAR[]))", [promoted])[0][0]
    assert q(s, "SELECT count(*) FROM resource.dim_practitioner")[0][0] == ok > 0
    # the institution's rectification list names the failing rows
    for inst in held_insts:
        assert (s.reports_dir / "quality" / "rectification" / f"{inst}.xlsx").exists()


def test_override_and_corrected_redelivery_release_on_the_next_run(city, capsys):
    from healthlake.cli import main

    s, _ = city
    held = q(s, "SELECT batch_id, institution_code, feed, _source_file FROM quality.batch_gate g "
                "JOIN (SELECT DISTINCT _batch_id, _source_file FROM bronze.practitioner) b ON b._batch_id = g.batch_id "
                "WHERE decision = 'held' ORDER BY 1")
    assert len(held) >= 2
    (a, a_inst, _, _), (b, b_inst, b_feed, b_file) = held[0], held[1]

    # bad input: a clear error, nothing recorded
    assert main(["quality", "override", "--batch", "no-such-batch", "--by", "张三", "--reason", "x"]) == 2
    assert "no gate decision" in capsys.readouterr().err
    assert main(["quality", "override", "--batch", a, "--by", "质控科 张三",
                 "--reason", "已电话核实：重复行为系统导出错误，不影响统计"]) == 0
    assert q(s, "SELECT decided_by, reason FROM quality.batch_override WHERE batch_id = ?", [a]) == [
        ("质控科 张三", "已电话核实：重复行为系统导出错误，不影响统计")]
    assert main(["quality", "override", "--batch", a, "--by", "张三", "--reason", "again"]) == 2   # not held any more

    # the institution of batch b re-delivers its file without the defective rows: a new batch
    bad = {int(r["source_row"]) for r in csv.DictReader(open(s.city_dir / "truth" / "defects.csv", encoding="utf-8"))
           if r["file"] == b_file}
    assert bad
    src = s.landing / b_file
    lines = src.read_bytes().splitlines(keepends=True)
    fixed = [lines[0]] + [line for i, line in enumerate(lines[1:], start=1) if i not in bad]
    stem, date = src.stem.rsplit("_", 1)
    corrected = src.with_name(f"{stem}_corrected_{date}{src.suffix}")
    corrected.write_bytes(b"".join(fixed))

    second = run_job(s)
    assert second.success
    current = dict(q(s, "SELECT batch_id, arg_max(decision, decided_at) FROM quality.batch_gate GROUP BY 1"))
    new_batch = q(s, "SELECT batch_id FROM ops.ingest_batch WHERE source_file = ?",
                  [corrected.relative_to(s.landing).as_posix()])[0][0]
    assert current[a] == "promoted" and current[new_batch] == "promoted" and current[b] == "held"
    in_mart = {x for (x,) in q(s, "SELECT DISTINCT _batch_id FROM resource.dim_practitioner")}
    assert a in in_mart and new_batch in in_mart and b not in in_mart
    assert {a_inst, b_inst} <= {i for (i,) in q(s, "SELECT DISTINCT institution_code FROM resource.dim_practitioner")}
    # the override is in the gate's history with who released it
    assert q(s, "SELECT override_by FROM quality.batch_gate WHERE batch_id = ? AND decision = 'promoted'", [a]) == [
        ("质控科 张三",)]


def test_threshold_setting_is_checked(monkeypatch):
    from quality import QualityError
    from quality.catalogue import gate_threshold

    monkeypatch.setenv("HEALTHLAKE_QUALITY_THRESHOLD", "95")
    with pytest.raises(QualityError, match="between 0 and 1"):
        gate_threshold()
    monkeypatch.setenv("HEALTHLAKE_QUALITY_THRESHOLD", "0.9")
    assert gate_threshold() == 0.9
    monkeypatch.delenv("HEALTHLAKE_QUALITY_THRESHOLD")
    assert gate_threshold() == 0.95
    assert os.environ.get("HEALTHLAKE_QUALITY_THRESHOLD") is None

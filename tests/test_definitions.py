"""The Dagster definitions load, and their asset keys match the committed snapshot.

Regenerate the snapshot after an intended change:
    HEALTHLAKE_UPDATE_SNAPSHOTS=1 .venv/bin/python -m pytest tests/test_definitions.py
"""

from __future__ import annotations

import os
from pathlib import Path

SNAPSHOT = Path(__file__).parent / "snapshots" / "asset_keys.txt"


def test_definitions_load_and_asset_keys_match_snapshot(lake_env):
    from pipelines.definitions import ALL_ASSETS_JOB, build_definitions

    defs = build_definitions()
    graph = defs.resolve_asset_graph()
    keys = sorted(k.to_user_string() for k in graph.get_all_asset_keys())
    if os.environ.get("HEALTHLAKE_UPDATE_SNAPSHOTS"):
        SNAPSHOT.write_text("\n".join(keys) + "\n", encoding="utf-8")
    assert keys == SNAPSHOT.read_text(encoding="utf-8").split()
    # one job runs everything; the four databases each have at least one mart and one check
    assert defs.resolve_job_def(ALL_ASSETS_JOB) is not None
    checks = {k.asset_key.to_user_string() for k in graph.asset_check_keys if k.name == "gx_rules"}
    assert {"population/dim_person", "emr/fct_encounter", "health_record/dim_health_record",
            "resource/dim_institution"} <= checks
    # dbt sources are mapped onto the ingest assets (bronze/<dataset>), not left as external stubs
    import dagster as dg

    staging = graph.get(dg.AssetKey(["staging", "stg_bronze__persons"]))
    assert "bronze/person" in {k.to_user_string() for k in staging.parent_keys}


def test_definitions_validate_from_the_command_line(lake_env, tmp_path):
    import subprocess
    import sys

    home = tmp_path / "dagster_home"
    home.mkdir()
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    out = subprocess.run([str(Path(sys.executable).with_name("dagster")), "definitions", "validate",
                          "-m", "pipelines.definitions"], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Validation successful" in out.stderr + out.stdout


def test_the_dbt_resource_knows_the_version_of_the_dbt_it_runs_without_asking_it():
    """HealthlakeDbtCliResource skips dagster-dbt's `dbt --version` subprocess and in-process
    adapter: the version it assumes (the installed dbt-core's) is the one DBT_EXECUTABLE reports."""
    import re
    import subprocess

    from healthlake.dbt import DBT_PROJECT_DIR
    from pipelines.defs.dbt.resources import DBT_EXECUTABLE, HealthlakeDbtCliResource

    out = subprocess.run([DBT_EXECUTABLE, "--version"], capture_output=True, text=True, check=True).stdout
    resource = HealthlakeDbtCliResource(project_dir=str(DBT_PROJECT_DIR), dbt_executable=DBT_EXECUTABLE)
    assert str(resource._cli_version) == re.search(r"(\d+\.\d+\.\d+)", out).group(1)
    assert resource._initialize_dbt_core_adapter(["build"]) is None


def test_the_manifest_is_stale_when_missing_or_older_than_a_dbt_project_file(tmp_path):
    """`make demo` no longer parses first: the demo parses (in the background) a manifest that is
    missing or older than any file dbt parses, and keeps a current one."""
    from pipelines.defs.dbt.resources import manifest_is_stale

    project = tmp_path / "dbt_project"
    (project / "models" / "staging").mkdir(parents=True)
    (project / "macros").mkdir()
    model = project / "models" / "staging" / "stg_a.sql"
    for f in (project / "dbt_project.yml", project / "profiles.yml", model, project / "macros" / "m.sql"):
        f.write_text("-- x\n", encoding="utf-8")
    manifest = tmp_path / "target" / "manifest.json"
    assert manifest_is_stale(manifest, project)   # missing
    manifest.parent.mkdir()
    manifest.write_text("{}", encoding="utf-8")
    built = manifest.stat().st_mtime
    for f in project.rglob("*"):
        os.utime(f, (built - 10, built - 10))
    assert not manifest_is_stale(manifest, project)
    os.utime(model, (built + 10, built + 10))       # a model edited after the parse
    assert manifest_is_stale(manifest, project)
    os.utime(model, (built - 10, built - 10))
    elsewhere = project / "target_elsewhere.txt"
    elsewhere.write_text("not parsed", encoding="utf-8")
    os.utime(elsewhere, (built + 10, built + 10))   # newer, but not a file dbt parses
    assert not manifest_is_stale(manifest, project)

"""The dbt project, built inside a cached function (never at import)."""

from __future__ import annotations

import sys
from functools import cache, cached_property
from pathlib import Path

from dagster_dbt import DbtCliResource, DbtProject

from healthlake.config import settings
from healthlake.dbt import DBT_PROJECT_DIR, apply_dbt_env

# The dbt next to this Python (the venv's), whether or not the venv is on PATH.
DBT_EXECUTABLE = str(Path(sys.executable).with_name("dbt"))


class HealthlakeDbtCliResource(DbtCliResource):
    """dagster-dbt's dbt CLI resource without two start-up costs of each ``cli()`` call that this
    project never uses (measured on the demo: ~8 s of wall per call, twice per fresh demo):

    * ``dbt --version`` in a subprocess (a Python start that imports dbt, ~4 s): the dbt run is
      ``DBT_EXECUTABLE``, the venv's, so its version is the installed dbt-core's;
    * an in-process dbt adapter, for which dagster-dbt loads and parses every macro of the project
      (~4 s): it serves only ``fetch_column_metadata`` / ``fetch_row_counts``, which our assets do
      not call; without it the events are streamed as they come.
    """

    @cached_property
    def _cli_version(self):
        from dbt.version import __version__
        from packaging import version

        return version.parse(__version__)

    def _initialize_dbt_core_adapter(self, args):
        return None


def dbt_project() -> DbtProject:
    """The dbt project of the configured lake (one per lake root: a process may build several lakes,
    e.g. the test suite, and each keeps its own target/ — manifest and run results)."""
    return _dbt_project(settings().dbt_target_dir)


@cache
def _dbt_project(target_dir: Path) -> DbtProject:
    s = settings()
    apply_dbt_env(s)
    # target/ lives under the lake root (absolute), so each lake has its own manifest and run results.
    project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR, target_path=target_dir)
    # The manifest is built by `make install` (`healthlake dbt-parse`); `dagster dev` re-parses on
    # start; a lake root without one (a test's) gets it parsed once, here.
    if project.preparer.using_dagster_dev() or not project.manifest_path.exists():
        parse_manifest(project)
    return project


def parse_manifest(project: DbtProject) -> Path:
    apply_dbt_env()
    HealthlakeDbtCliResource(project_dir=project, dbt_executable=DBT_EXECUTABLE).cli(
        ["parse", "--quiet"], target_path=project.target_path).wait()
    return project.manifest_path


def dbt_resource() -> DbtCliResource:
    return HealthlakeDbtCliResource(project_dir=dbt_project(), profiles_dir=str(DBT_PROJECT_DIR), dbt_executable=DBT_EXECUTABLE)

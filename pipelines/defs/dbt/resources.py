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
    # The manifest is built at build time (`make manifest`: `healthlake dbt-parse`), or by the demo
    # in the background while it prepares the run; `dagster dev` re-parses on start; a lake root
    # without a manifest (a test's), or with one older than the project's files, gets it parsed
    # here, once per process.
    if project.preparer.using_dagster_dev() or manifest_is_stale(project.manifest_path):
        parse_manifest(project)
    return project


# What dbt parses: a file under these newer than the manifest makes it stale.
_PARSED = ("dbt_project.yml", "profiles.yml", "models", "macros", "seeds", "tests")


def manifest_is_stale(manifest: Path, project_dir: Path = DBT_PROJECT_DIR) -> bool:
    """No manifest, or a dbt project file (model, macro, seed, test, the project or profile YAML)
    changed since it was written (by modification time: ~300 files, a few ms)."""
    try:
        built = manifest.stat().st_mtime
    except FileNotFoundError:
        return True
    for name in _PARSED:
        path = project_dir / name
        files = [path] if path.is_file() else (f for f in path.rglob("*") if f.is_file())
        if any(f.stat().st_mtime > built for f in files):
            return True
    return False


def parse_manifest(project: DbtProject) -> Path:
    apply_dbt_env()
    HealthlakeDbtCliResource(project_dir=project, dbt_executable=DBT_EXECUTABLE).cli(
        ["parse", "--quiet"], target_path=project.target_path).wait()
    return project.manifest_path


def dbt_resource() -> DbtCliResource:
    return HealthlakeDbtCliResource(project_dir=dbt_project(), profiles_dir=str(DBT_PROJECT_DIR), dbt_executable=DBT_EXECUTABLE)

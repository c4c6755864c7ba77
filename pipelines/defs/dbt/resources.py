"""The dbt project, built inside a cached function (never at import)."""

from __future__ import annotations

from functools import cache
from dagster_dbt import DbtCliResource, DbtProject

from healthlake.config import settings
from healthlake.dbt import DBT_PROJECT_DIR, apply_dbt_env


@cache
def dbt_project() -> DbtProject:
    s = settings()
    apply_dbt_env(s)
    # target/ lives under the lake root (absolute), so each lake has its own manifest and run results.
    project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR, target_path=s.dbt_target_dir)
    # The manifest is built by `make install` (`healthlake dbt-parse`); `dagster dev` re-parses on start.
    project.prepare_if_dev()
    if not project.manifest_path.exists():
        project.preparer.prepare(project)
    return project


def dbt_resource() -> DbtCliResource:
    return DbtCliResource(project_dir=dbt_project(), profiles_dir=str(DBT_PROJECT_DIR))

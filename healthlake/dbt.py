"""dbt wiring shared by the CLI, Dagster and tests: where the project is and what it reads.

The dbt profile (``dbt_project/profiles.yml``) takes everything from environment variables
set here from the one configuration (healthlake.config), so dbt, Dagster and the CLI can
never disagree about where the lake is.
"""

from __future__ import annotations

import os

from healthlake.config import REPO_ROOT, Settings, settings as load_settings
from healthlake.lake import ensure_extensions

DBT_PROJECT_DIR = REPO_ROOT / "dbt_project"
# Demo default; production deployments set their own secret (the key of the pseudonymous person_key).
DEFAULT_PERSON_KEY_SECRET = "healthlake-demo-secret"


def dbt_env(s: Settings | None = None) -> dict[str, str]:
    s = s or load_settings()
    return {
        "HEALTHLAKE_DUCKLAKE_URI": s.ducklake_uri,
        "HEALTHLAKE_DATA_PATH": s.data_path,
        "HEALTHLAKE_EXTENSION_DIR": str(s.extension_dir),
        "DBT_TARGET_PATH": str(s.dbt_target_dir),
        "DBT_LOG_PATH": str(s.dbt_target_dir / "logs"),
        "HEALTHLAKE_PERSON_KEY_SECRET": os.environ.get("HEALTHLAKE_PERSON_KEY_SECRET", DEFAULT_PERSON_KEY_SECRET),
        "DBT_PROFILES_DIR": str(DBT_PROJECT_DIR),
        # dbt's DuckDB threads: HEALTHLAKE_DUCKDB_THREADS like the lake's other instances (the demo
        # sets 1), else DuckDB's default of one per core.
        "HEALTHLAKE_DBT_DUCKDB_THREADS": str(s.duckdb_threads or os.cpu_count() or 1),
    }


def apply_dbt_env(s: Settings | None = None) -> dict[str, str]:
    """Export the dbt variables into this process (dbt and dagster-dbt read os.environ)."""
    s = s or load_settings()
    ensure_extensions(s)
    env = dbt_env(s)
    os.environ.update(env)
    return env

"""Run dbt against the configured lake:  .venv/bin/python dbt_project/scripts/run_dbt.py build [args…]

Exports the environment profiles.yml reads (healthlake.dbt.apply_dbt_env: lake URI, data path,
extension directory, target directory, person-key secret), then runs the dbt next to this Python
with --project-dir dbt_project. Any dbt command and arguments pass through.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from healthlake.dbt import DBT_PROJECT_DIR, apply_dbt_env  # noqa: E402


def main(argv: list[str]) -> int:
    apply_dbt_env()
    dbt = Path(sys.executable).with_name("dbt")
    args = argv or ["build"]
    os.execv(str(dbt), [str(dbt), *args, "--project-dir", str(DBT_PROJECT_DIR)])
    return 0  # not reached


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

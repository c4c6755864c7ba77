"""Quality rules (GX pushed down to DuckDB) as asset checks on the marts."""

from __future__ import annotations

import dagster as dg


def build_quality_checks() -> list[dg.AssetChecksDefinition]:
    return []

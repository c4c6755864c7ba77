"""Asset keys for dbt models: <schema>/<model> (population/dim_person); groups by schema."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator


class HealthlakeTranslator(DagsterDbtTranslator):
    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        if dbt_resource_props["resource_type"] == "source":
            return super().get_asset_key(dbt_resource_props)  # meta.dagster.asset_key → bronze/<dataset>
        return dg.AssetKey([self._schema(dbt_resource_props), dbt_resource_props["name"]])

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        return self._schema(dbt_resource_props)

    @staticmethod
    def _schema(props: Mapping[str, Any]) -> str:
        return (props.get("config") or {}).get("schema") or props.get("schema") or "main"

"""dbt models as assets; dbt tests run as asset checks."""


import dagster as dg
from dagster_dbt import DagsterDbtTranslatorSettings, DbtCliResource, dbt_assets

from healthlake.dbt import apply_dbt_env
from pipelines.defs.dbt.resources import dbt_project
from pipelines.defs.dbt.translator import HealthlakeTranslator


# dbt's unit tests check the models' SQL on fixed inputs, not the lake's data: they run in the test
# suite (tests/test_dbt.py builds with them) and, as dbt recommends, not in the pipeline's builds
# (9 unit tests: ~4 s of the demo's dbt step). Dagster never showed them (no asset checks).
BUILD_EXCLUDES = ("--exclude-resource-type", "unit_test")


def build_dbt_assets() -> dg.AssetsDefinition:
    project = dbt_project()

    # pool: dbt build rewrites many tables at once; with parallel institution writers it is the one
    # single-writer step (dagster.yaml limits every pool to 1 concurrent step).
    @dbt_assets(manifest=project.manifest_path, project=project, name="healthlake_dbt", pool="lake_single_writer",
                dagster_dbt_translator=HealthlakeTranslator(
                    settings=DagsterDbtTranslatorSettings(enable_asset_checks=True)))
    def healthlake_dbt(context: dg.AssetExecutionContext, dbt: DbtCliResource):
        apply_dbt_env()
        yield from dbt.cli(["build", *BUILD_EXCLUDES], context=context).stream()

    return healthlake_dbt

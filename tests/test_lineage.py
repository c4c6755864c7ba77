"""Column lineage from compiled SQL (sqlglot): through CTEs, joins, stars, expressions; transitively."""

from __future__ import annotations

import json

import duckdb

from catalog.lineage import latest_manifest, model_lineage, upstream_columns

STG = """
WITH source AS (SELECT * FROM "lake"."bronze"."encounter"),
renamed AS (
  SELECT institution_code, encounter_id, CAST(total_fee AS DECIMAL(18, 2)) AS total_fee,
         md5(institution_code || '|' || encounter_id) AS encounter_key
  FROM source)
SELECT * FROM renamed
"""
MART = """
WITH e AS (SELECT * FROM "lake"."staging"."stg_encounters"),
t AS (SELECT code, name_zh FROM "lake"."reference"."visit_type")
SELECT e.encounter_key, e.total_fee * 1 AS fee, t.name_zh AS visit_type_name, sum(e.total_fee) OVER () AS all_fees
FROM e LEFT JOIN t ON t.code = e.institution_code
"""


def _lake():
    con = duckdb.connect()
    con.execute("ATTACH ':memory:' AS lake")
    for schema in ("bronze", "staging", "emr", "reference"):
        con.execute(f"CREATE SCHEMA lake.{schema}")
    con.execute("CREATE TABLE lake.bronze.encounter (institution_code VARCHAR, encounter_id VARCHAR, total_fee VARCHAR)")
    con.execute("CREATE TABLE lake.reference.visit_type (code VARCHAR, name_zh VARCHAR)")
    con.execute(f"CREATE VIEW lake.staging.stg_encounters AS {STG}")
    con.execute(f"CREATE VIEW lake.emr.fct_x AS {MART}")
    return con


def _manifest(tmp_path):
    def node(name, schema, sql, deps):
        return {"resource_type": "model", "name": name, "schema": schema, "alias": name, "language": "sql",
                "compiled_code": sql, "description": f"{name} 描述", "columns": {},
                "depends_on": {"nodes": deps}}

    m = {"nodes": {"model.p.stg_encounters": node("stg_encounters", "staging", STG, ["source.p.bronze.encounter"]),
                   "model.p.fct_x": node("fct_x", "emr", MART, ["model.p.stg_encounters", "seed.p.visit_type"]),
                   "seed.p.visit_type": {"resource_type": "seed", "name": "visit_type", "schema": "reference",
                                         "columns": {}, "depends_on": {"nodes": []}}},
         "sources": {"source.p.bronze.encounter": {"resource_type": "source", "schema": "bronze", "name": "encounter",
                                                   "identifier": "encounter"}}}
    run = tmp_path / "run1"
    (run / "compiled").mkdir(parents=True)
    (run / "manifest.json").write_text(json.dumps(m), encoding="utf-8")
    (tmp_path / "manifest.json").write_text(json.dumps({"nodes": {}}), encoding="utf-8")  # parse-only manifest
    return tmp_path


def test_column_lineage_through_ctes_joins_stars_and_expressions(tmp_path):
    target = _manifest(tmp_path)
    manifest = latest_manifest(target)
    assert manifest == target / "run1" / "manifest.json"  # the run's, with compiled SQL
    models = model_lineage(_lake(), manifest)
    fct = models[("emr", "fct_x")]
    assert fct.error is None and fct.parents == ["reference.visit_type", "staging.stg_encounters"]
    assert fct.columns["fee"] == ["staging.stg_encounters.total_fee"]
    assert fct.columns["visit_type_name"] == ["reference.visit_type.name_zh"]
    assert fct.columns["all_fees"] == ["staging.stg_encounters.total_fee"]
    stg = models[("staging", "stg_encounters")]
    assert stg.columns["encounter_key"] == ["bronze.encounter.encounter_id", "bronze.encounter.institution_code"]
    # transitively down to bronze, nearest first
    assert upstream_columns(models, "emr.fct_x.encounter_key") == [
        "staging.stg_encounters.encounter_key", "bronze.encounter.encounter_id", "bronze.encounter.institution_code"]
    assert upstream_columns(models, "emr.fct_x.fee") == ["staging.stg_encounters.total_fee", "bronze.encounter.total_fee"]


def test_a_model_that_does_not_parse_keeps_table_lineage_and_says_why(tmp_path):
    target = _manifest(tmp_path)
    path = target / "run1" / "manifest.json"
    m = json.loads(path.read_text(encoding="utf-8"))
    m["nodes"]["model.p.fct_x"]["compiled_code"] = "SELECT FROM WHERE ("
    path.write_text(json.dumps(m), encoding="utf-8")
    fct = model_lineage(_lake(), path)[("emr", "fct_x")]
    assert fct.columns == {} and fct.error and fct.parents == ["reference.visit_type", "staging.stg_encounters"]


def test_an_unpivot_source_keeps_its_lineage_without_sqlglot_warnings(caplog):
    """sqlglot's scope analysis does not reach an UNPIVOT's source ("Unknown subquery scope",
    logged with the whole subquery at WARNING: the demo printed six); the unpivoted columns' lineage
    is still the base columns, and other sqlglot warnings still pass."""
    import logging

    from sqlglot.schema import MappingSchema

    from catalog.lineage import column_lineage

    schema = MappingSchema({"lake": {"s": {"t": {"a": "VARCHAR", "b": "VARCHAR", "k": "VARCHAR"}}}}, dialect="duckdb")
    sql = ("WITH r AS (SELECT k, CAST(a AS VARCHAR) AS a, b FROM lake.s.t) "
           "SELECT k, element, v FROM (UNPIVOT r ON a, b INTO NAME element VALUE v)")
    with caplog.at_level(logging.DEBUG, logger="sqlglot"), caplog.at_level(logging.DEBUG, logger="catalog.lineage"):
        got = column_lineage(sql, schema)
    assert got["k"] == ["s.t.k"]
    assert {"s.t.a", "s.t.b"} <= set(got["v"])
    assert not [r for r in caplog.records if r.name == "sqlglot" and r.levelno >= logging.WARNING]
    # sqlglot did emit the warning (the filter counted and dropped it), and the filter is gone again
    assert [r for r in caplog.records if r.name == "catalog.lineage" and "could not place" in r.getMessage()]
    assert logging.getLogger("sqlglot").filters == []
    # the filter drops that message only; while it is on the logger, every other record passes
    from catalog.lineage import _UnplacedSubqueries

    def record(msg):
        return logging.LogRecord("sqlglot", logging.WARNING, __file__, 1, msg, None, None)

    unplaced = _UnplacedSubqueries()
    assert not unplaced.filter(record("Unknown subquery scope: (SELECT 1)"))
    assert unplaced.filter(record("another sqlglot warning")) and unplaced.count == 1

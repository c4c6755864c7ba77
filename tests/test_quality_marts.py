"""Mart rules (the four databases, not only bronze): every rules file of a dbt mart names real columns
of that mart, every rule runs on tables shaped exactly like the marts (types from the dbt contract,
no ERROR), and the new kinds of mart rules count the rows they should: lab units and plausible values,
event dates within [birth, death], counts non-negative, foreign keys into other marts.

The whole-catalogue run uses the same SQL the grouped scoring derives from the rules
(``quality.scoring.failing_rows_sql``: GX's shape of ``{batch}``), so it is fast; GX itself runs one
mart file end to end (``test_gx_agrees_on_a_mart_with_reference_joins``).
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import pytest
import yaml

from healthlake.config import settings as load_settings
from healthlake.lake import connect
from quality import ERROR, load_catalogue, run_table_rules
from quality.scoring import failing_rows_sql

DBT_MARTS = Path(__file__).resolve().parents[1] / "dbt_project" / "models" / "marts"
DATABASES = ("population", "emr", "health_record", "resource")


@functools.lru_cache(maxsize=1)
def mart_columns() -> dict[str, dict[str, str]]:
    """'<schema>.<model>' → {column: data_type} from the dbt model properties."""
    out = {}
    for path in DBT_MARTS.glob("*/_*.yml"):
        schema = path.parent.name
        for m in (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("models", []):
            out[f"{schema}.{m['name']}"] = {c["name"]: c.get("data_type", "varchar") for c in m.get("columns", [])}
    return out


def mart_files():
    return [f for f in load_catalogue() if not f.table.startswith("bronze.")]


def test_mart_rules_count_and_spread():
    files = mart_files()
    rules = [(f.table, r) for f in files for r in f.rules]
    assert len(rules) >= 60, len(rules)
    per_db = {db: sum(t.startswith(db + ".") for t, _ in rules) for db in DATABASES}
    assert all(n >= 10 for n in per_db.values()), per_db
    assert {r.dimension for _, r in rules} == {"completeness", "validity", "consistency", "uniqueness", "plausibility",
                                              "timeliness"}
    assert {r.severity for _, r in rules} == {"critical", "major", "minor"}
    # every mart with a rules file has its key checked (unique) as a critical rule
    for f in files:
        assert any(r.expectation == "expect_column_values_to_be_unique" and r.severity == "critical"
                   for r in f.rules), f.table


def test_mart_rules_name_real_columns():
    cols = mart_columns()
    for f in mart_files():
        assert f.table in cols, f"{f.table}: no such dbt mart"
        known = set(cols[f.table])
        for r in f.rules:
            named = {r.kwargs.get("column"), r.element} - {None}
            assert named <= known, (r.id, named - known)
            # the columns in the SQL are checked by running it on tables typed from the same contract (below)


def _ddl(table: str) -> str:
    cols = mart_columns()[table]
    return f"CREATE TABLE {table} (" + ", ".join(f'"{c}" {t}' for c, t in cols.items()) + ")"


def _insert(con, table: str, rows: list[dict]) -> None:
    for row in rows:
        names = list(row)
        con.execute(f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
                    [row[n] for n in names])


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    """A private lake with every mart that has a rules file, typed from the dbt contract, a few rows each."""
    from quality.reference import sync_reference

    root = tmp_path_factory.mktemp("quality_marts") / "root"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HEALTHLAKE_ROOT", str(root))
        for var in ("HEALTHLAKE_CATALOG", "HEALTHLAKE_DATA_PATH", "HEALTHLAKE_REGISTRY", "HEALTHLAKE_LANDING"):
            mp.delenv(var, raising=False)
        s = load_settings()
        with contextlib.closing(connect(s)) as con:
            sync_reference(con, s)
            for schema in DATABASES:
                con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
            for f in mart_files():
                con.execute(_ddl(f.table))
            _insert(con, "population.dim_person", [
                {"person_key": "P1", "birth_date": "1950-01-01"},
                {"person_key": "P2", "birth_date": "2020-06-01"},
                {"person_key": "P3", "birth_date": "1980-01-01"}])
            _insert(con, "population.fct_vital_event", [
                {"vital_event_key": "V1", "person_key": "P1", "event_type_code": "2", "event_date": "2026-03-01"},
                {"vital_event_key": "V2", "person_key": "P3", "event_type_code": "2", "event_date": "1979-12-31"},  # before birth
                {"vital_event_key": "V3", "event_type_code": "1", "event_date": "2026-01-01", "birth_weight_g": 3200},
                {"vital_event_key": "V4", "event_type_code": "1", "event_date": "2026-01-02", "birth_weight_g": 32000},
                {"vital_event_key": "V4", "event_type_code": "3", "event_date": "2099-01-01"}])   # dup key, bad type, future
            _insert(con, "emr.fct_encounter", [
                {"encounter_key": "E1", "person_key": "P1", "visit_at": "2026-02-01 08:00", "total_fee": 10},
                {"encounter_key": "E2", "person_key": "P1", "visit_at": "2026-04-01 08:00"},   # after death
                {"encounter_key": "E3", "person_key": "P2", "visit_at": "2026-04-01 08:00", "total_fee": -5,
                 "payment_method_code": "ZZ"}])
            _insert(con, "emr.fct_lab_result", [
                {"lab_result_key": "L1", "encounter_key": "E1", "item_code": "10100101", "unit": "g/L",
                 "result_value_numeric": 130, "is_known_lab_item": True, "reported_at": "2026-01-01 10:00",
                 "_ingested_at": "2026-03-01 10:00:00+08"},                                                    # late
                {"lab_result_key": "L2", "encounter_key": "E1", "item_code": "10100101", "unit": "mmol/L",   # unit
                 "result_value_numeric": 900, "is_known_lab_item": True},                                  # implausible
                {"lab_result_key": "L3", "encounter_key": "EX", "item_code": "LOCAL1", "unit": "x",        # unknown item:
                 "result_value_numeric": 1e6, "is_known_lab_item": False,                                  # no unit/range check
                 "reference_low": 5, "reference_high": 1}])                                                # low > high; FK
            _insert(con, "health_record.fct_immunization", [
                {"immunization_key": "I1", "person_key": "P2", "vaccine_code": "01", "dose_seq": 1,
                 "vaccinated_date": "2020-05-01"},                                                          # before birth
                {"immunization_key": "I2", "person_key": "P2", "vaccine_code": None, "dose_seq": 0,
                 "vaccinated_date": "2021-05-01"}])
            _insert(con, "resource.dim_institution", [{"institution_code": "H1"}])
            _insert(con, "resource.dim_department", [
                {"department_key": "D1", "institution_code": "H1", "department_name": "内科", "approved_beds": 30,
                 "open_beds": 28},
                {"department_key": "D2", "institution_code": "H9", "department_name": "外科", "approved_beds": -1,
                 "open_beds": 0}])
            _insert(con, "resource.fct_bed_capacity", [
                {"bed_capacity_key": "B1", "approved_beds": 10, "open_beds": 10, "inpatients_at_midnight": 8,
                 "admissions": 1, "discharges": 0, "occupancy_rate": 0.8},
                {"bed_capacity_key": "B2", "approved_beds": 10, "open_beds": 10, "inpatients_at_midnight": -1,
                 "admissions": 1, "discharges": 0, "occupancy_rate": 3.0}])
        yield s


@pytest.fixture(scope="module")
def failing(lake):
    """rule id → failing rows (or 'ERROR …') for every mart rule, on one connection."""
    out = {}
    with contextlib.closing(connect(lake, read_only=True)) as con:
        for f in mart_files():
            con.execute(f"CREATE OR REPLACE TEMP VIEW _scope AS SELECT * FROM lake.{f.table}")
            for r in f.rules:
                try:
                    out[r.id] = con.execute(f"SELECT count(*) FROM ({failing_rows_sql(r, '_scope')})").fetchone()[0]
                except Exception as e:  # noqa: BLE001
                    out[r.id] = f"ERROR {e}"
    return out


def test_every_mart_rule_runs_on_tables_shaped_like_the_marts(failing):
    assert len(failing) == sum(len(f.rules) for f in mart_files())
    errors = {rid: v for rid, v in failing.items() if isinstance(v, str)}
    assert not errors, errors


@pytest.mark.parametrize("expected", [
    # lab: unit not allowed for the item; implausible value; reference low > high; encounter missing; local item
    {"EMR-204": 1, "EMR-205": 1, "EMR-206": 1, "EMR-208": 1, "EMR-203": 1, "EMR-209": 1},
    {"EMR-010": 1, "EMR-011": 1, "EMR-012": 1},       # visit after death; fee < 0; payment code outside WS 445
    {"POP-102": 2, "POP-103": 1, "POP-104": 1, "POP-105": 1, "POP-106": 1},
    {"HR-203": 1, "HR-204": 1, "HR-206": 1},          # no vaccine; dose 0; vaccinated before birth
    {"RES-203": 1, "RES-204": 1, "RES-402": 1, "RES-403": 1},   # counts non-negative; FK department → institution
], ids=["lab", "encounter", "vital_event", "immunization", "resource"])
def test_new_mart_rules_count_the_right_rows(failing, expected):
    assert {k: failing[k] for k in expected} == expected


def test_gx_agrees_on_a_mart_with_reference_joins(lake, failing):
    results = {r.rule_id: r for r in run_table_rules("emr.fct_lab_result", next(
        f for f in mart_files() if f.table == "emr.fct_lab_result"), settings=lake)}
    assert not [r for r in results.values() if r.status == ERROR]
    assert {rid: r.rows_failed for rid, r in results.items()} == {rid: failing[rid] for rid in results}
    assert all(r.rows_checked == 3 for r in results.values())


def test_reference_tables_rewritten_only_when_their_rows_change(lake):
    """sync_reference compares each table's rows with the wanted ones as sets (no sort): unchanged
    tables are left alone; a missing, changed or duplicated row rewrites the table."""
    from healthlake.lake import LAKE
    from quality.reference import sync_reference

    with contextlib.closing(connect(lake)) as con:
        sync_reference(con, lake)
        assert sync_reference(con, lake) == []
        before = sorted(con.execute(f"SELECT * FROM {LAKE}.quality.ref_ethnicity").fetchall())
        first = before[0]
        con.execute(f"DELETE FROM {LAKE}.quality.ref_ethnicity WHERE code = ?", [first[0]])
        assert sync_reference(con, lake) == ["ref_ethnicity"]
        con.execute(f"INSERT INTO {LAKE}.quality.ref_ethnicity VALUES (?, ?)", list(first))   # a duplicate
        assert sync_reference(con, lake) == ["ref_ethnicity"]
        con.execute(f"UPDATE {LAKE}.quality.ref_ethnicity SET name_zh = 'x' WHERE code = ?", [first[0]])
        assert sync_reference(con, lake) == ["ref_ethnicity"]
        assert sorted(con.execute(f"SELECT * FROM {LAKE}.quality.ref_ethnicity").fetchall()) == before
        assert sync_reference(con, lake) == []

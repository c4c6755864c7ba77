"""End to end on a tiny city: generate → every asset through Dagster → marts equal the truth.

One module-scoped run (≈ 1 min): the lake is built once and every test reads it.
"""

from __future__ import annotations

import json
import os

import pytest

from healthlake.config import settings
from healthlake.lake import connect

# 800 residents: every format of the city (CSV, Excel, NDJSON, JSON, SQLite, HL7 v2, FHIR) has deliveries
RESIDENTS, DAYS, SEED = 800, 2, 7


@pytest.fixture(scope="module")
def city_lake(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    saved = {k: os.environ.get(k) for k in ("HEALTHLAKE_ROOT", "HEALTHLAKE_LANDING", "HEALTHLAKE_CATALOG",
                                            "HEALTHLAKE_DATA_PATH", "HEALTHLAKE_REGISTRY", "DAGSTER_HOME",
                                            "HEALTHLAKE_QUALITY_THRESHOLD")}
    for k in saved:
        os.environ.pop(k, None)
    os.environ["HEALTHLAKE_ROOT"] = str(root / "root")
    # The marts are compared with the generator's truth over every loadable row: the quality gate
    # promotes every batch here (threshold 0); holding batches back is tested in test_quality_gate.py.
    os.environ["HEALTHLAKE_QUALITY_THRESHOLD"] = "0"
    from healthlake.cli import run_all_assets
    from synthetic import generate_city

    s = settings()
    generate_city(s.city_dir, residents=RESIDENTS, days=DAYS, seed=SEED)
    first = run_all_assets(s)
    truth = json.loads((s.city_dir / "truth" / "summary.json").read_text(encoding="utf-8"))
    yield s, first, truth
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def q(s, sql):
    con = connect(s, read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def count(s, table):
    return q(s, f"SELECT count(*) FROM {table}")[0][0]


def test_run_succeeds_and_checks_run_on_every_database(city_lake):
    s, result, _ = city_lake
    assert result.success
    checked = {e.asset_key.to_user_string() for e in result.get_asset_check_evaluations() if e.check_name == "gx_rules"}
    assert {"population/dim_person", "emr/fct_encounter", "health_record/dim_health_record",
            "resource/dim_institution"} <= checked
    stored = q(s, "SELECT DISTINCT table_name FROM quality.rule_result")
    assert len(stored) >= 4
    assert (s.reports_dir / "quality" / "index.html").exists()


def test_the_runs_step_times_are_read_from_its_event_log(city_lake):
    """What the demo prints under 各步骤用时: every step of the run, each with its wall time."""
    from healthlake.cli import step_times

    _, result, _ = city_lake
    times = step_times(result.run_id)
    steps = [step for step, _, _ in times]
    assert sorted(steps) == sorted(e.step_key for e in result.all_events if e.is_step_success)
    assert {"ingest_landing_zone", "quality_gate", "healthlake_dbt", "catalog"} <= set(steps)
    assert all(ok and seconds > 0 for _, seconds, ok in times)


def test_marts_equal_the_generators_truth(city_lake):
    s, _, truth = city_lake
    city = truth["city"]
    # the EMPI links every loadable source identity to a person: measured against the truth
    from empi.cli import _LINKS
    from empi.evaluate import evaluate
    from healthlake.lake import LAKE

    con = connect(s, read_only=True)
    try:
        empi = evaluate(con, _LINKS.format(lake=LAKE), s.city_dir / "truth" / "identities.csv")
    finally:
        con.close()
    overall, clusters = empi["pairwise"][0], empi["clusters"]
    assert overall.precision >= 0.999 and overall.recall >= 0.995, empi
    assert clusters["identities_without_truth"] == 0
    assert count(s, "population.dim_person") == clusters["persons"]
    assert clusters["true_persons"] >= city["persons_with_valid_id_in_any_feed"]
    assert abs(clusters["persons"] - clusters["true_persons"]) <= 0.005 * clusters["true_persons"]
    assert count(s, "emr.fct_encounter") == city["encounters_loadable"]
    assert count(s, "health_record.dim_health_record") == city["health_records_loadable"]
    assert count(s, "resource.dim_institution") == city["institutions"] == len(truth["institutions"])


# mart → (the data set it is built from, its institution column): one row per loadable business key
MART_DATASETS = {
    "emr.fct_encounter": ("encounter", "institution_code"), "emr.fct_diagnosis": ("diagnosis", "institution_code"),
    "emr.fct_lab_result": ("lab_result", "institution_code"),
    "emr.fct_medication_order": ("prescription", "institution_code"),
    "emr.fct_procedure": ("procedure", "institution_code"), "emr.fct_exam_report": ("exam_report", "institution_code"),
    "health_record.dim_health_record": ("health_record", "managing_institution_code"),
    "health_record.fct_chronic_followup": ("chronic_followup", "institution_code"),
    "health_record.fct_immunization": ("immunization", "institution_code"),
    "health_record.fct_maternal_child_visit": ("maternal_child_visit", "institution_code"),
    "health_record.fct_elderly_health_check": ("elderly_health_check", "institution_code"),
    "population.fct_vital_event": ("vital_event", "institution_code"),
    "resource.dim_department": ("department", "institution_code"),
    "resource.dim_practitioner": ("practitioner", "institution_code"),
    "resource.dim_equipment": ("equipment", "institution_code"),
}


def test_every_mart_count_equals_the_truth_per_institution(city_lake):
    s, _, truth = city_lake
    total = 0
    for mart, (dataset, column) in MART_DATASETS.items():
        expected = {code: inst["datasets"][dataset]["distinct_keys_loadable"]
                    for code, inst in truth["institutions"].items() if dataset in inst["datasets"]}
        expected = {k: v for k, v in expected.items() if v}
        got = dict(q(s, f"SELECT {column}, count(*) FROM {mart} GROUP BY 1"))
        assert got == expected, mart
        total += sum(got.values())
    assert total > 1000
    # every follow-up, visit and check of the services added for the four databases is there
    for mart in ("health_record.fct_chronic_followup", "health_record.fct_maternal_child_visit",
                 "health_record.fct_elderly_health_check", "population.fct_vital_event", "resource.dim_equipment"):
        assert count(s, mart) > 0, mart
    # the plans' indicators: every indicator at city scope, the quality pass rate among them
    got = {c for (c,) in q(s, "SELECT DISTINCT indicator_code FROM indicators.fct_indicator_value WHERE scope = 'city'")}
    assert {"IND01", "IND02", "IND03", "IND12", "IND13"} <= got
    assert q(s, "SELECT count(*) FROM indicators.fct_indicator_value WHERE value < 0 OR value > 1") == [(0,)]


def test_unmapped_codes_are_listed_per_institution_and_code_system_with_the_truths_counts(city_lake):
    import csv

    s, _, _ = city_lake
    rejected = set(q(s, "SELECT source_file, source_row FROM bronze._rejects"))
    expected: dict[tuple, int] = {}
    with open(s.city_dir / "truth" / "defects.csv", encoding="utf-8", newline="") as fh:
        for d in csv.DictReader(fh):
            if d["defect"] == "unknown_sex_code" and (d["file"], int(d["source_row"])) not in rejected:
                k = (d["institution_code"], d["dataset"])
                expected[k] = expected.get(k, 0) + 1
    got = {(i, ds): n for i, ds, n in q(s, "SELECT institution_code, dataset, sum(row_count)::INT FROM resource.unmapped_code "
                                           "WHERE code_system = 'GB/T 2261.1' AND element = 'sex_code' GROUP BY ALL")}
    assert got == expected and sum(got.values()) > 0
    # never dropped: the rows are in the marts with the value as sent
    assert q(s, "SELECT count(*) FROM resource.dim_practitioner WHERE sex_code IN ('3', '不明')")[0][0] == sum(
        n for (_, ds), n in expected.items() if ds == "practitioner")

def test_every_batch_accounts_for_every_row(city_lake):
    s, _, truth = city_lake
    assert q(s, "SELECT count(*) FROM ops.ingest_batch WHERE rows_read <> rows_loaded + rows_rejected") == [(0,)]
    assert q(s, "SELECT count(*) FROM ops.ingest_batch WHERE status <> 'loaded'") == [(0,)]
    got = {(i, d): (r, rj) for i, d, r, rj in q(s, "SELECT institution_code, dataset, sum(rows_read), "
                                                   "sum(rows_rejected) FROM ops.ingest_batch GROUP BY ALL")}
    for code, inst in truth["institutions"].items():
        for dataset, t in inst["datasets"].items():
            # header-only files of a feed are byte-identical across days and load once
            assert got.get((code, dataset), (0, 0)) == (t["rows_written"], t["malformed_rows"]), (code, dataset)
    # every rejected row is in bronze._rejects with a reason, and bronze holds the rest
    assert count(s, "bronze._rejects") == sum(t["malformed_rows"] for i in truth["institutions"].values()
                                              for t in i["datasets"].values())
    assert q(s, "SELECT count(*) FROM bronze._rejects WHERE reason IS NULL OR source_row IS NULL") == [(0,)]


def test_every_format_accounts_for_every_row_and_reaches_the_marts(city_lake):
    """Per delivery format: rows read = loaded + rejected, equal to what the generator wrote (its
    per-format truth), and every mart counts exactly the format's loadable business keys."""
    s, _, truth = city_lake
    formats = truth["city"]["formats"]
    assert set(formats) == {"csv", "excel", "ndjson", "json", "sqlite", "hl7v2", "fhir"}
    got = {f: (r, l, rj, n) for f, r, l, rj, n in q(
        s, "SELECT format, sum(rows_read)::BIGINT, sum(rows_loaded)::BIGINT, sum(rows_rejected)::BIGINT, "
           "count(DISTINCT source_file) FROM ops.ingest_batch WHERE status = 'loaded' GROUP BY 1")}
    for fmt, t in formats.items():
        read, loaded, rejected, files = got[fmt]
        assert read == loaded + rejected == t["rows_written"], fmt
        assert rejected == t["malformed_rows"], fmt
        assert 0 < files <= t["files"], fmt   # header-only CSV files identical across days load once
    fmt_of = {(code, ds): d["format"] for code, inst in truth["institutions"].items() for ds, d in inst["datasets"].items()}
    expected, loaded_keys = {}, {}
    for mart, (dataset, column) in MART_DATASETS.items():
        for code, n in q(s, f"SELECT {column}, count(*) FROM {mart} GROUP BY 1"):
            loaded_keys[fmt_of[(code, dataset)]] = loaded_keys.get(fmt_of[(code, dataset)], 0) + n
        for code, inst in truth["institutions"].items():
            if dataset in inst["datasets"]:
                f = inst["datasets"][dataset]["format"]
                expected[f] = expected.get(f, 0) + inst["datasets"][dataset]["distinct_keys_loadable"]
    assert loaded_keys == {f: n for f, n in expected.items() if n}
    assert all(loaded_keys.get(f, 0) > 0 for f in formats), loaded_keys


def test_lineage_columns_on_every_bronze_row(city_lake):
    s, _, _ = city_lake
    for table in ("person", "encounter", "health_record"):
        nulls = q(s, f"SELECT count(*) FROM bronze.{table} WHERE _institution_code IS NULL OR _feed IS NULL OR "
                     f"_batch_id IS NULL OR _source_file IS NULL OR _source_row IS NULL OR _ingested_at IS NULL")
        assert nulls == [(0,)]


def test_catalog_lists_every_table_with_its_row_count(city_lake):
    s, _, _ = city_lake
    listed = {(a, b): n for a, b, n in q(s, "SELECT schema_name, table_name, row_count FROM catalog.resource_directory")}
    assert listed[("population", "dim_person")] == count(s, "population.dim_person")
    assert listed[("bronze", "person")] == count(s, "bronze.person")
    assert {"population", "emr", "health_record", "resource", "bronze", "ops"} <= {a for a, _ in listed}
    assert (s.reports_dir / "catalog" / "resource_directory.json").exists()


def test_a_second_run_loads_nothing_twice(city_lake):
    from healthlake.cli import run_all_assets

    s, _, _ = city_lake
    before = {t: count(s, t) for t in ("bronze.person", "bronze.encounter", "ops.ingest_batch",
                                       "population.dim_person", "emr.fct_encounter")}
    again = run_all_assets(s)
    assert again.success
    after = {t: count(s, t) for t in before}
    assert after == before

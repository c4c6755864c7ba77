"""Quality engine: GX on DuckDB over the lake, row-level counts per expectation type, ERROR
isolation, NOT_APPLICABLE on empty tables, stored results, the HTML report, the catalogue."""

from __future__ import annotations

import contextlib
import random
import re
import shutil

import pytest

from healthlake.config import settings as load_settings
from healthlake.lake import connect
from quality import (ERROR, FAIL, NOT_APPLICABLE, PASS, QualityError, load_catalogue, load_rules_file,
                     run_all, run_table_rules, write_report)
from quality.catalogue import RULES_DIR, expectation_class, parse_rules

WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def check_char(first17: str) -> str:
    """GB 11643 check character, the Python reference for rule POP-005."""
    return "10X98765432"[sum(int(c) * w for c, w in zip(first17, WEIGHTS)) % 11]


def valid_id(first17: str) -> str:
    return first17 + check_char(first17)


ID1 = valid_id("51100219800101123")
ID2 = valid_id("51100219851231004")
ID3 = valid_id("51101120100101005")
ID4 = valid_id("51101119550303006")
ID5 = valid_id("51100219600606007")
ID_X = "11010519491231002X"                      # a published valid example, check char X
assert check_char(ID_X[:17]) == "X"
WRONG_CHECK = ID1[:17] + ("0" if ID1[17] != "0" else "1")

# population.dim_person, 10 rows; expected failures per rule are in the test below.
PERSONS = [
    # person_key, sex_code, id_number, birth_date
    ("P01", "1", ID1, "1980-01-01"),
    ("P01", "2", ID2, None),                     # duplicate key; birth_date null
    ("P03", "0", "abc", "1990-05-05"),           # bad format
    ("P04", "9", ID_X.lower(), None),            # lower-case x: bad format (not a check-digit failure)
    ("P05", "M", WRONG_CHECK, "1970-01-01"),     # sex code outside the value set; wrong check digit
    ("P06", None, None, "2000-02-29"),           # nulls: not checked by validity rules
    ("P07", "1", None, None),
    ("P08", "2", ID3, "2010-10-10"),
    ("P09", "1", ID4, "1955-03-03"),
    (None, "2", ID5, "1960-06-06"),              # null key
]
ENCOUNTERS = [
    # encounter_key, visit_at, visit_type_code, discharge_at, person_key, practitioner_key
    ("E1", "2026-01-01 08:00", "1", None, "P01", "K1"),
    ("E2", "2026-01-01 09:00", "2", None, "P08", None),
    ("E3", "2026-01-02 10:00", "3", "2026-01-05 10:00", "P03", None),
    ("E3", "2026-01-03 10:00", "9", None, "ZZZ", None),       # duplicate key; person not in dim_person
    ("E5", None, "4", "2026-01-05 10:00", None, None),  # visit_at null (not a consistency failure); bad type
    ("E6", "2026-01-04 10:00", "1", "2026-01-04 10:00", "P09", None),   # same instant: consistent
    ("E7", "2026-01-04 11:00", None, None, "P09", None),
    ("E8", "2026-01-06 10:00", "3", "2026-01-05 09:00", "P05", "K9"),   # discharged before admission; unknown doctor
]
PRACTITIONERS = [
    # practitioner_key, institution_code, sex_code
    ("K1", "I1", "1"),
    ("K2", "I9", "2"),            # institution not registered
    ("K2", "I1", "M"),            # duplicate key; sex code outside the value set
    ("K4", None, "0"),            # no institution
]
INSTITUTIONS = [
    ("I1", "511002"), ("I2", "510100"), ("I2", "5110021"), ("I4", None), ("I5", "511011"),
]


def _sql_rows(rows):
    def lit(v):
        return "NULL" if v is None else "'" + str(v).replace("'", "''") + "'"
    return ", ".join("(" + ", ".join(lit(v) for v in row) + ")" for row in rows)


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    """A private lake with one small table per mart, each with known defects."""
    root = tmp_path_factory.mktemp("quality") / "root"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HEALTHLAKE_ROOT", str(root))
        for var in ("HEALTHLAKE_CATALOG", "HEALTHLAKE_DATA_PATH", "HEALTHLAKE_REGISTRY", "HEALTHLAKE_LANDING"):
            mp.delenv(var, raising=False)
        s = load_settings()
        with contextlib.closing(connect(s)) as con:
            for schema in ("population", "emr", "health_record", "resource"):
                con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
            con.execute("CREATE TABLE population.dim_person (person_key VARCHAR, sex_code VARCHAR, "
                        "id_number VARCHAR, birth_date DATE)")
            con.execute(f"INSERT INTO population.dim_person VALUES {_sql_rows(PERSONS)}")
            con.execute("CREATE TABLE emr.fct_encounter (encounter_key VARCHAR, visit_at TIMESTAMP, "
                        "visit_type_code VARCHAR, discharge_at TIMESTAMP, person_key VARCHAR, practitioner_key VARCHAR)")
            con.execute("ALTER TABLE emr.fct_encounter ADD COLUMN length_of_stay_days INTEGER")
            con.execute("ALTER TABLE emr.fct_encounter ADD COLUMN total_fee DECIMAL(18, 2)")
            con.execute("ALTER TABLE emr.fct_encounter ADD COLUMN payment_method_code VARCHAR")
            con.execute("INSERT INTO emr.fct_encounter (encounter_key, visit_at, visit_type_code, discharge_at, "
                        f"person_key, practitioner_key) VALUES {_sql_rows(ENCOUNTERS)}")
            # P09 died on 2026-01-03: E6 and E7 (2026-01-04) are after the death
            con.execute("CREATE TABLE population.fct_vital_event (vital_event_key VARCHAR, person_key VARCHAR, "
                        "event_type_code VARCHAR, event_date DATE)")
            con.execute("INSERT INTO population.fct_vital_event VALUES ('V1', 'P09', '2', '2026-01-03')")
            con.execute("CREATE TABLE health_record.dim_health_record (record_key VARCHAR, created_date DATE)")
            con.execute("CREATE TABLE resource.dim_institution (institution_code VARCHAR, division_code VARCHAR)")
            con.execute(f"INSERT INTO resource.dim_institution VALUES {_sql_rows(INSTITUTIONS)}")
            con.execute("CREATE TABLE resource.dim_practitioner (practitioner_key VARCHAR, institution_code VARCHAR, "
                        "sex_code VARCHAR)")
            con.execute(f"INSERT INTO resource.dim_practitioner VALUES {_sql_rows(PRACTITIONERS)}")
        yield s


def by_id(results):
    return {r.rule_id: r for r in results}


def counts(results):
    return {r.rule_id: (r.status, r.rows_checked, r.rows_failed) for r in results}


# --- GX itself, through the fixes -------------------------------------------------------------

def test_gx_evaluates_on_the_attached_lake(lake):
    """The brief's check: not-null on a column with 3 nulls of 10 rows."""
    import great_expectations as gx

    from quality.gx_duckdb import lake_batch

    with lake_batch("population.dim_person", settings=lake) as batch:
        r = batch.validate(gx.expectations.ExpectColumnValuesToNotBeNull(column="birth_date"))
        assert (r.result["element_count"], r.result["unexpected_count"]) == (10, 3)
        # a second expectation on the same (persistent) connection
        r = batch.validate(gx.expectations.ExpectTableRowCountToEqual(value=10))
        assert r.success


def test_regex_has_search_semantics_like_postgres(lake):
    """DuckDB's `~` is a full match; the fix uses regexp_matches, which searches like PostgreSQL's `~`."""
    import great_expectations as gx

    from quality.gx_duckdb import lake_batch

    E = gx.expectations
    with lake_batch("population.dim_person", settings=lake) as batch:
        # every non-null key contains "0" somewhere
        r = batch.validate(E.ExpectColumnValuesToMatchRegex(column="person_key", regex="0"))
        assert r.result["unexpected_count"] == 0
        r = batch.validate(E.ExpectColumnValuesToNotMatchRegex(column="sex_code", regex="[A-Z]"))
        assert r.result["unexpected_count"] == 1            # 'M'


def test_fixes_refuse_another_gx_version(monkeypatch):
    import great_expectations as gx

    import quality.gx_duckdb as g

    monkeypatch.setattr(g, "_applied", False)
    monkeypatch.setattr(gx, "__version__", "1.99.0")
    with pytest.raises(QualityError, match="PINNED_GX"):
        g.apply_fixes()


# --- Row-level counts per expectation type ----------------------------------------------------

def test_dim_person_rules_exact_counts(lake):
    results = run_table_rules("population.dim_person", RULES_DIR / "population.dim_person.yaml", settings=lake)
    assert [r.rule_id for r in results] == ["POP-001", "POP-002", "POP-003", "POP-004", "POP-005", "POP-006"]
    assert counts(results) == {
        "POP-001": (FAIL, 10, 1),   # not null: the null key
        "POP-002": (FAIL, 10, 2),   # unique: both rows of P01; the null key is not a duplicate
        "POP-003": (FAIL, 10, 1),   # in set: 'M'; the null sex code is not checked
        "POP-004": (FAIL, 10, 2),   # regex: 'abc' and the lower-case x; nulls not checked
        "POP-005": (FAIL, 10, 1),   # SQL check digit: only the well-formed number with a wrong check digit
        "POP-006": (FAIL, 10, 3),   # not null: three null birth dates
    }
    r = by_id(results)["POP-006"]
    assert r.pass_rate == pytest.approx(0.7)
    assert (r.dimension, r.severity, r.threshold, r.rule_name) == ("completeness", "major", 0.95, "出生日期非空")
    assert "不合格 3 行" in r.message


def test_encounter_rules_exact_counts(lake):
    results = run_table_rules("emr.fct_encounter", RULES_DIR / "emr.fct_encounter.yaml", settings=lake)
    assert counts(results) == {
        "EMR-001": (PASS, 8, 0),
        "EMR-002": (FAIL, 8, 2),    # E3 twice
        "EMR-003": (FAIL, 8, 1),    # visit_at null
        "EMR-004": (FAIL, 8, 1),    # '4'; the null type is not checked
        "EMR-005": (FAIL, 8, 1),    # UnexpectedRowsExpectation: E8 discharged before admission
        "EMR-006": (FAIL, 8, 1),    # FK to population.dim_person: ZZZ; the null person_key is not checked
        "EMR-007": (PASS, 8, 0),    # no visit before the person's birth
        "EMR-008": (PASS, 8, 0),    # no visit in the future
        "EMR-009": (FAIL, 8, 1),    # FK to resource.dim_practitioner: K9
        "EMR-010": (FAIL, 8, 2),    # E6, E7: P09's visits after P09's death
        "EMR-011": (PASS, 8, 0),    # no fee or stay given: nothing negative
        "EMR-012": (PASS, 8, 0),    # no payment method given
    }
    assert by_id(results)["EMR-005"].pass_rate == pytest.approx(7 / 8)


def test_institution_rules_exact_counts(lake):
    results = run_table_rules("resource.dim_institution", RULES_DIR / "resource.dim_institution.yaml", settings=lake)
    assert counts(results) == {
        "RES-001": (PASS, 5, 0),
        "RES-002": (FAIL, 5, 2),
        "RES-003": (FAIL, 5, 2),    # 510100 is another city; 5110021 has seven digits
    }


def test_practitioner_rules_exact_counts(lake):
    results = run_table_rules("resource.dim_practitioner", RULES_DIR / "resource.dim_practitioner.yaml", settings=lake)
    assert counts(results) == {
        "RES-101": (PASS, 4, 0),
        "RES-102": (FAIL, 4, 2),    # K2 twice
        "RES-103": (FAIL, 4, 2),    # FK to resource.dim_institution: I9 and the null institution
        "RES-104": (FAIL, 4, 1),    # 'M'
    }


def test_every_validation_gets_self_contained_data_docs(lake):
    from quality.data_docs import EXTERNAL_URL, data_docs_dir

    results = run_table_rules("emr.fct_encounter", RULES_DIR / "emr.fct_encounter.yaml", settings=lake,
                              docs_run_id="run-docs-1")
    assert len(results) == 12
    page_path = data_docs_dir(lake) / "emr.fct_encounter" / "run-docs-1.html"
    page = page_path.read_text(encoding="utf-8")
    # GX's own rendering of this validation: the suite, its statistics and the expectations
    for text in ("healthlake:emr.fct_encounter", "Evaluated Expectations", "discharge_at", "visit_type_code",
                 "GX 数据文档"):
        assert text in page, text
    # readable offline: no CDN stylesheet or script, no outbound link or image, no script at all
    assert not EXTERNAL_URL.search(page)
    assert "<script" not in page.lower() and "<link" not in page.lower()
    assert "<style>" in page
    index = (data_docs_dir(lake) / "index.html").read_text(encoding="utf-8")
    assert "emr.fct_encounter/run-docs-1.html" in index and not EXTERNAL_URL.search(index)


def test_the_mart_checks_write_the_data_docs_index_once_after_their_pages(lake, monkeypatch):
    """evaluate_marts (the pipeline's mart checks) writes every mart's page, then the index once:
    it lists them all."""
    import quality.data_docs as data_docs
    from pipelines.defs.quality.checks import evaluate_marts
    from quality.catalogue import load_rules_file

    written = []
    real = data_docs.write_docs_index
    monkeypatch.setattr(data_docs, "write_docs_index", lambda s=None: written.append(1) or real(s))
    files = [load_rules_file(RULES_DIR / f"{t}.yaml") for t in ("emr.fct_encounter", "resource.dim_practitioner")]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HEALTHLAKE_ROOT", str(lake.root))
        by_file = evaluate_marts(files, lake, "run-index-once")
    assert [len(r) for _, r in by_file] == [12, 4] and len(written) == 1
    index = (data_docs.data_docs_dir(lake) / "index.html").read_text(encoding="utf-8")
    assert "emr.fct_encounter/run-index-once.html" in index and "resource.dim_practitioner/run-index-once.html" in index


def test_data_docs_keep_the_newest_pages_per_table(lake, monkeypatch):
    from datetime import datetime, timedelta, timezone

    from great_expectations.core import ExpectationSuiteValidationResult

    from healthlake.config import settings
    from quality.data_docs import data_docs_dir, write_data_docs

    monkeypatch.setenv("HEALTHLAKE_DATA_DOCS_KEEP", "3")
    s = settings()
    outcome = ExpectationSuiteValidationResult(success=True, results=[], suite_name="healthlake:resource.fct_bed_capacity",
                                               statistics={"evaluated_expectations": 0})
    t0 = datetime(2026, 12, 1, tzinfo=timezone.utc)
    for i in range(6):
        write_data_docs(outcome, "resource.fct_bed_capacity", f"run-{i}", run_at=t0 + timedelta(hours=i), settings=s)
    folder = data_docs_dir(s) / "resource.fct_bed_capacity"
    assert sorted(p.name for p in folder.glob("*.html")) == ["run-3.html", "run-4.html", "run-5.html"]
    assert sorted(p.name for p in folder.glob("*.json")) == ["run-3.json", "run-4.json", "run-5.json"]
    index = (data_docs_dir(s) / "index.html").read_text(encoding="utf-8")
    assert "run-5.html" in index and "run-0.html" not in index


def test_threshold_boundary_and_completeness_counts_nulls(lake):
    rules = [
        # 8 of 10 pass: exactly at the threshold passes
        {"id": "T-001", "name": "格式", "dimension": "validity", "severity": "minor",
         "expectation": "expect_column_values_to_match_regex",
         "kwargs": {"column": "id_number", "regex": "^[0-9]{17}[0-9X]$"}, "threshold": 0.8},
        {"id": "T-002", "name": "格式", "dimension": "validity", "severity": "minor",
         "expectation": "ExpectColumnValuesToMatchRegex",
         "kwargs": {"column": "id_number", "regex": "^[0-9]{17}[0-9X]$"}, "threshold": 0.81},
        # the same in-set check filed under completeness: nulls fail too (1 bad + 1 null)
        {"id": "T-003", "name": "性别代码有效且非空", "dimension": "completeness", "severity": "minor",
         "expectation": "expect_column_values_to_be_in_set",
         "kwargs": {"column": "sex_code", "value_set": ["0", "1", "2", "9"]}, "threshold": 0.5},
    ]
    results = run_table_rules("population.dim_person", rules, settings=lake)
    assert counts(results) == {"T-001": (PASS, 10, 2), "T-002": (FAIL, 10, 2), "T-003": (PASS, 10, 2)}


def test_check_digit_rule_agrees_with_python(lake):
    """POP-005's SQL against the Python reference on 300 random numbers, ~1/11 of them valid by chance."""
    rng = random.Random(20261123)
    ids = ["".join(rng.choice("0123456789") for _ in range(17)) + rng.choice("0123456789X") for _ in range(300)]
    expected_bad = sum(1 for i in ids if check_char(i[:17]) != i[17])
    with contextlib.closing(connect(lake)) as con:
        con.execute("CREATE OR REPLACE TABLE population.id_sample (id_number VARCHAR)")
        con.execute(f"INSERT INTO population.id_sample VALUES {_sql_rows([(i,) for i in ids])}")
    [pop005] = [r for r in load_rules_file(RULES_DIR / "population.dim_person.yaml").rules if r.id == "POP-005"]
    [result] = run_table_rules("population.id_sample", [pop005], settings=lake)
    assert (result.rows_checked, result.rows_failed) == (300, expected_bad)
    assert 200 < expected_bad < 300


# --- Errors, empty and missing tables ---------------------------------------------------------

# Rules on population.dim_person shared by the error tests: one that runs, a regex DuckDB cannot
# compile, a cast that fails inside DuckDB (VARCHAR vs integers).
NOT_NULL_BIRTH_DATE = {"id": "X-001", "name": "正常规则", "dimension": "completeness", "severity": "major",
                       "expectation": "expect_column_values_to_not_be_null", "kwargs": {"column": "birth_date"}}
BAD_REGEX = {"id": "X-002", "name": "错误正则", "dimension": "validity", "severity": "major",
             "expectation": "expect_column_values_to_match_regex", "kwargs": {"column": "id_number", "regex": "(abc"}}
TYPE_MISMATCH = {"id": "X-007", "name": "类型不符", "dimension": "validity", "severity": "major",
                 "expectation": "expect_column_values_to_be_in_set", "kwargs": {"column": "id_number", "value_set": [1, 2]}}


def test_one_broken_rule_is_error_alone(lake):
    rules = [
        NOT_NULL_BIRTH_DATE,
        BAD_REGEX,
        {"id": "X-003", "name": "不存在的列", "dimension": "completeness", "severity": "major",
         "expectation": "expect_column_values_to_not_be_null", "kwargs": {"column": "no_such_column"}},
        {"id": "X-004", "name": "缺少参数", "dimension": "validity", "severity": "major",
         "expectation": "expect_column_values_to_be_in_set", "kwargs": {"column": "sex_code"}},
        {"id": "X-005", "name": "错误 SQL", "dimension": "consistency", "severity": "major",
         "expectation": "unexpected_rows_expectation",
         "kwargs": {"unexpected_rows_query": "SELECT * FROM {batch} WHERE no_such_column > 1"}},
        {"id": "X-006", "name": "正常规则二", "dimension": "uniqueness", "severity": "major",
         "expectation": "expect_column_values_to_be_unique", "kwargs": {"column": "person_key"}},
        TYPE_MISMATCH,  # a failing cast inside DuckDB: must not abort the other rules' queries
        {"id": "X-008", "name": "正常规则三", "dimension": "validity", "severity": "major",
         "expectation": "expect_column_values_to_match_regex",
         "kwargs": {"column": "id_number", "regex": "^[0-9]{17}[0-9X]$"}},
    ]
    results = by_id(run_table_rules("population.dim_person", rules, settings=lake))
    assert (results["X-001"].status, results["X-001"].rows_failed) == (FAIL, 3)
    assert (results["X-006"].status, results["X-006"].rows_failed) == (FAIL, 2)
    assert (results["X-008"].status, results["X-008"].rows_failed) == (FAIL, 2)
    for rid in ("X-002", "X-003", "X-004", "X-005", "X-007"):
        r = results[rid]
        assert r.status == ERROR, r
        assert (r.rows_checked, r.rows_failed, r.pass_rate) == (None, None, None)
        assert r.message.startswith(("规则无法执行", "规则配置错误"))
    assert "no_such_column" in results["X-003"].message
    assert "[SQL:" not in results["X-005"].message
    # each erroring rule carries its own cause (GX would give all of a failed bundle the last one)
    assert "(abc" in results["X-002"].message and "Conversion Error" not in results["X-002"].message
    assert "Conversion Error" in results["X-007"].message
    assert "abc" not in results["X-007"].message               # the offending value is personal data


def test_validation_in_one_transaction_equals_autocommit(lake, monkeypatch):
    """The mart checks validate each table in one read transaction (transaction=True); a table
    whose rules err (which aborts the transaction) is validated again in autocommit mode: every
    result is the same as in autocommit mode alone, broken rules, missing tables and GX's
    connections left usable included."""
    from quality.reference import sync_reference

    with contextlib.closing(connect(lake)) as con:
        sync_reference(con, lake)  # the mart rules' reference tables, also when this test runs alone
    broken = [NOT_NULL_BIRTH_DATE, BAD_REGEX, TYPE_MISMATCH]
    cases = [("population.dim_person", broken), ("population.no_such_table", broken[:1])]
    cases += [(t, RULES_DIR / f"{t}.yaml") for t in ("population.dim_person", "emr.fct_encounter",
                                                      "resource.dim_institution", "resource.dim_practitioner",
                                                      "health_record.dim_health_record")]
    import quality.gx_duckdb

    modes = []   # the `transaction` of each validation GX ran
    real_batch = quality.gx_duckdb.lake_batch
    monkeypatch.setattr(quality.gx_duckdb, "lake_batch",
                        lambda *a, transaction=False, **k: modes.append(transaction) or real_batch(*a, transaction=transaction, **k))
    with contextlib.closing(connect(lake, read_only=True)) as reader:
        for i, (table, rules) in enumerate(cases):
            plain = run_table_rules(table, rules, settings=lake, lake_con=reader)
            modes.clear()
            held = run_table_rules(table, rules, settings=lake, lake_con=reader, transaction=True)
            assert held == plain, table
            # the clean tables stay in their transaction; broken rules and a missing table fall back
            assert modes == ([True, False] if i < 2 else [True]), (table, modes)
        assert reader.execute("SELECT 42").fetchone() == (42,)
    # without a shared connection: GX's connections are new lake connections, each in its transaction
    for table, rules in cases[:3]:
        assert run_table_rules(table, rules, settings=lake, transaction=True) == run_table_rules(table, rules, settings=lake)


def test_a_lone_failing_cast_reports_its_own_error(lake):
    """Without autocommit the first error aborts the DuckDB transaction and GX reports
    "Current transaction is aborted" for the rule instead of the real cause."""
    rules = [{"id": "C-001", "name": "类型不符", "dimension": "validity", "severity": "major",
              "expectation": "expect_column_values_to_be_in_set",
              "kwargs": {"column": "id_number", "value_set": [1, 2]}}]
    [r] = run_table_rules("population.dim_person", rules, settings=lake)
    assert r.status == ERROR
    assert "Conversion Error" in r.message and "aborted" not in r.message
    assert "abc" not in r.message


def test_empty_table_is_not_applicable(lake):
    results = run_table_rules("health_record.dim_health_record",
                              RULES_DIR / "health_record.dim_health_record.yaml", settings=lake)
    assert [(r.rule_id, r.status, r.rows_checked, r.pass_rate) for r in results] == [
        ("HR-001", NOT_APPLICABLE, 0, None), ("HR-002", NOT_APPLICABLE, 0, None), ("HR-003", NOT_APPLICABLE, 0, None)]


def test_missing_table_makes_every_rule_error(lake):
    rules = [{"id": "M-001", "name": "x", "dimension": "completeness", "severity": "minor",
              "expectation": "expect_column_values_to_not_be_null", "kwargs": {"column": "a"}}]
    [r] = run_table_rules("population.no_such_table", rules, settings=lake)
    assert r.status == ERROR and "population.no_such_table" in r.message


def test_rules_file_for_another_table_is_refused(lake):
    with pytest.raises(QualityError, match="emr.fct_encounter"):
        run_table_rules("population.dim_person", RULES_DIR / "emr.fct_encounter.yaml", settings=lake)


# --- Stored results and the report ------------------------------------------------------------

def test_run_all_stores_results_and_appends(lake, tmp_path):
    first = run_all(settings=lake)
    assert sorted(first.tables_run) == ["emr.fct_encounter", "health_record.dim_health_record",
                                        "population.dim_person", "population.fct_vital_event",
                                        "resource.dim_institution", "resource.dim_practitioner"]
    # the bronze tables and the other marts are not in this lake: skipped, not ERROR
    assert "bronze.person" in first.tables_skipped and "emr.fct_lab_result" in first.tables_skipped
    assert not set(first.tables_skipped) & set(first.tables_run)
    assert len(first.results) == 6 + 12 + 3 + 3 + 4 + 8
    # a second run appends under its own id (one rules file is enough to show it: GX runs cost seconds)
    one = tmp_path / "rules"
    one.mkdir()
    shutil.copy(RULES_DIR / "population.dim_person.yaml", one)
    second = run_all(settings=lake, rules_dir=one)
    assert second.run_id != first.run_id and second.tables_run == ["population.dim_person"]
    with contextlib.closing(connect(lake, read_only=True)) as con:
        stored = con.execute(
            "SELECT run_id, count(*), count(*) FILTER (status = 'NOT_APPLICABLE') FROM quality.rule_result "
            "WHERE run_id IN (?, ?) GROUP BY run_id ORDER BY 1", [first.run_id, second.run_id]).fetchall()
        assert sorted(stored) == sorted([(first.run_id, 36, 3), (second.run_id, len(second.results), 0)])
        row = con.execute(
            "SELECT table_name, rule_name, dimension, severity, status, rows_checked, rows_failed, pass_rate, "
            "threshold, message, typeof(run_at) FROM quality.rule_result WHERE run_id = ? AND rule_id = 'POP-006'",
            [first.run_id]).fetchone()
        assert row[:9] == ("population.dim_person", "出生日期非空", "completeness", "major", FAIL, 10, 3,
                           pytest.approx(0.7), 0.95)
        assert row[10] == "TIMESTAMP WITH TIME ZONE"
        columns = [c[0] for c in con.execute("DESCRIBE quality.rule_result").fetchall()]
    assert columns == ["run_id", "run_at", "table_name", "rule_id", "rule_name", "dimension", "severity",
                       "status", "rows_checked", "rows_failed", "pass_rate", "threshold", "message"]

    path = write_report(settings=lake)
    assert path == lake.reports_dir / "quality" / "index.html"
    page = path.read_text(encoding="utf-8")
    for text in ("数据质量检查报告", "总体情况", "各表汇总", "规则明细", "近期运行", "全员人口数据库",
                 "POP-005", "身份证件号码校验位正确", "不适用", second.run_id):
        assert text in page
    assert "http" not in page and "<script" not in page and "<link" not in page
    # no data values in the report (run ids are random hex: one may contain "abc", so they are left out)
    text_only = re.sub(r"[0-9a-f]{8,}", "", page)
    assert WRONG_CHECK not in page and "abc" not in text_only


def test_run_all_skips_tables_not_in_the_lake(lake, tmp_path):
    (tmp_path / "x.yaml").write_text(
        "table: population.not_built_yet\nrules:\n"
        "  - {id: NB-001, name: 未建表, dimension: completeness, severity: minor,"
        " expectation: expect_column_values_to_not_be_null, kwargs: {column: a}}\n", encoding="utf-8")
    run = run_all(settings=lake, rules_dir=tmp_path, store=False)
    assert (run.tables_run, run.tables_skipped, run.results) == ([], ["population.not_built_yet"], [])


# --- The catalogue ----------------------------------------------------------------------------

def test_catalogue_is_valid_and_covers_the_four_marts():
    files = load_catalogue()
    assert {"emr.fct_encounter", "health_record.dim_health_record", "population.dim_person",
            "resource.dim_institution"} <= {f.table for f in files}
    for f in files:
        for rule in f.rules:
            rule.build_expectation()            # kwargs fit the GX expectation


@pytest.mark.parametrize("change, message", [
    ({"dimension": "accuracy"}, "dimension"),
    ({"severity": "high"}, "severity"),
    ({"threshold": 1.5}, "threshold"),
    ({"expectation": "expect_column_value_to_not_be_null"}, "did you mean 'expect_column_values_to_not_be_null'"),
    ({"kwargs": {"column": "a", "mostly": 0.9}}, "threshold"),
    ({"id": "pop1"}, "POP-001"),
])
def test_catalogue_mistakes_are_caught_at_load(change, message):
    rule = {"id": "POP-001", "name": "x", "dimension": "completeness", "severity": "major",
            "expectation": "expect_column_values_to_not_be_null", "kwargs": {"column": "a"}, **change}
    with pytest.raises(QualityError, match=message):
        parse_rules([rule])


def test_duplicate_rule_ids_are_refused():
    rule = {"id": "POP-001", "name": "x", "dimension": "completeness", "severity": "major",
            "expectation": "expect_column_values_to_not_be_null", "kwargs": {"column": "a"}}
    with pytest.raises(QualityError, match="duplicate"):
        parse_rules([rule, rule])
    assert expectation_class("UnexpectedRowsExpectation").__name__ == "UnexpectedRowsExpectation"


def test_a_rules_file_is_parsed_again_when_it_changes(tmp_path):
    path = tmp_path / "population.dim_person.yaml"
    rule = ("  - {{id: POP-901, name: 人员主键非空, dimension: completeness, severity: {sev}, "
            "expectation: expect_column_values_to_not_be_null, kwargs: {{column: person_key}}}}\n")
    path.write_text("table: population.dim_person\nrules:\n" + rule.format(sev="critical"), encoding="utf-8")
    first = load_rules_file(path)
    assert load_rules_file(path) is first                      # same content: parsed once
    path.write_text("table: population.dim_person\nrules:\n" + rule.format(sev="minor"), encoding="utf-8")
    assert [r.severity for r in load_rules_file(path).rules] == ["minor"]

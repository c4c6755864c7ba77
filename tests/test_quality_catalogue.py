"""The rule catalogue covers what the quality office must check (issue 6): at least 60 rules across the
four databases, and every required kind of rule, each found by what the rule actually checks (its
expectation, column, reference table or SQL), not only by its name."""

from __future__ import annotations

import functools
import re

import pytest

from quality import load_catalogue

DATABASES = ("population", "emr", "health_record", "resource")


@functools.lru_cache(maxsize=1)
def _rules():
    from catalog.standard import datasets

    domain = {name: d.domain for name, d in datasets().items()}
    out = []
    for f in load_catalogue():
        schema, table = f.table.split(".")
        database = domain.get(table) if schema == "bronze" else schema
        for r in f.rules:
            sql = str(r.kwargs.get("unexpected_rows_query", ""))
            out.append((database, f.table, r, " ".join([r.expectation, str(dict(r.kwargs)), sql])))
    return out


def _find(pattern: str, *, dataset: str | None = None, expectation: str | None = None):
    rx = re.compile(pattern, re.S | re.I)
    return [r.id for _, table, r, text in _rules()
            if (dataset is None or table.endswith("." + dataset)) and (expectation is None or r.expectation == expectation)
            and (rx.search(text) or rx.search(r.name))]


def test_at_least_60_rules_across_the_four_databases():
    rules = _rules()
    assert len(rules) >= 60
    per_db = {db: sum(1 for d, *_ in rules if d == db) for db in DATABASES}
    assert all(n >= 5 for n in per_db.values()), per_db
    assert {r.dimension for *_, r, _ in rules} == {"completeness", "validity", "consistency", "uniqueness",
                                                  "timeliness", "plausibility"}
    assert {r.severity for *_, r, _ in rules} == {"critical", "major", "minor"}
    for *_, r, _ in rules:
        assert r.id and r.name and 0 <= r.threshold <= 1


# kind → (pattern over expectation + kwargs + SQL, optional data set); every kind must have a rule.
REQUIRED = {
    "GB 11643 format": (r"\[0-9X\]|0-9\]\{17\}|\[0-9\]\+X\?", "person"),
    "GB 11643 check digit": (r"10X98765432", "person"),
    "birth date derived from the ID number": (r"substr\(id_number, 7, 8\)", "person"),
    "sex derived from the ID number": (r"substr\(id_number, 17, 1\)", "person"),
    "GB/T 2260 division codes": (r"ref_division", None),
    "sex value set (GB/T 2261.1)": (r"sex_code", "person"),
    "marital status value set (GB/T 2261.2)": (r"ref_marital_status", "person"),
    "ethnicity value set (GB 3304)": (r"ref_ethnicity", "person"),
    "ICD-10 valid": (r"ref_icd10_category", "diagnosis"),
    "admission <= discharge": (r"discharge_at\b.*\)\s*<\s*(coalesce\()?try_strptime\(visit_at|discharge_at\s*<\s*visit_at", "encounter"),
    "event date not before birth": (r"visit_at.*::DATE\s*<.*substr\(id_number, 7, 8\)|birth_date", "encounter"),
    "event date not in the future": (r"_ingested_at|now\(\)", "encounter"),
    "lab unit allowed": (r"ref_unit", "lab_result"),
    "lab value plausible": (r"plausible_low|plausible_high", "lab_result"),
    "FK encounter -> person": (r"bronze\.person|dim_person", "encounter"),
    "FK practitioner -> institution": (r"dim_institution", "dim_practitioner"),
    "duplicate business keys": (r"expect_column_values_to_be_unique|PARTITION BY", None),
    "delivery lag within cadence": (r"max_lag_days", None),
    "counts non-negative": (r"approved_beds|open_beds", "department"),
}


@pytest.mark.parametrize("kind", sorted(REQUIRED))
def test_required_rule_kind_is_in_the_catalogue(kind):
    pattern, dataset = REQUIRED[kind]
    assert _find(pattern, dataset=dataset), f"no rule for {kind!r}"


def test_every_data_set_with_people_checks_id_numbers_and_future_dates():
    for dataset in ("person", "encounter", "health_record", "chronic_followup", "immunization"):
        assert _find(r"10X98765432", dataset=dataset), dataset
    for dataset in ("encounter", "diagnosis", "lab_result", "prescription", "chronic_followup", "immunization"):
        assert _find(r"_ingested_at", dataset=dataset), dataset


def test_every_bronze_rule_runs_in_the_one_pass_scoring():
    """The grouped scoring evaluates a data set's rules in one scan (``failing_flag_sql``); a rule that
    cannot be written as a row flag would run on its own (correct, but one more scan of the table)."""
    from quality.scoring import bronze_datasets, failing_flag_sql, rules_for_dataset

    alone = [r.id for d in bronze_datasets() for r in rules_for_dataset(d).rules if failing_flag_sql(r) is None]
    assert not alone, alone

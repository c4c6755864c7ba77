"""Classification and grading: defaults from the standard, rules, overrides with reasons, detectors."""

from __future__ import annotations

import json

import duckdb
import pytest

from catalog import classification as cl
from catalog.classification import classify, detect_misclassified, looks_like_name, unclassified_columns
from catalog.standard import CATEGORIES, datasets
from synthetic.gb11643 import make_id


def test_bronze_columns_take_their_data_elements_classification():
    for name, ds in datasets().items():
        for e in ds.elements:
            cc = classify("bronze", name, e.name)
            assert (cc.category, cc.level) == (e.category, e.level), (name, e.name)
            assert cc.source == "standard" or (name, e.name) == ("practitioner", "name"), (name, e.name)
    assert classify("bronze", "person", "id_number").kind == "id_number"
    assert classify("bronze", "person", "name").kind == "person_name"
    assert classify("bronze", "health_record", "address_text").kind == "address"


def test_mart_columns_map_by_name_keys_and_lineage_get_their_own_defaults():
    assert (classify("population", "dim_person", "id_number").level, classify("population", "dim_person", "phone").level) == (4, 4)
    assert classify("population", "dim_person", "birth_date").kind == "birth_date"
    key = classify("emr", "fct_encounter", "person_key")
    assert (key.category, key.level, key.kind) == ("个人属性", 2, "key")
    assert classify("resource", "dim_department", "department_key").level == 1
    lineage = classify("emr", "fct_encounter", "_source_file")
    assert (lineage.level, lineage.source) == (1, "lineage")
    # *_name of a *_code takes the code's classification
    assert classify("emr", "fct_encounter", "visit_type_name").level == classify("emr", "fct_encounter", "visit_type_code").level
    # the practitioner's name is 卫生资源 L2 (the practitioner data set), not a resident's 个人属性 L4
    prac = classify("resource", "dim_practitioner", "name")
    assert (prac.category, prac.level, prac.kind) == ("卫生资源", 2, "person_name")


def test_every_override_has_a_reason_and_a_valid_category(tmp_path):
    exact, patterns = cl._overrides()
    assert exact and patterns
    for key, entry in list(exact.items()) + patterns:
        assert entry["reason"].strip() and entry["category"] in CATEGORIES and 1 <= entry["level"] <= 5, key
    bad = tmp_path / "o.yaml"
    bad.write_text("columns:\n  emr.fct_encounter.total_fee: {category: 医疗支付, level: 2}\n", encoding="utf-8")
    with pytest.raises(cl.ClassificationError, match="reason"):
        cl._overrides(str(bad))


def test_an_unknown_column_is_unclassified_and_fails_the_check():
    assert classify("emr", "fct_encounter", "mystery_column") is None
    con = duckdb.connect()
    con.execute("ATTACH ':memory:' AS lake")
    con.execute("CREATE SCHEMA lake.emr")
    con.execute("CREATE TABLE lake.emr.fct_encounter (encounter_key VARCHAR, visit_at TIMESTAMP, mystery_column VARCHAR)")
    assert unclassified_columns(con) == ["emr.fct_encounter.mystery_column"]


def test_name_detector_knows_common_and_compound_surnames():
    assert looks_like_name("张伟") and looks_like_name("欧阳娜娜") and looks_like_name("王秀英")
    assert not looks_like_name("内科") and not looks_like_name("阿莫西林胶囊") and not looks_like_name("Zhang")
    assert not looks_like_name("阳性") and not looks_like_name("常规")  # value-set words with a surname's character


def test_detectors_ignore_a_value_set_of_two_words_that_look_like_names():
    con = duckdb.connect()
    con.execute("ATTACH ':memory:' AS lake")
    con.execute("CREATE SCHEMA lake.emr")
    con.execute("CREATE TABLE lake.emr.fct_encounter (visit_type_name VARCHAR)")
    con.executemany("INSERT INTO lake.emr.fct_encounter VALUES (?)", [("张伟" if i % 2 else "王芳",) for i in range(50)])
    assert detect_misclassified(con) == []  # two distinct "names" in 50 rows: a code table, not residents


def _toy_lake():
    con = duckdb.connect()
    con.execute("ATTACH ':memory:' AS lake")
    con.execute("CREATE SCHEMA lake.emr")
    # total_fee is level 3 by the standard; here it (wrongly) holds ID numbers, phones and names
    con.execute("CREATE TABLE lake.emr.fct_encounter (encounter_key VARCHAR, total_fee VARCHAR, payment_method_code VARCHAR, "
                "visit_type_name VARCHAR)")
    from datetime import date
    rows = []
    for i in range(300):
        rows.append((f"k{i}", make_id("511011", date(1980, 1, 1 + i % 28), 100 + i), f"139{i:08d}",
                     ["张伟", "李秀英", "王芳"][i % 3] if i % 2 else "门诊"))
    con.executemany("INSERT INTO lake.emr.fct_encounter VALUES (?, ?, ?, ?)", rows)
    return con


def test_detectors_flag_ids_phones_and_names_in_columns_classified_too_low():
    found = {(f.column, f.detector): f for f in detect_misclassified(_toy_lake())}
    assert set(found) == {("total_fee", "gb11643_id_number"), ("payment_method_code", "mobile_phone"),
                          ("visit_type_name", "chinese_name")}
    assert found[("total_fee", "gb11643_id_number")].match_ratio == 1.0
    assert found[("visit_type_name", "chinese_name")].match_ratio == 0.5  # ≥ 50 % of non-null values
    assert found[("total_fee", "gb11643_id_number")].level == 3


def test_detectors_read_a_small_table_whole_and_sample_a_larger_one():
    con = _toy_lake()  # 300 rows
    whole = {(f.column, f.detector): f for f in detect_misclassified(con, sample=300)}
    assert {f.sampled for f in whole.values() if f.column == "total_fee"} == {300}
    sampled = {(f.column, f.detector): f for f in detect_misclassified(con, sample=100)}
    # every value of these two columns matches: any sample finds them (the names' 50 % may fall below)
    assert {("total_fee", "gb11643_id_number"), ("payment_method_code", "mobile_phone")} <= set(sampled)
    assert sampled[("total_fee", "gb11643_id_number")].sampled == 100   # the reservoir's 100 rows


def test_detectors_ignore_columns_already_at_level_4():
    con = duckdb.connect()
    con.execute("ATTACH ':memory:' AS lake")
    con.execute("CREATE SCHEMA lake.population")
    con.execute("CREATE TABLE lake.population.dim_person (id_number VARCHAR, phone VARCHAR, name VARCHAR)")
    con.execute("INSERT INTO lake.population.dim_person VALUES ('511011198001011234', '13912345678', '张伟')")
    assert detect_misclassified(con) == []


def test_the_parallel_scan_finds_what_reading_each_table_finds(table_readers):
    """Inside scan.lake_scanned the samples are read by worker threads on cursors of their own (a
    view copied once per worker): the same findings, for a table and a view sampled whole or by
    the reservoir; counting each distinct value once gives the ratios of testing every value."""
    from catalog.scan import lake_scanned

    con = _toy_lake()
    con.execute("CREATE SCHEMA lake.health_record")
    con.execute("CREATE VIEW lake.health_record.fct_chronic_followup AS SELECT encounter_key AS followup_key, "
                "total_fee AS disease_code, payment_method_code AS practitioner_id FROM lake.emr.fct_encounter "
                "WHERE encounter_key <> 'k7'")
    for sample in (1000, 100):
        plain = detect_misclassified(con, sample=sample)
        assert set(table_readers) == {"MainThread"}
        table_readers.clear()
        with lake_scanned(con, sample=sample, workers=2) as scan:
            scanned = detect_misclassified(con, sample=sample)
            scan.finish()
            # the views' temporary copies live on the workers' cursors: dropped there
            assert [cur.execute("SELECT count(*) FROM duckdb_tables() WHERE temporary").fetchone()[0]
                    for cur in scan._cursors] == [0, 0]
        assert table_readers and all(name.startswith("lake-scan-") for name in table_readers)
        table_readers.clear()
        assert {f.table for f in plain} == {"emr.fct_encounter", "health_record.fct_chronic_followup"}
        assert scanned == plain
    for sample in (299, 300, 301):  # counted from the rows read only where they are the whole table
        with lake_scanned(con, sample=sample) as scan:
            assert scan.result("emr", "fct_encounter").counts == [(None, 300)]
            assert scan.result("health_record", "fct_chronic_followup").counts == [(None, 299)]
    plain_100 = detect_misclassified(con, sample=100)
    with lake_scanned(con, sample=50) as scan:  # another sample size: read here, not by the scan
        scan.finish()
        table_readers.clear()
        assert detect_misclassified(con, sample=100) == plain_100 != []
    assert table_readers and set(table_readers) == {"MainThread"}


def test_a_table_the_scan_cannot_read_fails_the_detectors_as_reading_it_would():
    from catalog.scan import lake_scanned

    con = _toy_lake()
    con.execute("CREATE TABLE lake.emr.gone (name VARCHAR)")
    con.execute("CREATE VIEW lake.emr.fct_diagnosis AS SELECT name AS diagnosis_name FROM lake.emr.gone")
    con.execute("DROP TABLE lake.emr.gone")
    with pytest.raises(duckdb.Error, match="gone"):
        detect_misclassified(con)
    with lake_scanned(con):
        with pytest.raises(duckdb.Error, match="gone"):
            detect_misclassified(con)


# ------------------------------------------------------------------ on a real (tiny) lake
@pytest.fixture(scope="module")
def city():
    from security.tiny_city import tiny_city

    return tiny_city()


def test_every_column_of_the_tiny_citys_lake_is_classified_and_no_detector_fires(city):
    from healthlake.lake import connect
    from security.tiny_city import env_of

    # the dbt column meta comes from the tiny city's own manifest (settings() → its dbt target)
    with env_of(city.settings.root):
        con = connect(city.settings, read_only=True)
        try:
            assert unclassified_columns(con) == []
            assert detect_misclassified(con) == []
            schemas = {s for s, *_ in cl.lake_columns(con)}
        finally:
            con.close()
    assert {"bronze", "population", "emr", "health_record", "resource", "ops"} <= schemas


def test_dbt_column_meta_classifies_new_mart_columns(tmp_path, monkeypatch):
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"nodes": {"model.p.fct_new": {
        "resource_type": "model", "name": "fct_new", "schema": "emr", "alias": "fct_new",
        "columns": {"loinc_panel": {"name": "loinc_panel", "meta": {"classification": {
            "category": "健康状况", "level": 2, "reason": "检验组合 LOINC 编码"}}},
                    "contact_phone": {"name": "contact_phone", "config": {"meta": {
                        "category": "个人属性", "level": 4, "kind": "phone"}}}}}}}), encoding="utf-8")
    monkeypatch.setattr(cl, "_manifest_path", lambda: manifest)
    loinc = classify("emr", "fct_new", "loinc_panel")
    assert (loinc.category, loinc.level, loinc.source, loinc.reason) == ("健康状况", 2, "dbt", "检验组合 LOINC 编码")
    assert classify("emr", "fct_new", "contact_phone").kind == "phone"
    assert classify("emr", "fct_new", "unlisted_column") is None
    # columns without meta fall through to the other sources
    assert classify("emr", "fct_new", "_batch_id").source == "lineage"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"nodes": {"model.p.x": {"resource_type": "model", "name": "x", "schema": "emr",
                                                        "columns": {"c": {"name": "c", "meta": {"category": "秘密", "level": 9}}}}}}),
                   encoding="utf-8")
    with pytest.raises(cl.ClassificationError, match="dbt x.c"):
        cl.dbt_column_meta(bad)


def test_derived_columns_take_their_base_columns_classification():
    std = classify("population", "person_identifier", "id_number_standardised")
    assert (std.level, std.kind) == (4, "id_number")
    assert classify("empi", "review_queue", "name_l").kind == "person_name"
    assert classify("emr", "fct_lab_result", "abnormal_flag_source").level == classify("bronze", "lab_result", "abnormal_flag").level
    assert classify("emr", "fct_diagnosis", "is_known_icd10_code").level == 1

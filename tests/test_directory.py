"""Resource directory on the tiny city: 政务信息资源目录 fields, live figures, lineage, CLI, portal."""

from __future__ import annotations

import json
import re

import pytest

from catalog.directory import directory_json_path, find_entry, load_directory, search


@pytest.fixture(scope="module")
def city():
    from security.tiny_city import tiny_city

    return tiny_city()


@pytest.fixture(scope="module")
def entries(city):
    return load_directory(city.settings)


def test_every_lake_table_has_an_entry_with_the_catalogue_fields(city, entries):
    from healthlake.lake import connect, lake_tables

    con = connect(city.settings, read_only=True)
    try:
        tables = {f"{s}.{t}" for s, t in lake_tables(con) if s != "catalog"}
        stored = con.execute("SELECT count(*), count(DISTINCT resource_code) FROM catalog.resource_directory").fetchone()
        items = con.execute("SELECT count(*) FROM catalog.data_item WHERE level IS NULL").fetchone()[0]
    finally:
        con.close()
    assert {e["table"] for e in entries} == tables
    assert stored == (len(entries), len(entries)) and items == 0  # codes unique; every data item graded
    for e in entries:
        assert re.fullmatch(r"511000-[123]-\d{2}-\d{3}", e["resource_code"]), e["table"]
        for field in ("name_zh", "class_zh", "summary", "format", "share_type", "open_attr", "update_cycle", "providers"):
            assert e[field], (e["table"], field)
        assert e["class_zh"] in ("基础", "主题", "部门") and e["share_type"] in ("无条件共享", "有条件共享", "不予共享")
        assert e["row_count"] is not None and e["items"]


def test_a_mart_entry_has_items_with_ws363_codes_classification_lineage_and_live_figures(city, entries):
    enc = find_entry(entries, "emr.fct_encounter")
    assert enc["class_zh"] == "主题" and enc["share_type"] == "有条件共享" and enc["max_level"] == 3
    items = {i["name"]: i for i in enc["items"]}
    assert items["total_fee"]["de"] == "DE07.00.010.00" and items["total_fee"]["level"] == 3
    assert items["payment_method_code"]["value_set"] == "WS 445 医疗付费方式"
    assert items["person_key"]["kind"] == "key"
    assert items["total_fee"]["lineage"] == ["intermediate.int_encounters_linked.total_fee"]
    assert "intermediate.int_encounters_linked" in enc["related"]["upstream"]
    assert enc["row_count"] > 0 and enc["last_snapshot_at"] and enc["published_at"]
    assert enc["institutions"] == len(enc["providers"]) > 1
    assert all(p["name"] for p in enc["providers"])  # codes resolved to institution names
    assert sum(p["rows"] for p in enc["providers"]) == enc["row_count"]
    assert enc["quality_pass_rate"] is None or 0 <= enc["quality_pass_rate"] <= 1
    person = find_entry(entries, "bronze.person")
    assert person["share_type"] == "不予共享" and person["class_zh"] == "部门"
    assert {i["name"]: i["de"] for i in person["items"]}["id_number"] == "DE02.01.030.00"
    assert "staging.stg_bronze__persons" in person["related"]["downstream"]


def test_search_finds_resources_by_chinese_words_data_items_and_element_codes(entries):
    assert "health_record.fct_chronic_followup" in [e["table"] for e, _ in search(entries, "高血压")]
    by_code = {e["table"] for e, _ in search(entries, "DE02.01.030.00")}
    assert {"population.dim_person", "bronze.person"} <= by_code
    assert search(entries, "没有这个词语") == []
    with pytest.raises(KeyError, match="did you mean 'emr.fct_encounter'"):
        find_entry(entries, "emr.fct_encountr")


def test_cli_search_and_show(city, capsys):
    from healthlake.cli import main
    from security.tiny_city import env_of

    with env_of(city.settings.root):
        assert main(["catalog", "search", "高血压"]) == 0
        assert "health_record.fct_chronic_followup" in capsys.readouterr().out
        assert main(["catalog", "show", "emr.fct_encounter"]) == 0
        out = capsys.readouterr().out
        assert "资源代码" in out and "共享类型" in out and "DE07.00.010.00" in out
        assert main(["catalog", "show", "emr.fct_encounter", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["table"] == "emr.fct_encounter"
        assert main(["catalog", "show", "no.such_table"]) == 2


def test_portal_is_one_self_contained_page(city, entries):
    html = (directory_json_path(city.settings).with_name("index.html")).read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # nothing fetched from elsewhere
    data = re.search(r'<script type="application/json" id="directory">(.*?)</script>', html, re.S).group(1)
    assert len(json.loads(data)["entries"]) == len(entries)


def test_the_scan_gives_the_same_entries_and_findings_as_reading_each_table(city, table_readers):
    """Inside lake_scanned (the pipeline's catalog step) worker threads read every table's sample and
    counts, each view computed once into a temporary copy: the same entries and findings as reading
    the tables and views one by one, and no copy left behind."""
    from catalog.classification import columns_cached, detect_misclassified, lake_views
    from catalog.directory import build_entries
    from catalog.scan import lake_scanned
    from healthlake.lake import connect, release

    s = city.settings
    con = connect(s, read_only=True)
    try:
        assert lake_views(con)  # the tiny city's lake has staging and intermediate views
        with columns_cached(con):
            plain = (detect_misclassified(con), build_entries(con, s))
        assert set(table_readers) == {"MainThread"}
        table_readers.clear()
        with columns_cached(con), lake_scanned(con) as scan:
            scanned = (detect_misclassified(con), build_entries(con, s))
            results = {e["table"]: scan.result(*e["table"].split(".", 1)) for e in scanned[1]}
            scan.finish()
            # the views' temporary copies live on the workers' cursors: dropped there
            assert {cur.execute("SELECT count(*) FROM duckdb_tables() WHERE temporary").fetchone()[0]
                    for cur in scan._cursors} == {0}
    finally:
        release(con)
    # nothing was read on this thread: every sample and count came from the scan's workers
    assert table_readers and all(name.startswith("lake-scan-") for name in table_readers)
    assert scanned[0] == plain[0]
    assert json.dumps(plain[1], sort_keys=True, default=str) == json.dumps(scanned[1], sort_keys=True, default=str)
    # every table was read by the scan's workers, and the directory's counts are theirs
    for e in scanned[1]:
        counts = results[e["table"]].counts
        assert sum(n for _, n in counts) == e["row_count"], e["table"]


def test_counts_taken_from_a_whole_table_read_equal_counting_it():
    """The scan counts a table read whole (at most the sample's size) from its rows instead of a
    second query: the same groups, in the same order, NULL last."""
    import duckdb

    from catalog.scan import count_rows, counted

    con = duckdb.connect()
    con.execute("CREATE TABLE t (institution_code VARCHAR, n INTEGER, name VARCHAR)")
    con.executemany("INSERT INTO t VALUES (?, ?, ?)", [(c, i, "x") for i, c in enumerate(
        ["H2", None, "H10", "h1", "", "医院A", "H2", None, "Z", "H2", "é", "H1"])])
    rows = con.execute("SELECT institution_code, name FROM t").fetchall()
    assert counted(rows, ("institution_code", "name"), "institution_code") == count_rows(con, "t", "institution_code")
    assert counted(rows, ("institution_code", "name"), None) == count_rows(con, "t", None) == [(None, 12)]
    assert counted(rows, ("name",), "institution_code") is None        # the code column not read: counted by SQL
    con.execute("DELETE FROM t")
    assert counted([], ("institution_code",), "institution_code") == count_rows(con, "t", "institution_code") == []

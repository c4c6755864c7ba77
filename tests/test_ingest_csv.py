"""CSV ingest: lineage, accounting (read = loaded + rejected), rejects, idempotence, failures."""

from __future__ import annotations

import pytest
import yaml

from healthlake.lake import connect
from ingest_adapters import (RegistryError, UnknownReaderError, get_reader, ingest_landing, load_registry,
                             parse_registry)

DEPT_MAPPING = {"department_code": "KSDM", "department_name": "KSMC", "department_kind": "KSLB"}


def write_registry(s, institutions):
    s.registry.write_text(yaml.safe_dump({"institutions": institutions}, allow_unicode=True), encoding="utf-8")


def inst(code, encoding="utf-8", mapping=DEPT_MAPPING):
    return {"code": code, "name": f"医院{code}", "kind": "hospital", "level": "二级甲等", "division_code": "511002",
            "feeds": [{"id": "dict_dept", "dataset": "department", "format": "csv", "encoding": encoding,
                       "mapping": mapping}]}


def put(s, code, name, data: bytes, feed="dict_dept"):
    p = s.landing / code / feed / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p


def query(s, sql, params=()):
    con = connect(s, read_only=True)
    try:
        return con.execute(sql, list(params)).fetchall()
    finally:
        con.close()


def test_clean_utf8_file_loads_with_lineage(lake_env):
    s = lake_env
    write_registry(s, [inst("H1")])
    put(s, "H1", "d.csv", "KSLB,KSDM,KSMC,EXTRA\n门诊,0101,内科门诊,x\n住院,0201,\"外科, 一病区\",y\n".encode())
    [r] = ingest_landing()
    assert (r.status, r.rows_read, r.rows_loaded, r.rows_rejected) == ("loaded", 2, 2, 0)
    rows = query(s, "SELECT department_code, department_name, department_kind, _institution_code, _feed, "
                    "_source_file, _source_row, _batch_id FROM bronze.department ORDER BY 1")
    assert rows == [("0101", "内科门诊", "门诊", "H1", "dict_dept", "H1/dict_dept/d.csv", 1, r.batch_id),
                    ("0201", "外科, 一病区", "住院", "H1", "dict_dept", "H1/dict_dept/d.csv", 2, r.batch_id)]
    hashes = query(s, "SELECT _row_hash FROM bronze.department ORDER BY department_code")
    assert len({h for (h,) in hashes}) == 2 and all(h for (h,) in hashes)
    # leading zeros survive: every column is text
    assert query(s, "SELECT typeof(department_code) FROM bronze.department LIMIT 1") == [("VARCHAR",)]


def test_malformed_rows_are_rejected_and_the_rest_loads(lake_env):
    s = lake_env
    write_registry(s, [inst("H1")])
    data = (b"KSDM,KSMC,KSLB\n"
            b"01,a,x\n"
            b"02,\"two\nlines\",x\n"          # quoted newline: one record
            b"03,b,x,extra\n"                 # ragged
            b"04,\"bad\"q,x\n"                # bad quoting
            b"05,\xff\xfe,x\n"                # not UTF-8
            b"06,c\n"                          # too few columns
            b"07,d,x\n")
    put(s, "H1", "d.csv", data)
    [r] = ingest_landing()
    assert (r.status, r.rows_read, r.rows_loaded, r.rows_rejected) == ("loaded", 7, 3, 4)
    assert query(s, "SELECT department_code, _source_row FROM bronze.department ORDER BY 2") == [
        ("01", 1), ("02", 2), ("07", 7)]
    rejects = query(s, "SELECT source_row, error_type, raw_line FROM bronze._rejects ORDER BY 1")
    assert [(x[0], x[1]) for x in rejects] == [(3, "TOO MANY COLUMNS"), (4, "UNQUOTED VALUE"),
                                                (5, "INVALID ENCODING"), (6, "MISSING COLUMNS")]
    assert rejects[0][2] == "03,b,x,extra"
    [(read, loaded, rejected)] = query(s, "SELECT rows_read, rows_loaded, rows_rejected FROM ops.ingest_batch")
    assert read == loaded + rejected == 7


def test_record_numbers_hold_across_the_parsers_batches(lake_env, monkeypatch):
    # The parser hands rows over in Arrow batches, numbered as they arrive; with rejects scattered over
    # several batches every loaded row must still carry its own record number (here also its code).
    import ingest_adapters.delimited as delimited

    monkeypatch.setattr(delimited, "BATCH_ROWS", 700)
    s = lake_env
    write_registry(s, [inst("H1")])
    bad = {5, 699, 700, 701, 1400, 2048, 4999}
    lines = [f"{i},x,{'y,extra' if i in bad else 'y'}" for i in range(1, 5001)]
    put(s, "H1", "d.csv", ("KSDM,KSMC,KSLB\n" + "\n".join(lines) + "\n").encode())
    [r] = ingest_landing()
    assert (r.rows_read, r.rows_loaded, r.rows_rejected) == (5000, 5000 - len(bad), len(bad))
    assert query(s, "SELECT count(*) FROM bronze.department WHERE _source_row <> department_code::INT") == [(0,)]
    assert query(s, "SELECT source_row FROM bronze._rejects ORDER BY 1") == [(b,) for b in sorted(bad)]


def test_a_10_mb_field_loads_whole(lake_env):
    # DuckDB's default record limit (2 MB) keeps every normal read fast; a file with a longer record
    # (here a 10 MB report text) is read again with a 64 MB limit: nothing rejected, nothing cut.
    s = lake_env
    write_registry(s, [inst("H1")])
    big = "报告" * 5_000_000
    put(s, "H1", "d.csv", ("KSDM,KSMC,KSLB\n01,a,x\n02," + big + ",x\n03,c,x,ragged\n04,d,x\n").encode())
    [r] = ingest_landing()
    assert (r.status, r.rows_read, r.rows_loaded, r.rows_rejected) == ("loaded", 4, 3, 1)
    assert r.notes["max_record_bytes"] == 64 * 1024 * 1024
    rows = query(s, "SELECT department_code, _source_row, length(department_name) FROM bronze.department ORDER BY 2")
    assert rows == [("01", 1, 1), ("02", 2, 10_000_000), ("04", 4, 1)]
    assert query(s, "SELECT source_row, error_type FROM bronze._rejects") == [(3, "TOO MANY COLUMNS")]


def test_gb18030_is_transcoded_and_undecodable_rows_rejected(lake_env):
    s = lake_env
    write_registry(s, [inst("H2", encoding="gb18030")])
    data = ("KSDM,KSMC,KSLB\n01,心血管内科,门诊\n".encode("gb18030") + b"02,\x81\x20bad,x\n"
            + "03,妇产科,住院\n".encode("gb18030"))
    put(s, "H2", "d.csv", data)
    [r] = ingest_landing()
    assert (r.rows_read, r.rows_loaded, r.rows_rejected) == (3, 2, 1)
    assert query(s, "SELECT department_name FROM bronze.department ORDER BY _source_row") == [("心血管内科",), ("妇产科",)]
    [(row, etype, reason)] = query(s, "SELECT source_row, error_type, reason FROM bronze._rejects")
    assert (row, etype) == (2, "INVALID ENCODING") and "GB18030" in reason


def test_same_content_is_not_ingested_twice(lake_env):
    s = lake_env
    write_registry(s, [inst("H1")])
    put(s, "H1", "day1.csv", b"KSDM,KSMC,KSLB\n01,a,x\n")
    assert [r.status for r in ingest_landing()] == ["loaded"]
    put(s, "H1", "day1_resent.csv", b"KSDM,KSMC,KSLB\n01,a,x\n")  # same bytes, new name
    assert sorted(r.status for r in ingest_landing()) == ["skipped", "skipped"]
    assert query(s, "SELECT count(*) FROM bronze.department") == [(1,)]
    assert query(s, "SELECT count(*) FROM ops.ingest_batch") == [(1,)]


def test_unreadable_file_fails_its_batch_and_others_load(lake_env):
    s = lake_env
    write_registry(s, [inst("H1"), inst("H2"), inst("H3")])
    put(s, "H1", "empty.csv", b"")
    put(s, "H2", "drift.csv", b"DEPT_CODE,KSMC,KSLB\n01,a,x\n")  # KSDM renamed
    put(s, "H3", "ok.csv", b"KSDM,KSMC,KSLB\n01,a,x\n")
    put(s, "H9", "stranger.csv", b"KSDM,KSMC,KSLB\n01,a,x\n")    # not in the registry
    results = {r.source_file.split("/")[0]: r for r in ingest_landing()}
    assert results["H3"].status == "loaded"
    assert results["H1"].status == "failed" and "empty" in results["H1"].error
    assert results["H2"].status == "failed" and "KSDM" in results["H2"].error and "header drift" in results["H2"].error
    assert results["H9"].status == "failed" and "'H9' is not in the registry" in results["H9"].error
    statuses = dict(query(s, "SELECT institution_code, status FROM ops.ingest_batch"))
    assert statuses == {"H1": "failed", "H2": "failed", "H3": "loaded", "H9": "failed"}
    # a rerun retries failed files without piling up failed rows
    ingest_landing()
    assert query(s, "SELECT count(*) FROM ops.ingest_batch") == [(4,)]


def test_small_files_share_one_commit_and_a_group_with_a_failing_file_is_loaded_file_by_file(lake_env):
    s = lake_env
    write_registry(s, [inst("H1"), inst("H2")])
    ingest_landing()  # the lake's tables
    snapshots = "SELECT count(*) FROM lake.snapshots()"
    [(before,)] = query(s, snapshots)
    for i in range(3):
        put(s, "H1", f"d{i}.csv", f"KSDM,KSMC,KSLB\n0{i},a,x\n".encode())
    put(s, "H1", "d_resent.csv", b"KSDM,KSMC,KSLB\n00,a,x\n")   # d0's content again, in the same group
    assert [r.status for r in ingest_landing()] == ["loaded"] * 3 + ["skipped"]
    assert query(s, snapshots) == [(before + 1,)]          # one DuckLake commit for the group
    # a second delivery whose group holds an empty file and a record over the parser's default
    # limit (read again with a wider one): the group is rolled back and its files loaded one by one
    put(s, "H2", "a.csv", b"KSDM,KSMC,KSLB\n11,a,x\n")
    put(s, "H2", "b.csv", b"")
    put(s, "H2", "c.csv", ("KSDM,KSMC,KSLB\n12," + "长" * 1_000_000 + ",x\n").encode())
    results = {r.source_file: r for r in ingest_landing()}
    assert {k: v.status for k, v in results.items()} == {
        "H1/dict_dept/d0.csv": "skipped", "H1/dict_dept/d1.csv": "skipped", "H1/dict_dept/d2.csv": "skipped",
        "H1/dict_dept/d_resent.csv": "skipped",
        "H2/dict_dept/a.csv": "loaded", "H2/dict_dept/b.csv": "failed", "H2/dict_dept/c.csv": "loaded"}
    assert results["H2/dict_dept/c.csv"].notes["max_record_bytes"] == 64 * 1024 * 1024
    assert query(s, "SELECT department_code, _source_file FROM bronze.department ORDER BY 1") == [
        ("00", "H1/dict_dept/d0.csv"), ("01", "H1/dict_dept/d1.csv"), ("02", "H1/dict_dept/d2.csv"),
        ("11", "H2/dict_dept/a.csv"), ("12", "H2/dict_dept/c.csv")]
    assert query(s, "SELECT source_file, status FROM ops.ingest_batch WHERE institution_code = 'H2' ORDER BY 1") == [
        ("H2/dict_dept/a.csv", "loaded"), ("H2/dict_dept/b.csv", "failed"), ("H2/dict_dept/c.csv", "loaded")]


def test_registry_errors_suggest_the_closest_name(lake_env):
    bad = inst("H1")
    bad["feeds"][0]["format"] = "cvs"
    with pytest.raises(RegistryError, match="did you mean 'csv'"):
        parse_registry({"institutions": [bad]})
    bad = inst("H1", mapping={"department_code": "A", "departmnt_name": "B"})
    with pytest.raises(RegistryError, match="did you mean 'department_name'"):
        parse_registry({"institutions": [bad]})
    bad = inst("H1", mapping={"department_name": "B"})
    with pytest.raises(RegistryError, match="business key"):
        parse_registry({"institutions": [bad]})
    with pytest.raises(UnknownReaderError, match="did you mean 'csv'"):
        get_reader("csvv")
    with pytest.raises(RegistryError, match="no feed registry"):
        load_registry(lake_env.registry)


def test_registry_refuses_unknown_reader_options(lake_env):
    bad = inst("H1")
    bad["feeds"][0]["sheet"] = "Sheet1"  # an Excel option on a CSV feed
    with pytest.raises(RegistryError, match="unknown option 'sheet' for format csv"):
        parse_registry({"institutions": [bad]})
    bad["feeds"][0].pop("sheet")
    bad["feeds"][0]["quality_treshold"] = 0.9
    with pytest.raises(RegistryError, match="did you mean 'quality_threshold'"):
        parse_registry({"institutions": [bad]})


def test_a_reader_crash_fails_only_its_file(lake_env, monkeypatch):
    import ingest_adapters.readers as readers

    s = lake_env
    write_registry(s, [inst("H1"), inst("H2")])
    put(s, "H1", "a.csv", b"KSDM,KSMC,KSLB\n01,a,x\n")
    put(s, "H2", "b.csv", b"KSDM,KSMC,KSLB\n02,b,y\n")
    real = readers.get_reader("csv")

    def flaky(con, path, feed, work_dir):
        if "H1" in str(path):
            raise ValueError("reader exploded")
        return real(con, path, feed, work_dir)

    monkeypatch.setattr("ingest_adapters.ingest.get_reader", lambda name: flaky)
    results = {r.institution_code: r for r in ingest_landing()}
    assert results["H1"].status == "failed" and "reader exploded" in results["H1"].error
    assert results["H2"].status == "loaded"


def test_a_lake_from_an_older_standard_gains_the_new_data_elements(lake_env):
    """A bronze table created before a data element joined the standard gets the column on the next
    ingest (NULL for the rows already loaded), so dbt and the new feeds find it."""
    from ingest_adapters.ingest import ensure_bronze_tables

    s = lake_env
    write_registry(s, [inst("H1")])
    put(s, "H1", "a.csv", b"KSDM,KSMC,KSLB\n01,a,x\n")
    assert [r.status for r in ingest_landing()] == ["loaded"]
    con = connect(s)
    try:  # the lake as an older release left it
        con.execute('ALTER TABLE bronze.department DROP COLUMN "department_kind"')
        con.execute('ALTER TABLE bronze.person DROP COLUMN "mother_id_number"')
        ensure_bronze_tables(con)
        cols = {t: [r[0] for r in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_catalog = current_database() "
            "AND table_schema = 'bronze' AND table_name = ?", [t]).fetchall()] for t in ("department", "person")}
    finally:
        con.close()
    assert "department_kind" in cols["department"] and "mother_id_number" in cols["person"]
    put(s, "H1", "b.csv", b"KSDM,KSMC,KSLB\n02,b,y\n")
    assert [r.status for r in ingest_landing() if r.status != "skipped"] == ["loaded"]
    assert query(s, "SELECT department_code, department_kind FROM bronze.department ORDER BY 1") == [
        ("01", None), ("02", "y")]


# --- the quote-free fast path (Arrow's CSV reader) and its fallback to DuckDB's parser ---------------

BRONZE_DEPT = ("SELECT department_code, department_name, department_kind, _institution_code, _feed, _source_file, "
               "_source_row, _row_hash FROM bronze.department ORDER BY _source_file, _source_row")


@pytest.fixture
def arrow_for_every_size(monkeypatch):
    import ingest_adapters.delimited as delimited

    monkeypatch.setattr(delimited, "ARROW_MIN_BYTES", 0)


def test_a_quote_free_file_reads_the_same_through_either_parser(lake_env, monkeypatch):
    # empty fields are NULL, empty lines skipped, CRLF, a BOM, Chinese text: the two parsers agree value
    # for value, and so do the lineage columns and row hashes
    import ingest_adapters.delimited as delimited

    s = lake_env
    write_registry(s, [inst("H1")])
    body = "\ufeffKSDM,KSMC,KSLB\r\n01,内科,门诊\r\n\r\n02,,住院\r\n03,外科 一病区,\r\n" + "".join(
        f"{i:05d},科室{i},门诊\r\n" for i in range(4, 3000))
    put(s, "H1", "d.csv", body.encode())
    [duck] = ingest_landing()
    assert duck.notes["parser"] == "duckdb" and duck.rows_loaded == 2999
    by_duckdb = query(s, BRONZE_DEPT)
    query_delete = connect(s)
    query_delete.execute("DELETE FROM bronze.department; DELETE FROM ops.ingest_batch")
    query_delete.close()
    monkeypatch.setattr(delimited, "ARROW_MIN_BYTES", 0)
    [arrow] = ingest_landing()
    assert arrow.notes["parser"] == "arrow"
    assert (arrow.status, arrow.rows_read, arrow.rows_loaded, arrow.rows_rejected) == ("loaded", 2999, 2999, 0)
    assert query(s, BRONZE_DEPT) == by_duckdb
    assert by_duckdb[:3] == [("01", "内科", "门诊", "H1", "dict_dept", "H1/dict_dept/d.csv", 1, by_duckdb[0][7]),
                             ("02", None, "住院", "H1", "dict_dept", "H1/dict_dept/d.csv", 2, by_duckdb[1][7]),
                             ("03", "外科 一病区", None, "H1", "dict_dept", "H1/dict_dept/d.csv", 3, by_duckdb[2][7])]


@pytest.mark.parametrize("bad_line, error_type", [
    (b"03,c,x,ragged", "TOO MANY COLUMNS"),
    (b"03,c", "MISSING COLUMNS"),
    (b"03,\xff\xfe,x", "INVALID ENCODING"),
])
def test_where_arrow_gives_up_duckdb_reads_the_file_and_rejects_the_record(lake_env, arrow_for_every_size,
                                                                         bad_line, error_type):
    s = lake_env
    write_registry(s, [inst("H1")])
    put(s, "H1", "d.csv", b"KSDM,KSMC,KSLB\n01,a,x\n02,b,x\n" + bad_line + b"\n04,d,x\n")
    [r] = ingest_landing()
    assert (r.status, r.rows_read, r.rows_loaded, r.rows_rejected) == ("loaded", 4, 3, 1)
    assert r.notes["parser"] == "duckdb"
    assert query(s, "SELECT department_code, _source_row FROM bronze.department ORDER BY 2") == [
        ("01", 1), ("02", 2), ("04", 4)]
    assert query(s, "SELECT source_row, error_type FROM bronze._rejects") == [(3, error_type)]


def test_a_file_with_quotes_is_read_by_duckdb(lake_env, arrow_for_every_size):
    # "abc"x is bad quoting for DuckDB (rejected); a parser with quoting off would load it as a value
    s = lake_env
    write_registry(s, [inst("H1")])
    put(s, "H1", "d.csv", b'KSDM,KSMC,KSLB\n01,"a, b",x\n02,"abc"x,x\n')
    [r] = ingest_landing()
    assert r.notes["parser"] == "duckdb" and (r.rows_loaded, r.rows_rejected) == (1, 1)
    assert query(s, "SELECT department_name FROM bronze.department") == [("a, b",)]


def test_a_gb18030_file_answers_for_its_utf8_copy(lake_env, arrow_for_every_size, monkeypatch):
    # bytes below 0x30 are never inside a GB18030 character: the delivered file's quote scan (noted
    # while the ingest hashed it) decides, not a second pass over its UTF-8 copy
    import ingest_adapters.delimited as delimited

    asked = []
    holds_byte = delimited.holds_byte
    monkeypatch.setattr(delimited, "holds_byte", lambda p, b: asked.append(p.name) or holds_byte(p, b))
    s = lake_env
    write_registry(s, [inst("H1", encoding="gb18030")])
    put(s, "H1", "a.csv", "KSDM,KSMC,KSLB\n01,内科,门诊\n".encode("gb18030"))
    put(s, "H1", "b.csv", 'KSDM,KSMC,KSLB\n02,"外科, 一病区",住院\n'.encode("gb18030"))
    results = {r.source_file: r for r in ingest_landing()}
    assert {k: r.notes["parser"] for k, r in results.items()} == {"H1/dict_dept/a.csv": "arrow",
                                                                 "H1/dict_dept/b.csv": "duckdb"}
    assert sorted(asked) == ["a.csv", "b.csv"]
    assert query(s, "SELECT department_name FROM bronze.department ORDER BY 1") == [("内科",), ("外科, 一病区",)]


def test_a_group_whose_file_arrow_gives_up_on_is_loaded_file_by_file(lake_env, arrow_for_every_size):
    s = lake_env
    write_registry(s, [inst("H1")])
    put(s, "H1", "a.csv", b"KSDM,KSMC,KSLB\n01,a,x\n")
    put(s, "H1", "b.csv", b"KSDM,KSMC,KSLB\n02,b,x,ragged\n03,c,x\n")
    put(s, "H1", "c.csv", b"KSDM,KSMC,KSLB\n04,d,x\n")
    results = {r.source_file: r for r in ingest_landing()}
    assert {k: (r.status, r.rows_loaded, r.rows_rejected, r.notes["parser"]) for k, r in results.items()} == {
        "H1/dict_dept/a.csv": ("loaded", 1, 0, "arrow"), "H1/dict_dept/b.csv": ("loaded", 1, 1, "duckdb"),
        "H1/dict_dept/c.csv": ("loaded", 1, 0, "arrow")}
    assert query(s, "SELECT department_code FROM bronze.department ORDER BY 1") == [("01",), ("03",), ("04",)]
    assert query(s, "SELECT count(*) FROM ops.ingest_batch") == [(3,)]


@pytest.mark.parametrize("parser", ["arrow", "duckdb"])
def test_a_file_inserted_in_parts_is_numbered_and_accounted_as_one(lake_env, monkeypatch, parser):
    # a large file goes into the lake in parts (one INSERT each, one transaction): here every batch is
    # a part; the record numbers run on across them, around a rejected record (DuckDB's parser)
    import ingest_adapters.delimited as delimited

    monkeypatch.setattr(delimited, "PART_BYTES", 1)
    monkeypatch.setattr(delimited, "ARROW_MIN_BYTES", 0)
    monkeypatch.setattr(delimited, "ARROW_BLOCK_BYTES", 4096)
    monkeypatch.setattr(delimited, "BATCH_ROWS", 100)
    parts = []
    next_part = delimited._Parts.next_part
    monkeypatch.setattr(delimited._Parts, "next_part", lambda self: parts.append(next_part(self)) or parts[-1])
    s = lake_env
    write_registry(s, [inst("H1")])
    lines = [f"{i:05d},科室{i},门诊" for i in range(1, 3001)]
    if parser == "duckdb":
        lines[1499] = '"01500",科室1500,门诊,多余'  # a quote (DuckDB's parser) and a ragged record
    put(s, "H1", "d.csv", ("KSDM,KSMC,KSLB\n" + "\n".join(lines) + "\n").encode())
    [r] = ingest_landing()
    rejected = 1 if parser == "duckdb" else 0
    assert (r.status, r.rows_read, r.rows_loaded, r.rows_rejected) == ("loaded", 3000, 3000 - rejected, rejected)
    assert r.notes["parser"] == parser
    rows = query(s, "SELECT department_code, _source_row FROM bronze.department ORDER BY _source_row")
    assert rows == [(f"{i:05d}", i) for i in range(1, 3001) if not (rejected and i == 1500)]
    assert len(parts) > 5 and all(parts[:-1]) and not parts[-1]


@pytest.mark.parametrize("chosen, expected", [(None, "jemalloc"), ("system", "system")])
def test_readers_use_jemalloc_unless_the_operator_chose_a_pool(chosen, expected):
    """Arrow's default pool (mimalloc) hands large buffers fresh huge pages the kernel must zero: the
    readers switch the process to jemalloc, unless ARROW_DEFAULT_MEMORY_POOL says otherwise."""
    import os
    import subprocess
    import sys

    import pyarrow as pa

    if "jemalloc" not in pa.supported_memory_backends():
        pytest.skip("this pyarrow build has no jemalloc")
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    if chosen:
        env["ARROW_DEFAULT_MEMORY_POOL"] = chosen
    code = ("import pyarrow as pa; before = pa.default_memory_pool().backend_name; "
            "from ingest_adapters import get_reader; get_reader('csv'); "
            "print(before, pa.default_memory_pool().backend_name)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    before, after = out.split()
    assert after == expected
    assert before == (chosen or "mimalloc")

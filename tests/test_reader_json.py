"""JSON / NDJSON reader: flattening, text rendering, records_path, rejects, encodings, streaming."""

from __future__ import annotations

import json

import duckdb
import pytest
import yaml

from healthlake.lake import connect
from ingest_adapters import UnreadableFileError, ingest_landing, jsonl
from ingest_adapters.jsonl import open_json, open_ndjson, render_number
from ingest_adapters.registry import Feed

# A township centre's 慢病随访 export from the 基本公卫 system.
FOLLOWUP_MAPPING = {"followup_id": "id", "record_id": "patient.record_no", "id_number": "patient.id_card",
                    "disease_code": "disease", "followup_date": "visit.date", "systolic_bp": "visit.sbp",
                    "diastolic_bp": "visit.dbp", "fasting_glucose": "visit.fbg", "practitioner_id": "doctor"}


def followup(i, **extra):
    rec = {"id": f"SF{i:06d}", "patient": {"record_no": f"51101100{i:02d}", "id_card": f"5110111958030712{i:02d}"},
           "disease": "I10", "visit": {"date": "2026-10-0" + str(1 + i % 9), "sbp": 130 + i, "dbp": 80, "fbg": 6.1},
           "doctor": "D001"}
    rec.update(extra)
    return rec


def feed(fmt="json", encoding="utf-8", mapping=None, **options) -> Feed:
    return Feed(id="f", dataset="chronic_followup", format=fmt, mapping=mapping or FOLLOWUP_MAPPING,
                encoding=encoding, options=options)


def scan(data: bytes, f: Feed, tmp_path, name="x.json"):
    p = tmp_path / name
    p.write_bytes(data)
    con = duckdb.connect()
    reader = open_ndjson if f.format == "ndjson" else open_json
    s = reader(con, p, f, tmp_path / "work")
    try:
        return s.columns, con.execute(f"SELECT * FROM {s.from_sql}").fetchall(), s.rejects(con), s.notes
    finally:
        s.cleanup()
        con.close()


def ndjson(*records) -> bytes:
    return b"".join((r if isinstance(r, bytes) else json.dumps(r, ensure_ascii=False).encode()) + b"\n"
                    for r in records)


# ------------------------------------------------------------------ values and columns

def test_flattening_and_text_rendering(tmp_path):
    doc = [{"id": "1", "patient": {"name": "张三", "addr": {"town": "椑木镇"}}, "tags": ["高血压", "糖尿病"],
            "meds": [{"code": "A1", "dose": 1.5}], "n": 1e5, "small": 1.5e-7, "whole": 2.0, "big": 12345678901234567890123,
            "ok": True, "no": False, "missing": None, "mixed": [1, None, 2.5, True], "empty": [], "nothing": {}},
           {"id": "2", "later": "x", "patient": {"name": "李四"}}]
    columns, rows, rejects, _ = scan(json.dumps(doc, ensure_ascii=False).encode(), feed(mapping={"followup_id": "id"}),
                                     tmp_path)
    # the union of keys in first-seen order; an empty object adds no column
    assert columns == ["id", "patient.name", "patient.addr.town", "tags", "meds", "n", "small", "whole", "big", "ok",
                       "no", "missing", "mixed", "empty", "later"]
    assert rows[0] == ("1", "张三", "椑木镇", "高血压;糖尿病", '[{"code":"A1","dose":1.5}]', "100000", "0.00000015", "2",
                       "12345678901234567890123", "true", "false", None, "1;;2.5;true", "", None)
    assert rows[1] == ("2", "李四") + (None,) * 12 + ("x",)
    assert rejects == []


@pytest.mark.parametrize("value, text", [(0, "0"), (-7, "-7"), (1.0, "1"), (12.5, "12.5"), (0.1, "0.1"),
                                         (1e-7, "0.0000001"), (1.5e20, "150000000000000000000"),
                                         (2 ** 70, "1180591620717411303424")])
def test_render_number(value, text):
    assert render_number(value) == text


def test_records_path_object_export(tmp_path):
    doc = {"code": 0, "msg": "成功", "data": {"total": 2, "items": [followup(1), followup(2)], "page": 1}, "ts": 1}
    columns, rows, rejects, notes = scan(json.dumps(doc).encode(), feed(records_path="data.items"), tmp_path)
    assert [r[0] for r in rows] == ["SF000001", "SF000002"] and notes["records_path"] == "data.items"
    assert columns[:4] == ["id", "patient.record_no", "patient.id_card", "disease"]


@pytest.mark.parametrize("doc, option, message", [
    ({"code": 0, "data": {"total": 0}}, "data.items", r"no key 'items' in 'data'; its keys are: total \(a number\)"),
    ({"code": 0, "data": [1]}, "data.items", r"'data' is an array, not an object"),
    ({"code": 0, "data": {"items": {"a": 1}}}, "data.items", "leads to an object, not an array of records"),
    ({"code": 0, "data": {"items": []}}, None, r"one JSON object, not an array.*records_path.*code \(a number\), "
                                               r"data \(an object\)"),
    ("just text", None, "holds a string, not an array of records"),
])
def test_records_path_errors_say_what_is_there(tmp_path, doc, option, message):
    with pytest.raises(UnreadableFileError, match=message):
        scan(json.dumps(doc).encode(), feed(records_path=option), tmp_path)


def test_a_record_that_is_not_an_object_is_rejected(tmp_path):
    data = json.dumps([followup(1), [1, 2], "x", followup(4)]).encode()
    _, rows, rejects, notes = scan(data, feed(), tmp_path)
    assert [r[0] for r in rows] == ["SF000001", "SF000004"]
    assert [(r.source_row, r.error_type, r.raw_line) for r in rejects] == [(2, "NOT AN OBJECT", "[1, 2]"),
                                                                          (3, "NOT AN OBJECT", '"x"')]
    assert "record 2 is an array" in rejects[0].reason and notes["records"] == 4


@pytest.mark.parametrize("data, message", [
    (b"", r"empty \(0 bytes\)"),
    (b"  \n ", "only whitespace"),
    (b'[{"id": "1"},\n  {"id": "2",, "x": 1}]', "line 2, column 14: Expecting property name"),
    (b'[{"id": "1"},\n  {"id": "2"}', "line 2, column 14: expecting ',' or ']'.*end of the file"),  # truncated
    (b'{"code": 0, "data": {"items": [{"id": "1"}]}', "expecting ',' or '}'"),  # cut after the records
    (b'[{"id": "1"}] [', "extra data after the JSON document.*ndjson"),
    (b'{"id": "1"}\n{"id": "2"}\n', "one JSON object per line: declare the feed's format as ndjson"),
])
def test_invalid_documents_are_unreadable_with_line_and_column(tmp_path, data, message):
    option = "data.items" if b"items" in data else None
    with pytest.raises(UnreadableFileError, match=message):
        scan(data, feed(records_path=option), tmp_path)


def test_line_and_column_are_right_across_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(jsonl, "CHUNK", 64)  # the document is read 64 bytes at a time
    good = ",\n".join(json.dumps(followup(i)) for i in range(1, 30))
    data = ("[" + good + ',\n{"id": "SF999", "visit": {"sbp": 12x}}]').encode()
    with pytest.raises(UnreadableFileError, match="line 30, column 36: Expecting ',' delimiter"):
        scan(data, feed(), tmp_path)
    _, rows, _, _ = scan(("[" + good + "]").encode(), feed(), tmp_path)
    assert len(rows) == 29 and rows[-1][0] == "SF000029"


def test_bom_and_gb18030(tmp_path):
    doc = json.dumps([followup(1, doctor="张医生")], ensure_ascii=False)
    _, rows, _, _ = scan(b"\xef\xbb\xbf" + doc.encode(), feed(), tmp_path)
    assert rows[0][-1] == "张医生"
    _, rows, _, _ = scan(doc.encode("gb18030"), feed(encoding="gb18030"), tmp_path)
    assert rows[0][-1] == "张医生"
    # bytes that are not GB18030 reject their record only
    bad = ("[" + json.dumps(followup(1), ensure_ascii=False) + ',{"id": "SF2", "doctor": "').encode("gb18030") + \
        b"\x81\x20" + ('"},' + json.dumps(followup(3, doctor="李医生"), ensure_ascii=False) + "]").encode("gb18030")
    _, rows, rejects, notes = scan(bad, feed(encoding="gb18030"), tmp_path)
    assert [r[0] for r in rows] == ["SF000001", "SF000003"] and rows[1][-1] == "李医生"
    [r] = rejects
    assert (r.source_row, r.error_type) == (2, "INVALID ENCODING") and "GB18030" in r.reason


# ------------------------------------------------------------------ NDJSON

def test_ndjson_bad_lines_are_rejected_and_the_rest_loads(tmp_path):
    data = ndjson(followup(1), b'{"id": "SF000002", "visit": {"sbp": }', b"", followup(3), b"[1, 2]",
                  b'{"id": "SF000005", "doctor": "\xff\xfe"}', b"  ", followup(6)) + b'{"id": "SF000007"'
    _, rows, rejects, notes = scan(data, feed("ndjson"), tmp_path, "x.ndjson")
    assert [r[0] for r in rows] == ["SF000001", "SF000003", "SF000006"]
    # record numbers count non-blank lines; reasons give the physical line
    assert [(r.source_row, r.error_type) for r in rejects] == [(2, "INVALID JSON"), (4, "NOT AN OBJECT"),
                                                              (5, "INVALID ENCODING"), (7, "INVALID JSON")]
    assert rejects[0].reason == "line 2, column 37: Expecting value"
    assert rejects[0].raw_line == '{"id": "SF000002", "visit": {"sbp": }'
    assert rejects[1].reason.startswith("line 5 is an array") and "line 6" in rejects[2].reason
    assert rejects[3].reason.startswith("line 9, ")  # the last line, without its newline: a truncated file
    assert notes["records"] == 7 and notes["blank_lines"] == 2


def test_ndjson_encodings(tmp_path):
    recs = [followup(1, doctor="张医生"), followup(2, doctor="李医生")]
    data = "".join(json.dumps(r, ensure_ascii=False) + "\r\n" for r in recs)
    for raw, enc in [(b"\xef\xbb\xbf" + data.encode(), "utf-8"), (data.encode("gb18030"), "gb18030"),
                     ("\ufeff".encode("gb18030") + data.encode("gb18030"), "gb18030")]:
        _, rows, rejects, _ = scan(raw, feed("ndjson", encoding=enc), tmp_path, "x.ndjson")
        assert [r[-1] for r in rows] == ["张医生", "李医生"] and rejects == []
    bad = data.encode("gb18030") + b'{"id": "SF3", "doctor": "\x81\x20"}\n'
    _, rows, rejects, _ = scan(bad, feed("ndjson", encoding="gb18030"), tmp_path, "x.ndjson")
    assert len(rows) == 2 and [(r.source_row, r.error_type) for r in rejects] == [(3, "INVALID ENCODING")]


@pytest.mark.parametrize("data, message", [
    (b"", r"empty \(0 bytes\)"),
    (b"\n\n  \n", "only blank lines"),
    (b'[\n  {"id": "1"}\n]\n', "spread over many lines: declare the feed's format as json"),
    (b'[{"id": "1"}, {"id": "2"}]\n', "no line of the file is a JSON object.*format: json"),
    (b"id,name\n1,a\n", "no line of the file is a JSON object"),
])
def test_ndjson_unreadable(tmp_path, data, message):
    with pytest.raises(UnreadableFileError, match=message):
        scan(data, feed("ndjson"), tmp_path, "x.ndjson")


def test_large_ndjson_streams_in_batches_with_growing_columns(tmp_path, monkeypatch):
    monkeypatch.setattr(jsonl, "BATCH_ROWS", 1000)  # 25 batches, spilled to disk
    n = 25_000
    lines = []
    for i in range(1, n + 1):
        rec = followup(i % 100, id=f"SF{i:06d}")
        if i > 20_000:
            rec["late_key"] = str(i)  # a key first seen in a late batch
        lines.append(json.dumps(rec).encode() if i % 5000 else b"{broken")
    columns, rows, rejects, notes = scan(b"\n".join(lines), feed("ndjson"), tmp_path, "x.ndjson")
    assert columns[-1] == "late_key" and len(rows) == n - 5
    assert [r.source_row for r in rejects] == [5000, 10000, 15000, 20000, 25000]
    kept = [i for i in range(1, n + 1) if i % 5000]
    assert [r[0] for r in rows] == [f"SF{i:06d}" for i in kept]  # file order
    assert rows[0][-1] is None and rows[-1][-1] == "24999"
    assert not list((tmp_path / "work").glob("*")), "spilled batches are removed by cleanup"


# ------------------------------------------------------------------ end to end

def write_registry(s, feeds):
    inst = {"code": "T1", "name": "椑木镇卫生院", "kind": "township_health_centre", "level": "未定级",
            "division_code": "511011", "feeds": feeds}
    s.registry.write_text(yaml.safe_dump({"institutions": [inst]}, allow_unicode=True), encoding="utf-8")


def put(s, feed_id, name, data: bytes):
    p = s.landing / "T1" / feed_id / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)


def query(s, sql):
    con = connect(s, read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_ingest_ndjson_and_json_account_for_every_record(lake_env):
    s = lake_env
    write_registry(s, [
        {"id": "fu_ndjson", "dataset": "chronic_followup", "format": "ndjson", "mapping": FOLLOWUP_MAPPING},
        {"id": "fu_json", "dataset": "chronic_followup", "format": "json", "encoding": "gb18030",
         "records_path": "data.items", "mapping": FOLLOWUP_MAPPING},
    ])
    no_fbg = followup(3)
    del no_fbg["visit"]["fbg"]
    put(s, "fu_ndjson", "2026-10-31.ndjson", ndjson(followup(1), b'{"id": "SF000002", "visit": {"sbp": }', no_fbg,
                                                    [followup(4)], followup(5)))
    doc = {"code": 0, "data": {"items": [followup(11, doctor="张医生"), followup(12)]}}
    put(s, "fu_json", "2026-10-31.json", json.dumps(doc, ensure_ascii=False).encode("gb18030"))
    results = {r.feed: r for r in ingest_landing()}
    r = results["fu_ndjson"]
    assert (r.status, r.rows_read, r.rows_loaded, r.rows_rejected) == ("loaded", 5, 3, 2)
    assert query(s, "SELECT _source_row, followup_id, record_id, id_number, followup_date, systolic_bp, fasting_glucose "
                    "FROM bronze.chronic_followup WHERE _feed = 'fu_ndjson' ORDER BY 1") == [
        (1, "SF000001", "5110110001", "511011195803071201", "2026-10-02", "131", "6.1"),
        (3, "SF000003", "5110110003", "511011195803071203", "2026-10-04", "133", None),
        (5, "SF000005", "5110110005", "511011195803071205", "2026-10-06", "135", "6.1")]
    assert query(s, "SELECT source_row, error_type FROM bronze._rejects ORDER BY 1") == [
        (2, "INVALID JSON"), (4, "NOT AN OBJECT")]
    j = results["fu_json"]
    assert (j.status, j.rows_read, j.rows_loaded, j.rows_rejected) == ("loaded", 2, 2, 0)
    assert query(s, "SELECT practitioner_id FROM bronze.chronic_followup WHERE _feed = 'fu_json' ORDER BY 1") == [
        ("D001",), ("张医生",)]
    for read, loaded, rejected in query(s, "SELECT rows_read, rows_loaded, rows_rejected FROM ops.ingest_batch"):
        assert read == loaded + rejected


def test_absent_keys_unreadable_files_and_drift(lake_env):
    s = lake_env
    write_registry(s, [{"id": "fu", "dataset": "chronic_followup", "format": "json", "mapping": FOLLOWUP_MAPPING}])
    # an exporter that omits null fields: no record has visit.fbg → NULL, not header drift
    recs = [followup(1), followup(2)]
    for r in recs:
        del r["visit"]["fbg"]
    put(s, "fu", "a_sparse.json", json.dumps(recs).encode())
    # a required key that no record has is drift
    put(s, "fu", "b_drift.json", json.dumps([{k: v for k, v in followup(3).items() if k != "disease"}]).encode())
    put(s, "fu", "c_empty.json", b"")
    put(s, "fu", "d_invalid.json", b'[{"id": "SF9"},\n {"id": }]')
    put(s, "fu", "e_no_records.json", b"[]")
    results = {r.source_file.rsplit("/", 1)[1]: r for r in ingest_landing()}
    assert results["a_sparse.json"].rows_loaded == 2
    assert query(s, "SELECT count(*) FROM bronze.chronic_followup WHERE fasting_glucose IS NULL") == [(2,)]
    assert results["b_drift.json"].status == "failed" and "['disease']" in results["b_drift.json"].error
    assert results["c_empty.json"].status == "failed" and "0 bytes" in results["c_empty.json"].error
    assert results["d_invalid.json"].status == "failed" and "line 2, column 9" in results["d_invalid.json"].error
    e = results["e_no_records.json"]
    assert (e.status, e.rows_read, e.rows_loaded) == ("loaded", 0, 0)

"""HL7 v2 reader: the 35 real reference messages, several data sets per message, escapes,
MLLP framing, broken messages rejected while the rest loads, accounting, idempotence."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from ingest_adapters import RegistryError, parse_registry
from ingest_adapters.hl7v2 import split_messages, unescape
from ingest_adapters.reference_institution import HL7_MAPPING as MAPPING, HL7_PATIENT as PATIENT
from tests.lake_reader import ingest_landing, q

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "hl7v2"
FIXTURES = Path(__file__).with_name("fixtures") / "hl7v2"
needs_reference = pytest.mark.skipif(not REFERENCE.exists(), reason="../shared/reference/hl7v2 is not on this machine")

def registry(mapping=None, **options) -> dict:
    feed = {"id": "lis_hl7", "format": "hl7v2", "mapping": mapping or MAPPING, **options}
    return {"institutions": [{"code": "NJ001", "name": "内江市第一人民医院", "kind": "hospital", "level": "三级甲等",
                              "division_code": "511002", "feeds": [feed]}]}


def write_registry(s, data=None):
    s.registry.write_text(yaml.safe_dump(data or registry(), allow_unicode=True, sort_keys=False), encoding="utf-8")


def put(s, name, data: bytes, feed="lis_hl7"):
    p = s.landing / "NJ001" / feed / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p


ADT = (FIXTURES / "nj001_adt_oru_zh.hl7").read_bytes().split(b"\rMSH")[0] + b"\r"


def reference_messages() -> list[bytes]:
    return [p.read_bytes() for p in sorted(REFERENCE.glob("*.hl7"))]


def source_counts(messages: list[bytes]) -> dict[str, int]:
    """Counted from the raw text, independently of the reader: messages, PID, PV1, OBX of ORU, RXA of VXU."""
    out = {"messages": 0, "person": 0, "encounter": 0, "lab_result": 0, "immunization": 0}
    for m in messages:
        segs = [s for s in re.split(rb"\r\n|\r|\n", m) if s.strip()]
        msh9 = segs[0].split(b"|")[8]
        out["messages"] += 1
        out["person"] += any(s.startswith(b"PID|") for s in segs)
        out["encounter"] += any(s.startswith(b"PV1|") for s in segs)
        if msh9.startswith(b"ORU^R01"):
            out["lab_result"] += sum(s.startswith(b"OBX|") for s in segs)
        if msh9.startswith(b"VXU^V04"):
            out["immunization"] += sum(s.startswith(b"RXA|") for s in segs)
    return out


def accounting_holds(s):
    for batch_id, read, loaded, rejected in q(s, "SELECT batch_id, rows_read, rows_loaded, rows_rejected "
                                                 "FROM ops.ingest_batch WHERE status = 'loaded'"):
        assert read == loaded + rejected
        # every loaded message left at least one bronze row, every rejected one a reject row
        [(n,)] = q(s, "SELECT count(DISTINCT _source_row) FROM (SELECT _source_row FROM bronze.person WHERE _batch_id = ?1 "
                      "UNION ALL SELECT _source_row FROM bronze.encounter WHERE _batch_id = ?1 "
                      "UNION ALL SELECT _source_row FROM bronze.lab_result WHERE _batch_id = ?1 "
                      "UNION ALL SELECT _source_row FROM bronze.immunization WHERE _batch_id = ?1)", [batch_id])
        assert n == loaded
        assert q(s, "SELECT count(*) FROM bronze._rejects WHERE batch_id = ?", [batch_id]) == [(rejected,)]


# ------------------------------------------------------------------ the real reference messages

@needs_reference
def test_reference_messages_fill_several_data_sets_in_one_batch(lake_env):
    s = lake_env
    write_registry(s)
    messages = reference_messages()
    expected = source_counts(messages)
    assert expected["messages"] == 35
    # one file of 35 messages with \r separators, the same framed by MLLP with \n separators
    put(s, "all_cr.hl7", b"".join(messages))
    put(s, "all_mllp.hl7", b"".join(b"\x0b" + m.replace(b"\r", b"\n") + b"\x1c\r" for m in messages))
    results = ingest_landing(s)
    assert [(r.status, r.rows_read, r.rows_loaded, r.rows_rejected) for r in results] == [("loaded", 35, 35, 0)] * 2
    assert results[0].notes["rows_by_dataset"] == {k: expected[k] for k in ("person", "encounter", "lab_result",
                                                                          "immunization")}
    assert results[1].notes["mllp"] is True
    for table in ("person", "encounter", "lab_result", "immunization"):
        assert q(s, f"SELECT _source_file, count(*) FROM bronze.{table} GROUP BY 1 ORDER BY 1") == \
            [("NJ001/lis_hl7/all_cr.hl7", expected[table]), ("NJ001/lis_hl7/all_mllp.hl7", expected[table])]
    # one batch row per file, naming its data sets
    assert q(s, "SELECT dataset, format FROM ops.ingest_batch") == [("person,encounter,lab_result,immunization",
                                                                   "hl7v2")] * 2
    accounting_holds(s)


@needs_reference
def test_values_escapes_repetitions_components_and_lineage(lake_env):
    s = lake_env
    write_registry(s)
    names = ["ms_ADT-A01-02.hl7", "ms_ORU-R01-RMGEAD.hl7", "ms_VXU-V04-01.hl7"]
    put(s, "three.hl7", b"".join((REFERENCE / n).read_bytes() for n in names))
    put(s, "zh.hl7", (FIXTURES / "nj001_adt_oru_zh.hl7").read_bytes())
    # the ADT again in GB18030, said by MSH-18 (the feed declares UTF-8); \X..\ is then GB18030 bytes
    gb = ADT.decode().replace("UNICODE UTF-8", "GB 18030-2000").replace("\\XE4B8AD\\", "\\XD6D0\\")
    put(s, "gb.hl7", gb.replace("ADT0001", "ADT0002").encode("gb18030"))
    gb_result, r, zh = ingest_landing(s)
    assert (r.rows_read, r.rows_loaded, zh.rows_read, zh.rows_loaded, zh.rows_rejected) == (3, 3, 2, 2, 0)
    assert (gb_result.rows_read, gb_result.rows_loaded) == (1, 1)
    assert q(s, "SELECT name, address_text FROM bronze.person WHERE _source_file LIKE '%gb.hl7'") == [
        ("张中三", "东兴区&椑木镇 新华路12号")]
    three = "NJ001/lis_hl7/three.hl7"
    # OBX-5 structured numeric kept as sent ('^182'), unit, range, flag; lineage: the message's ordinal
    assert q(s, "SELECT lab_result_id, patient_id, item_code, item_name, result_value, unit, reference_range, "
                "abnormal_flag, reported_at, _source_row FROM bronze.lab_result WHERE _source_file = ?", [three]) == [
        ("CNTRL-3456-1", "555-44-4444", "1554-5", "GLUCOSE", "^182", "mg/dl", "70_105", "H", "20020215093000+0600", 2)]
    assert q(s, "SELECT _source_row, patient_id FROM bronze.person WHERE _source_file = ? ORDER BY 1",
             [three])[1] == (2, "555-44-4444")
    assert q(s, "SELECT immunization_id, vaccine_code, vaccine_name, vaccinated_date, lot_number, _source_row "
                "FROM bronze.immunization") == [("MSG00001-1", "49281021588", "TENIVAC", "20210818", "315841", 3)]
    # message 2 (ORU without PV1) gives no encounter; 1 and 3 do
    assert [r[0] for r in q(s, "SELECT _source_row FROM bronze.encounter WHERE _source_file = ? ORDER BY 1",
                            [three])] == [1, 3]

    # Chinese: \X..\ is UTF-8 bytes; the MR repetition is chosen by PID-3.5, the ID card by its own type
    zh_file = "NJ001/lis_hl7/zh.hl7"
    assert q(s, "SELECT DISTINCT patient_id, name, id_number FROM bronze.person WHERE _source_file = ?", [zh_file]) == [
        ("510000123", "张中三", "511002199001011234")]
    assert q(s, "SELECT address_text, phone FROM bronze.person WHERE _source_file = ? AND _source_row = 1",
             [zh_file]) == [("东兴区&椑木镇 新华路12号", "13800001111")]
    assert q(s, "SELECT encounter_id, visit_type_code, department_code, practitioner_id, visit_at, discharge_at "
                "FROM bronze.encounter WHERE _source_file = ? ORDER BY _source_row", [zh_file]) == [
        ("V20261020001", "I", "0301", "D001", "20261020083000", "20261025100000"),
        ("V20261020001", "I", "0301", "D001", "20261020101500", None)]
    rows = q(s, "SELECT item_code, item_name, result_value, unit, reference_range, abnormal_flag, encounter_id, "
                "reported_at, _source_row FROM bronze.lab_result WHERE _source_file = ? ORDER BY lab_result_id",
             [zh_file])
    assert rows == [("14771-0", "空腹血糖", "7.8", "mmol/L", "3.9-6.1", "H", "V20261020001", "20261020101000", 2),
                    ("5778-6", "尿液颜色", "淡黄^清亮|无沉淀", None, None, None, "V20261020001", "20261020101000", 2),
                    ("25428-4", "尿糖", "阴性", None, "阴性", "N", "V20261020001", "20261020101000", 2)]
    accounting_holds(s)


def test_unescape():
    seps = ("|", "^", "~", "&")
    assert unescape(r"a\F\b\S\c\T\d\R\e\E\f", "utf-8", "\\", seps) == "a|b^c&d~e\\f"
    assert unescape(r"\XE4B8AD\文", "utf-8", "\\", seps) == "中文"
    assert unescape("\\XD6D0\\", "gb18030", "\\", seps) == "中"
    assert unescape(r"line1\.br\line2\H\bold\N\ ", "utf-8", "\\", seps) == "line1\nline2bold "
    assert unescape(r"\XZZ\ and 50\ ", "utf-8", "\\", seps) == r"\XZZ\ and 50\ "  # nothing lost


# ------------------------------------------------------------------ broken messages

def _with(msh_type=b"ADT^A01^ADT_A01", control=b"ADT0001"):
    return ADT.replace(b"ADT^A01^ADT_A01", msh_type).replace(b"ADT0001", control)


def test_broken_messages_are_rejected_and_the_rest_loads(lake_env):
    s = lake_env
    write_registry(s)
    ok1, ok2 = _with(control=b"OK1"), _with(control=b"OK2")
    no_msh = "PID|1||999^^^NJ001^MR||无头^消息\rPV1|1|O\r".encode()
    bad_segment = _with(control=b"BAD").replace(b"\rPV1|", b"\rthis line is not a segment\rPV1|")
    wrong_enc = _with(control=b"ENC").replace(b"MSH|^~\\&|", b"MSH|^^\\&|", 1)
    unknown_type = _with(msh_type=b"ZZZ^Z99", control=b"UNK")
    gbk_in_utf8 = _with(control=b"GBK").replace("张".encode(), "张".encode("gb18030"))
    # messages 1..7: the first orphan segments come before any MSH
    put(s, "mixed.hl7", no_msh + ok1 + bad_segment + wrong_enc + unknown_type + gbk_in_utf8 + ok2)
    # MLLP: text outside the frames, a frame cut before its end block
    framed = b"\x0b" + _with(control=b"F1") + b"\x1c\r"
    put(s, "mllp.hl7", b"garbage before\r" + framed + b"\x0b" + _with(control=b"F2")[:60])
    [r, mllp] = ingest_landing(s)
    assert (r.status, r.rows_read, r.rows_loaded, r.rows_rejected) == ("loaded", 7, 2, 5)
    assert (mllp.status, mllp.rows_read, mllp.rows_loaded, mllp.rows_rejected) == ("loaded", 3, 1, 2)
    assert q(s, "SELECT source_row, error_type FROM bronze._rejects WHERE source_file LIKE '%mllp.hl7' "
                "ORDER BY 1") == [(1, "BAD FRAMING"), (3, "BAD FRAMING")]
    assert "truncated" in q(s, "SELECT reason FROM bronze._rejects WHERE source_file LIKE '%mllp.hl7' "
                               "AND source_row = 3")[0][0]
    rejects = q(s, "SELECT source_row, error_type, reason, raw_line FROM bronze._rejects "
                   "WHERE source_file LIKE '%mixed.hl7' ORDER BY source_row")
    assert [(row, et) for row, et, _, _ in rejects] == [
        (1, "NO MSH"), (3, "BAD SEGMENT"), (4, "WRONG ENCODING CHARACTERS"), (5, "UNKNOWN MESSAGE TYPE"),
        (6, "INVALID ENCODING")]
    reasons = {row: reason for row, _, reason, _ in rejects}
    assert "without an MSH header" in reasons[1]
    assert "segment 4 'this line is not a segment'" in reasons[3]
    assert "MSH-2 encoding characters '^^\\&'" in reasons[4]
    assert "'ZZZ^Z99' is not collected" in reasons[5] and "ORU^R01" in reasons[5]
    assert "not valid UTF-8" in reasons[6]
    # the raw message is kept whole
    raw = {row: line for row, _, _, line in rejects}
    assert raw[3] == bad_segment.decode().rstrip("\r") and raw[1].startswith("PID|1||999")
    assert q(s, "SELECT _source_row, encounter_id FROM bronze.encounter WHERE _source_file LIKE '%mixed.hl7' "
                "ORDER BY 1") == [(2, "V20261020001"), (7, "V20261020001")]
    accounting_holds(s)


def test_unreadable_files_fail_their_batch_and_others_load(lake_env):
    s = lake_env
    write_registry(s)
    put(s, "a_empty.hl7", b"")
    put(s, "b_no_msh.hl7", b"PID|1||123\rPV1|1|O\r")
    put(s, "c_json.hl7", b'{"resourceType": "Patient"}')
    put(s, "d_good.hl7", _with())
    *bad, good = ingest_landing(s)
    assert [(r.status, r.error.split(": ", 1)[1][:30]) for r in bad] == [
        ("failed", "the file is empty (0 bytes)"), ("failed", "no MSH segment anywhere in the"),
        ("failed", "no MSH segment anywhere in the")]
    assert good.status == "loaded" and good.rows_loaded == 1
    assert q(s, "SELECT status FROM ops.ingest_batch ORDER BY source_file") == [("failed",)] * 3 + [("loaded",)]


def test_message_types_option_and_same_content_twice(lake_env):
    s = lake_env
    write_registry(s, registry(message_types=["ADT^A01"]))
    put(s, "a.hl7", (FIXTURES / "nj001_adt_oru_zh.hl7").read_bytes())
    [r] = ingest_landing(s)
    assert (r.rows_loaded, r.rows_rejected) == (1, 1)  # the ORU is not collected by this feed
    put(s, "a_again.hl7", (FIXTURES / "nj001_adt_oru_zh.hl7").read_bytes())  # same content, another name
    [r1, r2] = ingest_landing(s)
    assert (r1.status, r2.status) == ("skipped", "skipped")
    assert q(s, "SELECT count(*) FROM ops.ingest_batch") == [(1,)]
    assert q(s, "SELECT count(*) FROM bronze.person") == [(1,)]


def test_split_messages_separators_and_envelopes():
    msgs, notes = split_messages(b"FHS|^~\\&\r\nBHS|^~\\&\nMSH|^~\\&|A\nPID|1\r\nMSH|^~\\&|B\rPID|2\rBTS|2\rFTS|1\r")
    assert [m for m, _ in msgs] == [[b"MSH|^~\\&|A", b"PID|1"], [b"MSH|^~\\&|B", b"PID|2"]]
    assert notes["envelope_segments"] == 4


# ------------------------------------------------------------------ registry

@pytest.mark.parametrize("mapping, message", [
    ({"persn": {"patient_id": "PID-3.1"}}, "did you mean 'person'"),
    ({"person": {"patient_id": "PID-3.1", "nmae": "PID-5.1"}}, "did you mean 'name'"),
    ({"person": {"patient_id": "PID-3.1", "name": "PID5.1"}}, "'PID5.1' is not an HL7 field path"),
    ({"person": {"name": "PID-5.1"}}, "must give the business key ['patient_id']"),
    ({"lab_result": {"segmnt": "OBX", "lab_result_id": "OBX-1", "patient_id": "PID-3", "item_code": "OBX-3"}},
     "did you mean 'segment'"),
    ({"lab_result": {"segment": "obx", "lab_result_id": "OBX-1", "patient_id": "PID-3", "item_code": "OBX-3"}},
     "'obx' is not a segment id"),
    ("person", "needs a mapping keyed by data set"),
])
def test_registry_checks_hl7_mappings(mapping, message):
    with pytest.raises(RegistryError) as e:
        parse_registry(registry(mapping))
    assert message in str(e.value)


def test_registry_feed_knows_its_data_sets():
    feed = parse_registry(registry()).institutions[0].feeds[0]
    assert feed.datasets == ["person", "encounter", "lab_result", "immunization"]
    assert feed.dataset == "person" and feed.mapping["name"] == "PID-5.1"
    assert feed.mappings[2].options == {"segment": "OBX", "messages": ["ORU^R01"]}

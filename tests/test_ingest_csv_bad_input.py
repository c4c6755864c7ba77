"""CSV deliveries as they really arrive broken: reordered and extra columns, a truncated file, a
wrong declared encoding, mixed encodings, odd file names, a link out of the landing zone. Each
file fails alone with a clear reason or loads what it can; rows read = loaded + rejected."""

from __future__ import annotations

import os

from ingest_adapters import ingest_landing
from tests.test_ingest_csv import inst, put, write_registry
from tests.test_ingest_csv import query as q


def test_broken_deliveries_each_get_a_clear_outcome(lake_env, tmp_path):
    s = lake_env
    write_registry(s, [inst(c) for c in ("H1", "H2", "H3", "H4", "H5", "H6")])
    # columns reordered, one extra: mapped by name, the extra one ignored
    put(s, "H1", "reordered.csv", "KSLB,备注,KSMC,KSDM\n门诊,无,内科门诊,0101\n住院,有,外科,0201\n".encode())
    # truncated mid-record inside an open quote: the complete records load, the cut one is rejected
    put(s, "H2", "truncated.csv", b'KSDM,KSMC,KSLB\n01,a,x\n02,b,x\n03,"cut off in the mid')
    # GB18030 bytes declared UTF-8 (Chinese header): the file fails and says why
    put(s, "H3", "wrong_encoding.csv", "科室代码,KSDM,KSMC,KSLB\n甲,01,内科,门诊\n".encode("gb18030"))
    # mixed: a UTF-8 file with one GBK row — that row is rejected, the rest load
    put(s, "H4", "mixed.csv", "KSDM,KSMC,KSLB\n01,内科,门诊\n".encode() + "02,外科,住院\n".encode("gbk")
        + "03,儿科,门诊\n".encode())
    # spaces and Chinese characters in the name are only a name
    put(s, "H5", "门诊 日报 (2026-10-01).csv", "KSDM,KSMC,KSLB\n01,内科,门诊\n".encode())
    # a link that leads out of the landing zone is never read
    secret = tmp_path / "outside.csv"
    secret.write_bytes(b"KSDM,KSMC,KSLB\n99,secret,x\n")
    link = s.landing / "H6" / "dict_dept" / "escape.csv"
    link.parent.mkdir(parents=True)
    os.symlink(secret, link)

    r = {x.institution_code: x for x in ingest_landing()}
    assert (r["H1"].status, r["H1"].rows_loaded) == ("loaded", 2)
    assert q(s, "SELECT department_code, department_name, department_kind FROM bronze.department "
                "WHERE _institution_code = 'H1' ORDER BY 1") == [("0101", "内科门诊", "门诊"), ("0201", "外科", "住院")]
    assert (r["H2"].status, r["H2"].rows_read, r["H2"].rows_loaded, r["H2"].rows_rejected) == ("loaded", 3, 2, 1)
    [(row, etype)] = q(s, "SELECT source_row, error_type FROM bronze._rejects WHERE institution_code = 'H2'")
    assert row == 3 and etype
    assert r["H3"].status == "failed" and "not valid UTF-8" in r["H3"].error and "declared encoding" in r["H3"].error
    assert (r["H4"].rows_read, r["H4"].rows_loaded, r["H4"].rows_rejected) == (3, 2, 1)
    assert q(s, "SELECT source_row, error_type FROM bronze._rejects WHERE institution_code = 'H4'") == [
        (2, "INVALID ENCODING")]
    assert r["H5"].status == "loaded"
    assert q(s, "SELECT DISTINCT _source_file FROM bronze.department WHERE _institution_code = 'H5'") == [
        ("H5/dict_dept/门诊 日报 (2026-10-01).csv",)]
    assert r["H6"].status == "failed" and "outside the landing zone" in r["H6"].error
    assert q(s, "SELECT count(*) FROM bronze.department WHERE department_code = '99'") == [(0,)]
    # every delivery is accounted for, in the batch ledger too
    for batch in q(s, "SELECT rows_read, rows_loaded, rows_rejected FROM ops.ingest_batch WHERE status = 'loaded'"):
        assert batch[0] == batch[1] + batch[2]
    assert q(s, "SELECT count(*) FROM ops.ingest_batch") == [(6,)]

"""Excel reader: title rows, merged cells, dates, formulas, lost-precision IDs, bad workbooks.

Fixtures are built by tests/fixtures/make_fixtures.py (committed; the tests need no writer).
"""

from __future__ import annotations

import datetime as dt
import shutil
import zipfile
from pathlib import Path

import duckdb
import pytest
import yaml

from healthlake.lake import connect
from ingest_adapters import UnreadableFileError, ingest_landing
from ingest_adapters.excel import cell_text, column_letter, open_excel
from ingest_adapters.registry import Feed

FIXTURES = Path(__file__).parent / "fixtures"
HEALTH_XLSX = FIXTURES / "health_records.xlsx"
DEPT_XLS = FIXTURES / "departments.xls"
EDGE_XLSX = FIXTURES / "edge_cases.xlsx"

HEALTH_MAPPING = {"record_id": "档案编号", "name": "姓名", "sex_code": "性别", "birth_date": "出生日期",
                  "id_number": "身份证号", "phone": "联系方式.电话", "address_text": "联系方式.住址",
                  "created_date": "建档日期", "family_doctor_id": "责任医生"}
DEPT_MAPPING = {"department_code": "科室代码", "department_name": "科室名称", "department_kind": "科室类别",
                "approved_beds": "核定床位", "open_beds": "开放床位"}


def feed(mapping=None, dataset="health_record", **options) -> Feed:
    return Feed(id="f", dataset=dataset, format="excel", mapping=mapping or HEALTH_MAPPING, options=options)


def scan(path, f: Feed, tmp_path):
    con = duckdb.connect()
    s = open_excel(con, path, f, tmp_path / "work")
    try:
        return s.columns, con.execute(f"SELECT * FROM {s.from_sql}").fetchall(), s.rejects(con), s.notes
    finally:
        s.cleanup()
        con.close()


# ------------------------------------------------------------------ reader level

def test_title_rows_two_row_merged_header_dates_formulas_and_merged_data(tmp_path):
    columns, rows, rejects, notes = scan(HEALTH_XLSX, feed(sheet="健康档案"), tmp_path)
    # the title row and the export-info row are skipped; a header cell merged over two rows
    # spans them, and the merged "联系方式" names its two sub-columns
    assert columns == ["档案编号", "姓名", "性别", "出生日期", "身份证号", "联系方式.电话", "联系方式.住址", "建档日期",
                       "建档时间", "年龄", "随访得分", "责任医生"]
    assert notes["header_row"] == 4 and notes["header_rows"] == 2 and notes["first_data_row"] == 6
    assert rows[0] == ("5110110001", "张三", "1", "1958-03-07", "511011195803071234", "13800138000", "椑木镇石子村1组",
                       "2019-05-12", "2019-05-12 09:30:00", "68", "0.3", "D001")
    # a bare serial number under a Chinese date format is a date; seconds survive; the formula
    # 0.1+0.2+1 reads as Excel shows it; the merged 责任医生 fills down
    assert rows[1][7:] == ("2025-10-04", "2025-10-04 14:05:59", "63", "1.3", "D001")
    # a phone typed as text keeps its dash, an empty cell is NULL
    assert [r[0] for r in rows] == ["5110110001", "5110110002", "5110110004", "5110110005"]
    assert rows[2][5] == "0832-2345678" and rows[2][11] == "D002"
    # the blank row between records is not a record; the formatted empty rows at the end are not either
    assert notes["records"] == 5 and notes["blank_rows_skipped"] == 1


def test_an_id_number_stored_as_a_number_is_rejected_with_its_cell(tmp_path):
    _, rows, rejects, _ = scan(HEALTH_XLSX, feed(sheet="健康档案"), tmp_path)
    [r] = rejects
    assert (r.source_row, r.error_type) == (3, "NUMBER PRECISION LOST")
    assert "cell E8 (身份证号)" in r.reason and "15 significant digits" in r.reason
    assert r.raw_line.startswith("5110110003\t王五\t1\t1970-01-01\t")
    # unmapped, the same number is only text: no reject
    _, rows, rejects, _ = scan(HEALTH_XLSX, feed({"record_id": "档案编号", "name": "姓名", "created_date": "建档日期"},
                                                 sheet="健康档案"), tmp_path)
    assert rejects == [] and len(rows) == 5
    assert "e" not in rows[2][4] and len(rows[2][4]) == 18  # never scientific notation


def test_sheet_by_name_by_index_and_default(tmp_path):
    columns, rows, _, notes = scan(HEALTH_XLSX, feed({"record_id": "档案编号"}, sheet=2), tmp_path)
    assert notes["sheet"] == "停用档案" and rows == [("5110109999", "孙八", "死亡")]
    # default: the first visible sheet, here the notes sheet
    columns, _, _, notes = scan(HEALTH_XLSX, feed(), tmp_path)
    assert notes["sheet"] == "说明" and columns == ["本表由基本公共卫生服务管理系统导出"]


def test_a_missing_sheet_lists_the_sheets(tmp_path):
    with pytest.raises(UnreadableFileError, match=r"no sheet named '健康档按'.*0: '说明', 1: '健康档案', 2: '停用档案'"):
        scan(HEALTH_XLSX, feed(sheet="健康档按"), tmp_path)
    with pytest.raises(UnreadableFileError, match="no sheet at index 7"):
        scan(HEALTH_XLSX, feed(sheet=7), tmp_path)
    with pytest.raises(UnreadableFileError, match="sheet must be a sheet name or a 0-based index"):
        scan(HEALTH_XLSX, feed(sheet=[1]), tmp_path)


def test_header_row_option(tmp_path):
    columns, rows, _, notes = scan(HEALTH_XLSX, feed(sheet="健康档案", header_row=5), tmp_path)
    assert notes["header_row"] == 5 and columns[5:7] == ["电话", "住址"]
    with pytest.raises(UnreadableFileError, match="header_row 3 .* is empty"):
        scan(HEALTH_XLSX, feed(sheet="健康档案", header_row=3), tmp_path)
    with pytest.raises(UnreadableFileError, match="1-based row number"):
        scan(HEALTH_XLSX, feed(sheet="健康档案", header_row="4"), tmp_path)


def test_legacy_xls_with_merged_category_and_numbers(tmp_path):
    columns, rows, rejects, notes = scan(DEPT_XLS, feed(DEPT_MAPPING, dataset="department"), tmp_path)
    assert notes["workbook"] == "xls" and notes["header_row"] == 2
    assert columns == ["科室代码", "科室名称", "科室类别", "核定床位", "开放床位", "启用日期"]
    assert rows == [("0101", "心血管内科", "住院", "40", "45", "2010-01-01"),
                    ("0102", "呼吸内科", "住院", "30", "30", "2012-06-01"),
                    ("0201", "普外科", "住院", "50", "48", "2010-01-01"),
                    ("0301", "内科门诊", "门诊", "0", "0", "2015-03-01")]
    assert rejects == []


def test_awkward_layouts(tmp_path):
    m = {"department_code": "KSDM", "department_name": "KSMC"}
    with pytest.raises(UnreadableFileError, match="repeats the column 'KSMC' in columns B and C"):
        scan(EDGE_XLSX, feed(m, dataset="department", sheet="重复表头"), tmp_path)
    # a table starting at C3: empty leading columns dropped, a header line break inside a
    # Chinese name dropped, a column without a header that holds data named by its letter
    columns, rows, _, _ = scan(EDGE_XLSX, feed(m, dataset="department", sheet="偏移"), tmp_path)
    assert columns == ["KSDM", "身份证号码", "column_F"]
    assert rows == [("01", "x", "note"), ("1", "0.0000001", None)]
    with pytest.raises(UnreadableFileError, match="no header row in the first 30 rows.*header_row"):
        scan(EDGE_XLSX, feed(m, dataset="department", sheet="纯数字"), tmp_path)
    with pytest.raises(UnreadableFileError, match="'空表' is empty"):
        scan(EDGE_XLSX, feed(m, dataset="department", sheet="空表"), tmp_path)


@pytest.mark.parametrize("data, message", [
    (b"", "empty \\(0 bytes\\)"),
    (HEALTH_XLSX.read_bytes()[: HEALTH_XLSX.stat().st_size // 2], "incomplete or damaged xlsx"),
    ("科室代码,科室名称\n0101,内科\n".encode(), "text starting with '科室代码,科室名称'.*format as csv"),
    ("科室代码,科室名称\n0101,内科\n".encode("gb18030"), "text starting with '科室代码,科室名称'"),
    (b"<html><body><table><tr><td>KSDM</td></tr></table></body></html>", "HTML/XML text renamed"),
    (b"\x00\x01\x02\x03garbage", "unknown file signature"),
])
def test_bad_workbooks_are_unreadable(tmp_path, data, message):
    p = tmp_path / "bad.xlsx"
    p.write_bytes(data)
    with pytest.raises(UnreadableFileError, match=message):
        scan(p, feed(), tmp_path)


def test_a_damaged_sheet_inside_a_sound_zip_is_unreadable(tmp_path):
    p = tmp_path / "damaged.xlsx"
    with zipfile.ZipFile(HEALTH_XLSX) as src, zipfile.ZipFile(p, "w") as dst:
        for item in src.infolist():
            body = src.read(item.filename)
            dst.writestr(item, body[: len(body) // 2] if item.filename == "xl/worksheets/sheet2.xml" else body)
    with pytest.raises(UnreadableFileError, match="cannot read sheet '健康档案'"):
        scan(p, feed(sheet="健康档案"), tmp_path)
    # the other sheets still read
    assert scan(p, feed({"record_id": "档案编号"}, sheet="停用档案"), tmp_path)[1] == [("5110109999", "孙八", "死亡")]


def test_an_xls_renamed_xlsx_still_reads(tmp_path):
    p = tmp_path / "departments.xlsx"
    shutil.copy(DEPT_XLS, p)
    _, rows, _, notes = scan(p, feed(DEPT_MAPPING, dataset="department"), tmp_path)
    assert notes["workbook"] == "xls" and len(rows) == 4


@pytest.mark.parametrize("value, text", [
    ("", None), ("0101", "0101"), (" x ", " x "), (1.0, "1"), (13800138000.0, "13800138000"), (2.5, "2.5"),
    (0.1 + 0.2, "0.3"), (1e-07, "0.0000001"), (-1234.5678, "-1234.5678"), (123456789012.0, "123456789012"),
    (3, "3"), (True, "true"), (False, "false"),
    (dt.date(2026, 10, 1), "2026-10-01"), (dt.datetime(2026, 10, 1, 8, 30, 15), "2026-10-01 08:30:15"),
    (dt.datetime(2026, 10, 1, 23, 59, 59, 999_000), "2026-10-02 00:00:00"), (dt.time(8, 30), "08:30:00"),
    (dt.timedelta(hours=25, minutes=30), "25:30:00"),
])
def test_cell_text(value, text):
    assert cell_text(value) == text


def test_column_letters():
    assert [column_letter(i) for i in (0, 25, 26, 701, 702)] == ["A", "Z", "AA", "ZZ", "AAA"]


# ------------------------------------------------------------------ end to end

def write_registry(s, feeds):
    inst = {"code": "T1", "name": "椑木镇卫生院", "kind": "township_health_centre", "level": "未定级",
            "division_code": "511011", "feeds": feeds}
    s.registry.write_text(yaml.safe_dump({"institutions": [inst]}, allow_unicode=True), encoding="utf-8")


def put(s, feed_id, name, src: Path | bytes):
    p = s.landing / "T1" / feed_id / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(src if isinstance(src, bytes) else src.read_bytes())
    return p


def query(s, sql):
    con = connect(s, read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_ingest_workbook_accounts_for_every_record(lake_env):
    s = lake_env
    write_registry(s, [
        {"id": "archives", "dataset": "health_record", "format": "excel", "sheet": "健康档案", "mapping": HEALTH_MAPPING},
        {"id": "depts", "dataset": "department", "format": "excel", "mapping": DEPT_MAPPING},
    ])
    put(s, "archives", "2026-10.xlsx", HEALTH_XLSX)
    put(s, "depts", "dict.xls", DEPT_XLS)
    results = {r.feed: r for r in ingest_landing()}
    r = results["archives"]
    assert (r.status, r.rows_read, r.rows_loaded, r.rows_rejected) == ("loaded", 5, 4, 1)
    rows = query(s, "SELECT _source_row, record_id, id_number, phone, birth_date, created_date, family_doctor_id "
                    "FROM bronze.health_record ORDER BY _source_row")
    assert rows == [(1, "5110110001", "511011195803071234", "13800138000", "1958-03-07", "2019-05-12", "D001"),
                    (2, "5110110002", "51101119621130002X", "13900139000", "1962-11-30", "2025-10-04", "D001"),
                    (4, "5110110004", "511011198006150048", "0832-2345678", "1980-06-15", "2021-07-01", "D002"),
                    (5, "5110110005", "511011199012310011", "15800158000", "1990-12-31", "2022-08-08", "D002")]
    [(row, etype, reason)] = query(s, "SELECT source_row, error_type, reason FROM bronze._rejects")
    assert (row, etype) == (3, "NUMBER PRECISION LOST") and "E8" in reason
    d = results["depts"]
    assert (d.status, d.rows_read, d.rows_loaded, d.rows_rejected) == ("loaded", 4, 4, 0)
    assert query(s, "SELECT department_code, department_kind, approved_beds FROM bronze.department ORDER BY 1")[:2] == [
        ("0101", "住院", "40"), ("0102", "住院", "30")]
    [(read, loaded, rejected)] = query(s, "SELECT rows_read, rows_loaded, rows_rejected FROM ops.ingest_batch "
                                          "WHERE feed = 'archives'")
    assert read == loaded + rejected == 5


def test_bad_workbooks_fail_their_batch_and_others_load(lake_env):
    s = lake_env
    write_registry(s, [{"id": "depts", "dataset": "department", "format": "excel", "mapping": DEPT_MAPPING},
                       {"id": "archives", "dataset": "health_record", "format": "excel", "sheet": "健康档按",
                        "mapping": HEALTH_MAPPING}])
    put(s, "depts", "a_empty.xlsx", b"")
    put(s, "depts", "b_truncated.xlsx", HEALTH_XLSX.read_bytes()[:3000])
    put(s, "depts", "c_renamed.xlsx", "科室代码,科室名称\n0101,内科\n".encode())
    put(s, "depts", "d_ok.xls", DEPT_XLS)
    put(s, "archives", "wrong_sheet.xlsx", HEALTH_XLSX)
    results = {r.source_file.rsplit("/", 1)[1]: r for r in ingest_landing()}
    assert {k: r.status for k, r in results.items()} == {
        "a_empty.xlsx": "failed", "b_truncated.xlsx": "failed", "c_renamed.xlsx": "failed", "d_ok.xls": "loaded",
        "wrong_sheet.xlsx": "failed"}
    assert "0 bytes" in results["a_empty.xlsx"].error
    assert "truncated" in results["b_truncated.xlsx"].error
    assert "CSV renamed" in results["c_renamed.xlsx"].error
    assert "'健康档案'" in results["wrong_sheet.xlsx"].error
    assert query(s, "SELECT count(*) FROM bronze.department") == [(4,)]

"""dbt project end to end: a private lake with hand-written bronze and ops rows → `dbt build` → marts.

The fixture covers what institutions really send: dates in four formats (compact YYYYMMDD among
them), sex as code or Chinese text, ID numbers with spaces and a lower-case check character, an
invalid ID number, an unparseable date, a row re-sent later with a correction, and an encounter
whose patient has no record at its hospital but whose ID number is known to another institution.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from catalog.standard import bronze_ddl, datasets, get_dataset
from healthlake import lake
from healthlake.config import REPO_ROOT, settings
from healthlake.dbt import DBT_PROJECT_DIR, dbt_env

CST = timezone(timedelta(hours=8))
T0 = datetime(2024, 4, 1, 2, 0, tzinfo=CST)

OPS_DDL = (
    "CREATE TABLE IF NOT EXISTS ops.institution (institution_code VARCHAR, institution_name VARCHAR, "
    "kind VARCHAR, level VARCHAR, division_code VARCHAR, feed_count INTEGER, registered_at TIMESTAMPTZ)",
    "CREATE TABLE IF NOT EXISTS ops.ingest_batch (batch_id VARCHAR, institution_code VARCHAR, feed VARCHAR, "
    "dataset VARCHAR, format VARCHAR, encoding VARCHAR, source_file VARCHAR, sha256 VARCHAR, bytes BIGINT, "
    "rows_read BIGINT, rows_loaded BIGINT, rows_rejected BIGINT, status VARCHAR, error VARCHAR, "
    "started_at TIMESTAMPTZ, finished_at TIMESTAMPTZ)",
)

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def gb11643(prefix17: str) -> str:
    """A valid 18-character citizen ID number from its first 17 digits."""
    return prefix17 + "10X98765432"[sum(int(c) * w for c, w in zip(prefix17, _WEIGHTS)) % 11]


ID_A = gb11643("51010419800101009")      # ends in X: sent once as lower-case x with spaces
ID_C = gb11643("51010519900506002")
ID_D = gb11643("51012219700315003")
ID_E = gb11643("51010420200301004")
ID_BAD = "510104198001010000"            # check character wrong (should be 4)
assert ID_A.endswith("X") and ID_BAD != gb11643(ID_BAD[:17])

# batch id → (institution, dataset, hours after T0 it was ingested)
BATCHES = {
    "b01": ("H001", "person", 0), "b02": ("H001", "encounter", 0), "b03": ("H001", "diagnosis", 0),
    "b04": ("H001", "lab_result", 0), "b05": ("H001", "prescription", 0), "b06": ("H001", "department", 0),
    "b07": ("H001", "practitioner", 0), "b08": ("C001", "health_record", 1), "b09": ("C001", "chronic_followup", 1),
    "b10": ("CDC01", "immunization", 1),
    "b11": ("H001", "person", 24), "b12": ("H001", "encounter", 24),   # next day's re-sends
    "b13": ("H001", "maternal_child_visit", 0), "b14": ("H001", "vital_event", 0), "b15": ("H001", "exam_report", 0),
    "b16": ("H001", "equipment", 0), "b17": ("C001", "elderly_health_check", 1),
    "b18": ("H001", "procedure", 0), "b19": ("H001", "imaging_instance", 0),
}

# dataset → rows: (batch, {element: raw text})
BRONZE: dict[str, list[tuple[str, dict]]] = {
    "person": [
        ("b01", {"patient_id": "P001", "name": "张三", "sex_code": "男", "birth_date": "1980-01-01",
                 "id_type_code": "01", "id_number": ID_A, "ethnicity_code": "01", "marital_status_code": "20",
                 "phone": "13800000001", "address_division_code": "510104", "updated_at": "2024-03-01 08:00:00"}),
        ("b01", {"patient_id": " P002 ", "name": "李四", "sex_code": "2", "birth_date": "19850707",
                 "id_type_code": "1", "id_number": ID_BAD, "ethnicity_code": "汉族", "phone": "13800000002",
                 "address_division_code": "510104", "updated_at": "20240301080000"}),
        ("b01", {"patient_id": "P003", "name": "王五", "sex_code": "女", "birth_date": "1990/5/6",
                 "id_type_code": "01", "id_number": " " + ID_C[:6] + " " + ID_C[6:14] + " " + ID_C[14:],
                 "ethnicity_code": "1", "marital_status_code": "未婚", "address_division_code": "510105",
                 "updated_at": "2024-03-01"}),
        # re-sent next day: new phone, compact date, sex as code, ID with lower-case x
        ("b11", {"patient_id": "P001", "name": "张三", "sex_code": "1", "birth_date": "19800101",
                 "id_type_code": "01", "id_number": ID_A.lower(), "ethnicity_code": "01", "marital_status_code": "20",
                 "phone": "13900000009", "address_division_code": "510104", "updated_at": "20240402080000"}),
    ],
    "encounter": [
        ("b02", {"encounter_id": "E001", "patient_id": "P001", "visit_type_code": "1", "department_code": "D01",
                 "practitioner_id": "DR01", "visit_at": "2024-03-01 09:00:00", "payment_method_code": "07",
                 "total_fee": "120.50"}),
        ("b02", {"encounter_id": "E002", "patient_id": "P001", "id_number": ID_A, "visit_type_code": "住院",
                 "department_code": "D01", "practitioner_id": "DR01", "visit_at": "20240305080000",
                 "discharge_at": "2024-03-10 10:00:00", "payment_method_code": "1", "total_fee": "8,650.00"}),
        ("b02", {"encounter_id": "E003", "patient_id": "P002", "visit_type_code": "急诊", "department_code": "D02",
                 "visit_at": "2024-13-45 25:00:00", "total_fee": "免费"}),
        ("b02", {"encounter_id": "E004", "patient_id": "P999", "id_number": ID_D, "visit_type_code": "1",
                 "department_code": "D02", "visit_at": "2024/3/15 10:30"}),
        ("b02", {"encounter_id": "E005", "patient_id": "P003", "visit_type_code": "3", "department_code": "D02",
                 "visit_at": "2024-03-20 08:00:00", "discharge_at": "2024-03-20 18:00:00", "total_fee": "900"}),
        # the discharge of E002 corrected the next day
        ("b12", {"encounter_id": "E002", "patient_id": "P001", "id_number": ID_A, "visit_type_code": "住院",
                 "department_code": "D01", "practitioner_id": "DR01", "visit_at": "20240305080000",
                 "discharge_at": "2024-03-12 10:00:00", "payment_method_code": "1", "total_fee": "9,650.00"}),
    ],
    "diagnosis": [
        ("b03", {"diagnosis_id": "DX1", "encounter_id": "E002", "patient_id": "P001", "diagnosis_seq": "1",
                 "diagnosis_code": "i10 ", "diagnosis_name": "特发性（原发性）高血压", "diagnosed_at": "20240305"}),
        ("b03", {"diagnosis_id": "DX2", "encounter_id": "E002", "patient_id": "P001", "diagnosis_seq": "2",
                 "diagnosis_code": "E11.9", "diagnosis_name": "2型糖尿病"}),
        ("b03", {"diagnosis_id": "DX3", "encounter_id": "E001", "patient_id": "P001", "diagnosis_seq": "1.0",
                 "diagnosis_code": "J069", "diagnosis_name": "急性上呼吸道感染"}),
        # clinical-edition forms of known codes, a subcategory I10 does not have, and no code at all
        ("b03", {"diagnosis_id": "DX4", "encounter_id": "E005", "patient_id": "P003", "diagnosis_seq": "1",
                 "diagnosis_code": "I10.x00", "diagnosis_name": "高血压"}),
        ("b03", {"diagnosis_id": "DX5", "encounter_id": "E005", "patient_id": "P003", "diagnosis_seq": "2",
                 "diagnosis_code": "E11.900 ", "diagnosis_name": "2型糖尿病"}),
        ("b03", {"diagnosis_id": "DX6", "encounter_id": "E005", "patient_id": "P003", "diagnosis_seq": "3",
                 "diagnosis_code": "I10.9", "diagnosis_name": "高血压"}),
        ("b03", {"diagnosis_id": "DX7", "encounter_id": "E005", "patient_id": "P003", "diagnosis_seq": "4",
                 "diagnosis_code": "xyz", "diagnosis_name": "自拟编码"}),
    ],
    "lab_result": [
        ("b04", {"lab_result_id": "L1", "encounter_id": "E001", "patient_id": "P001", "item_code": "glu",
                 "item_name": "葡萄糖", "result_value": " 6.80 ", "unit": "mmol/L", "reference_range": "3.9-6.1",
                 "abnormal_flag": "↑", "reported_at": "2024-03-01 11:00:00"}),
        ("b04", {"lab_result_id": "L2", "patient_id": "P001", "item_code": "HBSAG", "item_name": "乙肝表面抗原",
                 "result_value": "阴性", "reference_range": "阴性", "abnormal_flag": "正常"}),
    ],
    "prescription": [
        ("b05", {"order_id": "O1", "encounter_id": "E001", "patient_id": "P001", "drug_code": "x001",
                 "drug_name": "阿莫西林胶囊", "dose": "0.5", "dose_unit": "g", "frequency": "tid", "days": "7",
                 "ordered_at": "2024-03-01 09:20:00"}),
        ("b05", {"order_id": "O2", "encounter_id": "E002", "patient_id": "P001", "drug_name": "硝苯地平控释片",
                 "dose": "abc", "dose_unit": "mg", "frequency": "qd", "days": "3.5"}),
    ],
    "department": [
        ("b06", {"department_code": "D01", "department_name": "心血管内科", "department_kind": "住院",
                 "approved_beds": "50", "open_beds": " 45 "}),
        ("b06", {"department_code": "D02", "department_name": "急诊科", "department_kind": "门诊",
                 "approved_beds": "", "open_beds": "十"}),
    ],
    "practitioner": [
        ("b07", {"practitioner_id": "DR01", "name": "赵医生", "sex_code": "女", "department_code": "D01",
                 "profession": "医师", "title": "主任医师", "licence_number": "110510000012345"}),
        ("b07", {"practitioner_id": "DR02", "name": "钱医生", "sex_code": "3", "department_code": "D02",
                 "profession": "医师", "title": "主治医师"}),
    ],
    "health_record": [
        ("b08", {"record_id": "R001", "name": "张三", "sex_code": "1", "birth_date": "1980-01-01",
                 "id_number": ID_A, "phone": "13800000001", "household_id": "HH01",
                 "address_division_code": "510104", "created_date": "2015-06-01", "family_doctor_id": "FD01"}),
        ("b08", {"record_id": "R002", "name": "赵六", "sex_code": "男", "birth_date": "19700315",
                 "id_number": ID_D, "household_id": "HH02", "address_division_code": "510122",
                 "created_date": "20230115", "family_doctor_id": "FD01"}),
    ],
    "chronic_followup": [
        ("b09", {"followup_id": "F1", "record_id": "R001", "id_number": ID_A, "disease_code": "I10",
                 "followup_date": "2024-01-10", "systolic_bp": "135", "diastolic_bp": "85", "practitioner_id": "FD01"}),
        ("b09", {"followup_id": "F2", "record_id": "R002", "disease_code": "e11.9", "followup_date": "20240112",
                 "fasting_glucose": "7.5", "practitioner_id": "FD01"}),
        ("b09", {"followup_id": "F3", "record_id": "R001", "disease_code": "I10", "followup_date": "2024/2/1",
                 "systolic_bp": "150", "diastolic_bp": "95"}),
    ],
    "immunization": [
        ("b10", {"immunization_id": "V1", "id_number": ID_E, "name": "小明", "birth_date": "2020-03-01",
                 "vaccine_code": "0101", "vaccine_name": "乙肝疫苗", "dose_seq": "1", "vaccinated_date": "20200302",
                 "lot_number": "L2020A", "vaccinating_institution_code": "CDC01"}),
        ("b10", {"immunization_id": "V2", "name": "无证儿童", "birth_date": "2021-05-05", "vaccine_code": "0101",
                 "dose_seq": "1", "vaccinated_date": "2021-05-06"}),
    ],
}

BRONZE.update({
    "maternal_child_visit": [
        # the first antenatal visit types the blood, sent as text
        ("b13", {"visit_id": "MV1", "id_number": ID_C, "name": "王五", "birth_date": "1990-05-06",
                 "service_type_code": "1", "visit_date": "2024-03-02", "visit_seq": "1", "gestational_weeks": "12",
                 "weight_kg": "58.5", "abo_blood_type_code": "A型", "rh_blood_type_code": "阳性"}),
        ("b13", {"visit_id": "MV2", "id_number": ID_E, "name": "小明", "birth_date": "2020-03-01",
                 "service_type_code": "04", "visit_date": "2024-03-02", "weight_kg": "16.5",
                 "abo_blood_type_code": "X型"}),
    ],
    "vital_event": [
        ("b14", {"event_id": "VB1", "event_type_code": "1", "event_at": "2024-03-03 10:00:00", "sex_code": "男",
                 "mother_id_number": ID_C, "birth_weight_g": "2400", "gestational_weeks": "37",
                 "place_division_code": "510105"}),
        ("b14", {"event_id": "VD1", "event_type_code": "死亡", "event_at": "20240325040000", "name": "赵六",
                 "sex_code": "1", "id_number": ID_D, "death_cause_code": "i21.900", "place_division_code": "510122"}),
    ],
    "exam_report": [
        ("b15", {"report_id": "X1", "encounter_id": "E002", "patient_id": "P001", "accession_number": "SQX1",
                 "exam_category": "放射",
                 "exam_item_name": "胸部X线摄影", "conclusion": "未见异常", "is_abnormal": "否",
                 "reported_at": "2024-03-06 10:00:00"}),
    ],
    "equipment": [
        ("b16", {"equipment_id": "SB0001", "equipment_name": "X射线计算机体层摄影设备（CT）", "equipment_type": "ct",
                 "department_code": "D02", "purchase_date": "2019-06-01", "status": "在用"}),
    ],
    "procedure": [
        ("b18", {"procedure_id": "PR1", "encounter_id": "E002", "patient_id": "P001", "procedure_seq": "1",
                 "procedure_code": "47001", "procedure_name": "阑尾切除术", "procedure_at": "2024-03-06 09:00:00",
                 "procedure_end_at": "2024-03-06 10:10:00"}),
        ("b18", {"procedure_id": "PR2", "encounter_id": "E002", "patient_id": "P001", "procedure_seq": "2",
                 "procedure_code": "88.8888", "procedure_name": "自定义操作"}),
    ],
    "imaging_instance": [
        ("b19", {"sop_instance_uid": "1.2.3.1.1", "study_instance_uid": "1.2.3", "series_instance_uid": "1.2.3.1",
                 "accession_number": "SQX1", "patient_id": "P001", "patient_sex": "M", "modality": "ct",
                 "study_date": "20240306", "study_time": "101500.25", "series_number": "1", "instance_number": "1",
                 "file_bytes": "39206"}),
        ("b19", {"sop_instance_uid": "1.2.3.1.2", "study_instance_uid": "1.2.3", "series_instance_uid": "1.2.3.1",
                 "accession_number": "SQX1", "patient_id": "P001", "patient_sex": "M", "modality": "CT",
                 "study_date": "20240306", "study_time": "101500.25", "series_number": "1", "instance_number": "2",
                 "file_bytes": "39206"}),
    ],
    "elderly_health_check": [
        ("b17", {"check_id": "EC1", "record_id": "R002", "id_number": ID_D, "name": "赵六", "check_date": "2024-02-20",
                 "systolic_bp": "150", "diastolic_bp": "85", "fasting_glucose": "6.1", "height_cm": "170",
                 "weight_kg": "72.3", "self_care_score": "5"}),
    ],
})

INSTITUTIONS = [
    ("H001", "市第一人民医院", "hospital", "三级甲等", "510104", 2),
    ("C001", "锦江区社区卫生服务中心", "community_health_centre", None, "510104", 1),
    ("CDC01", "市疾病预防控制中心", "cdc", None, "510100", 1),
    ("T001", "金堂县赵镇卫生院", "township_health_centre", None, "510121", 1),   # registered, never delivered
]


def build_fixture_lake() -> None:
    """Create the bronze and ops tables of the lake configured by HEALTHLAKE_ROOT and fill them."""
    con = lake.connect()
    try:
        for name in datasets():
            con.execute(bronze_ddl(name))
        for ddl in OPS_DDL:
            con.execute(ddl)
        counts: dict[str, int] = {}
        for name, rows in BRONZE.items():
            elements = get_dataset(name).element_names
            cols = elements + ["_institution_code", "_feed", "_batch_id", "_source_file", "_source_row",
                               "_ingested_at", "_row_hash"]
            for row_no, (batch, values) in enumerate(rows, start=1):
                unknown = set(values) - set(elements)
                assert not unknown, f"{name}: not data elements: {unknown}"
                inst, _, hours = BATCHES[batch]
                counts[batch] = counts.get(batch, 0) + 1
                record = [values.get(e) for e in elements] + [
                    inst, f"{inst.lower()}_his", batch, f"landing/{inst}/{batch}.csv", row_no,
                    T0 + timedelta(hours=hours), zlib.crc32(f"{batch}-{row_no}".encode())]
                con.execute(f"INSERT INTO bronze.{name} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                            record)
        for inst in INSTITUTIONS:
            con.execute("INSERT INTO ops.institution VALUES (?, ?, ?, ?, ?, ?, ?)", [*inst, T0 - timedelta(days=30)])
        for batch, (inst, dataset, hours) in BATCHES.items():
            at = T0 + timedelta(hours=hours)
            con.execute("INSERT INTO ops.ingest_batch VALUES (?, ?, ?, ?, 'csv', 'utf-8', ?, ?, 100, ?, ?, 0, "
                        "'loaded', NULL, ?, ?)",
                        [batch, inst, f"{inst.lower()}_his", dataset, f"landing/{inst}/{batch}.csv", "0" * 64,
                         counts[batch], counts[batch], at - timedelta(minutes=1), at])
        # a failed delivery does not count as data received
        con.execute("INSERT INTO ops.ingest_batch VALUES ('b99', 'T001', 't001_gw', 'person', 'csv', 'gb18030', "
                    "'landing/T001/b99.csv', NULL, 10, 0, 0, 0, 'failed', 'unreadable header', ?, ?)", [T0, T0])
    finally:
        con.close()


def run_dbt(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **dbt_env(), "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
           "DBT_LOG_PATH": str(settings().root / "dbt_logs")}
    dbt = Path(sys.executable).with_name("dbt")
    return subprocess.run([str(dbt), *args, "--project-dir", str(DBT_PROJECT_DIR)],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=1500)


@pytest.fixture(scope="module")
def built_lake(tmp_path_factory):
    root = tmp_path_factory.mktemp("dbt_lake")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HEALTHLAKE_ROOT", str(root))
        for var in ("HEALTHLAKE_CATALOG", "HEALTHLAKE_DATA_PATH", "HEALTHLAKE_S3_ENDPOINT"):
            mp.delenv(var, raising=False)
        mp.setenv("HEALTHLAKE_PERSON_KEY_SECRET", "test-secret-123")
        build_fixture_lake()
        result = run_dbt("build")
        assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
        con = lake.connect(read_only=True)
        try:
            yield con, result.stdout
        finally:
            con.close()


def rows(con, sql, *params):
    return con.execute(sql, list(params)).fetchall()


def test_sources_yaml_is_generated_from_the_standard():
    script = DBT_PROJECT_DIR / "scripts" / "gen_sources.py"
    result = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_build_passes_every_data_and_unit_test(built_lake):
    results = json.loads((settings().dbt_target_dir / "run_results.json").read_text(encoding="utf-8"))["results"]
    kinds = {r["unique_id"].split(".")[0] for r in results}
    assert {"seed", "model", "test", "unit_test"} <= kinds
    not_ok = {r["unique_id"].split(".")[2]: r["status"] for r in results if r["status"] not in ("success", "pass")}
    # the one warning is the fixture's unparseable visit time (E003): a sev_2 test warns, never fails
    assert not_ok == {"not_null_fct_encounter_visit_at": "warn"}


def test_mart_row_counts(built_lake):
    con, _ = built_lake
    expected = {
        # A (hospital + archive), C, D (archive), E (immunised child), and the EMPI's new persons for the
        # two identities no one else matches: P002 (invalid ID number) and V2 (child without an ID)
        "population.dim_person": 6,
        "population.person_identifier": 7,      # P001 P002 P003 R001 R002 V1 V2
        "emr.fct_encounter": 5,
        "emr.fct_diagnosis": 7,
        "emr.fct_lab_result": 2,
        "emr.fct_medication_order": 2,
        "health_record.dim_health_record": 2,
        "health_record.fct_chronic_followup": 3,
        "health_record.fct_immunization": 2,
        "resource.dim_institution": 4,
        "resource.dim_department": 2,
        "resource.dim_practitioner": 2,
    }
    got = {t: rows(con, f"select count(*) from lake.{t}")[0][0] for t in expected}
    assert got == expected


def test_staging_keeps_every_bronze_row(built_lake):
    con, _ = built_lake
    assert rows(con, "select count(*) from lake.staging.stg_bronze__encounters")[0][0] == 6
    assert rows(con, "select count(*) from lake.staging.stg_bronze__persons")[0][0] == 4


def test_person_golden_record_takes_the_latest_values(built_lake):
    con, _ = built_lake
    (r,) = rows(con, "select name, sex_code, birth_date::varchar, ethnicity_code, current_division_code, phone, "
                     "source_count, institution_count, last_seen_at > first_seen_at from lake.population.dim_person "
                     "where id_number = ?", ID_A)
    assert r == ("张三", "1", "1980-01-01", "01", "510104", "13900000009", 2, 2, True)


def test_person_key_is_keyed_hmac_of_the_id_number(built_lake):
    import hashlib
    import hmac

    con, _ = built_lake
    (r,) = rows(con, "select person_key from lake.population.dim_person where id_number = ?", ID_C)
    assert r == (hmac.new(b"test-secret-123", f"id:{ID_C}".encode(), hashlib.sha256).hexdigest(),)
    (r,) = rows(con, "select birth_date::varchar, sex_code, sex_name from lake.population.dim_person "
                     "where id_number = ?", ID_C)
    assert r == ("1990-05-06", "2", "女")


def test_identity_without_a_usable_id_number_is_a_new_person(built_lake):
    con, _ = built_lake
    assert rows(con, "select count(*) from lake.population.dim_person where id_number = ?", ID_BAD) == [(0,)]
    got = rows(con, "select institution_code, source_dataset, source_id, person_key is not null, match_method, "
                    "match_probability, is_valid_id_number, id_number_standardised "
                    "from lake.population.person_identifier where match_method <> 'id_number' order by source_id")
    assert got == [("H001", "person", "P002", True, "new_person", None, False, None),
                   ("CDC01", "immunization", "V2", True, "new_person", None, False, None)]
    linked = rows(con, "select distinct match_method, match_probability from lake.population.person_identifier "
                       "where match_method = 'id_number'")
    assert linked == [("id_number", 1.0)]
    assert rows(con, "select count(*) from lake.population.person_identifier where person_key is null") == [(0,)]


def test_encounters_deduplicated_typed_and_linked(built_lake):
    con, _ = built_lake
    got = {r[0]: r[1:] for r in rows(con, """
        select e.encounter_id, e.visit_type_code, e.visit_type_name, e.visit_at::varchar, e.length_of_stay_days,
               e.primary_diagnosis_code, e.total_fee, e.payment_method_code, e._batch_id, e.version_count,
               p.id_number, e.person_link_method
        from lake.emr.fct_encounter e left join lake.population.dim_person p using (person_key)""")}
    from decimal import Decimal
    assert got["E001"] == ("1", "门诊", "2024-03-01 09:00:00", None, "J06.9", Decimal("120.50"), "07", "b02", 1,
                           ID_A, "patient_id")
    # the correction sent the next day wins: discharge 12 March, 7 days
    assert got["E002"] == ("3", "住院", "2024-03-05 08:00:00", 7, "I10", Decimal("9650.00"), "01", "b12", 2,
                           ID_A, "id_number")
    # unparseable visit time and fee: null, flagged in staging, row kept; the patient (invalid ID number)
    # is a person of the EMPI without a usable ID number, linked through the hospital's patient_id
    assert got["E003"] == ("2", "急诊", None, None, None, None, None, "b02", 1, None, "patient_id")
    # no patient record at the hospital, but the ID number is known from a health archive
    assert got["E004"][2] == "2024-03-15 10:30:00" and got["E004"][-2:] == (ID_D, "id_number")
    # same-day inpatient stay counts one day
    assert got["E005"][3] == 1
    (flags,) = rows(con, "select is_valid_visit_at, is_valid_total_fee from lake.staging.stg_bronze__encounters "
                         "where encounter_id = 'E003'")
    assert flags == (False, False)


def test_health_record_marts(built_lake):
    con, _ = built_lake
    got = rows(con, "select record_id, created_date::varchar, person_key is not null from "
                    "lake.health_record.dim_health_record order by record_id")
    assert got == [("R001", "2015-06-01", True), ("R002", "2023-01-15", True)]
    got = rows(con, "select followup_id, disease_code, disease_type, followup_date::varchar, is_controlled, "
                    "person_key is not null from lake.health_record.fct_chronic_followup order by followup_id")
    assert got == [("F1", "I10", "hypertension", "2024-01-10", True, True),
                   ("F2", "E11.9", "diabetes", "2024-01-12", False, True),
                   ("F3", "I10", "hypertension", "2024-02-01", False, True)]


def test_lab_and_medication_facts(built_lake):
    con, _ = built_lake
    from decimal import Decimal
    got = rows(con, "select lab_result_id, result_value, result_value_numeric, reference_low, reference_high, "
                    "abnormal_flag, is_abnormal, encounter_key is null from lake.emr.fct_lab_result order by 1")
    assert got == [("L1", "6.80", Decimal("6.8"), Decimal("3.9"), Decimal("6.1"), "H", True, False),
                   ("L2", "阴性", None, None, None, "N", False, True)]
    got = rows(con, "select order_id, dose, days, person_key is not null from lake.emr.fct_medication_order order by 1")
    assert got == [("O1", Decimal("0.5"), 7, True), ("O2", None, None, True)]


def test_resource_marts(built_lake):
    con, _ = built_lake
    got = rows(con, "select institution_code, is_connected, batches_loaded, batches_failed, rows_loaded, "
                    "division_name from lake.resource.dim_institution order by 1")
    assert got == [("C001", True, 3, 0, 6, "锦江区"), ("CDC01", True, 1, 0, 2, "成都市"),
                   ("H001", True, 15, 0, 35, "锦江区"), ("T001", False, 0, 1, 0, "金堂县")]
    got = rows(con, "select department_code, approved_beds, open_beds from lake.resource.dim_department order by 1")
    assert got == [("D01", 50, 45), ("D02", None, None)]


def test_marts_carry_chinese_column_comments(built_lake):
    con, _ = built_lake
    (comment,) = rows(con, "select comment from duckdb_columns() where database_name = 'lake' and "
                           "schema_name = 'population' and table_name = 'dim_person' and column_name = 'person_key'")[0]
    assert comment and "个人" in comment


def test_person_key_secret_is_not_written_anywhere(built_lake):
    written = [settings().dbt_target_dir, settings().root / "dbt_logs"]
    assert all(d.is_dir() for d in written)
    leaked = [p for d in written for p in d.rglob("*") if p.is_file() and b"test-secret-123" in p.read_bytes()]
    assert not leaked


def test_icd10_codes_standardised_to_one_form_and_checked(built_lake):
    con, _ = built_lake
    got = rows(con, "select diagnosis_id, diagnosis_code, icd10_category_code, is_valid_diagnosis_code, "
                    "is_known_icd10_code from lake.emr.fct_diagnosis order by 1")
    assert got == [("DX1", "I10", "I10", True, True), ("DX2", "E11.9", "E11", True, True),
                   ("DX3", "J06.9", "J06", True, True), ("DX4", "I10", "I10", True, True),
                   ("DX5", "E11.9", "E11", True, True), ("DX6", "I10.9", "I10", True, False),
                   ("DX7", "XYZ", None, False, False)]


def test_unmapped_codes_are_kept_and_listed_per_institution_and_code_system(built_lake):
    con, _ = built_lake
    got = rows(con, "select institution_code, code_system, dataset, element, code_value, row_count "
                    "from lake.resource.unmapped_code order by all")
    assert got == [("H001", "GB/T 2261.1", "practitioner", "sex_code", "3", 1),
                   ("H001", "ICD-10", "diagnosis", "diagnosis_code", "I10.9", 1),
                   ("H001", "ICD-10", "diagnosis", "diagnosis_code", "XYZ", 1),
                   ("H001", "ICD-9-CM-3", "procedure", "procedure_code", "88.8888", 1),
                   ("H001", "WS 364 CV04.50.005", "maternal_child_visit", "abo_blood_type_code", "X型", 1),
                   ("H001", "WS/T 102", "lab_result", "item_code", "GLU", 1),
                   ("H001", "WS/T 102", "lab_result", "item_code", "HBSAG", 1)]
    # never dropped: the rows with those codes are in the marts
    assert rows(con, "select sex_code from lake.resource.dim_practitioner where practitioner_id = 'DR02'") == [("3",)]
    assert rows(con, "select count(*) from lake.emr.fct_lab_result where not is_known_lab_item") == [(2,)]


def test_retired_division_code_resolves_to_its_successor(built_lake):
    con, _ = built_lake
    got = rows(con, "select record_id, address_division_code, current_division_code, current_division_name, "
                    "is_known_division from lake.health_record.dim_health_record order by 1")
    assert got == [("R001", "510104", "510104", "锦江区", True), ("R002", "510122", "510116", "双流区", True)]


def test_public_health_and_vital_event_marts(built_lake):
    con, _ = built_lake
    from decimal import Decimal
    got = rows(con, "select visit_id, service_type_name, abo_blood_type_code, abo_blood_type_name, rh_blood_type_name, "
                    "is_known_abo_code, age_months, person_key is not null from lake.health_record.fct_maternal_child_visit "
                    "order by 1")
    assert got == [("MV1", "产前检查", "1", "A型", "Rh阳性", True, 405, True),
                   ("MV2", "儿童健康检查", "X型", None, None, False, 48, True)]
    got = rows(con, "select event_id, event_type_name, person_key is not null, mother_person_key is not null, "
                    "is_low_birth_weight, death_cause_code, is_known_death_cause_code, place_current_division_code "
                    "from lake.population.fct_vital_event order by 1")
    assert got == [("VB1", "出生", False, True, True, None, None, "510105"),
                   ("VD1", "死亡", True, False, None, "I21.9", True, "510116")]
    got = rows(con, "select check_id, bmi, is_bp_high, is_glucose_high, self_care_level, person_key is not null "
                    "from lake.health_record.fct_elderly_health_check")
    assert got == [("EC1", Decimal("25.0"), True, False, "轻度依赖", True)]
    got = rows(con, "select report_id, is_abnormal, encounter_key is not null, person_key is not null "
                    "from lake.emr.fct_exam_report")
    assert got == [("X1", False, True, True)]
    got = rows(con, "select equipment_id, equipment_type, equipment_type_name, is_large_equipment, is_in_use "
                    "from lake.resource.dim_equipment")
    assert got == [("SB0001", "CT", "X射线计算机体层摄影设备", True, True)]


def test_person_timeline_orders_events_across_institutions(built_lake):
    con, _ = built_lake
    got = rows(con, "select t.event_seq, t.event_type, t.institution_code, t.event_at::varchar "
                    "from lake.health_record.person_timeline t join lake.population.dim_person p using (person_key) "
                    "where p.id_number = ? order by t.event_seq", ID_D)
    assert got == [(1, "health_record_created", "C001", "2023-01-15 00:00:00"),
                   (2, "chronic_followup", "C001", "2024-01-12 00:00:00"),
                   (3, "elderly_health_check", "C001", "2024-02-20 00:00:00"),
                   (4, "outpatient_visit", "H001", "2024-03-15 10:30:00"),
                   (5, "death", "H001", "2024-03-25 04:00:00")]
    # a birth is on the mother's timeline
    got = rows(con, "select t.event_type from lake.health_record.person_timeline t "
                    "join lake.population.dim_person p using (person_key) where p.id_number = ? order by t.event_seq", ID_C)
    assert got == [("maternal_child_visit",), ("birth",), ("admission",), ("discharge",)]


def test_bed_capacity_counts_inpatients_at_midnight(built_lake):
    con, _ = built_lake
    got = rows(con, "select census_date::varchar, open_beds, inpatients_at_midnight, admissions, discharges "
                    "from lake.resource.fct_bed_capacity where institution_code = 'H001' order by 1")
    # E002 admitted 5 March, discharged 12 March (the corrected version); E005 in and out on 20 March
    assert got[0] == ("2024-03-05", 45, 1, 1, 0)
    assert got[-2] == ("2024-03-12", 45, 0, 0, 1)
    assert got[-1] == ("2024-03-20", 45, 0, 1, 1)
    assert len(got) == 9


def test_procedures_and_imaging_studies(built_lake):
    con, _ = built_lake
    got = rows(con, "select procedure_id, procedure_code, standard_procedure_name, is_known_procedure_code, "
                    "duration_minutes, person_key is not null from lake.emr.fct_procedure order by 1")
    assert got == [("PR1", "47.001", "阑尾切除术", True, 70, True), ("PR2", "88.8888", None, False, None, True)]
    got = rows(con, "select study_instance_uid, modalities, study_at::varchar, series_count, instance_count, total_bytes, "
                    "sex_code, person_key is not null, exam_report_key is not null from lake.emr.fct_imaging_study")
    assert got == [("1.2.3", "CT", "2024-03-06 10:15:00", 1, 2, 78412, "1", True, True)]


def test_every_mart_has_an_enforced_contract_and_chinese_column_docs():
    """Read from the project files (no dbt run): every mart model is declared with all its columns,
    each typed (the contract dbt enforces at build time) and described in Chinese."""
    import re

    import yaml

    cjk = re.compile(r"[\u4e00-\u9fff]")
    project = yaml.safe_load((DBT_PROJECT_DIR / "dbt_project.yml").read_text(encoding="utf-8"))
    assert project["models"]["healthlake"]["marts"]["+contract"] == {"enforced": True}
    marts = DBT_PROJECT_DIR / "models" / "marts"
    declared = {}
    for yml in marts.rglob("*.yml"):
        for m in (yaml.safe_load(yml.read_text(encoding="utf-8")) or {}).get("models", []):
            declared[m["name"]] = m
    models = sorted(p.stem for p in marts.rglob("*.sql"))
    assert len(models) >= 24 and set(models) <= set(declared), set(models) - set(declared)
    problems = []
    for name in models:
        m = declared[name]
        assert (m.get("config") or {}).get("contract", {}).get("enforced", True), name
        if not cjk.search(m.get("description", "")):
            problems.append((name, "model description"))
        assert m.get("columns"), name
        for c in m["columns"]:
            if not c.get("data_type"):
                problems.append((name, c["name"], "data_type"))
            if not cjk.search(c.get("description", "")):
                problems.append((name, c["name"], "description"))
    assert problems == []


def test_views_are_recreated_only_when_their_sql_changed(built_lake):
    """A run over unchanged views writes nothing to the lake (no DuckLake snapshot): each view's
    comment holds the md5 of its SQL (macros/view_unchanged.sql); a full refresh re-creates them."""
    def last_snapshot():
        c = lake.connect(read_only=True)
        try:
            return c.execute("SELECT max(snapshot_id) FROM lake.snapshots()").fetchone()[0]
        finally:
            c.close()

    views = ["--select", "stg_bronze__persons", "int_persons_deduplicated", "int_encounters_linked"]
    before = last_snapshot()
    result = run_dbt("run", *views)
    assert result.returncode == 0 and "OK created sql view model" in result.stdout, result.stdout[-3000:]
    assert last_snapshot() == before
    result = run_dbt("run", "--full-refresh", *views)
    assert result.returncode == 0, result.stdout[-3000:]
    assert last_snapshot() > before
    con = lake.connect(read_only=True)
    try:
        comments = con.execute("SELECT view_name, comment FROM duckdb_views() WHERE database_name = 'lake' "
                               "AND view_name IN ('stg_bronze__persons', 'int_encounters_linked')").fetchall()
    finally:
        con.close()
    assert len(comments) == 2 and all(c.startswith("dbt-sql-md5:") for _, c in comments), comments


def test_each_model_is_rebuilt_in_one_commit(built_lake):
    """A rebuilt view, table and incremental model each write one DuckLake snapshot (macros/one_commit.sql,
    view_unchanged.sql: the old relation dropped and the new one put in place, comments included, in
    the model's transaction), leave no temporary or backup relation behind and keep their comments."""
    def lake_state():
        c = lake.connect(read_only=True)
        try:
            return (c.execute("SELECT max(snapshot_id) FROM lake.snapshots()").fetchone()[0],
                    c.execute("SELECT table_name FROM duckdb_tables() WHERE database_name = 'lake' UNION ALL "
                              "SELECT view_name FROM duckdb_views() WHERE database_name = 'lake'").fetchall(),
                    c.execute("SELECT table_name, comment FROM duckdb_tables() WHERE database_name = 'lake' "
                              "AND table_name IN ('dim_institution', 'fct_diagnosis') UNION ALL "
                              "SELECT view_name, comment FROM duckdb_views() WHERE database_name = 'lake' "
                              "AND view_name = 'stg_bronze__persons' ORDER BY 1").fetchall(),
                    c.execute("SELECT count(*) FROM resource.dim_institution").fetchone()[0]
                    + c.execute("SELECT count(*) FROM emr.fct_diagnosis").fetchone()[0])
        finally:
            c.close()

    before, _, comments_before, rows_before = lake_state()
    result = run_dbt("run", "--full-refresh", "--select", "stg_bronze__persons", "dim_institution", "fct_diagnosis")
    assert result.returncode == 0, result.stdout[-3000:]
    _, relations, comments, rows_after = lake_state()
    c = lake.connect(read_only=True)
    try:
        new_snapshots = c.execute("SELECT count(*) FROM lake.snapshots() WHERE snapshot_id > ?", [before]).fetchone()[0]
    finally:
        c.close()
    assert new_snapshots == 3
    assert not [r for (r,) in relations if r.endswith(("__dbt_tmp", "__dbt_backup"))], relations
    assert comments == comments_before and all(c for _, c in comments), comments
    assert rows_after == rows_before


def _insert_bronze(con, dataset: str, batch: str, inst: str, at: datetime, rows_: list[dict]) -> None:
    elements = get_dataset(dataset).element_names
    cols = elements + ["_institution_code", "_feed", "_batch_id", "_source_file", "_source_row", "_ingested_at",
                       "_row_hash"]
    for n, values in enumerate(rows_, start=1):
        con.execute(f"INSERT INTO bronze.{dataset} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                    [values.get(e) for e in elements] + [inst, f"{inst.lower()}_his", batch, f"landing/{inst}/{batch}.csv",
                                                         n, at, zlib.crc32(f"{batch}-{n}".encode())])


LARGE_FACTS = {"emr.fct_encounter": "encounter_key", "emr.fct_lab_result": "lab_result_key",
               "emr.fct_medication_order": "order_key",
               # code values are counted per batch incrementally; the list and IND12 sum the counts
               "intermediate.int_code_values_by_batch": "_batch_id", "resource.unmapped_code": "unmapped_code_key",
               "indicators.fct_indicator_value": "indicator_value_key",
               # incremental by a literal batch list (the identities), by batch and by changed person links
               "intermediate.int_identities_unioned": "identity_key", "intermediate.int_identities_linked": "identity_key",
               "health_record.dim_health_record": "record_key", "population.dim_person": "person_key",
               "population.person_identifier": "identity_key", "health_record.person_timeline": "timeline_event_key",
               # by a literal batch list against the row held, and the rows held whose person link changed
               "emr.fct_diagnosis": "diagnosis_key", "emr.fct_procedure": "procedure_key",
               "emr.fct_exam_report": "exam_report_key", "health_record.fct_immunization": "immunization_key",
               "resource.dim_department": "department_key", "resource.dim_practitioner": "practitioner_key",
               "resource.dim_equipment": "equipment_key",
               # the same, re-linked by the keyed hash of the ID number the row keeps (id_number_key)
               "health_record.fct_chronic_followup": "followup_key",
               "health_record.fct_elderly_health_check": "elderly_check_key",
               "health_record.fct_maternal_child_visit": "maternal_child_visit_key",
               "population.fct_vital_event": "vital_event_key"}


def test_large_facts_build_incrementally_by_batch_and_equal_a_full_refresh(built_lake):
    """Runs last (it adds batches to the module's lake): a day's new batches — a corrected encounter,
    a new encounter with a diagnosis, a new lab result — reach the incremental facts, which then
    equal a full refresh row for row."""
    con, _ = built_lake
    con.close()   # the lake is written below; a fresh read-only connection afterwards
    at = T0 + timedelta(hours=48)
    writer = lake.connect()
    try:
        # E001 corrected: another patient (P003, 王五) — its diagnosis DX3, lab result L1 and order O1,
        # not re-sent, follow it to her person (relinked_held)
        _insert_bronze(writer, "encounter", "b20", "H001", at, [
            {"encounter_id": "E001", "patient_id": "P003", "visit_type_code": "1", "department_code": "D01",
             "practitioner_id": "DR01", "visit_at": "2024-03-01 09:00:00", "payment_method_code": "07",
             "total_fee": "99.00"},
            {"encounter_id": "E009", "patient_id": "P003", "visit_type_code": "1", "department_code": "D01",
             "visit_at": "2024-03-28 09:00:00", "total_fee": "50"}])
        _insert_bronze(writer, "diagnosis", "b21", "H001", at, [
            {"diagnosis_id": "DX9", "encounter_id": "E009", "patient_id": "P003", "diagnosis_seq": "1",
             "diagnosis_code": "J06.9", "diagnosed_at": "2024-03-28 09:10:00"}])
        _insert_bronze(writer, "lab_result", "b22", "H001", at, [
            {"lab_result_id": "L9", "encounter_id": "E009", "patient_id": "P003", "item_code": "GLU",
             "result_value": "5.1", "unit": "mmol/L", "reported_at": "2024-03-28 11:00:00"}])
        # the other facts and dimensions built from their new batches only: a new procedure, exam
        # report, practitioner and piece of equipment; a corrected vaccination and department
        _insert_bronze(writer, "procedure", "b24", "H001", at, [
            {"procedure_id": "PR3", "encounter_id": "E009", "patient_id": "P003", "procedure_seq": "1",
             "procedure_code": "47001", "procedure_name": "阑尾切除术", "procedure_at": "2024-03-28 10:00:00"}])
        _insert_bronze(writer, "exam_report", "b25", "H001", at, [
            {"report_id": "X2", "encounter_id": "E009", "patient_id": "P003", "exam_category": "超声",
             "exam_item_name": "腹部超声", "conclusion": "阑尾炎", "is_abnormal": "是",
             "reported_at": "2024-03-28 09:30:00"}])
        _insert_bronze(writer, "immunization", "b26", "CDC01", at, [
            {"immunization_id": "V1", "id_number": ID_E, "name": "小明", "birth_date": "2020-03-01",
             "vaccine_code": "0101", "vaccine_name": "乙肝疫苗", "dose_seq": "1", "vaccinated_date": "20200302",
             "lot_number": "L2020B", "vaccinating_institution_code": "CDC01"}])
        _insert_bronze(writer, "department", "b27", "H001", at, [
            {"department_code": "D01", "department_name": "心血管内科", "department_kind": "住院",
             "approved_beds": "50", "open_beds": "48"}])
        _insert_bronze(writer, "practitioner", "b28", "H001", at, [
            {"practitioner_id": "DR03", "name": "孙医生", "sex_code": "1", "department_code": "D02",
             "profession": "医师", "title": "住院医师"}])
        _insert_bronze(writer, "equipment", "b29", "H001", at, [
            {"equipment_id": "SB0002", "equipment_name": "磁共振成像设备（MRI）", "equipment_type": "mri",
             "department_code": "D02", "purchase_date": "2023-01-01", "status": "在用"}])
        # a health archive corrected (new family doctor) and a new one for 王五 (P003's ID number):
        # the EMPI links it to her person, whose golden record, identifiers and timeline change
        _insert_bronze(writer, "health_record", "b23", "C001", at, [
            {"record_id": "R001", "name": "张三", "sex_code": "1", "birth_date": "1980-01-01", "id_number": ID_A,
             "phone": "13800000001", "household_id": "HH01", "address_division_code": "510104",
             "created_date": "2015-06-01", "family_doctor_id": "FD02"},
            {"record_id": "R003", "name": "王五", "sex_code": "2", "birth_date": "1990-05-06", "id_number": ID_C,
             "phone": "13700000003", "household_id": "HH03", "address_division_code": "510105",
             "created_date": "2024-03-28", "family_doctor_id": "FD01"}])
        # public-health services and certificates: a corrected follow-up and a new one for 王五
        # (ID_C), a new elderly check for 张三, a corrected antenatal visit, a second birth to 王五;
        # the next day's move of ID_D re-links 赵六's death certificate and check (EC1, VD1)
        _insert_bronze(writer, "chronic_followup", "b31", "C001", at, [
            {"followup_id": "F3", "record_id": "R001", "disease_code": "I10", "followup_date": "2024/2/1",
             "systolic_bp": "138", "diastolic_bp": "85"},
            {"followup_id": "F4", "record_id": "R003", "id_number": ID_C, "disease_code": "E11.9",
             "followup_date": "2024-03-28", "fasting_glucose": "6.2"}])
        _insert_bronze(writer, "elderly_health_check", "b32", "C001", at, [
            {"check_id": "EC2", "record_id": "R001", "id_number": ID_A, "name": "张三", "check_date": "2024-03-20",
             "systolic_bp": "130", "diastolic_bp": "80", "self_care_score": "0"}])
        _insert_bronze(writer, "maternal_child_visit", "b33", "H001", at, [
            {"visit_id": "MV1", "id_number": ID_C, "name": "王五", "birth_date": "1990-05-06",
             "service_type_code": "1", "visit_date": "2024-03-02", "visit_seq": "1", "gestational_weeks": "12",
             "weight_kg": "59.0", "abo_blood_type_code": "A型", "rh_blood_type_code": "阳性"}])
        _insert_bronze(writer, "vital_event", "b34", "H001", at, [
            {"event_id": "VB2", "event_type_code": "1", "event_at": "2024-03-27 10:00:00", "sex_code": "女",
             "mother_id_number": ID_C, "birth_weight_g": "3100", "gestational_weeks": "39",
             "place_division_code": "510105"}])
    finally:
        writer.close()
    select = ["--select", "int_identities_unioned", "int_identities_linked", "dim_person", "person_identifier",
              "dim_health_record", "fct_encounter", "fct_diagnosis", "fct_lab_result", "fct_medication_order",
              "int_code_values_by_batch", "unmapped_code", "fct_indicator_value", "person_timeline",
              "fct_procedure", "fct_exam_report", "fct_immunization", "dim_department", "dim_practitioner",
              "dim_equipment", "fct_chronic_followup", "fct_elderly_health_check", "fct_maternal_child_visit",
              "fct_vital_event"]
    result = run_dbt("run", *select)
    assert result.returncode == 0, result.stdout[-4000:]

    def snapshot():
        c = lake.connect(read_only=True)
        try:
            return {t: sorted(c.execute(f"SELECT * {'EXCLUDE (_ingested_at) ' if t.startswith('emr') else ''}"
                                        f"FROM lake.{t} ORDER BY {k}").fetchall(),
                              key=repr) for t, k in LARGE_FACTS.items()}, c.execute(
                "SELECT encounter_id, total_fee, primary_diagnosis_code, version_count, person_key IS NOT NULL "
                "FROM lake.emr.fct_encounter WHERE encounter_id IN ('E001', 'E009') ORDER BY 1").fetchall() + c.execute(
                "SELECT h.record_id, h.family_doctor_id, p.name, p.phone, p.source_count, "
                "(SELECT count(*) FROM lake.health_record.person_timeline t WHERE t.person_key = p.person_key) "
                "FROM lake.health_record.dim_health_record h JOIN lake.population.dim_person p USING (person_key) "
                "WHERE h.record_id IN ('R001', 'R003') ORDER BY 1").fetchall()
        finally:
            c.close()

    incremental, changed = snapshot()

    def schema_version():
        c = lake.connect(read_only=True)
        try:
            return c.execute("SELECT max(schema_version) FROM lake.snapshots()").fetchone()[0]
        finally:
            c.close()

    # a run with no new batch changes nothing (batches whose rows all lost are read again: harmless),
    # and re-writes none of the marts' comments (macros/persist_docs.sql: in DuckLake each one is a
    # schema change)
    version = schema_version()
    result = run_dbt("run", "--select", "int_code_values_by_batch", "fct_diagnosis", "fct_lab_result",
                     "fct_immunization", "dim_department", "fct_vital_event", "fct_chronic_followup")
    assert result.returncode == 0, result.stdout[-4000:]
    assert snapshot()[0] == incremental
    assert schema_version() == version
    from decimal import Decimal
    assert changed[:2] == [("E001", Decimal("99.00"), "J06.9", 2, True), ("E009", Decimal("50.00"), "J06.9", 1, True)]
    # R003 joins 王五's golden record (her newest phone, two sources) and timeline
    assert [r[:3] for r in changed[2:]] == [("R001", "FD02", "张三"), ("R003", "FD01", "王五")]
    assert changed[3][3:5] == ("13700000003", 2) and changed[3][5] >= 3
    assert len(incremental["emr.fct_encounter"]) == 6 and len(incremental["emr.fct_lab_result"]) == 3
    c = lake.connect(read_only=True)
    try:   # E001's diagnosis, lab result and order, not re-sent, follow it to 王五's person
        assert c.execute("""
            SELECT count(DISTINCT person_key), count(*) FROM (
                SELECT person_key FROM lake.emr.fct_encounter WHERE encounter_id = 'E001'
                UNION ALL SELECT person_key FROM lake.emr.fct_diagnosis WHERE diagnosis_id = 'DX3'
                UNION ALL SELECT person_key FROM lake.emr.fct_lab_result WHERE lab_result_id = 'L1'
                UNION ALL SELECT person_key FROM lake.emr.fct_medication_order WHERE order_id = 'O1'
                UNION ALL SELECT person_key FROM lake.population.dim_person WHERE name = '王五')""").fetchall() == [(1, 5)]
        assert c.execute("SELECT lot_number FROM lake.health_record.fct_immunization WHERE immunization_id = 'V1'"
                         ).fetchall() == [("L2020B",)]
        assert c.execute("SELECT open_beds FROM lake.resource.dim_department WHERE department_code = 'D01'"
                         ).fetchall() == [(48,)]
        assert c.execute("SELECT count(*) FROM lake.resource.dim_practitioner").fetchall() == [(3,)]
        assert c.execute("SELECT count(*) FROM lake.resource.dim_equipment").fetchall() == [(2,)]
    finally:
        c.close()
    c = lake.connect(read_only=True)
    try:   # the new batch's unmapped lab item is counted once more; its batch counted, the old ones not again
        assert c.execute("SELECT row_count FROM lake.resource.unmapped_code WHERE code_value = 'GLU'").fetchall() == [(2,)]
        assert c.execute("SELECT count(DISTINCT _batch_id) FILTER (WHERE _batch_id IN ('b20', 'b21', 'b22')) "
                         "FROM lake.intermediate.int_code_values_by_batch").fetchall() == [(3,)]
    finally:
        c.close()
    # the next day P003 turns out to be 赵六 (ID_D), not 王五: E005, linked through the patient,
    # moves to him while 王五 stays a person (her archive R003); E004, sent with ID_D and without a
    # person so far, now has one
    writer = lake.connect()
    try:
        _insert_bronze(writer, "person", "b30", "H001", at + timedelta(hours=24), [
            {"patient_id": "P003", "name": "赵六", "sex_code": "1", "birth_date": "1970-03-15", "id_type_code": "01",
             "id_number": ID_D, "address_division_code": "510122", "updated_at": "2024-03-29 08:00:00"}])
    finally:
        writer.close()
    result = run_dbt("run", *select)
    assert result.returncode == 0, result.stdout[-4000:]
    incremental, _ = snapshot()
    c = lake.connect(read_only=True)
    try:
        moved = c.execute("SELECT encounter_id, e.person_key = p.person_key FROM lake.emr.fct_encounter e "
                          "JOIN lake.population.person_identifier p ON p.institution_code = e.institution_code "
                          "AND p.source_id = 'P003' AND p.source_dataset = 'person' "
                          "WHERE encounter_id IN ('E004', 'E005') ORDER BY 1").fetchall()
        assert moved == [("E004", True), ("E005", True)], moved
        # 赵六's death certificate and elderly check, sent with ID_D and not re-sent, found him
        relinked = c.execute("SELECT count(*) FROM (SELECT person_key FROM lake.population.fct_vital_event "
                             "WHERE event_id = 'VD1' UNION ALL SELECT person_key FROM "
                             "lake.health_record.fct_elderly_health_check WHERE check_id = 'EC1') f "
                             "JOIN lake.population.person_identifier p USING (person_key) "
                             "WHERE p.source_id = 'P003' AND p.source_dataset = 'person'").fetchone()[0]
        assert relinked == 2
    finally:
        c.close()
    result = run_dbt("run", "--full-refresh", *select)
    assert result.returncode == 0, result.stdout[-4000:]
    full, _ = snapshot()
    assert incremental == full


def test_dbt_duckdb_threads_follow_the_lake_setting(built_lake, monkeypatch):
    """dbt's DuckDB takes HEALTHLAKE_DUCKDB_THREADS like the lake's other instances (the demo sets 1:
    on its small tables a query's parallel start-up costs more than it saves), else one per core."""
    def dbt_threads():
        result = run_dbt("-q", "show", "--inline", "select current_setting('threads') as threads", "--output", "json")
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return json.loads(result.stdout)["show"][0]["threads"]

    monkeypatch.setenv("HEALTHLAKE_DUCKDB_THREADS", "1")
    assert dbt_env()["HEALTHLAKE_DBT_DUCKDB_THREADS"] == "1"
    assert dbt_threads() == 1
    monkeypatch.delenv("HEALTHLAKE_DUCKDB_THREADS")
    assert dbt_threads() == (os.cpu_count() or 1)

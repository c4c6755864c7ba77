"""What each institution sends: its feeds, their column names and value formats, and registry.yaml.

Every institution names its columns in one of three styles (pinyin initials, English, Chinese
headers), picking among usual alternatives per element, and may leave out optional elements.
Choices are hashed from the institution code, so the registry does not change with the seed.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from pathlib import Path

from healthlake.yamlfile import dump_yaml, read_yaml
from synthetic.formats import FORMAT_EXTENSION, format_of, registry_entry
from synthetic.institutions import Institution
from synthetic import services as _services

CATALOG = Path(__file__).resolve().parents[1] / "catalog" / "standard_datasets.yaml"


@lru_cache(maxsize=None)
def standard() -> dict[str, dict]:
    """dataset -> {element name: element spec}, in catalogue order."""
    data = read_yaml(CATALOG)["datasets"]
    return {ds: {e["name"]: e for e in spec["elements"]} for ds, spec in data.items()}


DATASETS_BY_KIND = {
    "hospital": ("person", "encounter", "diagnosis", "lab_result", "prescription", "department", "practitioner"),
    "maternal_child": ("person", "encounter", "diagnosis", "lab_result", "prescription", "department", "practitioner"),
    "township_health_centre": ("person", "encounter", "diagnosis", "prescription", "health_record",
                               "chronic_followup", "department", "practitioner"),
    "community_health_centre": ("person", "encounter", "diagnosis", "prescription", "health_record",
                                "chronic_followup", "department", "practitioner"),
    "cdc": ("immunization", "department", "practitioner"),
}
_FEED_IDS_HOSPITAL = {"person": "his_patient", "encounter": "his_visit", "diagnosis": "his_diag",
                      "lab_result": "lis_result", "prescription": "his_rx", "department": "dict_dept",
                      "practitioner": "dict_staff"}
_FEED_IDS_PRIMARY = {"person": "jw_patient", "encounter": "jw_visit", "diagnosis": "jw_diag",
                     "prescription": "jw_rx", "health_record": "hr_archive", "chronic_followup": "hr_followup",
                     "department": "dict_dept", "practitioner": "dict_staff"}
_FEED_IDS_CDC = {"immunization": "imm_record", "department": "dict_dept", "practitioner": "dict_staff"}
DICTIONARIES = ("department", "practitioner")

# Optional elements an institution may leave out (never keys, required elements or identity fields).
_OMITTABLE = {
    "person": ("id_type_code", "ethnicity_code", "marital_status_code", "address_division_code", "updated_at"),
    "encounter": ("id_number", "practitioner_id", "payment_method_code", "total_fee"),
    "diagnosis": ("diagnosis_seq", "diagnosed_at"),
    "lab_result": ("encounter_id",),
    "prescription": ("drug_code", "days"),
    "health_record": ("phone", "family_doctor_id"),
    "chronic_followup": ("id_number", "practitioner_id"),
    "immunization": ("lot_number",),
    "department": (),
    "practitioner": ("licence_number",),
}
_OMIT_RATE = 0.15

# element -> alternatives, per style. '{}' marks shared columns reused across data sets.
_PINYIN = {
    "person": {"patient_id": ["BRID", "BRBH"], "name": ["XM", "BRXM"], "sex_code": ["XB", "XBDM"],
               "birth_date": ["CSRQ"], "id_type_code": ["ZJLX", "ZJLB"], "id_number": ["SFZH", "ZJHM"],
               "mother_id_number": ["MQSFZH", "MQZJHM"],
               "ethnicity_code": ["MZ", "MZDM"], "marital_status_code": ["HYZK"], "phone": ["LXDH", "SJHM"],
               "address_division_code": ["XZZQH", "XZQHDM"], "address_text": ["XZZ", "JTZZ"],
               "updated_at": ["GXSJ", "XGSJ"]},
    "encounter": {"encounter_id": ["JZLSH", "JZH"], "patient_id": ["BRID"], "id_number": ["SFZH"],
                  "visit_type_code": ["JZLX", "HZLX"], "department_code": ["KSDM", "JZKS"],
                  "practitioner_id": ["YSGH", "JZYS"], "visit_at": ["JZSJ", "RYSJ"], "discharge_at": ["CYSJ"],
                  "payment_method_code": ["FYLB", "YLFKFS"], "total_fee": ["ZFY", "FYZJ"]},
    "diagnosis": {"diagnosis_id": ["ZDJLH", "ZDID"], "encounter_id": ["JZLSH"], "patient_id": ["BRID"],
                  "diagnosis_seq": ["ZDXH"], "diagnosis_code": ["ZDDM", "JBBM"], "diagnosis_name": ["ZDMC"],
                  "diagnosed_at": ["ZDSJ", "ZDRQ"]},
    "lab_result": {"lab_result_id": ["JYJGID", "BGMXID"], "encounter_id": ["JZLSH"], "patient_id": ["BRID"],
                   "item_code": ["JYXMDM", "XMDM"], "item_name": ["JYXMMC", "XMMC"], "result_value": ["JYJG", "JGZ"],
                   "unit": ["DW", "JLDW"], "reference_range": ["CKFW", "CKZ"], "abnormal_flag": ["YCBZ", "GDBZ"],
                   "reported_at": ["BGSJ"]},
    "prescription": {"order_id": ["CFMXH", "YZID"], "encounter_id": ["JZLSH"], "patient_id": ["BRID"],
                     "drug_code": ["YPDM", "YPBM"], "drug_name": ["YPMC", "TYMC"], "dose": ["DCJL", "YYJL"],
                     "dose_unit": ["JLDW"], "frequency": ["YYPC", "PC"], "days": ["YYTS", "TS"],
                     "ordered_at": ["KLSJ", "KFSJ"]},
    "health_record": {"record_id": ["DAH", "JKDABH"], "name": ["XM"], "sex_code": ["XB"], "birth_date": ["CSRQ"],
                      "id_number": ["SFZH"], "mother_id_number": ["MQSFZH"], "phone": ["LXDH", "BRDH"],
                      "household_id": ["JTDAH", "HH"],
                      "address_division_code": ["XZQHDM"], "address_text": ["XZZ", "JZDZ"],
                      "created_date": ["JDRQ"], "family_doctor_id": ["ZRYS", "JTYS"]},
    "chronic_followup": {"followup_id": ["SFID", "SFJLBH"], "record_id": ["DAH"], "id_number": ["SFZH"],
                         "disease_code": ["SFJBDM", "JBBM"], "followup_date": ["SFRQ"], "systolic_bp": ["SSY"],
                         "diastolic_bp": ["SZY"], "fasting_glucose": ["KFXT"], "practitioner_id": ["SFYS"]},
    "immunization": {"immunization_id": ["JZJLBH", "JZID"], "id_number": ["SFZH"], "mother_id_number": ["MQSFZH"],
                     "name": ["SZXM", "XM"],
                     "birth_date": ["CSRQ"], "vaccine_code": ["YMDM", "YMBM"], "vaccine_name": ["YMMC"],
                     "dose_seq": ["JZZC", "JC"], "vaccinated_date": ["JZRQ"], "lot_number": ["YMPH", "PH"],
                     "vaccinating_institution_code": ["JZDWDM", "JZDW"]},
    "department": {"department_code": ["KSDM", "KSBM"], "department_name": ["KSMC"], "department_kind": ["KSLB", "KSLX"],
                   "approved_beds": ["HDCWS", "BZCWS"], "open_beds": ["SJKFCWS", "KFCWS"]},
    "practitioner": {"practitioner_id": ["GH", "YGGH"], "name": ["XM"], "sex_code": ["XB"],
                     "department_code": ["KSDM", "SZKS"], "profession": ["ZYLB"], "title": ["ZC", "ZYJSZW"],
                     "licence_number": ["ZYZSBM", "ZSBH"]},
}
_ENGLISH = {
    "person": {"patient_id": ["patient_no", "pat_id"], "name": ["patient_name", "pat_name"], "sex_code": ["gender", "sex"],
               "birth_date": ["dob", "birth_date"], "id_type_code": ["id_type", "cert_type"],
               "id_number": ["id_card_no", "id_no"], "mother_id_number": ["mother_id_no", "mother_id_card"],
               "ethnicity_code": ["nation", "ethnic"],
               "marital_status_code": ["marital", "marriage_status"], "phone": ["mobile", "tel"],
               "address_division_code": ["area_code", "region_code"], "address_text": ["address", "home_addr"],
               "updated_at": ["update_time", "modified_at"]},
    "encounter": {"encounter_id": ["visit_no", "visit_id"], "patient_id": ["patient_no"], "id_number": ["id_card_no"],
                  "visit_type_code": ["visit_type", "pat_type"], "department_code": ["dept_code", "dept_id"],
                  "practitioner_id": ["doctor_code", "doctor_id"], "visit_at": ["visit_time", "admit_time"],
                  "discharge_at": ["discharge_time", "dis_time"], "payment_method_code": ["pay_type", "payment_code"],
                  "total_fee": ["total_cost", "total_amount"]},
    "diagnosis": {"diagnosis_id": ["diag_id", "diag_no"], "encounter_id": ["visit_no"], "patient_id": ["patient_no"],
                  "diagnosis_seq": ["diag_seq", "seq_no"], "diagnosis_code": ["icd_code", "diag_code"],
                  "diagnosis_name": ["diag_name", "icd_name"], "diagnosed_at": ["diag_time", "diag_date"]},
    "lab_result": {"lab_result_id": ["result_id", "report_item_id"], "encounter_id": ["visit_no"],
                   "patient_id": ["patient_no"], "item_code": ["test_code", "item_code"],
                   "item_name": ["test_name", "item_name"], "result_value": ["result", "value"],
                   "unit": ["units", "unit"], "reference_range": ["ref_range", "normal_range"],
                   "abnormal_flag": ["flag", "abn_flag"], "reported_at": ["report_time", "report_date"]},
    "prescription": {"order_id": ["order_no", "rx_item_id"], "encounter_id": ["visit_no"], "patient_id": ["patient_no"],
                     "drug_code": ["drug_code", "med_code"], "drug_name": ["drug_name", "generic_name"],
                     "dose": ["dosage", "dose"], "dose_unit": ["dose_unit", "dosage_unit"],
                     "frequency": ["freq", "frequency"], "days": ["days", "duration_days"],
                     "ordered_at": ["order_time", "created_at"]},
    "health_record": {"record_id": ["ehr_no", "record_no"], "name": ["name", "resident_name"], "sex_code": ["gender"],
                      "birth_date": ["dob"], "id_number": ["id_card_no"], "mother_id_number": ["mother_id_no"],
                      "phone": ["mobile", "tel"],
                      "household_id": ["family_no", "household_no"], "address_division_code": ["area_code"],
                      "address_text": ["address"], "created_date": ["create_date", "build_date"],
                      "family_doctor_id": ["gp_code", "doctor_id"]},
    "chronic_followup": {"followup_id": ["fu_id", "followup_no"], "record_id": ["ehr_no"], "id_number": ["id_card_no"],
                         "disease_code": ["disease", "icd_code"], "followup_date": ["fu_date", "visit_date"],
                         "systolic_bp": ["sbp", "systolic"], "diastolic_bp": ["dbp", "diastolic"],
                         "fasting_glucose": ["fbg", "glucose"], "practitioner_id": ["doctor_code", "fu_doctor"]},
    "immunization": {"immunization_id": ["vacc_record_id", "inoc_id"], "id_number": ["id_card_no"],
                     "mother_id_number": ["mother_id_no", "guardian_mother_id"],
                     "name": ["child_name", "name"], "birth_date": ["dob"], "vaccine_code": ["vaccine_code", "vacc_code"],
                     "vaccine_name": ["vaccine_name", "vacc_name"], "dose_seq": ["dose_no", "dose"],
                     "vaccinated_date": ["inoc_date", "vacc_date"], "lot_number": ["batch_no", "lot_no"],
                     "vaccinating_institution_code": ["inoc_unit", "site_code"]},
    "department": {"department_code": ["dept_code"], "department_name": ["dept_name"],
                   "department_kind": ["dept_type", "dept_category"], "approved_beds": ["approved_beds", "beds_approved"],
                   "open_beds": ["open_beds", "beds_open"]},
    "practitioner": {"practitioner_id": ["staff_no", "emp_code"], "name": ["staff_name", "name"], "sex_code": ["gender"],
                     "department_code": ["dept_code"], "profession": ["category", "profession"],
                     "title": ["title", "tech_title"], "licence_number": ["license_no", "cert_no"]},
}
_CHINESE = {
    "person": {"patient_id": ["患者编号", "病人ID"], "name": ["姓名", "患者姓名"], "sex_code": ["性别"],
               "birth_date": ["出生日期"], "id_type_code": ["证件类型"], "id_number": ["身份证号", "证件号码"],
               "mother_id_number": ["母亲身份证号", "母亲证件号码"],
               "ethnicity_code": ["民族"], "marital_status_code": ["婚姻状况"], "phone": ["联系电话", "手机号码"],
               "address_division_code": ["行政区划代码", "现住址区划"], "address_text": ["现住址", "家庭住址"],
               "updated_at": ["更新时间", "修改时间"]},
    "encounter": {"encounter_id": ["就诊流水号", "就诊号"], "patient_id": ["患者编号"], "id_number": ["身份证号"],
                  "visit_type_code": ["就诊类型"], "department_code": ["科室代码", "就诊科室"],
                  "practitioner_id": ["医生工号", "接诊医生"], "visit_at": ["就诊时间", "入院时间"],
                  "discharge_at": ["出院时间"], "payment_method_code": ["费用类别", "付费方式"],
                  "total_fee": ["总费用", "费用合计"]},
    "diagnosis": {"diagnosis_id": ["诊断编号", "诊断记录号"], "encounter_id": ["就诊流水号"], "patient_id": ["患者编号"],
                  "diagnosis_seq": ["诊断序号"], "diagnosis_code": ["诊断编码", "ICD编码"], "diagnosis_name": ["诊断名称"],
                  "diagnosed_at": ["诊断时间", "诊断日期"]},
    "lab_result": {"lab_result_id": ["检验明细号", "结果编号"], "encounter_id": ["就诊流水号"], "patient_id": ["患者编号"],
                   "item_code": ["项目代码", "检验项目代码"], "item_name": ["项目名称", "检验项目"],
                   "result_value": ["结果", "检验结果"], "unit": ["单位"], "reference_range": ["参考范围", "参考值"],
                   "abnormal_flag": ["异常标识", "结果标志"], "reported_at": ["报告时间"]},
    "prescription": {"order_id": ["处方明细号", "医嘱号"], "encounter_id": ["就诊流水号"], "patient_id": ["患者编号"],
                     "drug_code": ["药品编码"], "drug_name": ["药品名称", "通用名"], "dose": ["单次剂量", "每次用量"],
                     "dose_unit": ["剂量单位"], "frequency": ["频次", "用药频次"], "days": ["天数", "用药天数"],
                     "ordered_at": ["开方时间", "开立时间"]},
    "health_record": {"record_id": ["档案编号", "健康档案号"], "name": ["姓名"], "sex_code": ["性别"],
                      "birth_date": ["出生日期"], "id_number": ["身份证号"], "mother_id_number": ["母亲身份证号"],
                      "phone": ["联系电话"],
                      "household_id": ["家庭编号", "家庭档案号"], "address_division_code": ["区划代码"],
                      "address_text": ["现住址"], "created_date": ["建档日期"],
                      "family_doctor_id": ["责任医生", "签约医生工号"]},
    "chronic_followup": {"followup_id": ["随访编号"], "record_id": ["档案编号"], "id_number": ["身份证号"],
                         "disease_code": ["随访疾病", "疾病编码"], "followup_date": ["随访日期"],
                         "systolic_bp": ["收缩压"], "diastolic_bp": ["舒张压"], "fasting_glucose": ["空腹血糖"],
                         "practitioner_id": ["随访医生"]},
    "immunization": {"immunization_id": ["接种编号", "接种记录号"], "id_number": ["身份证号"],
                     "mother_id_number": ["母亲身份证号", "母亲身份证件号码"],
                     "name": ["受种者姓名", "姓名"], "birth_date": ["出生日期"], "vaccine_code": ["疫苗编码", "疫苗代码"],
                     "vaccine_name": ["疫苗名称"], "dose_seq": ["剂次", "接种剂次"], "vaccinated_date": ["接种日期"],
                     "lot_number": ["批号", "疫苗批号"], "vaccinating_institution_code": ["接种单位", "接种单位编码"]},
    "department": {"department_code": ["科室代码", "科室编码"], "department_name": ["科室名称"],
                   "department_kind": ["科室类别", "科室类型"], "approved_beds": ["核定床位", "编制床位"],
                   "open_beds": ["开放床位", "实开床位"]},
    "practitioner": {"practitioner_id": ["工号", "人员编号"], "name": ["姓名"], "sex_code": ["性别"],
                     "department_code": ["科室代码", "所在科室"], "profession": ["执业类别"],
                     "title": ["职称", "技术职务"], "licence_number": ["执业证书编码", "证书编号"]},
}
_STYLES = {"pinyin": _PINYIN, "english": _ENGLISH, "chinese": _CHINESE}
# The data sets of synthetic/services.py (exam reports, maternal-child visits, elderly checks,
# births and deaths, equipment) join the tables above.
DICTIONARIES = _services.extend_feeds(DATASETS_BY_KIND, {"hospital": _FEED_IDS_HOSPITAL, "primary": _FEED_IDS_PRIMARY},
                                      _OMITTABLE, _STYLES, DICTIONARIES)


def _h(*parts) -> int:
    return zlib.crc32("|".join(map(str, parts)).encode("utf-8"))


@dataclass
class Feed:
    inst: Institution
    id: str
    dataset: str
    elements: list[str]       # in file column order
    columns: list[str]        # header, same order
    mapping: dict[str, str]   # element -> column, in standard order
    types: list[str]          # standard type per file column
    cadence: str
    format: str = "csv"       # see synthetic/formats.py

    @property
    def encoding(self) -> str:
        """The file's encoding: the institution's for text formats; UTF-8 for JSON, FHIR, SQLite, Excel."""
        return self.inst.encoding if self.format in ("csv", "hl7v2") else "utf-8"

    @property
    def is_dictionary(self) -> bool:
        return self.dataset in DICTIONARIES

    @property
    def key_element(self) -> str:
        return next(n for n, e in standard()[self.dataset].items() if e.get("key"))

    def file_name(self, day: date) -> str:
        return f"{self.inst.code}/{self.id}/{self.id}_{day:%Y%m%d}.{FORMAT_EXTENSION[self.format]}"


def build_feeds(inst: Institution) -> list[Feed]:
    ids = {"cdc": _FEED_IDS_CDC}.get(inst.kind, _FEED_IDS_PRIMARY if inst.is_primary else _FEED_IDS_HOSPITAL)
    names = _STYLES[inst.style]
    upper = inst.style == "english" and inst.idx % 2 == 1
    feeds = []
    for ds in DATASETS_BY_KIND[inst.kind]:
        spec = standard()[ds]
        mapping = {}
        for element in spec:
            if element in _OMITTABLE[ds] and _h(inst.code, ds, element, "omit") % 1000 < _OMIT_RATE * 1000:
                continue
            if ds == "department" and element in ("approved_beds", "open_beds") and inst.kind == "cdc":
                continue  # a CDC has no beds
            alternatives = names[ds][element]
            col = alternatives[_h(inst.code, ds, element) % len(alternatives)]
            mapping[element] = col.upper() if upper else col
        if len(set(mapping.values())) != len(mapping):
            raise RuntimeError(f"{inst.code} {ds}: duplicate column names {mapping}")
        elements = list(mapping)
        if inst.shuffle:
            random.Random(_h(inst.code, ds, "order")).shuffle(elements)
        feeds.append(Feed(inst, ids[ds], ds, elements, [mapping[e] for e in elements], mapping,
                          [spec[e]["type"] for e in elements],
                          "on_change" if ds in DICTIONARIES else "daily", format_of(inst.code, ds)))
    return feeds


def registry_document(deployment: dict, institutions: list[Institution], feeds: dict[str, list[Feed]]) -> dict:
    out = []
    for inst in institutions:
        out.append({
            "code": inst.code, "name": inst.name, "kind": inst.kind, "level": inst.level,
            "division_code": inst.division,
            "feeds": [registry_entry(f, {
                "id": f.id, "dataset": f.dataset, "format": "csv", "encoding": inst.encoding, "delimiter": ",",
                "cadence": f.cadence, "mapping": dict(f.mapping),
                "value_formats": {"date": inst.date_format, "sex": inst.sex_format},
            }) for f in feeds[inst.code]],
        })
    return {"deployment": deployment, "institutions": out}


def write_registry(path: Path, document: dict) -> None:
    text = dump_yaml(document, default_flow_style=False, width=120)
    path.write_text(text, encoding="utf-8", newline="\n")

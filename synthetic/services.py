"""Services added for the four databases: exam reports (hospitals), maternal-child visits (the
妇幼保健院), elderly health checks (township and community centres), births and deaths, and the
equipment dictionary.

Every draw here comes from its own RNG stream (``rng(seed, "<service>", ...)``) and these data sets
have feeds of their own, so adding them changes no row of the original data sets and none of their
truth. Rates are realistic for a city; the daily counts have a floor so a demo city of a few
hundred residents still shows each flow (a 400-resident city would otherwise see a birth a year).
The people drawn are residents of the synthetic population: a resident who dies keeps being seen
elsewhere in the window (the population is fixed for the window), which is an accepted simplification.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING

from synthetic.rng import rng, tag

T_ABO, T_RH = tag("abo"), tag("rh")

if TYPE_CHECKING:   # pragma: no cover
    from synthetic.activity import Activity

# ------------------------------------------------------------------ feeds
DATASETS_BY_KIND = {
    "hospital": ("exam_report", "vital_event", "equipment"),
    "maternal_child": ("exam_report", "maternal_child_visit", "vital_event", "equipment"),
    "township_health_centre": ("elderly_health_check",),
    "community_health_centre": ("elderly_health_check",),
}
FEED_IDS = {"exam_report": "ris_report", "maternal_child_visit": "fy_visit", "vital_event": "cert_vital",
            "equipment": "dict_equipment", "elderly_health_check": "hr_elderly"}
DICTIONARIES = ("equipment",)
OMITTABLE = {
    "exam_report": ("accession_number", "body_part", "reporting_practitioner_id"),
    "maternal_child_visit": ("visit_seq", "height_cm"),
    "elderly_health_check": ("record_id", "self_care_score"),
    "vital_event": ("gestational_weeks",),
    "equipment": ("manufacturer", "model", "purchase_date"),
}
COLUMNS = {
    "pinyin": {
        "exam_report": {"report_id": ["BGDH"], "encounter_id": ["JZLSH"], "patient_id": ["BRID"],
                        "accession_number": ["JCSQDH"], "exam_category": ["JCLB"], "exam_item_name": ["JCXMMC"],
                        "body_part": ["JCBW"], "findings": ["JCSJ"], "conclusion": ["JCJL"], "is_abnormal": ["YCBZ"],
                        "reported_at": ["BGSJ"], "reporting_practitioner_id": ["BGYS"]},
        "maternal_child_visit": {"visit_id": ["FWJLBH"], "id_number": ["SFZH"], "name": ["XM"], "birth_date": ["CSRQ"],
                                 "service_type_code": ["FWLX"], "visit_date": ["FWRQ"], "visit_seq": ["FWCS"],
                                 "gestational_weeks": ["YZ"], "weight_kg": ["TZ"], "height_cm": ["SG"],
                                 "abo_blood_type_code": ["ABOXX"], "rh_blood_type_code": ["RHXX"],
                                 "practitioner_id": ["FWYS"]},
        "elderly_health_check": {"check_id": ["TJBH"], "record_id": ["DAH"], "id_number": ["SFZH"], "name": ["XM"],
                                 "check_date": ["TJRQ"], "systolic_bp": ["SSY"], "diastolic_bp": ["SZY"],
                                 "fasting_glucose": ["KFXT"], "height_cm": ["SG"], "weight_kg": ["TZ"],
                                 "self_care_score": ["ZLNLPF"], "practitioner_id": ["TJYS"]},
        "vital_event": {"event_id": ["ZMBH"], "event_type_code": ["SJLX"], "event_at": ["FSSJ"], "name": ["XM"],
                        "sex_code": ["XB"], "id_number": ["SFZH"], "mother_id_number": ["MQSFZH"],
                        "birth_weight_g": ["CSTZ"], "gestational_weeks": ["CSYZ"], "death_cause_code": ["GBSYBM"],
                        "place_division_code": ["HJDQH"]},
        "equipment": {"equipment_id": ["SBBH"], "equipment_name": ["SBMC"], "equipment_type": ["SBLB"],
                      "manufacturer": ["SCCJ"], "model": ["XH"], "department_code": ["SYKS"],
                      "purchase_date": ["GZRQ"], "status": ["SBZT"]},
    },
    "english": {
        "exam_report": {"report_id": ["report_no"], "encounter_id": ["visit_no"], "patient_id": ["patient_no"],
                        "accession_number": ["accession_no"], "exam_category": ["exam_class"],
                        "exam_item_name": ["exam_item"], "body_part": ["body_part"], "findings": ["findings"],
                        "conclusion": ["impression"], "is_abnormal": ["abnormal"], "reported_at": ["report_time"],
                        "reporting_practitioner_id": ["reporter_code"]},
        "maternal_child_visit": {"visit_id": ["service_no"], "id_number": ["id_card_no"], "name": ["client_name"],
                                 "birth_date": ["dob"], "service_type_code": ["service_type"],
                                 "visit_date": ["service_date"], "visit_seq": ["visit_no"],
                                 "gestational_weeks": ["gest_weeks"], "weight_kg": ["weight"], "height_cm": ["height"],
                                 "abo_blood_type_code": ["abo"], "rh_blood_type_code": ["rh"],
                                 "practitioner_id": ["doctor_code"]},
        "elderly_health_check": {"check_id": ["check_no"], "record_id": ["ehr_no"], "id_number": ["id_card_no"],
                                 "name": ["name"], "check_date": ["check_date"], "systolic_bp": ["sbp"],
                                 "diastolic_bp": ["dbp"], "fasting_glucose": ["fbg"], "height_cm": ["height"],
                                 "weight_kg": ["weight"], "self_care_score": ["adl_score"],
                                 "practitioner_id": ["doctor_code"]},
        "vital_event": {"event_id": ["cert_no"], "event_type_code": ["event_type"], "event_at": ["event_time"],
                        "name": ["name"], "sex_code": ["gender"], "id_number": ["id_card_no"],
                        "mother_id_number": ["mother_id_no"], "birth_weight_g": ["birth_weight"],
                        "gestational_weeks": ["gest_weeks"], "death_cause_code": ["cause_icd"],
                        "place_division_code": ["area_code"]},
        "equipment": {"equipment_id": ["asset_no"], "equipment_name": ["equip_name"], "equipment_type": ["equip_type"],
                      "manufacturer": ["vendor"], "model": ["model"], "department_code": ["dept_code"],
                      "purchase_date": ["purchase_date"], "status": ["status"]},
    },
    "chinese": {
        "exam_report": {"report_id": ["报告单号"], "encounter_id": ["就诊流水号"], "patient_id": ["患者编号"],
                        "accession_number": ["检查申请单号"], "exam_category": ["检查类别"], "exam_item_name": ["检查项目"],
                        "body_part": ["检查部位"], "findings": ["检查所见"], "conclusion": ["检查结论"],
                        "is_abnormal": ["是否异常"], "reported_at": ["报告时间"], "reporting_practitioner_id": ["报告医生"]},
        "maternal_child_visit": {"visit_id": ["服务编号"], "id_number": ["身份证号"], "name": ["姓名"],
                                 "birth_date": ["出生日期"], "service_type_code": ["服务类型"], "visit_date": ["服务日期"],
                                 "visit_seq": ["服务次数"], "gestational_weeks": ["孕周"], "weight_kg": ["体重"],
                                 "height_cm": ["身高"], "abo_blood_type_code": ["ABO血型"], "rh_blood_type_code": ["Rh血型"],
                                 "practitioner_id": ["服务医生"]},
        "elderly_health_check": {"check_id": ["体检编号"], "record_id": ["档案编号"], "id_number": ["身份证号"],
                                 "name": ["姓名"], "check_date": ["体检日期"], "systolic_bp": ["收缩压"],
                                 "diastolic_bp": ["舒张压"], "fasting_glucose": ["空腹血糖"], "height_cm": ["身高"],
                                 "weight_kg": ["体重"], "self_care_score": ["自理能力评分"], "practitioner_id": ["体检医生"]},
        "vital_event": {"event_id": ["证明编号"], "event_type_code": ["事件类型"], "event_at": ["发生时间"],
                        "name": ["姓名"], "sex_code": ["性别"], "id_number": ["身份证号"], "mother_id_number": ["母亲身份证号"],
                        "birth_weight_g": ["出生体重"], "gestational_weeks": ["出生孕周"], "death_cause_code": ["根本死因编码"],
                        "place_division_code": ["户籍地区划"]},
        "equipment": {"equipment_id": ["设备编号"], "equipment_name": ["设备名称"], "equipment_type": ["设备类别"],
                      "manufacturer": ["生产厂家"], "model": ["型号"], "department_code": ["使用科室"],
                      "purchase_date": ["购置日期"], "status": ["设备状态"]},
    },
}


def extend_feeds(datasets_by_kind: dict, feed_ids: dict[str, dict], omittable: dict, styles: dict,
                 dictionaries: tuple) -> tuple:
    """Add this module's data sets to the feed tables of synthetic/feeds.py (in place); return the
    extended dictionaries tuple."""
    for kind, extra in DATASETS_BY_KIND.items():
        datasets_by_kind[kind] = tuple(datasets_by_kind[kind]) + tuple(d for d in extra
                                                                       if d not in datasets_by_kind[kind])
    for ids in feed_ids.values():
        ids.update({d: f for d, f in FEED_IDS.items() if d not in ids})
    omittable.update({d: v for d, v in OMITTABLE.items() if d not in omittable})
    for style, names in styles.items():
        for d, cols in COLUMNS[style].items():
            names.setdefault(d, cols)
    return tuple(dictionaries) + tuple(d for d in DICTIONARIES if d not in dictionaries)


# ------------------------------------------------------------------ helpers
def _count(r, expected: float) -> int:
    n = int(expected)
    return n + (1 if r.random() < expected - n else 0)


def _later(t: datetime, minutes: int) -> datetime:
    return min(t + timedelta(minutes=minutes), datetime.combine(t.date(), time(23, 59, 59)))


def _draw(a: "Activity", r, fits, tries: int = 400):
    """A resident for whom ``fits(person)`` holds, or None when ``tries`` draws find none."""
    for _ in range(tries):
        p = a.pop.person(r.randrange(a.n))
        if fits(p):
            return p
    return None


def _district_code(a: "Activity", p) -> str:
    return a.pop.districts[p.district].code


def _doctor(a: "Activity", inst, r) -> str | None:
    doctors = [x for v in a.doctors[inst.code].values() for x in v]
    return r.choice(doctors) if doctors else None


# ------------------------------------------------------------------ exam reports
# main diagnosis category → (category, item, body part, abnormal conclusion)
_EXAMS = {
    "J18": ("放射", "胸部X线摄影（正位）", "胸部", "右下肺炎症"),
    "J20": ("放射", "胸部X线摄影（正位）", "胸部", "双肺纹理增粗"),
    "J44": ("放射", "胸部CT平扫", "胸部", "慢性支气管炎、肺气肿"),
    "I10": ("心电", "常规心电图", "心脏", "左心室高电压"),
    "I25": ("心电", "常规心电图", "心脏", "ST-T 改变"),
    "I48": ("心电", "常规心电图", "心脏", "心房颤动"),
    "I63": ("放射", "头颅CT平扫", "头颅", "左侧基底节区腔隙性脑梗死"),
    "K80": ("超声", "腹部彩色多普勒超声", "肝胆胰脾", "胆囊结石"),
    "K81": ("超声", "腹部彩色多普勒超声", "肝胆胰脾", "胆囊炎"),
    "K29": ("内镜", "电子胃镜检查", "胃", "慢性非萎缩性胃炎"),
    "C16": ("内镜", "电子胃镜检查", "胃", "胃窦占位，建议病理检查"),
    "S72": ("放射", "髋关节X线摄影", "髋关节", "股骨颈骨折"),
    "Z34": ("超声", "产科超声检查", "子宫及附件", "宫内妊娠，胎儿发育与孕周不符"),
    "M17": ("放射", "膝关节X线摄影", "膝关节", "膝关节退行性变"),
}
_DEFAULT_EXAM = ("心电", "常规心电图", "心脏", "窦性心动过速")
_NORMAL = {"放射": ("未见明显异常征象", "未见异常"), "心电": ("窦性心律，心电轴正常", "正常心电图"),
           "超声": ("各脏器形态大小正常，回声均匀", "未见明显异常"), "内镜": ("黏膜光滑，未见溃疡及新生物", "未见异常")}


def accession_number(prefix: str, enc_id: str) -> str:
    """An exam's accession number: the prefix and the encounter id's digits without the century
    (``SQ`` + ``2610011000123``), at most 16 characters, as DICOM's AccessionNumber (SH) allows."""
    return prefix + "".join(ch for ch in enc_id if ch.isdigit())[2:]


def exam_reports(a: "Activity", inst, p, enc_id: str, pid: str, visit_type: int, visit_at: datetime,
                 diagnoses) -> None:
    """At most one exam report per hospital encounter (inpatients usually have one)."""
    pacs = getattr(a, "pacs", None)   # the imaging study in the PACS (synthetic/pacs.py), when the city has one
    if pacs is not None:
        pacs.encounter(inst, p, pid, enc_id, visit_type, visit_at, diagnoses[0].code)
    r = rng(a.seed, "exam", inst.code, enc_id)
    if r.random() >= {1: 0.15, 2: 0.4, 3: 0.85}[visit_type]:
        return
    category, item, part, abnormal_text = _EXAMS.get(diagnoses[0].code[:3], _DEFAULT_EXAM)
    abnormal = r.random() < (0.6 if diagnoses[0].code[:3] in _EXAMS else 0.2)
    findings, conclusion = (abnormal_text, abnormal_text) if abnormal else _NORMAL[category]
    rid = f"BG{enc_id}01"
    a.sink.emit(inst, "exam_report", {
        "report_id": rid, "encounter_id": enc_id, "patient_id": pid, "accession_number": accession_number("SQ", enc_id),
        "exam_category": category, "exam_item_name": item, "body_part": part, "findings": findings,
        "conclusion": conclusion, "is_abnormal": "1" if abnormal else "0",
        "reported_at": _later(visit_at, r.randint(30, 300)), "reporting_practitioner_id": _doctor(a, inst, r)}, rid)


# ------------------------------------------------------------------ equipment
_EQUIPMENT = {  # type → (name, vendors)
    "CT": ("X射线计算机体层摄影设备（CT）", ("联影", "东软", "GE", "西门子")),
    "MR": ("磁共振成像设备（MR）", ("联影", "西门子", "飞利浦")),
    "DR": ("数字化X射线摄影系统（DR）", ("万东", "联影", "岛津")),
    "US": ("彩色多普勒超声诊断仪", ("迈瑞", "开立", "GE")),
    "DSA": ("数字减影血管造影系统（DSA）", ("西门子", "飞利浦")),
}


def equipment(a: "Activity", inst) -> None:
    r = rng(a.seed, "equipment", inst.code)
    if inst.kind == "maternal_child":
        plan = {"US": 4, "DR": 1, "CT": 1}
    elif inst.level.startswith("三级"):
        plan = {"CT": 2, "MR": 1, "DR": 2, "US": 4, "DSA": 1}
    else:
        plan = {"CT": 1, "MR": 1 if r.random() < 0.5 else 0, "DR": 1, "US": 2}
    techs = [d for d in inst.departments if d.kind == "医技"] or inst.departments
    n = 0
    for kind, count in plan.items():
        name, vendors = _EQUIPMENT[kind]
        for _ in range(count):
            n += 1
            eid = f"SB{n:04d}"
            bought = date(2012, 1, 1) + timedelta(days=r.randrange(4500))
            a.sink.emit(inst, "equipment", {
                "equipment_id": eid, "equipment_name": name, "equipment_type": kind, "manufacturer": r.choice(vendors),
                "model": f"{kind}-{r.randint(100, 990)}", "department_code": r.choice(techs).code,
                "purchase_date": bought, "status": "在用" if r.random() < 0.95 else "停用"}, eid)


# ------------------------------------------------------------------ every day
_ABO = (("A型", 28), ("B型", 31), ("O型", 30), ("AB型", 11))
_DEATH_CAUSES = ("I63.9", "I21.9", "C34.9", "J44.9", "I61.9", "C22.9", "C16.9", "I50.9", "E11.9", "J18.9")


def run_day(a: "Activity", k: int, day: date) -> None:
    _maternal_child(a, day)
    _elderly(a, day)
    _vital(a, day)


def _maternal_child(a: "Activity", day: date) -> None:
    mch = a.city.mch
    r = rng(a.seed, "mch_service", day.toordinal())
    for _ in range(_count(r, max(1.5, a.n * 0.0008))):
        x = r.random()
        if x < 0.5:
            stype = "1" if x < 0.4 else "2"
            p = _draw(a, r, lambda q: q.sex == "2" and 20 <= a.age(q, day) <= 40)
        else:
            stype = "3" if x < 0.6 else "4"
            p = _draw(a, r, (lambda q: a.age(q, day) < 1) if stype == "3" else (lambda q: a.age(q, day) < 7))
        if p is None:
            continue
        sent, defect = a.identity(mch, p)
        vid = f"FY{day:%Y%m%d}{a._next(mch.code, 'mch_service'):05d}"
        seq = r.randint(1, 5)
        adult = stype in ("1", "2")
        abo = rh = None
        if stype == "1" and seq == 1:   # the first antenatal visit types the blood
            h = a.h.u(T_ABO, p.idx)
            acc = 0.0
            for label, share in _ABO:
                acc += share / 100
                if h < acc:
                    abo = label
                    break
            rh = "Rh阴性" if a.h.u(T_RH, p.idx) < 0.004 else "Rh阳性"
        age_months = (day - p.birth).days // 30
        values = {
            "visit_id": vid, "id_number": sent, "name": p.name, "birth_date": p.birth, "service_type_code": stype,
            "visit_date": day, "visit_seq": str(seq),
            "gestational_weeks": str(r.randint(8, 40)) if stype == "1" else None,
            "weight_kg": f"{r.uniform(50, 80):.1f}" if adult else f"{3.2 + 0.45 * min(age_months, 84) ** 0.8:.1f}",
            "height_cm": f"{r.uniform(150, 172):.1f}" if adult else f"{50 + 2.2 * min(age_months, 84) ** 0.75:.1f}",
            "abo_blood_type_code": abo, "rh_blood_type_code": rh, "practitioner_id": _doctor(a, mch, r)}
        a.sink.emit(mch, "maternal_child_visit", values, vid, person_idx=p.idx, id_defect=defect)


def _elderly(a: "Activity", day: date) -> None:
    r = rng(a.seed, "elderly_check", day.toordinal())
    for _ in range(_count(r, max(1.0, a.n * 0.0008))):
        p = _draw(a, r, lambda q: a.age(q, day) >= 65)
        if p is None:
            continue
        centre = a.home_centre(p)
        sent, defect = a.identity(centre, p)
        cid = f"TJ{day:%Y%m%d}{a._next(centre.code, 'elderly_check'):05d}"
        sbp = r.randint(112, 178) if p.hypertension else r.randint(100, 142)
        values = {
            "check_id": cid, "record_id": a.record_id(p) if a.record_created(p) is not None else None,
            "id_number": sent, "name": p.name, "check_date": day, "systolic_bp": str(sbp),
            "diastolic_bp": str(min(sbp - 30, r.randint(62, 100))),
            "fasting_glucose": f"{r.uniform(6.0, 12.0) if p.diabetes else r.uniform(4.2, 6.6):.1f}",
            "height_cm": f"{r.uniform(148, 176):.1f}", "weight_kg": f"{r.uniform(42, 80):.1f}",
            "self_care_score": str(0 if r.random() < 0.8 else r.randint(1, 12)),
            "practitioner_id": a.family_doctor(centre, p)}
        a.sink.emit(centre, "elderly_health_check", values, cid, person_idx=p.idx, id_defect=defect)


def _vital(a: "Activity", day: date) -> None:
    r = rng(a.seed, "vital", day.toordinal())
    h0 = a.city.city_hospitals[0]
    for _ in range(_count(r, max(0.5, a.n * 0.000020))):      # births: ~7 per 1,000 a year
        mother = _draw(a, r, lambda q: q.sex == "2" and 20 <= a.age(q, day) <= 40)
        if mother is None:
            continue
        inst = a.city.mch if r.random() < 0.7 else h0
        sent, _ = a.identity(inst, mother)
        eid = f"CS{day:%Y%m%d}{a._next(inst.code, 'birth'):04d}"
        a.sink.emit(inst, "vital_event", {
            "event_id": eid, "event_type_code": "1",
            "event_at": datetime.combine(day, time(r.randrange(24), r.randrange(60))),
            "name": None, "sex_code": r.choice("12"), "id_number": None, "mother_id_number": sent,
            "birth_weight_g": str(int(r.gauss(3300, 420))), "gestational_weeks": str(r.choice((37, 38, 39, 39, 40, 40, 41))),
            "death_cause_code": None, "place_division_code": _district_code(a, mother)}, eid)
    for _ in range(_count(r, max(0.5, a.n * 0.000020))):      # deaths: ~7 per 1,000 a year
        p = _draw(a, r, lambda q: r.random() < (a.age(q, day) / 100) ** 3)
        if p is None:
            continue
        county = a.pop.districts[p.district].is_county
        inst = a.city.county_hospital[p.district] if county else h0
        sent, defect = a.identity(inst, p)
        eid = f"SW{day:%Y%m%d}{a._next(inst.code, 'death'):04d}"
        a.sink.emit(inst, "vital_event", {
            "event_id": eid, "event_type_code": "2",
            "event_at": datetime.combine(day, time(r.randrange(24), r.randrange(60))),
            "name": p.name, "sex_code": p.sex, "id_number": sent, "mother_id_number": None,
            "birth_weight_g": None, "gestational_weeks": None, "death_cause_code": r.choice(_DEATH_CAUSES),
            "place_division_code": _district_code(a, p)}, eid, person_idx=p.idx, id_defect=defect)

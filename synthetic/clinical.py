"""Clinical content: diagnoses (ICD-10), lab items (WS/T 102), drugs and the immunisation schedule.

Diagnosis codes and names come from the ICD-10 table in the shared reference data; the weights
below put realistic mass on the common outpatient conditions (hypertension, type 2 diabetes,
upper respiratory infections, gastritis, pneumonia ...) and spread the rest over the whole
classification (the long tail). Lab items carry their WS/T 102-1998 code and the adult reference
intervals of WS/T 404/405; drugs are common generic names with usual doses.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache

from synthetic.reference import icd10
from synthetic.rng import Weighted

# ---------------------------------------------------------------- diagnoses
_ADULT = [("I10", 14), ("E11.9", 6), ("J06.9", 9), ("K29.3", 5), ("J18.9", 3), ("J20.9", 5), ("J02.9", 3),
          ("K52.9", 2), ("A09.9", 2), ("M54.5", 3), ("M17.9", 2), ("I25.1", 3), ("I63.9", 2), ("J44.9", 2),
          ("E78.5", 3), ("N39.0", 2), ("K21.0", 1), ("H10.9", 1), ("R50.9", 1), ("K80.2", 1), ("L30.9", 1),
          ("G47.0", 1), ("M81.9", 1), ("H25.9", 1), ("K59.0", 1), ("R10.4", 1), ("I48", 1), ("N40", 1),
          ("J45.9", 1), ("I50.9", 1), ("N18.9", 0.5), ("C34.9", 0.5), ("C16.9", 0.3), ("S72.0", 0.3),
          ("K35.9", 0.4), ("K81.0", 0.4), ("G43.9", 0.5), ("F32.9", 0.3), ("E03.9", 0.5), ("J30.4", 1)]
_CHILD = [("J06.9", 22), ("J18.0", 5), ("J20.9", 6), ("A09.9", 4), ("J03.9", 4), ("R50.9", 3), ("J02.9", 3),
          ("B08.4", 1), ("L20.9", 1), ("H10.9", 1), ("K02.1", 1), ("H52.1", 1), ("Z00.1", 3), ("J45.9", 0.5),
          ("P59.9", 0.5)]
_WOMEN_MCH = [("Z34.9", 8), ("Z34.0", 3), ("N76.0", 4), ("N73.9", 2), ("N92.0", 2), ("D25.9", 2), ("N60.1", 2),
              ("O21.0", 1), ("O03.9", 0.5), ("N95.1", 1), ("N97.9", 0.5), ("Z32.1", 1), ("Z39.2", 1)]
_DELIVERIES = [("O80.0", 5), ("O80.9", 1), ("O82.0", 3), ("O82.1", 1)]
_GYNAECOLOGY = [("N76.0", 3), ("N73.9", 2), ("N92.0", 1), ("D25.9", 1), ("N60.1", 1), ("D50.9", 1)]
_LONG_TAIL_SHARE = 0.12
_LONG_TAIL_EXCLUDED = set("OPUVWXYZ")  # pregnancy, perinatal, special, external causes, factors

SPECIALTY_OF_ICD = {
    "I10": "cardio", "I11": "cardio", "I25": "cardio", "I48": "cardio", "I50": "cardio",
    "I63": "neuro", "I67": "neuro", "G43": "neuro", "G47": "neuro", "F32": "neuro",
    "J06": "resp", "J02": "ent", "J03": "ent", "J01": "ent", "J30": "ent", "J32": "ent",
    "J18": "resp", "J20": "resp", "J44": "resp", "J45": "resp", "R05": "resp",
    "K29": "gastro", "K21": "gastro", "K52": "gastro", "A09": "gastro", "K59": "gastro", "R10": "gastro",
    "K80": "surg", "K81": "surg", "K35": "surg", "C16": "onc", "C34": "onc",
    "E11": "endo", "E14": "endo", "E78": "endo", "E03": "endo", "E66": "endo",
    "N39": "nephro", "N18": "nephro", "N40": "uro",
    "M54": "ortho", "M17": "ortho", "M81": "ortho", "S72": "ortho",
    "H10": "eye", "H25": "eye", "H52": "eye", "L20": "derm", "L30": "derm", "K02": "dental",
    "N76": "gyn", "N73": "gyn", "N92": "gyn", "N95": "gyn", "N97": "gyn", "D25": "gyn", "N60": "breast",
    "O21": "obs", "O80": "obs", "D50": "gyn", "O82": "obs", "O03": "obs", "Z34": "obs", "Z32": "obs", "Z39": "obs",
    "P59": "neo", "Z00": "childcare", "B08": "peds",
}
# Fallbacks when an institution has no department of that specialty.
_FALLBACK = {"uro": "surg", "breast": "gyn", "neo": "peds", "childcare": "peds", "ent": "eye", "dental": "gp",
             "derm": "gp", "onc": "gastro", "endo": "neuro", "nephro": "cardio", "gyn": "obs", "eye": "ent",
             "obs": "gyn"}


def fits_sex(code: str, sex: str) -> bool:
    """False for female genital/breast-organ codes in men and male genital-organ codes in women."""
    c = code[:3]
    if sex == "1":
        return not ("N70" <= c <= "N98" or "C51" <= c <= "C58" or "D25" <= c <= "D28" or c[0] == "O")
    return not ("N40" <= c <= "N51" or "C60" <= c <= "C63")


@dataclass(frozen=True)
class Diagnosis:
    code: str
    name: str


class DiagnosisModel:
    def __init__(self):
        table = icd10()
        for code, _ in _ADULT + _CHILD + _WOMEN_MCH + _DELIVERIES + _GYNAECOLOGY:
            if code not in table:
                raise RuntimeError(f"diagnosis {code} is not in the ICD-10 reference table")
        self.table = table
        self.adult = Weighted(_ADULT)
        self.child = Weighted(_CHILD)
        self.women_mch = Weighted(_WOMEN_MCH)
        self.deliveries = Weighted(_DELIVERIES)
        self.gynaecology = Weighted(_GYNAECOLOGY)
        tail = [c for c in table if c[0] not in _LONG_TAIL_EXCLUDED and not c.endswith(("+", "*"))]
        self.long_tail = {sex: [c for c in tail if fits_sex(c, sex)] for sex in ("1", "2")}

    def pick(self, r: random.Random, age: int, sex: str, at_mch: bool, chronic: tuple[str, ...],
             inpatient: bool = False) -> list[Diagnosis]:
        """1-3 diagnoses, the first being the main one."""
        if at_mch and sex == "2" and 15 <= age <= 55:
            return self._pick_mch_woman(r, age, inpatient)
        n = 1 if r.random() < 0.55 else (2 if r.random() < 0.7 else 3)
        codes: list[str] = []
        if chronic and r.random() < 0.45:
            codes.append(r.choice(chronic))
        while len(codes) < n:
            if age < 14:
                c = self.child.pick(r)
            elif r.random() < _LONG_TAIL_SHARE:
                c = r.choice(self.long_tail["1" if sex == "1" else "2"])
            else:
                c = self.adult.pick(r)
            if codes and chronic and r.random() < 0.5:
                c = r.choice(chronic)
            if c not in codes and fits_sex(c, sex):
                codes.append(c)
        return [Diagnosis(c, self.table[c]) for c in codes]

    def _pick_mch_woman(self, r: random.Random, age: int, inpatient: bool) -> list[Diagnosis]:
        """Women at the maternal-child hospital: deliveries when admitted at child-bearing age,
        otherwise antenatal care or a gynaecological complaint; at most one pregnancy-state code."""
        if inpatient and 20 <= age <= 42 and r.random() < 0.7:
            codes = [self.deliveries.pick(r)]
        else:
            codes = [self.women_mch.pick(r)]
        if r.random() < 0.3:
            extra = self.gynaecology.pick(r)
            if extra not in codes:
                codes.append(extra)
        return [Diagnosis(c, self.table[c]) for c in codes]

    @staticmethod
    def specialty(code: str) -> str:
        return SPECIALTY_OF_ICD.get(code[:3], "gp")


def route(inst, specialty: str):
    """The department of ``inst`` that sees patients of ``specialty``."""
    seen = set()
    s = specialty
    while s and s not in seen:
        d = inst.dept(s)
        if d is not None:
            return d
        seen.add(s)
        s = _FALLBACK.get(s)
    for fallback in ("gp", "ward", "cardio"):
        d = inst.dept(fallback)
        if d is not None:
            return d
    return next(d for d in inst.departments if d.kind in ("门诊", "住院"))


# ---------------------------------------------------------------- lab items
@dataclass(frozen=True)
class LabItem:
    code: str          # WS/T 102-1998
    name: str
    unit: str
    low: float
    high: float
    low_f: float       # female interval where it differs
    high_f: float
    decimals: int


def _item(code, name, unit, lo, hi, decimals, lo_f=None, hi_f=None):
    return LabItem(code, name, unit, lo, hi, lo if lo_f is None else lo_f, hi if hi_f is None else hi_f, decimals)


LAB_ITEMS = {
    "WBC": _item("10100302", "白细胞计数", "10^9/L", 3.5, 9.5, 2),
    "RBC": _item("10100202", "红细胞计数", "10^12/L", 4.3, 5.8, 2, 3.8, 5.1),
    "HGB": _item("10100101", "血红蛋白", "g/L", 130, 175, 0, 115, 150),
    "PLT": _item("10101903", "血小板计数", "10^9/L", 125, 350, 0),
    "GLU": _item("30100103", "空腹血糖", "mmol/L", 3.9, 6.1, 2),
    "ALT": _item("30800102", "丙氨酸氨基转移酶", "U/L", 9, 50, 0, 7, 40),
    "AST": _item("30800203", "天门冬氨酸氨基转移酶", "U/L", 15, 40, 0, 13, 35),
    "CREA": _item("30202304", "肌酐", "μmol/L", 57, 111, 0, 41, 81),
    "UREA": _item("30202001", "尿素", "mmol/L", 3.1, 8.0, 2, 2.6, 7.5),
    "UA": _item("30202501", "尿酸", "μmol/L", 208, 428, 0, 155, 357),
    "TC": _item("30400102", "总胆固醇", "mmol/L", 2.8, 5.2, 2),
    "TG": _item("30400303", "甘油三酯", "mmol/L", 0.45, 1.7, 2),
    "K": _item("30500103", "钾", "mmol/L", 3.5, 5.3, 2),
    "NA": _item("30500302", "钠", "mmol/L", 137, 147, 1),
    "HBA1C": _item("30201102", "糖化血红蛋白", "%", 4.0, 6.0, 1),
    "CRP": _item("40200102", "C反应蛋白", "mg/L", 0, 10, 1),
}
PANELS = {
    "cbc": ("WBC", "RBC", "HGB", "PLT"),
    "chem": ("GLU", "ALT", "AST", "CREA", "UREA", "UA", "K", "NA"),
    "lipid": ("TC", "TG"),
    "dm": ("GLU", "HBA1C"),
    "inflam": ("WBC", "CRP"),
}


def lab_value(r: random.Random, item: LabItem, sex: str, abnormal_bias: float) -> tuple[str, str, str]:
    """(value, reference range, flag H/L/N). ``abnormal_bias`` > 0 pushes the value upwards
    (diabetics' glucose, infections' WBC/CRP)."""
    lo, hi = (item.low_f, item.high_f) if sex == "2" else (item.low, item.high)
    mid, half = (lo + hi) / 2, (hi - lo) / 2
    v = r.gauss(mid, half / 1.6) + abnormal_bias * half * r.uniform(0.5, 2.5)
    v = max(v, 0.0 if lo == 0 else lo * 0.3)
    value = round(v, item.decimals)
    text = f"{value:.{item.decimals}f}"
    flag = "H" if value > hi else "L" if value < lo else "N"
    rng_text = f"{lo:g}-{hi:g}"
    return text, rng_text, flag


# ---------------------------------------------------------------- drugs
@dataclass(frozen=True)
class Drug:
    code: str
    name: str
    dose: str
    unit: str
    frequency: str
    days: tuple[int, int]


DRUGS = {
    "amlodipine": Drug("YP0101", "苯磺酸氨氯地平片", "5", "mg", "qd", (14, 30)),
    "nifedipine": Drug("YP0102", "硝苯地平控释片", "30", "mg", "qd", (14, 30)),
    "irbesartan": Drug("YP0103", "厄贝沙坦片", "150", "mg", "qd", (14, 30)),
    "metformin": Drug("YP0201", "盐酸二甲双胍片", "0.5", "g", "bid", (14, 30)),
    "acarbose": Drug("YP0202", "阿卡波糖片", "50", "mg", "tid", (14, 30)),
    "glimepiride": Drug("YP0203", "格列美脲片", "2", "mg", "qd", (14, 30)),
    "amoxicillin": Drug("YP0301", "阿莫西林胶囊", "0.5", "g", "tid", (3, 7)),
    "cefixime": Drug("YP0302", "头孢克肟胶囊", "0.1", "g", "bid", (3, 7)),
    "levofloxacin": Drug("YP0303", "左氧氟沙星片", "0.5", "g", "qd", (3, 7)),
    "ibuprofen": Drug("YP0401", "布洛芬缓释胶囊", "0.3", "g", "bid", (1, 3)),
    "paracetamol": Drug("YP0402", "对乙酰氨基酚片", "0.5", "g", "prn", (1, 3)),
    "omeprazole": Drug("YP0501", "奥美拉唑肠溶胶囊", "20", "mg", "qd", (7, 14)),
    "hydrotalcite": Drug("YP0502", "铝碳酸镁咀嚼片", "1", "g", "tid", (7, 14)),
    "smectite": Drug("YP0503", "蒙脱石散", "3", "g", "tid", (2, 5)),
    "atorvastatin": Drug("YP0601", "阿托伐他汀钙片", "20", "mg", "qn", (14, 30)),
    "aspirin": Drug("YP0602", "阿司匹林肠溶片", "100", "mg", "qd", (14, 30)),
    "clopidogrel": Drug("YP0603", "硫酸氢氯吡格雷片", "75", "mg", "qd", (14, 30)),
    "ambroxol": Drug("YP0701", "盐酸氨溴索口服溶液", "30", "mg", "tid", (3, 7)),
    "budesonide": Drug("YP0702", "布地奈德福莫特罗吸入粉雾剂", "1", "吸", "bid", (14, 30)),
    "diclofenac": Drug("YP0801", "双氯芬酸钠缓释片", "75", "mg", "qd", (3, 7)),
    "calcium": Drug("YP0802", "碳酸钙D3片", "0.6", "g", "qd", (14, 30)),
    "eyedrops": Drug("YP0901", "左氧氟沙星滴眼液", "1", "滴", "qid", (5, 7)),
    "saline": Drug("YP1001", "0.9%氯化钠注射液", "250", "ml", "qd", (1, 5)),
    "ceftriaxone": Drug("YP1002", "注射用头孢曲松钠", "2", "g", "qd", (3, 7)),
    "folic": Drug("YP1101", "叶酸片", "0.4", "mg", "qd", (30, 30)),
    "metronidazole": Drug("YP1102", "甲硝唑阴道泡腾片", "0.2", "g", "qn", (7, 7)),
    "estazolam": Drug("YP1201", "艾司唑仑片", "1", "mg", "qn", (7, 14)),
}
DRUGS_FOR = {
    "I10": ("amlodipine", "nifedipine", "irbesartan"), "I11": ("amlodipine", "irbesartan"),
    "E11": ("metformin", "acarbose", "glimepiride"), "E14": ("metformin",),
    "J06": ("ibuprofen", "paracetamol", "amoxicillin"), "J02": ("amoxicillin", "ibuprofen"),
    "J03": ("amoxicillin", "cefixime"), "J18": ("levofloxacin", "ceftriaxone", "ambroxol"),
    "J20": ("amoxicillin", "ambroxol"), "J44": ("budesonide", "ambroxol"), "J45": ("budesonide",),
    "K29": ("omeprazole", "hydrotalcite"), "K21": ("omeprazole",), "K52": ("smectite",), "A09": ("smectite",),
    "E78": ("atorvastatin",), "I25": ("aspirin", "atorvastatin", "clopidogrel"),
    "I63": ("aspirin", "clopidogrel", "atorvastatin"), "M54": ("diclofenac",), "M17": ("diclofenac",),
    "M81": ("calcium",), "H10": ("eyedrops",), "N39": ("levofloxacin",), "R50": ("ibuprofen", "paracetamol"),
    "Z34": ("folic",), "N76": ("metronidazole",), "G47": ("estazolam",),
}
PANELS_FOR = {"E11": ("dm", "chem"), "E14": ("dm",), "I10": ("chem", "lipid"), "E78": ("lipid",),
              "J18": ("cbc", "inflam"), "J20": ("cbc",), "J06": ("cbc",), "A09": ("cbc",), "K52": ("cbc",),
              "N39": ("cbc", "inflam"), "I25": ("chem", "lipid"), "I63": ("chem", "lipid", "cbc"),
              "R50": ("cbc", "inflam"), "N18": ("chem",), "Z34": ("cbc",)}


# ---------------------------------------------------------------- immunisation schedule
@dataclass(frozen=True)
class Dose:
    vaccine_code: str
    vaccine_name: str
    dose_seq: int
    age_days: int      # due age (国家免疫规划儿童免疫程序, 2021 edition)
    at_birth: bool     # given at the delivery hospital


# Vaccine codes are schematic two-part codes (category + product), not an official table.
SCHEDULE = (
    Dose("0101", "卡介苗", 1, 0, True),
    Dose("0201", "乙肝疫苗", 1, 0, True),
    Dose("0201", "乙肝疫苗", 2, 30, False),
    Dose("0201", "乙肝疫苗", 3, 182, False),
    Dose("0311", "脊灰灭活疫苗", 1, 61, False),
    Dose("0311", "脊灰灭活疫苗", 2, 91, False),
    Dose("0312", "二价脊灰减毒活疫苗", 3, 122, False),
    Dose("0312", "二价脊灰减毒活疫苗", 4, 1461, False),
    Dose("0401", "百白破疫苗", 1, 91, False),
    Dose("0401", "百白破疫苗", 2, 122, False),
    Dose("0401", "百白破疫苗", 3, 152, False),
    Dose("0401", "百白破疫苗", 4, 548, False),
    Dose("1201", "麻腮风疫苗", 1, 243, False),
    Dose("1201", "麻腮风疫苗", 2, 548, False),
)
MAX_SCHEDULE_AGE_DAYS = max(d.age_days for d in SCHEDULE) + 40


@lru_cache(maxsize=None)
def diagnosis_model() -> DiagnosisModel:
    return DiagnosisModel()

"""The institutions of the city, their departments and health workers.

Institution codes are 10 characters: the 6-digit GB/T 2260 division where the institution sits,
a kind letter and a 3-digit number within (division, kind):

    H 医院 (hospital)            M 妇幼保健院 (maternal_child)    D 疾病预防控制中心 (cdc)
    T 乡镇卫生院 (township)       C 社区卫生服务中心 (community)

e.g. ``511002H001`` 内江市第一人民医院. (The national 医疗机构登记号 is 22 characters and the
unified social credit code 18; neither is derivable, so the platform uses this local code.)

What each institution sends and how (column-name style, encoding, date and sex formats, line
ends, defect profile) is fixed here, independent of the seed, so the feed registry is stable;
staff names and licence numbers depend on the seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from synthetic import names
from synthetic.geography import District
from synthetic.rng import Weighted, rng

KIND_LETTER = {"hospital": "H", "maternal_child": "M", "cdc": "D", "township_health_centre": "T",
               "community_health_centre": "C"}


@dataclass(frozen=True)
class Department:
    code: str
    name: str
    kind: str            # 门诊 / 住院 / 医技 / 公卫
    specialty: str       # routing tag (see SPECIALTY_OF_ICD in clinical.py)
    approved_beds: int | None
    open_beds: int | None


@dataclass(frozen=True)
class Practitioner:
    id: str
    name: str
    sex: str
    department_code: str
    profession: str      # 医师 / 护士 / 药师 / 技师
    title: str
    licence: str


@dataclass
class Institution:
    idx: int
    code: str
    name: str
    kind: str
    level: str
    division: str
    style: str           # column names: pinyin | english | chinese
    encoding: str        # utf-8 | utf-8-sig | gb18030
    date_format: str     # iso | compact
    sex_format: str      # code | text
    eol: str             # '\r\n' | '\n'
    profile: str         # defect profile name (defects.PROFILES)
    shuffle: bool        # columns in the institution's own order rather than the standard's
    patient_prefix: str
    id_scheme: str       # department / staff code scheme: 'num' | 'alpha' | 'zero'
    departments: list[Department] = field(default_factory=list)
    practitioners: list[Practitioner] = field(default_factory=list)

    @property
    def is_hospital(self) -> bool:
        return self.kind in ("hospital", "maternal_child")

    @property
    def is_primary(self) -> bool:
        return self.kind in ("township_health_centre", "community_health_centre")

    def dept(self, specialty: str) -> Department | None:
        for d in self.departments:
            if d.specialty == specialty:
                return d
        return None

    def doctors(self, dept_code: str) -> list[Practitioner]:
        return [p for p in self.practitioners if p.department_code == dept_code and p.profession == "医师"]


# code, name, kind, level, style, encoding, date format, sex format, line end, profile, shuffle, patient-id prefix, code scheme
_TABLE = [
    ("511002H001", "内江市第一人民医院", "hospital", "三级甲等", "pinyin", "gb18030", "iso", "code", "\r\n", "good", False, "BR", "num"),
    ("511011H001", "内江市中医医院", "hospital", "三级甲等", "chinese", "gb18030", "compact", "text", "\r\n", "fair", True, "", "zero"),
    ("511002M001", "内江市妇幼保健院", "maternal_child", "三级乙等", "english", "utf-8", "iso", "code", "\n", "clean", True, "FY", "alpha"),
    ("511002D001", "内江市疾病预防控制中心", "cdc", "未定级", "english", "utf-8-sig", "iso", "code", "\r\n", "fair", False, "", "alpha"),
    ("511024H001", "威远县人民医院", "hospital", "二级甲等", "pinyin", "gb18030", "compact", "code", "\r\n", "poor", True, "", "zero"),
    ("511025H001", "资中县人民医院", "hospital", "二级甲等", "english", "utf-8", "iso", "text", "\n", "fair", False, "ZZ", "alpha"),
    ("511083H001", "隆昌市人民医院", "hospital", "二级甲等", "chinese", "utf-8", "iso", "text", "\r\n", "good", True, "", "num"),
    ("511024T001", "威远县新场镇中心卫生院", "township_health_centre", "一级", "pinyin", "utf-8", "compact", "code", "\n", "poor", False, "", "num"),
    ("511024T002", "威远县连界镇卫生院", "township_health_centre", "一级", "chinese", "utf-8", "iso", "text", "\r\n", "fair", True, "", "zero"),
    ("511025T001", "资中县球溪镇中心卫生院", "township_health_centre", "一级", "english", "utf-8", "iso", "code", "\n", "good", False, "QX", "alpha"),
    ("511025T002", "资中县归德镇卫生院", "township_health_centre", "一级", "pinyin", "utf-8", "compact", "text", "\n", "poor", True, "", "num"),
    ("511083T001", "隆昌市云顶镇卫生院", "township_health_centre", "一级", "chinese", "utf-8-sig", "iso", "code", "\r\n", "fair", False, "", "zero"),
    ("511083T002", "隆昌市胡家镇中心卫生院", "township_health_centre", "一级", "english", "utf-8", "compact", "code", "\n", "clean", True, "HJ", "alpha"),
    ("511002C001", "市中区玉溪街道社区卫生服务中心", "community_health_centre", "一级", "pinyin", "utf-8", "iso", "code", "\n", "good", True, "", "num"),
    ("511011C001", "东兴区西林街道社区卫生服务中心", "community_health_centre", "未定级", "chinese", "utf-8", "compact", "text", "\r\n", "fair", False, "", "zero"),
]

# Departments by institution type: (name, kind, specialty, beds range or None)
_GENERAL = [
    ("心血管内科", "住院", "cardio", (50, 90)), ("呼吸与危重症医学科", "住院", "resp", (40, 80)),
    ("消化内科", "住院", "gastro", (40, 70)), ("内分泌科", "住院", "endo", (30, 50)),
    ("神经内科", "住院", "neuro", (40, 80)), ("肾内科", "住院", "nephro", (30, 50)),
    ("普通外科", "住院", "surg", (50, 90)), ("骨科", "住院", "ortho", (50, 90)),
    ("泌尿外科", "住院", "uro", (30, 50)), ("妇科", "住院", "gyn", (30, 50)),
    ("产科", "住院", "obs", (30, 60)), ("儿科", "住院", "peds", (40, 70)),
    ("眼科", "住院", "eye", (20, 35)), ("耳鼻咽喉头颈外科", "住院", "ent", (20, 35)),
    ("肿瘤科", "住院", "onc", (40, 70)), ("重症医学科", "住院", "icu", (15, 30)),
    ("康复医学科", "住院", "rehab", (30, 50)), ("中医科", "住院", "tcm", (20, 40)),
    ("急诊科", "门诊", "er", None), ("全科医学科", "门诊", "gp", None), ("皮肤科", "门诊", "derm", None),
    ("口腔科", "门诊", "dental", None), ("检验科", "医技", "lab", None), ("医学影像科", "医技", "img", None),
    ("药剂科", "医技", "pharm", None), ("预防保健科", "公卫", "prev", None),
]
_TCM = [
    ("心病科", "住院", "cardio", (40, 70)), ("肺病科", "住院", "resp", (40, 70)), ("脾胃病科", "住院", "gastro", (40, 60)),
    ("内分泌科", "住院", "endo", (25, 40)), ("脑病科", "住院", "neuro", (40, 70)), ("肾病科", "住院", "nephro", (25, 40)),
    ("普外科", "住院", "surg", (40, 60)), ("骨伤科", "住院", "ortho", (60, 100)), ("妇科", "住院", "gyn", (25, 40)),
    ("儿科", "住院", "peds", (25, 40)), ("针灸推拿科", "住院", "rehab", (30, 50)), ("治未病中心", "门诊", "tcm", None),
    ("急诊科", "门诊", "er", None), ("中医内科门诊", "门诊", "gp", None), ("眼耳鼻喉科", "门诊", "eye", None),
    ("皮肤科", "门诊", "derm", None), ("检验科", "医技", "lab", None), ("放射科", "医技", "img", None),
    ("中药房", "医技", "pharm", None), ("预防保健科", "公卫", "prev", None),
]
_COUNTY = [
    ("内科一病区（心血管）", "住院", "cardio", (40, 70)), ("内科二病区（呼吸消化）", "住院", "resp", (40, 70)),
    ("内科三病区（神经内分泌）", "住院", "neuro", (40, 60)), ("外科一病区（普外）", "住院", "surg", (40, 60)),
    ("外科二病区（骨科）", "住院", "ortho", (40, 70)), ("妇产科", "住院", "obs", (30, 50)),
    ("儿科", "住院", "peds", (30, 50)), ("五官科", "住院", "ent", (15, 25)), ("中医科", "住院", "tcm", (20, 30)),
    ("重症医学科", "住院", "icu", (8, 15)), ("急诊科", "门诊", "er", None), ("全科门诊", "门诊", "gp", None),
    ("口腔科", "门诊", "dental", None), ("检验科", "医技", "lab", None), ("放射科", "医技", "img", None),
    ("药剂科", "医技", "pharm", None), ("预防保健科", "公卫", "prev", None),
]
_MCH = [
    ("产科", "住院", "obs", (50, 90)), ("妇科", "住院", "gyn", (40, 60)), ("儿科", "住院", "peds", (40, 70)),
    ("新生儿科", "住院", "neo", (20, 40)), ("急诊科", "门诊", "er", None), ("妇女保健科", "公卫", "prev", None),
    ("儿童保健科", "公卫", "childcare", None), ("乳腺科", "门诊", "breast", None), ("检验科", "医技", "lab", None),
    ("超声科", "医技", "img", None), ("药剂科", "医技", "pharm", None),
]
_TOWNSHIP = [
    ("全科门诊", "门诊", "gp", None), ("中医科", "门诊", "tcm", None), ("住院部", "住院", "ward", (30, 70)),
    ("预防保健科", "公卫", "prev", None), ("公共卫生科", "公卫", "phc", None), ("检验科", "医技", "lab", None),
    ("药房", "医技", "pharm", None),
]
_COMMUNITY = [
    ("全科诊室", "门诊", "gp", None), ("中医科", "门诊", "tcm", None), ("康复科", "住院", "ward", (10, 20)),
    ("预防保健科", "公卫", "prev", None), ("家庭医生签约服务部", "公卫", "phc", None), ("检验科", "医技", "lab", None),
    ("药房", "医技", "pharm", None),
]
_CDC = [
    ("免疫规划科", "公卫", "imm", None), ("传染病防制科", "公卫", "cd", None), ("慢性非传染性疾病防制科", "公卫", "ncd", None),
    ("卫生检验科", "医技", "lab", None), ("健康教育科", "公卫", "he", None),
]

_TITLES = {
    "医师": ["主任医师", "副主任医师", "主治医师", "医师", "医士"],
    "护士": ["主任护师", "副主任护师", "主管护师", "护师", "护士"],
    "药师": ["主任药师", "副主任药师", "主管药师", "药师", "药士"],
    "技师": ["主任技师", "副主任技师", "主管技师", "技师", "技士"],
}
# title mix: senior, associate, intermediate, junior, assistant
_TITLE_MIX = {"tertiary": (8, 17, 35, 35, 5), "secondary": (3, 12, 38, 40, 7), "primary": (0, 4, 30, 48, 18)}


def _departments(r: random.Random, inst: Institution) -> list[Department]:
    catalogue = {"hospital": _GENERAL, "maternal_child": _MCH, "cdc": _CDC, "township_health_centre": _TOWNSHIP,
                 "community_health_centre": _COMMUNITY}[inst.kind]
    if inst.kind == "hospital":
        catalogue = _TCM if "中医" in inst.name else (_GENERAL if inst.level.startswith("三级") else _COUNTY)
    out = []
    for k, (name, kind, specialty, beds) in enumerate(catalogue):
        code = {"num": f"{101 + k}", "alpha": f"KS{k + 1:03d}", "zero": f"0{k + 1:03d}"}[inst.id_scheme]
        approved = opened = None
        if beds is not None:
            approved = r.randint(*beds)
            opened = max(1, round(approved * r.uniform(0.85, 1.12)))
        elif inst.kind != "cdc":
            approved = opened = 0
        out.append(Department(code, name, kind, specialty, approved, opened))
    return out


def _licence(r: random.Random, profession: str, title: str, dept: Department, year: int) -> str:
    if profession == "护士":   # 护士执业证书编号: year + province + serial (12 digits)
        return f"{year}51{r.randrange(10**6):06d}"
    # 医师执业证书编码 (15 digits): level (1 执业医师, 2 执业助理医师) + category (1 临床 2 中医 3 口腔
    # 4 公共卫生) + province + year + serial; 药师/技师 registration numbers use the same shape.
    level = "2" if title.endswith("士") else "1"
    category = {"tcm": "2", "dental": "3", "imm": "4", "cd": "4", "ncd": "4", "he": "4", "prev": "4",
                "phc": "4"}.get(dept.specialty, "1")
    if profession != "医师":
        category = "5" if profession == "药师" else "6"
    return f"{level}{category}51{year}{r.randrange(10**7):07d}"


def _practitioners(r: random.Random, inst: Institution) -> list[Practitioner]:
    tier = "tertiary" if inst.level.startswith("三级") else "secondary" if inst.level.startswith("二级") else "primary"
    titles = Weighted(list(enumerate(_TITLE_MIX[tier])))
    staff: list[tuple[Department, str]] = []
    for d in inst.departments:
        if d.kind == "住院":
            doctors, nurses = max(2, (d.approved_beds or 0) // 12 + r.randint(1, 3)), max(2, (d.approved_beds or 0) // 8)
        elif d.kind == "门诊":
            doctors, nurses = r.randint(2, 5), r.randint(1, 3)
        elif d.specialty == "pharm":
            staff += [(d, "药师")] * r.randint(2, 6)
            continue
        elif d.kind == "医技":
            staff += [(d, "技师")] * r.randint(2, 6)
            continue
        else:  # 公卫
            doctors, nurses = r.randint(2, 5), r.randint(1, 3)
        if inst.kind in ("township_health_centre", "community_health_centre"):
            doctors, nurses = max(2, doctors // 2 + 1), max(1, nurses // 2)
        staff += [(d, "医师")] * doctors + [(d, "护士")] * nurses
    out = []
    for k, (d, profession) in enumerate(staff):
        sex = ("2" if r.random() < 0.95 else "1") if profession == "护士" else ("1" if r.random() < 0.55 else "2")
        age = r.randint(24, 60)
        title = _TITLES[profession][titles.pick(r)]
        pid = {"num": f"{1001 + k}", "alpha": f"GH{k + 1:05d}", "zero": f"0{k + 1:04d}"}[inst.id_scheme]
        year = min(2025, 2026 - age + 23 + r.randint(0, 3))
        out.append(Practitioner(pid, names.full_name(r, sex, 2026 - age), sex, d.code, profession, title,
                                _licence(r, profession, title, d, year)))
    return out


def build_institutions(seed: int, districts: tuple[District, ...]) -> list[Institution]:
    known = {d.code for d in districts}
    out = []
    for idx, row in enumerate(_TABLE):
        code, name, kind, level, style, enc, datef, sexf, eol, profile, shuffle, prefix, scheme = row
        division = code[:6]
        if division not in known:
            raise RuntimeError(f"institution {code}: division {division} is not a division of the city")
        assert code[6] == KIND_LETTER[kind], code
        inst = Institution(idx, code, name, kind, level, division, style, enc, datef, sexf, eol, profile,
                           shuffle, prefix, scheme)
        r = rng(seed, "institution", code)
        inst.departments = _departments(r, inst)
        inst.practitioners = _practitioners(r, inst)
        out.append(inst)
    return out


class CityInstitutions:
    """Who serves whom: lookups used by the activity model."""

    def __init__(self, institutions: list[Institution], districts: tuple[District, ...]):
        self.all = institutions
        self.by_code = {i.code: i for i in institutions}
        self.city_hospitals = [i for i in institutions if i.kind == "hospital" and i.level.startswith("三级")]
        self.mch = next(i for i in institutions if i.kind == "maternal_child")
        self.cdc = next(i for i in institutions if i.kind == "cdc")
        self.county_hospital: dict[int, Institution] = {}
        self.centres: dict[tuple[int, int], Institution] = {}
        for di, d in enumerate(districts):
            local = [i for i in institutions if i.division == d.code]
            hospitals = [i for i in local if i.kind == "hospital" and not i.level.startswith("三级")]
            if hospitals:
                self.county_hospital[di] = hospitals[0]
            centres = sorted((i for i in local if i.is_primary), key=lambda i: i.code)
            for t in d.towns:
                self.centres[(di, t.centre)] = centres[t.centre]

    def centre_of(self, district: int, town_centre: int) -> Institution:
        return self.centres[(district, town_centre)]

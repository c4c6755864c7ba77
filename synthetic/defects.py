"""Known defects, injected at known rates and recorded as truth.

Two levels:

* identity level (decided once per institution × person, so every row an institution sends about
  that person carries the same defect, as a wrong master record would): ``invalid_checksum``
  (one of the first 17 digits mistyped, which MOD 11-2 always detects) and ``missing_id_number``;
* row level (drawn per row from the file's own RNG): ``missing_diagnosis_code``, ``future_date``
  (event date 1-10 years after the delivery day), ``discharge_before_admission``,
  ``unknown_sex_code`` (a value outside GB/T 2261.1), ``duplicate_row`` (an exact copy of a
  well-formed row, appended at the end of the same file) and three malformations an ingest must
  reject: ``malformed_ragged`` (an extra field), ``malformed_bad_quote`` (``"abc"x``) and
  ``malformed_undecodable`` (bytes FF FE inside a field).
"""

from __future__ import annotations

from datetime import timedelta

from synthetic.rng import Hasher, tag

DEFECTS = ("invalid_checksum", "missing_id_number", "missing_diagnosis_code", "future_date",
           "discharge_before_admission", "unknown_sex_code", "duplicate_row",
           "malformed_ragged", "malformed_bad_quote", "malformed_undecodable")
MALFORMED = ("malformed_ragged", "malformed_bad_quote", "malformed_undecodable")


def _profile(id_bad, id_missing, dx, future, discharge, sex, dup, malformed_each):
    return {"invalid_checksum": id_bad, "missing_id_number": id_missing, "missing_diagnosis_code": dx,
            "future_date": future, "discharge_before_admission": discharge, "unknown_sex_code": sex,
            "duplicate_row": dup, "malformed_ragged": malformed_each, "malformed_bad_quote": malformed_each,
            "malformed_undecodable": malformed_each}


# Rates are per identity (the two ID defects) or per row where the element is sent (the others).
PROFILES = {
    "clean": _profile(0, 0, 0, 0, 0, 0, 0, 0),
    "good": _profile(0.005, 0.005, 0.003, 0.002, 0.002, 0.002, 0.003, 0),
    "fair": _profile(0.02, 0.025, 0.02, 0.01, 0.01, 0.01, 0.01, 0.0005),
    "poor": _profile(0.05, 0.06, 0.08, 0.02, 0.03, 0.03, 0.03, 0.0007),
}

# The event date element of each data set (target of future_date).
EVENT_DATE = {"encounter": "visit_at", "diagnosis": "diagnosed_at", "lab_result": "reported_at",
              "prescription": "ordered_at", "chronic_followup": "followup_date", "immunization": "vaccinated_date"}
SEX_DATASETS = ("person", "health_record", "practitioner")
BAD_SEX = "?"  # marker; written as '3' (code style) or '不明' (text style)

T_IDDEF, T_IDPOS = tag("id_defect"), tag("id_position")


def identity_defect(h: Hasher, rates: dict, inst_idx: int, person_idx: int) -> str:
    u = h.u(T_IDDEF, inst_idx, person_idx)
    if u < rates["invalid_checksum"]:
        return "invalid_checksum"
    if u < rates["invalid_checksum"] + rates["missing_id_number"]:
        return "missing_id_number"
    return "none"


def sent_id(h: Hasher, defect: str, true_id: str, inst_idx: int, person_idx: int) -> str:
    """The identity number an institution holds: the true one, '' or one with a mistyped digit."""
    if defect == "none":
        return true_id
    if defect == "missing_id_number":
        return ""
    x = h.h(T_IDPOS, inst_idx, person_idx)
    pos = x % 17
    digit = (int(true_id[pos]) + 1 + (x >> 8) % 9) % 10
    return true_id[:pos] + str(digit) + true_id[pos + 1:]


def shift_years(value, years: int):
    """The same moment ``years`` later (29 Feb becomes 28 Feb)."""
    try:
        return value.replace(year=value.year + years)
    except ValueError:
        return value.replace(year=value.year + years, day=28)


def apply_row_defects(r, rates: dict, dataset: str, values: dict, mapped) -> list[tuple[str, str]]:
    """Mutate ``values`` with the row-level field defects drawn from ``r``; return (element, defect)."""
    found = []
    element = EVENT_DATE.get(dataset)
    if element and element in mapped and values.get(element) is not None and values.get("discharge_at") is None:
        if r.random() < rates["future_date"]:
            values[element] = shift_years(values[element], r.choice((1, 2, 5, 10)))
            found.append((element, "future_date"))
    if dataset == "encounter" and values.get("discharge_at") is not None and "discharge_at" in mapped:
        if r.random() < rates["discharge_before_admission"]:
            values["discharge_at"] = values["visit_at"] - timedelta(minutes=r.randint(60, 72 * 60))
            found.append(("discharge_at", "discharge_before_admission"))
    if dataset in SEX_DATASETS and "sex_code" in mapped:
        if r.random() < rates["unknown_sex_code"]:
            values["sex_code"] = BAD_SEX
            found.append(("sex_code", "unknown_sex_code"))
    if dataset == "diagnosis" and "diagnosis_code" in mapped:
        if r.random() < rates["missing_diagnosis_code"]:
            values["diagnosis_code"] = ""
            found.append(("diagnosis_code", "missing_diagnosis_code"))
    return found


def draw_malformed(r, rates: dict) -> str | None:
    u = r.random()
    acc = 0.0
    for kind in MALFORMED:
        acc += rates[kind]
        if u < acc:
            return kind
    return None



# ---------------------------------------------------------------------- identity variation (EMPI)
# What one institution holds about one resident may differ from the truth and from other
# institutions, decided once per institution × resident (keyed hashes):
#
# * the ID number: a mistyped digit (``invalid_checksum``), two adjacent digits swapped
#   (``transposition``), a placeholder of one repeated digit (``placeholder``; the same few numbers
#   are shared by many people), missing (``missing``), or missing because the resident is a newborn
#   without an ID yet (``newborn_missing``, at every institution that is not ``clean``). In
#   defects.csv all three malformed kinds are ``invalid_checksum`` (the check character fails, which
#   is what the quality rules see) and both missing kinds are ``missing_id_number``;
# * the name: a traditional-character variant (陈 → 陳), a homophone character (伟 → 玮), written in
#   pinyin only ("ZHANG Wei"), or with a space inside ("张 伟");
# * the phone: an old number; the address: an old one, in another division (the resident moved);
# * the mother's ID number on a child's record (under CHILD_YEARS, mother in the household): the
#   mother's number as the same institution holds it, with her defects (typo, placeholder, missing).
#
# Name, phone and address variation are not defects of the extract (no quality rule is about
# them) and are recorded only in truth/identities.csv.

T_IDKIND, T_NAMEV, T_PHONEV, T_ADDRV = tag("id_kind"), tag("name_variant"), tag("phone_variant"), tag("addr_variant")
PLACEHOLDER_IDS = ("000000000000000000", "111111111111111111", "999999999999999999")
# Shares of a malformed ID by kind: (kind, cumulative share).
_MALFORMED_KINDS = (("invalid_checksum", 0.7), ("transposition", 0.9), ("placeholder", 1.0))
NAME_VARIANT_RATES = (("traditional", 0.010), ("homophone", 0.010), ("pinyin", 0.004), ("spaced", 0.004))
PHONE_CHANGED_RATE = 0.04
ADDRESS_MOVED_RATE = 0.04
NEWBORN_DAYS = 365
# Records of children under this age carry the mother's ID number (0-6 岁儿童: 出生医学证明, 儿童保健,
# 预防接种 all name the mother) when the mother lives in the same household.
CHILD_YEARS = 7

_TRADITIONAL = dict(zip("陈张刘杨黄赵吴孙马罗郑谢许韩冯邓萧叶苏吕卢钟谭陆贾韦邹龙贺顾龚钱严汤欧国华伟丽军红兰凤东涛强兴荣贵发长宝洁梦云飞鹏辉杰静颖莹瑶诗语铭泽轩",
                        "陳張劉楊黃趙吳孫馬羅鄭謝許韓馮鄧蕭葉蘇呂盧鍾譚陸賈韋鄒龍賀顧龔錢嚴湯歐國華偉麗軍紅蘭鳳東濤強興榮貴發長寶潔夢雲飛鵬輝傑靜穎瑩瑤詩語銘澤軒"))
# Same reading (toneless pinyin), another character: what a clerk types from hearing the name.
_HOMOPHONES = {"伟": "玮", "丽": "莉", "静": "靖", "敏": "闵", "芳": "方", "军": "均", "华": "桦", "明": "铭",
               "杰": "洁", "平": "萍", "红": "虹", "英": "瑛", "玲": "铃", "霞": "夏", "燕": "艳", "勇": "永",
               "涛": "滔", "斌": "彬", "超": "潮", "辉": "晖", "鹏": "朋", "飞": "菲", "波": "博", "亮": "靓",
               "峰": "锋", "林": "琳", "云": "芸", "龙": "隆", "志": "智", "建": "健", "文": "雯", "俊": "骏",
               "浩": "昊", "宇": "雨", "轩": "萱", "晨": "辰", "睿": "锐", "欣": "馨", "怡": "仪", "涵": "晗",
               "婷": "庭", "琪": "祺", "梅": "玫", "兰": "岚", "珍": "真", "秀": "绣", "凤": "峰", "玉": "钰",
               "张": "章", "王": "汪", "李": "黎", "刘": "柳", "杨": "阳", "吴": "武", "徐": "许", "陈": "晨"}


def _transpose(true_id: str, x: int) -> str:
    digits = [i for i in range(16) if true_id[i] != true_id[i + 1]]
    i = digits[x % len(digits)]
    return true_id[:i] + true_id[i + 1] + true_id[i] + true_id[i + 2:]


class IdentityVariation:
    """How each institution holds each resident (see above). ``identity`` replaces the plain
    ``identity_defect`` + ``sent_id`` pair; ``describe`` feeds truth/identities.csv."""

    def __init__(self, h: Hasher, rates: dict, start, pop, city):
        self.h, self.rates, self.start, self.pop, self.city = h, rates, start, pop, city

    def _newborn(self, p) -> bool:
        return (self.start - p.birth).days < NEWBORN_DAYS

    def id_kind(self, inst, p) -> str:
        if inst.profile != "clean" and self._newborn(p):
            return "newborn_missing"
        d = identity_defect(self.h, self.rates[inst.code], inst.idx, p.idx)
        if d == "missing_id_number":
            return "missing"
        if d == "invalid_checksum":
            u = self.h.u(T_IDKIND, inst.idx, p.idx)
            return next(k for k, share in _MALFORMED_KINDS if u < share)
        return "none"

    def identity(self, inst, p) -> tuple[str, str]:
        """(ID number as the institution holds it, defect label of defects.csv)."""
        self._last = p     # describe() follows for the same resident: no need to regenerate it
        return self._held(inst, p)

    def mother(self, p):
        """The resident's mother when the resident is a child (under ``CHILD_YEARS`` at the start)
        whose mother lives in the same household; else None."""
        if p.mother < 0 or (self.start - p.birth).days >= CHILD_YEARS * 365:
            return None
        return self.pop.person(p.mother)

    def mother_id(self, inst, p) -> str:
        """母亲身份证件号码 as the institution holds it on the child's record: the mother's number as
        that institution holds her (so her own typos, placeholder or missing number come with it);
        '' for a resident who is not a child with a known mother."""
        m = self.mother(p)
        return "" if m is None else self._held(inst, m)[0]

    def _held(self, inst, p) -> tuple[str, str]:
        kind = self.id_kind(inst, p)
        if kind == "none":
            return p.id_number, "none"
        if kind in ("missing", "newborn_missing"):
            return "", "missing_id_number"
        if kind == "invalid_checksum":
            return sent_id(self.h, "invalid_checksum", p.id_number, inst.idx, p.idx), "invalid_checksum"
        x = self.h.h(T_IDPOS, inst.idx, p.idx)
        if kind == "transposition":
            return _transpose(p.id_number, x), "invalid_checksum"
        return PLACEHOLDER_IDS[x % len(PLACEHOLDER_IDS)], "invalid_checksum"

    def name_variant(self, inst, p) -> str:
        u = self.h.u(T_NAMEV, inst.idx, p.idx)
        acc = 0.0
        for kind, rate in NAME_VARIANT_RATES:
            acc += rate
            if u < acc:
                if kind == "traditional" and not any(c in _TRADITIONAL for c in p.name):
                    return "none"
                if kind == "homophone" and not any(c in _HOMOPHONES for c in p.name):
                    return "none"
                return kind
        return "none"

    def name(self, inst, p) -> str:
        kind = self.name_variant(inst, p)
        if kind == "traditional":
            return "".join(_TRADITIONAL.get(c, c) for c in p.name)
        if kind == "homophone":
            i = next(i for i in range(len(p.name) - 1, -1, -1) if p.name[i] in _HOMOPHONES)
            return p.name[:i] + _HOMOPHONES[p.name[i]] + p.name[i + 1:]
        if kind == "pinyin":
            from pypinyin import Style, lazy_pinyin

            n = 2 if len(p.name) > 2 and p.name[:2] in ("欧阳", "司马", "诸葛") else 1
            sur = "".join(lazy_pinyin(p.name[:n], style=Style.NORMAL))
            given = "".join(lazy_pinyin(p.name[n:], style=Style.NORMAL))
            return f"{sur.upper()} {given.capitalize()}"
        if kind == "spaced":
            return p.name[0] + " " + p.name[1:]
        return p.name

    def phone_changed(self, inst, p) -> bool:
        return bool(p.phone) and self.h.u(T_PHONEV, inst.idx, p.idx) < PHONE_CHANGED_RATE

    def phone(self, inst, p) -> str:
        if not self.phone_changed(inst, p):
            return p.phone
        return p.phone[:3] + f"{self.h.below(10**8, T_PHONEV, inst.idx, p.idx, 1):08d}"

    def address_moved(self, inst, p) -> bool:
        return self.h.u(T_ADDRV, inst.idx, p.idx) < ADDRESS_MOVED_RATE

    def address(self, inst, p) -> dict:
        """address_division_code and address_text as the institution holds them."""
        from synthetic.geography import address
        from synthetic.rng import rng

        districts = self.pop.districts
        if not self.address_moved(inst, p):
            return {"address_division_code": districts[p.district].code, "address_text": p.address}
        r = rng(self.pop.seed, "moved", inst.idx, p.idx)
        di = (p.district + 1 + r.randrange(len(districts) - 1)) % len(districts)
        d = districts[di]
        return {"address_division_code": d.code, "address_text": address(r, d, d.towns[r.randrange(len(d.towns))])}

    def describe(self, inst_code: str, person_idx: int) -> dict:
        inst = self.city.by_code[inst_code]
        last = getattr(self, "_last", None)
        p = last if last is not None and last.idx == person_idx else self.pop.person(person_idx)
        return {"id_defect": self.id_kind(inst, p), "name_sent": self.name(inst, p),
                "name_variant": self.name_variant(inst, p), "phone_changed": int(self.phone_changed(inst, p)),
                "address_moved": int(self.address_moved(inst, p)), "mother_id_sent": self.mother_id(inst, p)}

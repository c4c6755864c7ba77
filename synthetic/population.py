"""The residents: households, names, birth dates, identity numbers, phones, chronic conditions.

Memory stays bounded: residents are generated in *blocks* of six consecutive indexes, each block
from its own seeded RNG and split into 1-6 person households, so any resident can be regenerated
from its index alone. The only per-resident state kept is 4 bytes (``_codes``): birth date and
the GB 11643 sequence code, which must be unique per (birthplace, birth date, sex) and are
therefore assigned in one ordered pass (``iter_blocks``) with a counter per
(birthplace, birth year, sex): the k-th resident of a cell takes slot k of a fixed permutation
of that year's (day, sequence) pairs. Identity numbers are thus unique by construction.
"""

from __future__ import annotations

import random
from array import array
from collections import OrderedDict
from dataclasses import dataclass
from datetime import date

from synthetic import names
from synthetic.geography import MIGRANT_BIRTHPLACES, District, address, districts
from synthetic.gb11643 import make_id
from synthetic.rng import Hasher, Weighted, rng, tag

BLOCK = 6
_SLOT_STEP = 104729  # a prime above 366*450/2: steps through a year's (day, sequence) slots
# Sequence halves 0-449 for single births; 450-499 are kept for twins (born on an elder twin's date).
_SINGLE_HALVES = 450
TWIN_SHARE = 0.06    # of two-child families (~1 in 40-50 births are twins; more among second children here)

# (partition of a 6-slot block into household sizes, weight): mean household 2.5 persons, as in
# Sichuan's 2020 census (2.53 persons per family household).
_PARTITIONS = Weighted([
    ((6,), 5), ((5, 1), 10), ((4, 2), 24), ((3, 3), 22), ((4, 1, 1), 7), ((3, 2, 1), 18),
    ((2, 2, 2), 8), ((3, 1, 1, 1), 3), ((2, 2, 1, 1), 3),
])
_ETHNICITY = Weighted([("01", 985), ("07", 4), ("04", 3), ("15", 3), ("06", 2), ("03", 2), ("08", 1)])
_PHONE_PREFIXES = ("130 131 132 133 134 135 136 137 138 139 150 151 152 153 155 156 157 158 159 "
                   "166 173 176 177 178 180 181 182 183 184 185 186 187 188 189 191 198 199").split()

T_HT, T_DM, T_REC, T_RECDAY = tag("hypertension"), tag("diabetes"), tag("record"), tag("record_day")


@dataclass(slots=True)
class Raw:
    """A resident before birth date and identity number are fixed."""
    idx: int
    name: str
    sex: str           # GB/T 2261.1: '1' male, '2' female
    age: int           # age in whole years at the start date (birth year = start year - age, or one less)
    id_division: str   # birthplace: the address code of the identity number
    district: int      # index into districts()
    town: int          # index into the district's towns
    household_id: str
    household_size: int
    address: str
    phone: str
    ethnicity: str
    marital: str       # GB/T 2261.2: 10 未婚 20 已婚 30 丧偶 40 离婚 90 未说明
    twin_of: int = -1  # index of the elder twin (same birth date, birthplace and home; another name)
    mother: int = -1   # index of the mother when she lives in the same household (else -1)


@dataclass(slots=True)
class Person:
    idx: int
    uid: str
    name: str
    sex: str
    birth: date
    id_number: str
    id_division: str
    district: int
    town: int
    household_id: str
    household_size: int
    address: str
    phone: str
    ethnicity: str
    marital: str
    hypertension: bool
    diabetes: bool
    twin_of: int = -1
    mother: int = -1   # the mother's index when she is a resident of the same household


def person_uid(idx: int) -> str:
    return f"P{idx + 1:09d}"


def _ht_prevalence(age: int) -> float:
    # China Hypertension Survey 2012-2015 shape; ~25 % of adults aged 35+ in this age mix
    if age < 35:
        return 0.0
    return 0.08 if age < 45 else 0.17 if age < 55 else 0.27 if age < 65 else 0.36 if age < 75 else 0.42


def _dm_prevalence(age: int) -> float:
    # ~10 % of adults aged 35+
    if age < 35:
        return 0.0
    return 0.04 if age < 45 else 0.08 if age < 55 else 0.12 if age < 65 else 0.15


class Population:
    def __init__(self, residents: int, seed: int, start: date, hasher: Hasher, cache_blocks: int = 1024):
        if residents < 1:
            raise ValueError("a city needs at least one resident")
        self.n = residents
        self.seed = seed
        self.start = start
        self.h = hasher
        self.districts: tuple[District, ...] = districts()
        self._district_pick = Weighted([(i, d.weight) for i, d in enumerate(self.districts)])
        self._codes = array("I", bytes(4 * residents))   # birth ordinal * 1000 + sequence code
        self._assigned = 0
        self._counters: dict[tuple, int] = {}
        self._cache: OrderedDict[int, list[Person]] = OrderedDict()
        self._cache_blocks = cache_blocks
        self.n_blocks = (residents + BLOCK - 1) // BLOCK
        self._household_offset = hasher.below(10**9, tag("household"))
        self._cell_offsets: dict[tuple, int] = {}

    # ------------------------------------------------------------------ households (raw)
    def _raw_block(self, b: int) -> list[Raw]:
        r = rng(self.seed, "block", b)
        out: list[Raw] = []
        slot = 0
        for size in _PARTITIONS.pick(r):
            size = min(size, self.n - (b * BLOCK + slot))
            if size <= 0:
                break
            out.extend(self._household(r, b, slot, size))
            slot += size
        return out

    def _household(self, r: random.Random, b: int, slot: int, size: int) -> list[Raw]:
        members = _compose(r, size)  # [(sex, age, lineage, marital)]
        di = self._district_pick.pick(r)
        district = self.districts[di]
        ti = r.randrange(len(district.towns))
        town = district.towns[ti]
        hh_key = b * BLOCK + slot
        household_id = f"{district.code}{(hh_key * 7654321 + self._household_offset) % 10**10:010d}"
        addr = address(r, district, town)
        base_eth = _ETHNICITY.pick(r)
        family_names = {}
        head_phone = ""
        out = []
        for k, (sex, age, lineage, marital, *twin) in enumerate(members):
            if lineage not in family_names:
                family_names[lineage] = names.surname(r)
            name = names.full_name(r, sex, self.start.year - age, family_names[lineage])
            while twin and name == out[-1].name:    # twins never share a name
                name = names.full_name(r, sex, self.start.year - age, family_names[lineage])
            eth = base_eth if r.random() < 0.97 else _ETHNICITY.pick(r)
            if twin:
                id_div = out[-1].id_division        # born together: one birthplace
            elif age >= 18 and r.random() < 0.12:
                id_div = MIGRANT_BIRTHPLACES.pick(r)
            else:
                id_div = district.code
            own_phone = age >= 16 and r.random() < (0.97 if age < 75 else 0.7)
            phone = _phone(r) if own_phone else ""
            if k == 0:
                head_phone = phone or _phone(r)
            out.append(Raw(b * BLOCK + slot + k, name, sex, age, id_div, di, ti, household_id, size, addr,
                           phone or head_phone, eth, marital, out[-1].idx if twin else -1))
        _mothers(members, out)
        return out

    # ------------------------------------------------------------------ birth dates and IDs
    def _year_days(self, year: int) -> int:
        end = min(date(year + 1, 1, 1), self.start)
        return max(0, (end - date(year, 1, 1)).days)

    def _assign_code(self, raw: Raw) -> int:
        if raw.twin_of >= 0:
            # the elder twin's birth date; a sequence code from the halves kept for twins (450-499),
            # counted per (birthplace, birth date, sex): still unique by construction
            birth = self._codes[raw.twin_of] // 1000
            cell = ("twin", raw.id_division, birth, raw.sex)
            k = self._counters.get(cell, 0)
            self._counters[cell] = k + 1
            return birth * 1000 + (_SINGLE_HALVES + k) * 2 + (1 if raw.sex == "1" else 0)
        year = self.start.year - raw.age
        while True:
            days = self._year_days(year)
            cell = (raw.id_division, year, raw.sex)
            rank = self._counters.get(cell, 0)
            capacity = days * _SINGLE_HALVES
            if rank < capacity:
                self._counters[cell] = rank + 1
                offset = self._cell_offsets.get(cell)
                if offset is None:
                    offset = self._cell_offsets[cell] = self.h.below(capacity, tag("slot"), int(raw.id_division),
                                                                     year, int(raw.sex))
                s = (rank * _SLOT_STEP + offset) % capacity
                day, half = divmod(s, _SINGLE_HALVES)
                seq = half * 2 + (1 if raw.sex == "1" else 0)
                return (date(year, 1, 1).toordinal() + day) * 1000 + seq
            year -= 1  # this cell is full (or the year has not begun): born a year earlier

    def _finalize(self, raw: Raw) -> Person:
        code = self._codes[raw.idx]
        birth = date.fromordinal(code // 1000)
        id_number = make_id(raw.id_division, birth, code % 1000)
        age = self.start.year - birth.year - ((self.start.month, self.start.day) < (birth.month, birth.day))
        ht = self.h.u(T_HT, raw.idx) < _ht_prevalence(age)
        dm = self.h.u(T_DM, raw.idx) < _dm_prevalence(age)
        return Person(raw.idx, person_uid(raw.idx), raw.name, raw.sex, birth, id_number, raw.id_division,
                      raw.district, raw.town, raw.household_id, raw.household_size, raw.address, raw.phone,
                      raw.ethnicity, raw.marital, ht, dm, raw.twin_of, raw.mother)

    def iter_blocks(self):
        """All residents in index order, block by block (the one pass that fixes identity numbers)."""
        if self._assigned:
            raise RuntimeError("identity numbers are assigned once, in the first pass")
        for b in range(self.n_blocks):
            raws = self._raw_block(b)
            for raw in raws:
                self._codes[raw.idx] = self._assign_code(raw)
            persons = [self._finalize(raw) for raw in raws]
            self._assigned = raws[-1].idx + 1
            yield persons

    def person(self, idx: int) -> Person:
        if idx >= self._assigned:
            raise RuntimeError(f"resident {idx} requested before the first pass reached it")
        b = idx // BLOCK
        block = self._cache.get(b)
        if block is None:
            block = [self._finalize(raw) for raw in self._raw_block(b)]
            self._cache[b] = block
            if len(self._cache) > self._cache_blocks:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(b)
        return block[idx - b * BLOCK]

    def age(self, p: Person, on: date) -> int:
        return on.year - p.birth.year - ((on.month, on.day) < (p.birth.month, p.birth.day))


def _mothers(members: list[tuple], out: list[Raw]) -> None:
    """Set ``mother`` of the household's children (lineage 'A', at least 16 years younger): the
    father's wife ('WA'), else a widowed or divorced single mother of lineage 'A'. Children living
    with grandparents only (留守儿童) have no mother in the household. No RNG draw: the rest of the
    household is unchanged."""
    wives = [i for i, m in enumerate(members) if m[0] == "2" and m[2] == "WA"]
    single = [i for i, m in enumerate(members) if m[0] == "2" and m[2] == "A" and m[3] in ("30", "40")]
    for mothers in (wives, single):
        if mothers:
            break
    else:
        return
    w = mothers[0]
    for i, m in enumerate(members):
        if i != w and m[2] == "A" and members[w][1] - m[1] >= 16:
            out[i].mother = out[w].idx


def _phone(r: random.Random) -> str:
    return r.choice(_PHONE_PREFIXES) + f"{r.randrange(10**8):08d}"


# ---------------------------------------------------------------------- household composition
def _couple(r, age_lo, age_hi, lineage="A"):
    a = r.randint(age_lo, age_hi)
    wife = max(20, a - r.randint(-2, 5))
    return [("1", a, lineage, "20"), ("2", wife, "W" + lineage, "20")]


def _children(r, parent_age, n, lineage="A"):
    out = []
    for _ in range(n):
        age = max(0, parent_age - r.randint(22, max(22, min(38, parent_age))))
        out.append((r.choice("12"), age, lineage, "10" if age < 22 or r.random() < 0.8 else "20"))
    if n == 2 and r.random() < TWIN_SHARE:   # the second child is the first one's twin
        sex, age, lineage, marital = out[0]
        out[1] = (sex if r.random() < 0.5 else r.choice("12"), age, lineage, marital, True)
    return out


def _grandparents(r, parent_age, n, lineage="A"):
    """The father's parents: the grandfather shares the family's surname, the grandmother keeps hers."""
    a = min(98, parent_age + r.randint(22, 32))
    if n == 2:
        return [("1", a, lineage, "20"), ("2", max(40, a - r.randint(-2, 5)), "WG", "20")]
    sex = r.choice("12")
    return [(sex, a, lineage if sex == "1" else "WG", "30" if r.random() < 0.8 else "20")]


def _single_status(r, age):
    if age < 25:
        return "10"
    if age >= 65:
        return "30" if r.random() < 0.7 else ("40" if r.random() < 0.5 else "10")
    x = r.random()
    return "10" if x < 0.5 else "40" if x < 0.85 else "30" if x < 0.95 else "90"


def _compose(r: random.Random, size: int) -> list[tuple]:
    """Members of one household: (sex, age, lineage, marital). Lineage ties surnames: children take
    their father's (lineage 'A'); wives ('W…') keep their own."""
    x = r.random()
    if size == 1:
        age = int(r.triangular(60, 95, 72)) if x < 0.55 else r.randint(20, 59)
        sex = "2" if (age >= 60 and r.random() < 0.6) or (age < 60 and r.random() < 0.45) else "1"
        return [(sex, age, "A", _single_status(r, age))]
    if size == 2:
        if x < 0.65:
            return _couple(r, 24, 88)
        if x < 0.85:   # grandparent with a left-behind grandchild (留守儿童)
            g, sex = r.randint(52, 78), r.choice("12")
            return [(sex, g, "A" if sex == "1" else "WG", "30" if r.random() < 0.6 else "20"),
                    (r.choice("12"), r.randint(1, 15), "A", "10")]
        parent = r.randint(28, 55)
        return [(r.choice("12"), parent, "A", "40" if r.random() < 0.6 else "30")] + _children(r, parent, 1)
    if size == 3:
        if x < 0.6:
            c = _couple(r, 24, 58)
            return c + _children(r, c[0][1], 1)
        if x < 0.85:
            return _grandparents(r, r.randint(28, 50), 2, "A") + [(r.choice("12"), r.randint(0, 15), "A", "10")]
        c = _couple(r, 30, 60)
        return c + _grandparents(r, c[0][1], 1)
    if size == 4:
        if x < 0.5:
            c = _couple(r, 27, 55)
            return c + _children(r, c[0][1], 2)
        if x < 0.85:
            c = _couple(r, 24, 55)
            return c + _children(r, c[0][1], 1) + _grandparents(r, c[0][1], 1)
        return _grandparents(r, r.randint(28, 45), 2, "A") + [(r.choice("12"), r.randint(0, 15), "A", "10")
                                                               for _ in range(2)]
    c = _couple(r, 26, 52)
    kids = 2 if size == 6 or x < 0.4 else 1
    return c + _children(r, c[0][1], kids) + _grandparents(r, c[0][1], size - 2 - kids)

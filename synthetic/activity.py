"""What happens in the city: who is known where, visits, admissions, follow-ups, vaccinations.

State is kept small and bounded by the simulated window, never by the population:

* per-resident decisions (which institutions saw the resident before the start date, whether
  and when a health record was created, identity defects) are keyed hashes, answerable for any
  resident at any time;
* a day's visits and admissions come from that day's own RNG, so the admissions of the 20 days
  before any date can be regenerated to find who is discharged on it (length of stay is 1-20 days);
* follow-ups run on a 90-day cycle whose phase is the resident index modulo 90, so a day's
  follow-ups are found by stepping through every 90th resident;
* only the vaccinations and new health records falling inside the window are listed (in the
  first pass), plus the set of (institution, resident) pairs first registered in the window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from synthetic import clinical, services
from synthetic.clinical import DRUGS, DRUGS_FOR, LAB_ITEMS, PANELS, PANELS_FOR, SCHEDULE, route
from synthetic.defects import IdentityVariation
from synthetic.institutions import CityInstitutions, Institution
from synthetic.population import Person, Population, T_DM, T_HT, T_REC, T_RECDAY
from synthetic.rng import Hasher, Weighted, rng, tag
from synthetic.writer import Sink

VISIT_RATE = 0.018         # outpatient + emergency visits per resident per day (China: ~6.5 a year)
ADMISSION_RATE = 0.0006    # admissions per resident per day (~22 per 100 a year)
RECORD_COVERAGE = 0.88     # residents with a health record (chronic patients: all)
RECORD_NEW_PER_DAY = 0.002  # share of record holders whose record is created on a given window day
MAX_LOS = 20
FOLLOWUP_CYCLE = 90
INFECTIONS = ("J18", "J20", "J06", "N39", "R50", "J03", "J02", "A09")

T_SEEN, T_MTS, T_PID, T_PIDM, T_RID = tag("seen"), tag("master_ts"), tag("pid"), tag("pid_mul"), tag("rid")
T_RECDAY2, T_FD, T_PHASE, T_DELAY, T_SITE = tag("record_day2"), tag("family_doctor"), tag("fu_phase"), tag("delay"), tag("site")


@dataclass(slots=True)
class Admission:
    inst: Institution
    person: int
    encounter_id: str
    visit_at: datetime
    discharge_at: datetime


def _count(r, expected: float) -> int:
    expected *= r.uniform(0.9, 1.1)
    n = int(expected)
    return n + (1 if r.random() < expected - n else 0)


def _day_factor(d: date) -> float:
    return 0.7 if d.weekday() >= 5 else 1.12


def _end_of_day(t: datetime) -> datetime:
    return datetime.combine(t.date(), time(23, 59, 59))


def _later(t: datetime, minutes: int) -> datetime:
    return min(t + timedelta(minutes=minutes), _end_of_day(t))


def _visit_weight(age: int, chronic: bool) -> float:
    w = 2.0 if age < 7 else 0.6 if age < 18 else 0.7 if age < 45 else 1.0 if age < 60 else 1.8 if age < 75 else 2.2
    return w + (0.5 if chronic else 0.0)


def _admission_weight(age: int, sex: str) -> float:
    if age < 1:
        return 1.5
    if age < 14:
        return 0.6
    if age < 45:
        return 1.2 if sex == "2" and 20 <= age <= 40 else 0.5
    return 0.8 if age < 60 else 1.8 if age < 75 else 2.8


class Activity:
    def __init__(self, seed: int, start: date, days: int, pop: Population, city: CityInstitutions,
                 sink: Sink, hasher: Hasher):
        self.seed, self.start, self.days = seed, start, days
        self.end = start + timedelta(days=days)
        self.pop, self.city, self.sink, self.h = pop, city, sink, hasher
        self.n = pop.n
        self.dx = clinical.diagnosis_model()
        self.rates = sink.rates
        self.schedule_records: list[list[int]] = [[] for _ in range(days)]
        self.schedule_vaccines: list[list[tuple[int, int]]] = [[] for _ in range(days)]
        self.new_patients: set[int] = set()     # (institution, resident) first registered in the window
        self.today_patients: set[int] = set()
        self.today_records: set[int] = set()
        self.counters: dict[tuple, int] = {}
        self.admission_cache: dict[int, list[Admission]] = {}
        self.households = 0
        self.doctors: dict[str, dict[str, list[str]]] = {}
        self.family_doctors: dict[str, list[str]] = {}
        for inst in city.all:
            by_dept: dict[str, list[str]] = {}
            for p in inst.practitioners:
                if p.profession == "医师":
                    by_dept.setdefault(p.department_code, []).append(p.id)
            self.doctors[inst.code] = by_dept
            gp = [d.code for d in inst.departments if d.specialty in ("gp", "phc")]
            self.family_doctors[inst.code] = [x for c in gp for x in by_dept.get(c, [])] or \
                [x for v in by_dept.values() for x in v]
        self.inpatient_depts = {inst.code: [d for d in inst.departments if d.kind == "住院"] for inst in city.all}
        self.pid_mul, self.pid_add = {}, {}
        for inst in city.all:
            m = self.h.h(T_PIDM, inst.idx) % 10**9 | 1
            self.pid_mul[inst.code] = m + 2 if m % 5 == 0 else m   # coprime to 10: a bijection mod 10**9
            self.pid_add[inst.code] = self.h.below(10**9, T_PID, inst.idx)
        self.rid_add = self.h.below(10**8, T_RID)
        self.variation = IdentityVariation(self.h, self.rates, start, pop, city)
        sink.truth.describe = self.variation.describe

    # ------------------------------------------------------------------ identities
    def patient_id(self, inst: Institution, idx: int) -> str:
        num = (idx * self.pid_mul[inst.code] + self.pid_add[inst.code]) % 10**9
        return f"{inst.patient_prefix}{num:09d}" if inst.patient_prefix else f"{num:010d}"

    def record_id(self, p: Person) -> str:
        """健康档案编号, 17 digits: division + town + a per-resident number."""
        num = (p.idx * 48271 + self.rid_add) % 10**8
        return f"{self.pop.districts[p.district].code}{p.town + 1:03d}{num:08d}"

    def identity(self, inst: Institution, p: Person) -> tuple[str, str]:
        """(identity number as the institution holds it, defect)."""
        return self.variation.identity(inst, p)

    # ------------------------------------------------------------------ who is served where
    def age(self, p: Person, on: date | None = None) -> int:
        return self.pop.age(p, on or self.start)

    def home_centre(self, p: Person) -> Institution:
        town = self.pop.districts[p.district].towns[p.town]
        return self.city.centre_of(p.district, town.centre)

    def _mch_eligible(self, p: Person, age: int) -> bool:
        return age < 14 or (p.sex == "2" and 15 <= age <= 49)

    def relations(self, p: Person) -> list[tuple[Institution, float]]:
        """Institutions the resident may use, with the probability each has seen them before the start."""
        age = self.age(p)
        county = self.pop.districts[p.district].is_county
        chronic = p.hypertension or p.diabetes
        h0, h1 = self.city.city_hospitals
        out = [(self.home_centre(p), 0.9 if chronic else 0.7 if age < 7 or age >= 65 else 0.45)]
        if county:
            out.append((self.city.county_hospital[p.district], 0.5 if age >= 60 else 0.35))
        out.append((h0, 0.12 if county else 0.4))
        out.append((h1, 0.06 if county else 0.25))
        if self._mch_eligible(p, age):
            out.append((self.city.mch, 0.2 if county else 0.45))
        return out

    def seen_before(self, inst: Institution, p: Person) -> bool:
        for i, prob in self.relations(p):
            if i is inst:
                return self.h.u(T_SEEN, inst.idx, p.idx) < prob
        return False

    def _visit_choices(self, p: Person, age: int) -> list[tuple[Institution, float]]:
        county = self.pop.districts[p.district].is_county
        h0, h1 = self.city.city_hospitals
        out = [(self.home_centre(p), 0.45 if county else 0.35)]
        if county:
            out.append((self.city.county_hospital[p.district], 0.30))
        out += [(h0, 0.10 if county else 0.30), (h1, 0.06 if county else 0.20)]
        if self._mch_eligible(p, age):
            out.append((self.city.mch, 0.09 if county else 0.15))
        return out

    def _admission_choices(self, p: Person, age: int) -> list[tuple[Institution, float]]:
        county = self.pop.districts[p.district].is_county
        h0, h1 = self.city.city_hospitals
        out = [(self.home_centre(p), 0.15 if county else 0.05)]
        if county:
            out.append((self.city.county_hospital[p.district], 0.5))
        out += [(h0, 0.2 if county else 0.5), (h1, 0.1 if county else 0.3)]
        if self._mch_eligible(p, age):
            out.append((self.city.mch, 0.3 if p.sex == "2" and 20 <= age <= 40 else 0.08))
        return out

    # ------------------------------------------------------------------ health records
    def record_created(self, p: Person) -> date | None:
        """Creation date of the resident's health record (None: no record)."""
        chronic = p.hypertension or p.diabetes
        if not chronic and self.h.u(T_REC, p.idx) >= RECORD_COVERAGE:
            return None
        u = self.h.u(T_RECDAY, p.idx)
        in_window = min(0.5, RECORD_NEW_PER_DAY * self.days)
        if not chronic and u < in_window:
            return self.start + timedelta(days=int(u / in_window * self.days))
        lo = max(p.birth + timedelta(days=7), date(2009, 7, 1))
        hi = self.start - timedelta(days=1)
        if lo > hi:
            return lo
        return lo + timedelta(days=int(self.h.u(T_RECDAY2, p.idx) * ((hi - lo).days + 1)))

    def family_doctor(self, centre: Institution, p: Person) -> str:
        doctors = self.family_doctors[centre.code]
        return doctors[self.h.below(len(doctors), T_FD, int(p.household_id))]

    def _record_values(self, centre: Institution, p: Person, created: date) -> tuple[dict, str]:
        sent, defect = self.identity(centre, p)
        v = self.variation
        return {"record_id": self.record_id(p), "name": v.name(centre, p), "sex_code": p.sex, "birth_date": p.birth,
                "id_number": sent, "mother_id_number": v.mother_id(centre, p), "phone": v.phone(centre, p),
                "household_id": p.household_id,
                **v.address(centre, p),
                "created_date": created, "family_doctor_id": self.family_doctor(centre, p)}, defect

    def _emit_record(self, centre: Institution, p: Person, created: date, first: bool) -> None:
        values, defect = self._record_values(centre, p, created)
        self.sink.emit(centre, "health_record", values, values["record_id"], first=first, person_idx=p.idx,
                       id_defect=defect)

    # ------------------------------------------------------------------ patient master
    def _person_values(self, inst: Institution, p: Person, updated_at: datetime) -> tuple[dict, str]:
        sent, defect = self.identity(inst, p)
        v = self.variation
        return {"patient_id": self.patient_id(inst, p.idx), "name": v.name(inst, p), "sex_code": p.sex,
                "birth_date": p.birth, "id_type_code": "01", "id_number": sent,
                "mother_id_number": v.mother_id(inst, p), "ethnicity_code": p.ethnicity,
                "marital_status_code": p.marital, "phone": v.phone(inst, p), **v.address(inst, p),
                "updated_at": updated_at}, defect

    def _master_timestamp(self, inst: Institution, p: Person) -> datetime:
        lo = max(datetime.combine(p.birth, time(8)), datetime(2012, 1, 1))
        span = (datetime.combine(self.start, time(0)) - lo).total_seconds()
        return lo + timedelta(seconds=int(self.h.u(T_MTS, inst.idx, p.idx) * max(span, 0)))

    def touch_patient(self, inst: Institution, p: Person, when: datetime, day_index: int) -> None:
        """The patient's row in the institution's patient feed for the day (registered or updated)."""
        key = inst.idx * self.n + p.idx
        if key in self.today_patients:
            return
        self.today_patients.add(key)
        known = self.seen_before(inst, p)
        if known and day_index == 0:
            return  # already in the day-1 master
        first = not known and key not in self.new_patients
        if first:
            self.new_patients.add(key)
        values, defect = self._person_values(inst, p, when)
        self.sink.emit(inst, "person", values, values["patient_id"], first=first, person_idx=p.idx,
                       id_defect=defect)

    # ------------------------------------------------------------------ day 1: dictionaries, masters
    def dictionaries(self) -> None:
        for inst in self.city.all:
            for d in inst.departments:
                self.sink.emit(inst, "department", {"department_code": d.code, "department_name": d.name,
                                                    "department_kind": d.kind, "approved_beds": d.approved_beds,
                                                    "open_beds": d.open_beds}, d.code)
            for s in inst.practitioners:
                self.sink.emit(inst, "practitioner", {"practitioner_id": s.id, "name": s.name, "sex_code": s.sex,
                                                      "department_code": s.department_code,
                                                      "profession": s.profession, "title": s.title,
                                                      "licence_number": s.licence}, s.id)
            if "equipment" in services.DATASETS_BY_KIND.get(inst.kind, ()):
                services.equipment(self, inst)

    def first_pass(self) -> None:
        """Every resident once, in index order: truth, day-1 patient masters and health records,
        and the window's vaccinations and new records."""
        truth = self.sink.truth
        last_household = None
        window_child_days = max(d.age_days for d in SCHEDULE) + 120 + self.days
        for block in self.pop.iter_blocks():
            for p in block:
                if p.household_id != last_household:
                    self.households += 1
                    last_household = p.household_id
                truth.person(p, self.pop.districts[p.district].code)
                for inst, prob in self.relations(p):
                    if self.h.u(T_SEEN, inst.idx, p.idx) < prob:
                        values, defect = self._person_values(inst, p, self._master_timestamp(inst, p))
                        self.sink.emit(inst, "person", values, values["patient_id"], person_idx=p.idx,
                                       id_defect=defect)
                created = self.record_created(p)
                if created is not None and created < self.end:
                    k = (created - self.start).days
                    if k <= 0:
                        self._emit_record(self.home_centre(p), p, created, first=True)
                    else:
                        self.schedule_records[k].append(p.idx)
                if (self.end - p.birth).days <= window_child_days:
                    self._schedule_vaccines(p)

    def _schedule_vaccines(self, p: Person) -> None:
        for j, dose in enumerate(SCHEDULE):
            if dose.at_birth:
                delay = 0
            else:
                x = self.h.h(T_DELAY, p.idx, j)
                delay = x % 21 if (x >> 16) % 100 < 93 else 30 + x % 60
            when = p.birth + timedelta(days=dose.age_days + delay)
            if self.start <= when < self.end:
                self.schedule_vaccines[(when - self.start).days].append((p.idx, j))

    # ------------------------------------------------------------------ every day
    def run_day(self, k: int) -> None:
        day = self.start + timedelta(days=k)
        self.today_patients.clear()
        self.today_records.clear()
        self.counters.clear()
        self._inpatients(k, day)
        self._visits(k, day)
        self._followups(k, day)
        for idx in self.schedule_records[k] if k > 0 else ():
            p = self.pop.person(idx)
            self._emit_record(self.home_centre(p), p, self.record_created(p), first=True)
        self._vaccinations(k, day)
        services.run_day(self, k, day)

    def _next(self, *key) -> int:
        n = self.counters.get(key, 0) + 1
        self.counters[key] = n
        return n

    def encounter_id(self, inst: Institution, day: date, visit_type: int, n: int) -> str:
        prefix = {1: "MZ", 2: "JZ", 3: "ZY"}[visit_type] if inst.style == "pinyin" else ""
        return f"{prefix}{day:%Y%m%d}{visit_type}{n:06d}"

    def _draw_person(self, r, weight, w_max: float) -> Person:
        while True:
            p = self.pop.person(r.randrange(self.n))
            if r.random() * w_max < weight(p):
                return p

    def admissions(self, day: date) -> list[Admission]:
        """The admissions of ``day`` (inside the window or before it), regenerated from the day's RNG."""
        o = day.toordinal()
        cached = self.admission_cache.get(o)
        if cached is not None:
            return cached
        r = rng(self.seed, "admissions", o)
        out = []
        counters: dict[str, int] = {}
        for _ in range(_count(r, self.n * ADMISSION_RATE * _day_factor(day))):
            p = self._draw_person(r, lambda q: _admission_weight(self.age(q), q.sex), 2.8)
            inst = Weighted(self._admission_choices(p, self.age(p))).pick(r)
            counters[inst.code] = n = counters.get(inst.code, 0) + 1
            visit_at = datetime.combine(day, time(r.randint(7, 21), r.randrange(60), r.randrange(60)))
            if inst.is_primary:
                los = r.randint(3, 10)
            else:
                los = min(MAX_LOS, 1 + int(r.gammavariate(2.0, 3.5)))
            discharge_at = datetime.combine(day + timedelta(days=los), time(r.randint(8, 16), r.randrange(60),
                                                                             r.randrange(60)))
            out.append(Admission(inst, p.idx, self.encounter_id(inst, day, 3, n), visit_at, discharge_at))
        self.admission_cache[o] = out
        for old in [x for x in self.admission_cache if x < o - MAX_LOS - 2]:
            del self.admission_cache[old]
        return out

    def _inpatients(self, k: int, day: date) -> None:
        for a in self.admissions(day):
            self._encounter(a.inst, self.pop.person(a.person), a.encounter_id, 3, a.visit_at, None, k,
                            first=True)
        for back in range(MAX_LOS, 0, -1):
            admitted = day - timedelta(days=back)
            for a in self.admissions(admitted):
                if a.discharge_at.date() == day:
                    # admitted before the window: first sent now, with its diagnoses and orders
                    self._encounter(a.inst, self.pop.person(a.person), a.encounter_id, 3, a.visit_at,
                                    a.discharge_at, k, first=admitted < self.start)

    def _visits(self, k: int, day: date) -> None:
        r = rng(self.seed, "visits", day.toordinal())
        weight = lambda q: _visit_weight(self.age(q), q.hypertension or q.diabetes)  # noqa: E731
        for _ in range(_count(r, self.n * VISIT_RATE * _day_factor(day))):
            p = self._draw_person(r, weight, 2.7)
            inst = Weighted(self._visit_choices(p, self.age(p))).pick(r)
            er_share = 0.09 if inst.kind == "hospital" else 0.04 if inst.kind == "maternal_child" else 0.0
            visit_type = 2 if r.random() < er_share else 1
            if visit_type == 2:
                at = time(r.randrange(24), r.randrange(60), r.randrange(60))
            else:
                hour = r.choice((8, 8, 9, 9, 9, 10, 10, 11, 14, 14, 15, 15, 16, 17, 19))
                at = time(hour, r.randrange(60), r.randrange(60))
            n = self._next(inst.code, visit_type)
            self._encounter(inst, p, self.encounter_id(inst, day, visit_type, n), visit_type,
                            datetime.combine(day, at), None, k, first=True)

    # ------------------------------------------------------------------ one encounter
    def _encounter(self, inst: Institution, p: Person, enc_id: str, visit_type: int, visit_at: datetime,
                   discharge_at: datetime | None, k: int, *, first: bool) -> None:
        r = rng(self.seed, "encounter", inst.code, enc_id)
        age = self.age(p, visit_at.date())
        chronic = tuple(c for c, has in (("I10", p.hypertension), ("E11.9", p.diabetes)) if has)
        diagnoses = self.dx.pick(r, age, p.sex, inst.kind == "maternal_child", chronic, inpatient=visit_type == 3)
        dept = self._department(r, inst, visit_type, age, diagnoses[0].code)
        doctors = self.doctors[inst.code].get(dept.code) or [x for v in self.doctors[inst.code].values() for x in v]
        doctor = r.choice(doctors)
        payment = self._payment(r, p, age)
        if visit_type == 3:
            per_day = r.lognormvariate(math.log(300 if inst.is_primary else 900), 0.4)
            fee = None if discharge_at is None else round(per_day * max(1, (discharge_at - visit_at).days), 2)
        else:
            base = 60 if inst.is_primary else 450 if visit_type == 2 else 180
            fee = round(r.lognormvariate(math.log(base), 0.6), 2)
        sent, defect = self.identity(inst, p)
        pid = self.patient_id(inst, p.idx)
        values = {"encounter_id": enc_id, "patient_id": pid, "id_number": sent, "visit_type_code": str(visit_type),
                  "department_code": dept.code, "practitioner_id": doctor, "visit_at": visit_at,
                  "discharge_at": discharge_at, "payment_method_code": payment,
                  "total_fee": None if fee is None else f"{fee:.2f}"}
        self.sink.emit(inst, "encounter", values, enc_id, first=first, person_idx=p.idx, id_defect=defect)
        self.touch_patient(inst, p, discharge_at or visit_at, k)
        if not first:
            return
        for seq, d in enumerate(diagnoses, 1):
            did = f"{enc_id}{seq:02d}"
            self.sink.emit(inst, "diagnosis", {"diagnosis_id": did, "encounter_id": enc_id, "patient_id": pid,
                                               "diagnosis_seq": str(seq), "diagnosis_code": d.code,
                                               "diagnosis_name": d.name,
                                               "diagnosed_at": _later(visit_at, r.randint(3, 25))}, did)
        if inst.is_hospital:
            self._labs(r, inst, p, enc_id, pid, visit_type, visit_at, diagnoses)
        self._orders(r, inst, enc_id, pid, visit_type, visit_at, diagnoses)
        if inst.is_hospital:
            services.exam_reports(self, inst, p, enc_id, pid, visit_type, visit_at, diagnoses)

    def _department(self, r, inst: Institution, visit_type: int, age: int, main_code: str):
        if visit_type == 2:
            return route(inst, "er")
        if inst.is_primary:
            if visit_type == 3:
                return inst.dept("ward")
            return inst.dept("tcm") if r.random() < 0.15 else inst.dept("gp")
        specialty = self.dx.specialty(main_code)
        if age < 14 and specialty not in ("neo", "childcare", "dental", "eye") and inst.dept("peds"):
            specialty = "peds"
        dept = route(inst, specialty)
        if visit_type == 3 and dept.kind != "住院":
            wards = self.inpatient_depts[inst.code]
            dept = wards[int(r.random() * len(wards))]
        return dept

    def _payment(self, r, p: Person, age: int) -> str:
        urban = not self.pop.districts[p.district].is_county
        x = r.random()
        if x < 0.05:
            return "07"
        if x < 0.06:
            return "05"
        if x < 0.075:
            return "04"
        if urban and ((18 <= age < 60 and r.random() < 0.6) or (age >= 60 and r.random() < 0.4)):
            return "01"
        return "02" if urban else "03"

    def _labs(self, r, inst, p, enc_id, pid, visit_type, visit_at, diagnoses) -> None:
        if visit_type != 3 and r.random() >= (0.7 if visit_type == 2 else 0.35):
            return
        main = diagnoses[0].code[:3]
        panels = list(PANELS_FOR.get(main, ("cbc",)))
        if visit_type == 3:
            panels += ["cbc", "chem"]
        items: list[str] = []
        for panel in panels:
            for it in PANELS[panel]:
                if it not in items:
                    items.append(it)
        codes3 = {d.code[:3] for d in diagnoses}
        infection = bool(codes3 & set(INFECTIONS))
        reported = _later(visit_at, r.randint(40, 240))
        for j, key in enumerate(items, 1):
            item = LAB_ITEMS[key]
            bias = 0.0
            if key in ("GLU", "HBA1C") and p.diabetes:
                bias = 1.3
            elif key == "WBC" and infection:
                bias = 0.6
            elif key == "CRP" and infection:
                bias = 1.5
            elif key in ("CREA", "UREA") and "N18" in codes3:
                bias = 1.5
            value, ref, flag = clinical.lab_value(r, item, p.sex, bias)
            rid = f"{enc_id}{j:03d}"
            self.sink.emit(inst, "lab_result", {"lab_result_id": rid, "encounter_id": enc_id, "patient_id": pid,
                                                "item_code": item.code, "item_name": item.name, "result_value": value,
                                                "unit": item.unit, "reference_range": ref, "abnormal_flag": flag,
                                                "reported_at": reported}, rid)

    def _orders(self, r, inst, enc_id, pid, visit_type, visit_at, diagnoses) -> None:
        """One drug per diagnosis (two for coronary disease, stroke and pneumonia), plus infusions for inpatients."""
        chosen: list[str] = []
        for d in diagnoses:
            options = list(DRUGS_FOR.get(d.code[:3], ()))
            r.shuffle(options)
            for drug in options[:2 if d.code[:3] in ("I25", "I63", "J18") else 1]:
                if drug not in chosen:
                    chosen.append(drug)
        if visit_type == 3:
            chosen += [x for x in ("saline", "ceftriaxone") if x not in chosen][:r.randint(1, 2)]
        elif r.random() < 0.15:
            chosen = []
        for j, key in enumerate(chosen, 1):
            drug = DRUGS[key]
            oid = f"CF{enc_id}{j:02d}"
            self.sink.emit(inst, "prescription", {
                "order_id": oid, "encounter_id": enc_id, "patient_id": pid, "drug_code": drug.code,
                "drug_name": drug.name, "dose": drug.dose, "dose_unit": drug.unit, "frequency": drug.frequency,
                "days": str(r.randint(*drug.days)), "ordered_at": _later(visit_at, r.randint(5, 40))}, oid)

    # ------------------------------------------------------------------ public health
    def _followups(self, k: int, day: date) -> None:
        o = day.toordinal()
        for disease, t, cap in (("I10", T_HT, 0.42), ("E11.9", T_DM, 0.15)):
            phase = (o - self.h.below(FOLLOWUP_CYCLE, T_PHASE, t)) % FOLLOWUP_CYCLE
            for i in range(phase, self.n, FOLLOWUP_CYCLE):
                if self.h.u(t, i) >= cap:   # cheap pre-check: above the highest prevalence
                    continue
                p = self.pop.person(i)
                if not (p.hypertension if disease == "I10" else p.diabetes):
                    continue
                centre = self.home_centre(p)
                created = self.record_created(p)   # chronic patients' records predate the window
                r = rng(self.seed, "followup", disease, i, o)
                sbp = r.randint(118, 172) if p.hypertension else r.randint(105, 145)
                dbp = min(sbp - 30, r.randint(68, 104))
                glucose = f"{r.uniform(4.8, 12.5):.1f}" if disease == "E11.9" else None
                doctors = self.family_doctors[centre.code]
                doctor = self.family_doctor(centre, p) if r.random() < 0.8 else r.choice(doctors)
                sent, defect = self.identity(centre, p)
                fid = f"SF{day:%Y%m%d}{self._next(centre.code, 'followup'):05d}"
                self.sink.emit(centre, "chronic_followup", {
                    "followup_id": fid, "record_id": self.record_id(p), "id_number": sent, "disease_code": disease,
                    "followup_date": day, "systolic_bp": str(sbp), "diastolic_bp": str(dbp),
                    "fasting_glucose": glucose, "practitioner_id": doctor}, fid, person_idx=p.idx, id_defect=defect)
                if k > 0 and i not in self.today_records:   # the record is updated: sent again
                    self.today_records.add(i)
                    self._emit_record(centre, p, created, first=False)

    def _vaccinations(self, k: int, day: date) -> None:
        cdc = self.city.cdc
        for idx, j in self.schedule_vaccines[k]:
            p = self.pop.person(idx)
            dose = SCHEDULE[j]
            if dose.at_birth:
                site = self.city.mch if self.h.u(T_SITE, idx) < 0.6 else self.city.city_hospitals[0]
            else:
                site = self.home_centre(p)
            sent, defect = self.identity(cdc, p)
            iid = f"JZ{day:%Y%m%d}{self._next(cdc.code, 'vaccination'):06d}"
            lot = f"{day.year}{day.month:02d}{dose.vaccine_code}{self.h.below(90, T_SITE, day.month, j) + 10}"
            self.sink.emit(cdc, "immunization", {
                "immunization_id": iid, "id_number": sent, "mother_id_number": self.variation.mother_id(cdc, p),
                "name": self.variation.name(cdc, p), "birth_date": p.birth,
                "vaccine_code": dose.vaccine_code, "vaccine_name": dose.vaccine_name, "dose_seq": str(dose.dose_seq),
                "vaccinated_date": day, "lot_number": lot, "vaccinating_institution_code": site.code},
                iid, person_idx=idx, id_defect=defect)

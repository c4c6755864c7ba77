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


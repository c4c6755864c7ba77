"""Ground truth, written under OUT/truth/ (outside the landing zone), all UTF-8 CSV with a header.

persons.csv          one row per resident: person_uid, name, sex_code, birth_date (ISO), id_number
                     (the true, valid GB 11643 number), division_code (county of residence),
                     household_id, phone, twin_of (the elder twin's person_uid, or ''), mother_uid (the
                     mother's person_uid when she lives in the same household, or '').
identities.csv       one row per source identity, written when the identity is first sent:
                     institution_code, dataset (person | health_record | immunization), source_id
                     (patient_id / record_id / immunization_id), id_number_sent (as the institution
                     holds it; '' when missing), person_uid, id_defect (none | invalid_checksum (one
                     digit mistyped) | transposition | placeholder | missing | newborn_missing),
                     name_sent, name_variant (none | traditional | homophone | pinyin | spaced),
                     phone_changed (0/1: an old phone number), address_moved (0/1: an old address in
                     another division), mother_id_sent (a child's record: the mother's ID number as the
                     institution holds it, '' when not sent). See defects.IdentityVariation.
defects.csv          one row per injected defect per physical row: institution_code, feed_id, dataset,
                     file (relative to OUT/landing), source_row (1-based data record, header not
                     counted), business_key, element ('' for duplicate_row and malformed_ragged), defect.
unloadable_keys.csv  business keys sent only in malformed rows: institution_code, dataset, business_key.
summary.json         counts (see ``Ledger`` and ``city.generate_city``).
"""

from __future__ import annotations

import csv
from pathlib import Path

from synthetic.population import person_uid

ID_DEFECT_LABEL = {"none": "none", "invalid_checksum": "invalid_checksum", "missing_id_number": "missing"}


class Ledger:
    """Per (institution, data set): rows written, malformed rows, duplicate copies, distinct keys and
    the keys not (yet) loadable. A key is *first* sent once (the caller knows when: a patient
    already in the day-1 master, an inpatient discharged after admission in the window and a
    re-sent health record are repeats); it stays unloadable while all its rows are malformed."""

    def __init__(self):
        self.stats: dict[tuple[str, str], list[int]] = {}
        self.unloadable: dict[tuple[str, str], set] = {}

    def _s(self, inst: str, dataset: str) -> list[int]:
        s = self.stats.get((inst, dataset))
        if s is None:
            s = self.stats[(inst, dataset)] = [0, 0, 0, 0]   # rows, malformed, duplicates, distinct keys
            self.unloadable[(inst, dataset)] = set()
        return s

    def row(self, inst: str, dataset: str, key: str, *, first: bool, malformed: bool) -> None:
        s = self._s(inst, dataset)
        s[0] += 1
        if malformed:
            s[1] += 1
        bad = self.unloadable[(inst, dataset)]
        if first:
            s[3] += 1
            if malformed:
                bad.add(key)
        elif not malformed:
            bad.discard(key)

    def duplicate(self, inst: str, dataset: str) -> None:
        s = self._s(inst, dataset)
        s[0] += 1
        s[2] += 1

    def summary(self, inst: str, dataset: str) -> dict:
        rows, malformed, dups, distinct = self._s(inst, dataset)
        return {"rows_written": rows, "malformed_rows": malformed, "duplicate_rows": dups,
                "distinct_keys": distinct,
                "distinct_keys_loadable": distinct - len(self.unloadable[(inst, dataset)])}


class Truth:
    def __init__(self, out: Path):
        self.dir = out / "truth"
        self.dir.mkdir(parents=True, exist_ok=True)
        self._files = []
        self.persons = self._open("persons.csv", ["person_uid", "name", "sex_code", "birth_date", "id_number",
                                                  "division_code", "household_id", "phone", "twin_of", "mother_uid"])
        self.identities = self._open("identities.csv", ["institution_code", "dataset", "source_id",
                                                        "id_number_sent", "person_uid", "id_defect", "name_sent",
                                                        "name_variant", "phone_changed", "address_moved",
                                                        "mother_id_sent"])
        # (institution_code, person_idx) -> the identity's variation (set by the activity model)
        self.describe = None
        self.defects = self._open("defects.csv", ["institution_code", "feed_id", "dataset", "file", "source_row",
                                                  "business_key", "element", "defect"])
        self.ledger = Ledger()
        self.defect_counts: dict[tuple[str, str], int] = {}

    def _open(self, name: str, header: list[str]):
        fh = open(self.dir / name, "w", encoding="utf-8", newline="")
        self._files.append(fh)
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(header)
        return w

    def person(self, p, division_code: str) -> None:
        self.persons.writerow([p.uid, p.name, p.sex, p.birth.isoformat(), p.id_number, division_code,
                               p.household_id, p.phone, person_uid(p.twin_of) if p.twin_of >= 0 else "",
                               person_uid(p.mother) if p.mother >= 0 else ""])

    def identity(self, inst: str, dataset: str, source_id: str, sent: str, person_idx: int, defect: str) -> None:
        if self.describe is None:
            self.identities.writerow([inst, dataset, source_id, sent, person_uid(person_idx), ID_DEFECT_LABEL[defect],
                                      "", "none", 0, 0, ""])
            return
        d = self.describe(inst, person_idx)
        self.identities.writerow([inst, dataset, source_id, sent, person_uid(person_idx), d["id_defect"],
                                  d["name_sent"], d["name_variant"], d["phone_changed"], d["address_moved"],
                                  d["mother_id_sent"]])

    def defect(self, feed, rel: str, row: int, key: str, element: str, defect: str) -> None:
        self.defects.writerow([feed.inst.code, feed.id, feed.dataset, rel, row, key, element, defect])
        k = (feed.inst.code, defect)
        self.defect_counts[k] = self.defect_counts.get(k, 0) + 1

    def write_unloadable(self) -> int:
        rows = sorted((inst, ds, key) for (inst, ds), keys in self.ledger.unloadable.items() for key in keys)
        with open(self.dir / "unloadable_keys.csv", "w", encoding="utf-8", newline="") as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(["institution_code", "dataset", "business_key"])
            w.writerows(rows)
        return len(rows)

    def close(self) -> None:
        for fh in self._files:
            fh.close()

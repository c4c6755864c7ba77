"""Copy the national code tables the dbt models use from ../shared/reference into seeds/.

Run from the repository root:  .venv/bin/python dbt_project/scripts/gen_seeds.py
The output CSVs are committed; re-running this script must leave them unchanged.

- Value sets (GB/T 2261.1 sex, GB 3304 ethnicity, GB/T 2261.2 marital status, WS 445 visit type
  and payment method) are copied as they are.
- Divisions: the Sichuan (51xxxx) rows of GB/T 2260-2007 united with the 2023 NBS county-level
  codes (modood), because institutions code addresses with either edition (双流县 510122 became
  双流区 510116 in 2015). Each row says which edition has it.
- ICD-10: the 3-character categories of the 2011 MoH revision (2,047 codes); diagnoses are checked
  against their category (the first three characters), the level every extension code shares.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEEDS = HERE.parent / "seeds"
REFERENCE = HERE.parents[2] / "shared" / "reference"

COPIES = {
    "gbt2261_1_sex.csv": "value_sets/gbt2261_1_sex.csv",
    "gb3304_ethnicity.csv": "value_sets/gb3304_ethnicity.csv",
    "gbt2261_2_marital_status.csv": "value_sets/gbt2261_2_marital_status.csv",
    "ws445_visit_type.csv": "value_sets/ws445_patient_type_visit_type.csv",
    "ws445_payment_method.csv": "value_sets/ws445_medical_payment_method.csv",
}


def read(rel: str) -> list[dict[str, str]]:
    with open(REFERENCE / rel, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def write(name: str, header: list[str], rows: list[list[str]]) -> None:
    with open(SEEDS / name, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
    print(f"seeds/{name}: {len(rows)} rows")


def divisions() -> list[list[str]]:
    def level(code: str) -> str:
        if code.endswith("0000"):
            return "province"
        if code.endswith("00"):
            return "city"
        return "county"

    found: dict[str, dict] = {}
    for r in read("china_admin_divisions/gbt2260_2007_codes.csv"):
        if r["code"].startswith("51"):
            found[r["code"]] = {"name": r["name"], "2007": True, "2023": False}
    nbs = [(r["code"] + "0000", r["name"]) for r in read("china_admin_divisions/modood_provinces.csv")]
    nbs += [(r["code"] + "00", r["name"]) for r in read("china_admin_divisions/modood_cities.csv")]
    nbs += [(r["code"], r["name"]) for r in read("china_admin_divisions/modood_areas.csv")]
    for code, name in nbs:
        if not code.startswith("51"):
            continue
        row = found.setdefault(code, {"name": name, "2007": False, "2023": True})
        row["2023"] = True
        row["name"] = name  # the current name where the code still exists
    rows = []
    for code in sorted(found):
        r = found[code]
        parent = "" if level(code) == "province" else (code[:2] + "0000" if level(code) == "city" else code[:4] + "00")
        rows.append([code, r["name"], level(code), parent, str(r["2007"]).lower(), str(r["2023"]).lower()])
    return rows


def main() -> int:
    if not REFERENCE.is_dir():
        print(f"reference data not found at {REFERENCE}", file=sys.stderr)
        return 1
    SEEDS.mkdir(exist_ok=True)
    for name, rel in COPIES.items():
        rows = read(rel)
        write(name, ["code", "name_zh"], [[r["code"], r["name_zh"]] for r in rows])
    write("gbt2260_divisions_sichuan.csv",
          ["division_code", "division_name", "division_level", "parent_division_code", "in_gbt2260_2007", "in_nbs_2023"],
          divisions())
    # Four codes appear twice in the source (F99, K00, T79, Z80): the first row is a block or
    # chapter heading that shares the code, the second the category itself; keep the second.
    categories = {r["category_code"]: r["name_zh"] for r in read("icd/icd10_cn_2011rev_3char_categories.csv")}
    write("icd10_categories.csv", ["category_code", "name_zh"], [[c, n] for c, n in categories.items()])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

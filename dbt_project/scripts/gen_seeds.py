"""Copy the national code tables the dbt models use from ../shared/reference into seeds/.

Run from the repository root:  .venv/bin/python dbt_project/scripts/gen_seeds.py
The output CSVs are committed; re-running this script must leave them unchanged.

- Value sets (GB/T 2261.1 sex, GB 3304 ethnicity, GB/T 2261.2 marital status, WS 445 visit type
  and payment method) are copied as they are.
- Divisions: the Sichuan (51xxxx) rows of GB/T 2260-2007 united with the 2023 NBS county-level
  codes (modood), because institutions code addresses with either edition (双流县 510122 became
  双流区 510116 in 2015). Each row says which edition has it.
- ICD-10: the 3-character categories of the 2011 MoH revision (2,047 codes) and its 4-character
  subcategories; a diagnosis is valid when its category exists and, when it names a subcategory
  (E11.9), that subcategory exists too. Extension digits beyond the subcategory (E11.900, I10.X01)
  are the institution's or the clinical edition's own and are not checked.
- Division changes: every Sichuan county code of GB/T 2260-2007 that the 2023 table no longer has,
  mapped to the code that replaced it (same prefecture, or the province, and a current name that
  starts with the old name's stem: 双流县 510122 → 双流区 510116; 简阳市 512081 → 510185). Renames
  the stem cannot find are listed in RENAMED with their source.
- ICD-9-CM-3 procedures (Chinese edition, 4,398 codes), as they are.
- Lab items: WS/T 102-1998 item codes (8-digit items only, the leaves of the hierarchy) with the
  LOINC code of WS 446-2014 where one item of WS 446 has the same short name once the WS/T 102
  name's specimen prefix (血清/全血/血浆/尿) and the word 测定 are removed (白细胞计数 → 26464-8).
  A name match, not an official crosswalk: the column says so.
- ABO (WS 364 CV04.50.005) and Rh (WS 445) blood types, as they are.
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
    "ws364_abo_blood_type.csv": "value_sets/ws364_cv04_50_005_abo_blood_type.csv",
    "ws445_rh_blood_type.csv": "value_sets/ws445_rh_blood_type.csv",
}

# Renames a name stem cannot find (retired code → current code, with the State Council approval).
RENAMED = {
    "511521": ("511504", "宜宾县撤县设叙州区（2018 年），名称不同"),
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


def division_changes(rows: list[list[str]]) -> list[list[str]]:
    """Retired county codes (in 2007, not in 2023) → the current code that replaced them."""
    current = [r for r in rows if r[2] == "county" and r[5] == "true"]
    out = []
    for code, name, level, parent, in_2007, in_2023 in rows:
        if level != "county" or in_2023 == "true":
            continue
        if code in RENAMED:
            new, basis = RENAMED[code]
        else:
            stem = name[:-1] if len(name) > 2 else name[:1]
            same_city = [c for c in current if c[3] == parent and c[1].startswith(stem)]
            anywhere = [c for c in current if c[1].startswith(stem)]
            hits = same_city or anywhere
            if len(hits) != 1:
                raise SystemExit(f"division {code} {name}: {len(hits)} candidates for its current code; add it to RENAMED")
            new, basis = hits[0][0], "名称相同或同名撤县设区/市"
        new_name = next(c[1] for c in current if c[0] == new)
        out.append([code, name, new, new_name, basis])
    return out


def lab_items() -> list[list[str]]:
    loinc: dict[str, str] = {}
    for r in read("lab/ws_446_2014_lab_items_loinc.csv"):
        loinc.setdefault(r["short_name_zh"].replace(" ", ""), r["loinc_code"])
    out = []
    seen = set()
    for r in read("lab/ws_t_102_1998_clinical_lab_items.csv"):
        code = r["code"]
        if len(code) != 8 or code in seen:   # categories (1, 101) are not items; 4 codes repeat in the source
            continue
        seen.add(code)
        name = r["name_zh"].rstrip(" -")
        short = name
        for prefix in ("血清", "全血", "血浆", "尿液", "尿"):
            if short.startswith(prefix) and len(short) > len(prefix) + 1:
                short = short[len(prefix):]
                break
        short = short.removesuffix("测定").replace(" ", "")
        hit = loinc.get(short) or loinc.get(short + "量")
        out.append([code, name, r["name_en"], r["method_zh"], hit or "", "name_match" if hit else ""])
    return out


def main() -> int:
    if not REFERENCE.is_dir():
        print(f"reference data not found at {REFERENCE}", file=sys.stderr)
        return 1
    SEEDS.mkdir(exist_ok=True)
    for name, rel in COPIES.items():
        rows = read(rel)
        write(name, ["code", "name_zh"], [[r["code"], r["name_zh"]] for r in rows])
    division_rows = divisions()
    write("gbt2260_divisions_sichuan.csv",
          ["division_code", "division_name", "division_level", "parent_division_code", "in_gbt2260_2007", "in_nbs_2023"],
          division_rows)
    write("gbt2260_division_changes.csv",
          ["retired_code", "retired_name", "current_code", "current_name", "basis"], division_changes(division_rows))
    # Four codes appear twice in the source (F99, K00, T79, Z80): the first row is a block or
    # chapter heading that shares the code, the second the category itself; keep the second.
    categories = {r["category_code"]: r["name_zh"] for r in read("icd/icd10_cn_2011rev_3char_categories.csv")}
    write("icd10_categories.csv", ["category_code", "name_zh"], [[c, n] for c, n in categories.items()])
    subcategories = {r["subcategory_code"]: r["name_zh"] for r in read("icd/icd10_cn_2011rev_4char_subcategories.csv")}
    write("icd10_subcategories.csv", ["subcategory_code", "name_zh"], [[c, n] for c, n in subcategories.items()])
    procedures = {r["code"]: r["name_zh"] for r in read("icd/icd9cm3_cn_procedures.csv")}
    write("icd9cm3_procedures.csv", ["procedure_code", "name_zh"], [[c, n] for c, n in procedures.items()])
    write("wst102_lab_items.csv", ["item_code", "name_zh", "name_en", "method_zh", "loinc_code", "loinc_basis"],
          lab_items())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""National code tables the generator draws from (read from ``../shared/reference``, never copied).

Only what the city needs: the 内江市 (5110) county-level divisions (GB/T 2260 via the NBS table),
ICD-10 (MoH 2011 revision: 4-character subcategories plus the 3-character categories that have
no subcategory, such as I10), and the GB 3304 ethnicity names.
"""

from __future__ import annotations

import csv
import os
from functools import lru_cache
from pathlib import Path

CITY_CODE = "5110"


def reference_dir() -> Path:
    """``HEALTHLAKE_REFERENCE`` if set, else the repository's sibling ``shared/reference``."""
    env = os.environ.get("HEALTHLAKE_REFERENCE")
    if env:
        return Path(env)
    from healthlake.config import SHARED_REFERENCE

    return SHARED_REFERENCE


def _rows(relpath: str) -> list[dict]:
    with open(reference_dir() / relpath, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


@lru_cache(maxsize=None)
def city_divisions() -> tuple[tuple[str, str], ...]:
    """(code, name) of the county-level divisions of 内江市, in code order."""
    rows = [(r["code"], r["name"]) for r in _rows("china_admin_divisions/modood_areas.csv")
            if r["cityCode"] == CITY_CODE]
    if not rows:
        raise RuntimeError(f"no divisions of city {CITY_CODE} in {reference_dir()}")
    return tuple(sorted(rows))


@lru_cache(maxsize=None)
def sichuan_divisions() -> dict[str, str]:
    """All county-level codes of Sichuan (51) and Chongqing (50): birthplaces of migrants."""
    return {r["code"]: r["name"] for r in _rows("china_admin_divisions/modood_areas.csv")
            if r["provinceCode"] in ("50", "51")}


@lru_cache(maxsize=None)
def icd10() -> dict[str, str]:
    """ICD-10 code -> Chinese name: every 4-character subcategory, plus each 3-character category
    without subcategories (I10, J45 ...). Dagger/asterisk codes ('E11.2+') keep their mark."""
    sub = {r["subcategory_code"]: r["name_zh"] for r in _rows("icd/icd10_cn_2011rev_4char_subcategories.csv")}
    parents = {c[:3] for c in sub}
    codes = dict(sub)
    for r in _rows("icd/icd10_cn_2011rev_3char_categories.csv"):
        if r["category_code"] not in parents:
            codes[r["category_code"]] = r["name_zh"]
    return dict(sorted(codes.items()))


@lru_cache(maxsize=None)
def ethnicities() -> dict[str, str]:
    return {r["code"]: r["name_zh"] for r in _rows("value_sets/gb3304_ethnicity.csv")}


@lru_cache(maxsize=None)
def lab_item_codes() -> dict[str, str]:
    """WS/T 102-1998 clinical lab item code -> name (for checking the lab catalogue)."""
    return {r["code"]: r["name_zh"] for r in _rows("lab/ws_t_102_1998_clinical_lab_items.csv")}

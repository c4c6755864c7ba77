"""One tiny synthetic city lake per test session, shared by the access and security tests.

Built on first use (generate_city + every asset through Dagster, as tests/test_pipeline_e2e.py
does; ≈ 1 min on a quiet machine) into a temporary directory; the pipeline's catalog step builds
the resource directory and publishes per clearance. Importable from
``tests/`` (``from security.tiny_city import tiny_city``): tests/ is on sys.path via its conftest.
"""

from __future__ import annotations

import atexit
import csv
import os
import shutil
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

RESIDENTS, DAYS, SEED = 400, 2, 11
_ENV = ("HEALTHLAKE_ROOT", "HEALTHLAKE_LANDING", "HEALTHLAKE_CATALOG", "HEALTHLAKE_DATA_PATH",
        "HEALTHLAKE_REGISTRY", "DAGSTER_HOME", "HEALTHLAKE_PUBLISH_SECRET")


@dataclass(frozen=True)
class TinyCity:
    settings: object
    persons: list            # truth/persons.csv rows
    secrets: frozenset       # strings that must never come back below level 4 (IDs, full names, phones)
    publish_summary: list


class env_of:
    """Point the HEALTHLAKE_* environment at the tiny city for the duration of a block."""

    def __init__(self, root: Path):
        self.root = root

    def __enter__(self):
        self.saved = {k: os.environ.get(k) for k in _ENV}
        for k in _ENV:
            os.environ.pop(k, None)
        os.environ["HEALTHLAKE_ROOT"] = str(self.root)
        return self

    def __exit__(self, *exc):
        for k, v in self.saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def tiny_city() -> TinyCity:
    """The session's tiny city; a failed build is raised again at once (not rebuilt for every test)."""
    city = _build()
    if isinstance(city, BaseException):
        raise RuntimeError(f"tiny city build failed: {city}") from city
    return city


@lru_cache(maxsize=1)
def _build() -> TinyCity | BaseException:
    try:
        return _build_city()
    except Exception as e:  # noqa: BLE001 - cached and re-raised by tiny_city()
        return e


def _build_city() -> TinyCity:
    from catalog.publish import LEVELS, publish_all, published_path
    from healthlake.cli import run_all_assets
    from healthlake.config import settings
    from healthlake.lake import connect
    from synthetic import generate_city

    base = Path(tempfile.mkdtemp(prefix="healthlake_access_"))
    atexit.register(shutil.rmtree, base, True)
    with env_of(base / "root"):
        s = settings()
        generate_city(s.city_dir, residents=RESIDENTS, days=DAYS, seed=SEED)
        result = run_all_assets(s, log_level="WARNING")
        if not result.success:
            failed = [f"{ev.step_key}: {ev.event_specific_data.error.message.strip()[:300]}"
                      for ev in result.all_events if ev.is_step_failure]
            raise RuntimeError("tiny city pipeline failed: " + "; ".join(failed))
        # the pipeline's catalog step published per clearance; publish only if it did not
        summary = ([{"level": lv, "path": str(published_path(lv, s))} for lv in LEVELS]
                   if all(published_path(lv, s).exists() for lv in LEVELS) else publish_all(s))
        con = connect(s, read_only=True)
        try:
            practitioners = {r[0] for r in con.execute("SELECT name FROM resource.dim_practitioner").fetchall()}
        finally:
            con.close()
    with open(s.city_dir / "truth" / "persons.csv", encoding="utf-8") as f:
        persons = list(csv.DictReader(f))
    secrets = set()
    for p in persons:
        secrets.add(p["id_number"])
        if p["phone"]:
            secrets.add(p["phone"])
        # Two-character names (王伟) also occur inside other text and as practitioners' names
        # (published as-is at level 2): only full names of three or more characters, not shared
        # with a practitioner, are proof of a leak.
        if len(p["name"]) >= 3 and p["name"] not in practitioners:
            secrets.add(p["name"])
    return TinyCity(s, persons, frozenset(secrets), summary)


def leaks(rows, secrets) -> list[str]:
    """Secrets found in any cell of any row (substring match on the cells' text)."""
    text = "\x00".join(str(cell) for row in rows for cell in row if cell is not None)
    return sorted(sec for sec in secrets if sec in text)

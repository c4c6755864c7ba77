"""``generate_city``: the synthetic 内江市 — registry, landing extracts and ground truth."""

from __future__ import annotations

import json
import shutil
from datetime import date, timedelta
from pathlib import Path

from synthetic.activity import Activity
from synthetic.defects import DEFECTS, PROFILES
from synthetic.feeds import DATASETS_BY_KIND, build_feeds, registry_document, write_registry
from synthetic.geography import CITY_DIVISION
from synthetic.institutions import CityInstitutions, build_institutions
from synthetic.population import Population
from synthetic.rng import Hasher
from synthetic.truth import Truth
from synthetic.writer import Sink

DEPLOYMENT_NAME = "内江市全民健康信息平台（演示）"


def generate_city(out: Path, residents: int, days: int, seed: int, start_date: date = date(2026, 10, 1), *,
                  pacs: bool = False, frontend_db: bool = False) -> dict:
    """Write a synthetic city under ``out``: ``registry.yaml``, ``landing/<institution>/<feed>/
    <feed>_<YYYYMMDD>.csv`` (one file per feed per delivery day) and ``truth/``.

    Deterministic: the same arguments give byte-identical files. Memory is bounded by the window
    (a day's events and a few bytes per resident), so a million residents work. Existing
    ``registry.yaml``, ``landing/`` and ``truth/`` under ``out`` are replaced.
    Returns a small summary (files written, rows per data set, persons, institutions, ...).

    ``pacs``: the 三级 hospital's PACS also delivers the DICOM files of its imaging exams
    (synthetic/pacs.py; truth/imaging.csv, summary ``pacs``). ``frontend_db``: the CDC's
    immunisation feed goes to its front-end database ``frontend/<code>/frontend.sqlite``, growing
    by a day's rows per day, instead of daily SQLite files (formats.FRONTEND_DB). Both are off by
    default (the tests' cities stay as they were); ``healthlake demo`` turns them on.
    """
    out = Path(out)
    if residents < 1 or days < 1:
        raise ValueError("residents and days must be at least 1")
    if not isinstance(start_date, date):
        raise TypeError("start_date must be a datetime.date")
    out.mkdir(parents=True, exist_ok=True)
    for sub in ("landing", "truth", "frontend"):
        if (out / sub).exists():
            shutil.rmtree(out / sub)
    (out / "registry.yaml").unlink(missing_ok=True)

    hasher = Hasher(seed)
    pop = Population(residents, seed, start_date, hasher)
    institutions = build_institutions(seed, pop.districts)
    city = CityInstitutions(institutions, pop.districts)
    feeds = {inst.code: build_feeds(inst) for inst in institutions}
    if frontend_db:
        from synthetic.formats import FRONTEND_DB

        for f in (f for code, sets in FRONTEND_DB.items() for f in feeds[code] if f.dataset in sets):
            f.format = "frontend"
    deployment = {"name": DEPLOYMENT_NAME, "division_code": CITY_DIVISION, "generated_by": "synthetic",
                  "seed": seed, "residents": residents, "days": days, "start_date": start_date.isoformat()}
    document = registry_document(deployment, institutions, feeds)
    truth = Truth(out)
    imaging = None
    if pacs:
        from synthetic.pacs import Pacs

        imaging = Pacs(out, seed, institutions)
        imaging.add_to_registry(document)
    write_registry(out / "registry.yaml", document)

    rates = {inst.code: PROFILES[inst.profile] for inst in institutions}
    sink = Sink(out / "landing", seed, truth, rates, residents)
    activity = Activity(seed, start_date, days, pop, city, sink, hasher)
    activity.pacs = imaging
    try:
        for k in range(days):
            day = start_date + timedelta(days=k)
            sink.open_day([f for inst in institutions for f in feeds[inst.code] if k == 0 or not f.is_dictionary],
                          day)
            try:
                if k == 0:
                    activity.dictionaries()
                    activity.first_pass()
                activity.run_day(k)
            finally:
                sink.close_day()
                if imaging is not None:
                    imaging.close_day(day)
    finally:
        truth.close()
        if imaging is not None:
            imaging.close()
    truth.write_unloadable()

    ledger = truth.ledger
    per_institution = {}
    rows_per_dataset: dict[str, int] = {}
    for inst in institutions:
        datasets = {}
        for f in feeds[inst.code]:
            s = ledger.summary(inst.code, f.dataset)
            datasets[f.dataset] = {"feed_id": f.id, "format": f.format,
                                   "files": sink.files_per_feed.get((inst.code, f.dataset), 0), **s}
            rows_per_dataset[f.dataset] = rows_per_dataset.get(f.dataset, 0) + s["rows_written"]
        per_institution[inst.code] = {
            "name": inst.name, "kind": inst.kind, "level": inst.level, "division_code": inst.division,
            "defect_profile": inst.profile, "defect_rates": dict(rates[inst.code]),
            "defects_injected": {d: truth.defect_counts.get((inst.code, d), 0) for d in DEFECTS},
            "datasets": datasets,
        }

    def loadable(dataset: str) -> int:
        return sum(ledger.summary(i.code, dataset)["distinct_keys_loadable"] for i in institutions
                   if dataset in DATASETS_BY_KIND[i.kind])

    formats: dict[str, dict] = {}   # per format: feeds, files, rows written, malformed rows, distinct loadable keys
    for inst in institutions:
        for f in feeds[inst.code]:
            d = per_institution[inst.code]["datasets"][f.dataset]
            t = formats.setdefault(f.format, {"institutions": set(), "feeds": 0, "files": 0, "rows_written": 0,
                                              "malformed_rows": 0, "distinct_keys_loadable": 0})
            t["institutions"].add(inst.code)
            t["feeds"] += 1
            for k in ("files", "rows_written", "malformed_rows", "distinct_keys_loadable"):
                t[k] += d[k]
    formats = {k: {**v, "institutions": sorted(v["institutions"])} for k, v in sorted(formats.items())}

    city_summary = {
        "persons": residents,
        "households": activity.households,
        "persons_with_valid_id_in_any_feed": sum(sink.valid_id_persons),
        "institutions": len(institutions),
        "encounters_loadable": loadable("encounter"),
        "health_records_loadable": loadable("health_record"),
        "files_written": sink.files_written,
        "rows_per_dataset": dict(sorted(rows_per_dataset.items())),
        "formats": formats,
    }
    summary = {"deployment": deployment, "city": city_summary, "institutions": per_institution}
    if imaging is not None:
        summary["pacs"] = imaging.summary()
    (out / "truth" / "summary.json").write_text(json.dumps(summary, ensure_ascii=False, indent=2) + "\n",
                                                encoding="utf-8")
    return {"out": str(out), "files_written": sink.files_written, "rows_per_dataset": city_summary["rows_per_dataset"],
            "persons": residents, "households": activity.households, "institutions": len(institutions),
            "encounters_loadable": city_summary["encounters_loadable"],
            "health_records_loadable": city_summary["health_records_loadable"],
            "persons_with_valid_id_in_any_feed": city_summary["persons_with_valid_id_in_any_feed"],
            "files_per_format": {k: v["files"] for k, v in formats.items()}}

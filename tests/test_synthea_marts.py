"""The Synthea reference data reaches the marts: the 59 patients and their 2,590 encounters of
../shared/reference/synthea/csv go through the CSV reader into bronze and through dbt into
population.dim_person and emr.fct_encounter (counted against the source files, independently of
the pipeline). Only the models those two marts need are built (seconds, not the whole project).
"""

from __future__ import annotations

import csv
import subprocess
from pathlib import Path

import pytest
import yaml

from healthlake.config import REPO_ROOT
from healthlake.dbt import DBT_PROJECT_DIR, dbt_env
from healthlake.lake import connect
from ingest_adapters import ingest_landing
from ingest_adapters.reference_institution import SYNTHEA_CSV_FEEDS

SYNTHEA_CSV = Path(__file__).resolve().parents[2] / "shared" / "reference" / "synthea" / "csv"
pytestmark = pytest.mark.skipif(not SYNTHEA_CSV.exists(), reason="../shared/reference/synthea is not on this machine")

REGISTRY = {"institutions": [{
    "code": "SYN01", "name": "Synthea 参考机构", "kind": "hospital", "level": "三级甲等", "division_code": "511002",
    "feeds": [{**f, "id": f["id"].removeprefix("synthea_")} for f in SYNTHEA_CSV_FEEDS]}]}


def source_rows(name: str) -> list[dict]:
    with open(SYNTHEA_CSV / name, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def test_synthea_patients_and_encounters_reach_the_marts(lake_env):
    s = lake_env
    patients, encounters = source_rows("patients.csv"), source_rows("encounters.csv")
    assert len(patients) == 59 and len(encounters) == 2590
    s.registry.parent.mkdir(parents=True, exist_ok=True)
    s.registry.write_text(yaml.safe_dump(REGISTRY, allow_unicode=True, sort_keys=False), encoding="utf-8")
    for feed, name in (("patients", "patients.csv"), ("encounters", "encounters.csv")):
        target = s.landing / "SYN01" / feed / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((SYNTHEA_CSV / name).read_bytes())
    results = ingest_landing(s)
    assert [(r.status, r.rows_rejected) for r in results] == [("loaded", 0)] * 2

    dbt = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "dbt"
    env = {**__import__("os").environ, **dbt_env(s)}
    run = subprocess.run([str(dbt), "build", "--project-dir", str(DBT_PROJECT_DIR), "--select",
                          "+dim_person +fct_encounter", "--exclude-resource-type", "test", "unit_test"],
                         cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]

    con = connect(s, read_only=True)
    try:
        persons = con.execute("SELECT count(*), count(DISTINCT person_key) FROM population.dim_person").fetchone()
        linked = con.execute("SELECT count(DISTINCT e.person_key), count(DISTINCT p.person_key) FROM emr.fct_encounter e "
                             "LEFT JOIN population.dim_person p USING (person_key)").fetchone()
        got = con.execute("SELECT count(*), count(person_key), count(visit_at), count(DISTINCT patient_id) "
                          "FROM emr.fct_encounter WHERE institution_code = 'SYN01'").fetchone()
        per_patient = dict(con.execute("SELECT patient_id, count(*) FROM emr.fct_encounter GROUP BY 1").fetchall())
    finally:
        con.close()
    # every patient is one person (no Chinese ID number: each identity is its own person), none lost
    assert persons == (59, 59)
    assert linked == (59, 59)
    # every encounter, each linked to its patient's person through the hospital's patient ID
    assert got == (2590, 2590, 2590, 59)
    expected = {}
    for e in encounters:
        expected[e["PATIENT"]] = expected.get(e["PATIENT"], 0) + 1
    assert per_patient == expected

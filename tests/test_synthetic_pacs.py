"""The synthetic PACS (synthetic/pacs.py): the two 三级 hospitals deliver DICOM files of their
imaging exams; every file is accounted for (rows read = loaded + rejected, per delivery, each
rejected file with the reason the truth expects) and emr.fct_imaging_study equals the truth,
each study linked to the right person."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

from healthlake.config import REPO_ROOT
from healthlake.dbt import DBT_PROJECT_DIR, dbt_env
from synthetic import generate_city
from synthetic.pacs import FEED_ID, PACS
from tests.lake_reader import ingest_landing, q

# 2,000 residents × 2 days, seed 23: 35 files of CT, MR, DR and US studies, with both defects
RESIDENTS, DAYS, SEED = 2000, 2, 23
KEEP_FEEDS = {"his_patient", "ris_report", FEED_ID}   # the person feed links the studies; the reports their accession


def read_csv(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def test_generated_dicom_files_are_valid_deterministic_and_charset_aware(tmp_path):
    from pydicom import dcmread

    from ingest_adapters.dicom import iter_delivery, read_instance

    generate_city(tmp_path / "a", RESIDENTS, DAYS, SEED, pacs=True)
    generate_city(tmp_path / "b", RESIDENTS, DAYS, SEED, pacs=True)
    zips = sorted((tmp_path / "a" / "landing").glob(f"*/{FEED_ID}/*.zip"))
    assert zips and all((tmp_path / "b" / z.relative_to(tmp_path / "a")).read_bytes() == z.read_bytes() for z in zips)
    truth = read_csv(tmp_path / "a" / "truth" / "imaging.csv")
    seen_charsets = set()
    for z in zips:
        for name, data in iter_delivery(z):
            t = next(r for r in truth if r["member"] == name and z.as_posix().endswith(r["file"]))
            if t["defect"] != "none":
                continue
            ds = dcmread(__import__("io").BytesIO(data))
            assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID == t["sop_instance_uid"]
            assert (ds.Modality, ds.StudyInstanceUID, ds.PatientID) == (t["modality"], t["study_instance_uid"],
                                                                        t["patient_id"])
            assert len(data) < 4096 and ds.Rows == ds.Columns == 8
            inst = read_instance(data, "gb18030")
            seen_charsets.add(inst.values["SpecificCharacterSet"])
            if inst.values["SpecificCharacterSet"] == "GB18030":
                assert "=" in inst.values["PatientName"] and inst.values["InstitutionName"] in ("内江市第一人民医院",
                                                                                                "内江市中医医院")
    assert seen_charsets == {"GB18030", None}
    assert not (tmp_path / "c").exists()
    generate_city(tmp_path / "c", 600, 1, SEED)   # off by default: no PACS feed, no DICOM
    registry = yaml.safe_load((tmp_path / "c" / "registry.yaml").read_text(encoding="utf-8"))
    assert not any(f["format"] == "dicom" for i in registry["institutions"] for f in i["feeds"])


def test_pacs_deliveries_are_accounted_and_the_imaging_mart_equals_the_truth(lake_env):
    s = lake_env
    generate_city(s.city_dir, RESIDENTS, DAYS, SEED, pacs=True)
    # only the PACS hospitals' person, report and PACS feeds: the test is about the DICOM path
    for inst_dir in s.landing.iterdir():
        for feed_dir in inst_dir.iterdir():
            if inst_dir.name not in PACS or feed_dir.name not in KEEP_FEEDS:
                shutil.rmtree(feed_dir)
    truth = read_csv(s.city_dir / "truth" / "imaging.csv")
    defects = {r["defect"] for r in truth}
    assert defects == {"none", "truncated", "not_dicom"}, defects
    assert {r["modality"] for r in truth} == {"CT", "MR", "DX", "US"}

    results = ingest_landing(s)
    assert all(r.status == "loaded" for r in results), [(r.source_file, r.error) for r in results if r.error]
    dicom = {r.source_file: r for r in results if r.feed == FEED_ID}
    per_file = defaultdict(lambda: [0, 0])
    for t in truth:
        per_file[t["file"]][t["defect"] != "none"] += 1
    assert {f: (r.rows_read, r.rows_loaded, r.rows_rejected) for f, r in dicom.items()} == {
        f: (ok + bad, ok, bad) for f, (ok, bad) in per_file.items()}
    assert q(s, "SELECT count(*) FROM ops.ingest_batch WHERE rows_read <> rows_loaded + rows_rejected") == [(0,)]
    # every rejected file with the reason the truth expects, at its place in the delivery
    rejects = {(f, n): e for f, n, e in q(s, "SELECT source_file, source_row, error_type FROM bronze._rejects "
                                             "WHERE feed = ?", [FEED_ID])}
    assert rejects == {(t["file"], int(t["source_row"])): t["error_type"] for t in truth if t["defect"] != "none"}
    reasons = [r for (r,) in q(s, "SELECT reason FROM bronze._rejects WHERE feed = ?", [FEED_ID])]
    assert all(("truncated" in r or "not a DICOM" in r) for r in reasons), reasons
    # the loaded instances are the truth's, each at its place
    assert sorted(q(s, "SELECT _source_file, _source_row, sop_instance_uid FROM bronze.imaging_instance")) == sorted(
        (t["file"], int(t["source_row"]), t["sop_instance_uid"]) for t in truth if t["defect"] == "none")

    dbt = Path(REPO_ROOT) / ".venv" / "bin" / "dbt"
    run = subprocess.run([str(dbt), "build", "--project-dir", str(DBT_PROJECT_DIR), "--select",
                          "+fct_imaging_study +dim_person", "--exclude-resource-type", "test", "unit_test"],
                         cwd=REPO_ROOT, env={**os.environ, **dbt_env(s)}, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]

    studies: dict[tuple, dict] = {}
    for t in truth:
        if t["defect"] != "none":
            continue
        st = studies.setdefault((t["institution_code"], t["study_instance_uid"]), {
            "patient_id": t["patient_id"], "accession": t["accession_number"], "modality": t["modality"],
            "body_part": t["body_part"], "date": t["study_date"], "series": set(), "instances": 0,
            "person_uid": t["person_uid"]})
        st["series"].add(t["series_instance_uid"])
        st["instances"] += 1
    got = {(i, u): (p, a, m, b, str(d), sc, ic) for i, u, p, a, m, b, d, sc, ic in q(
        s, "SELECT institution_code, study_instance_uid, patient_id, accession_number, modalities, body_parts, "
           "study_date, series_count, instance_count FROM emr.fct_imaging_study")}
    assert got == {k: (v["patient_id"], v["accession"], v["modality"], v["body_part"], v["date"], len(v["series"]),
                       v["instances"]) for k, v in studies.items()}
    assert max(len(v["accession"]) for v in studies.values()) <= 16   # DICOM AccessionNumber is SH

    # the right person: the study's person_key is the one the hospital's patient id links to, and
    # that person's identity number is the resident's true one (when the hospital sent it correctly)
    persons = {p["person_uid"]: p["id_number"] for p in read_csv(s.city_dir / "truth" / "persons.csv")}
    sent_ok = {(i["institution_code"], i["source_id"]) for i in read_csv(s.city_dir / "truth" / "identities.csv")
               if i["dataset"] == "person" and i["id_defect"] == "none"}
    linked = {(i, u): (k, pk, n) for i, u, k, pk, n in q(
        s, "SELECT f.institution_code, f.study_instance_uid, f.person_key, l.person_key, d.id_number "
           "FROM emr.fct_imaging_study f LEFT JOIN intermediate.int_patients_linked l USING (institution_code, patient_id) "
           "LEFT JOIN population.dim_person d ON d.person_key = f.person_key")}
    checked = 0
    for key, st in studies.items():
        person_key, patient_key, id_number = linked[key]
        assert person_key is not None and person_key == patient_key, key
        if (key[0], st["patient_id"]) in sent_ok:
            assert id_number == persons[st["person_uid"]], key
            checked += 1
    assert checked > len(studies) // 2
    by_person = defaultdict(set)
    for key, st in studies.items():
        by_person[st["person_uid"]].add(linked[key][0])
    assert all(len(keys) == 1 for keys in by_person.values())

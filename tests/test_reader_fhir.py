"""FHIR R4 reader: Synthea bundles counted against the source, references resolved in the
bundle and to earlier-loaded resources, bulk NDJSON, broken files, accounting, idempotence."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import yaml

from ingest_adapters import RegistryError, parse_registry
from ingest_adapters.fhir import evaluate, parse_path
from ingest_adapters.reference_institution import NPI, synthea_fhir_mapping as mapping
from tests.lake_reader import ingest_landing, q

SYNTHEA = Path(__file__).resolve().parents[2] / "shared" / "reference" / "synthea" / "fhir_r4"
FIXTURES = Path(__file__).with_name("fixtures") / "fhir"
needs_synthea = pytest.mark.skipif(not SYNTHEA.exists(), reason="../shared/reference/synthea is not on this machine")
SMALL_BUNDLES = ["Jorge_Luis88_Vela532_593aaa05-d864-1df7-5b96-155fbdb19f28.json",
                 "Mariam937_Nader710_cd4e1009-a582-b08c-74c8-38e6fc433659.json"]
def registry(code="R01", m=None) -> dict:
    return {"institutions": [{"code": code, "name": "参考机构", "kind": "hospital", "level": "三级甲等",
                              "division_code": "511002",
                              "feeds": [{"id": "fhir", "format": "fhir", "mapping": m or mapping()}]}]}


def write_registry(s, data):
    s.registry.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")


def put(s, code, name, data: bytes):
    p = s.landing / code / "fhir" / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p


TABLES = ("person", "encounter", "diagnosis", "lab_result", "prescription", "immunization", "procedure", "practitioner")


def accounting_holds(s):
    union = " UNION ALL ".join(f"SELECT _source_row FROM bronze.{t} WHERE _batch_id = ?1" for t in TABLES)
    for batch_id, read, loaded, rejected in q(s, "SELECT batch_id, rows_read, rows_loaded, rows_rejected "
                                                 "FROM ops.ingest_batch WHERE status = 'loaded'"):
        assert read == loaded + rejected
        assert q(s, f"SELECT count(DISTINCT _source_row) FROM ({union})", [batch_id]) == [(loaded,)]
        assert q(s, "SELECT count(*) FROM bronze._rejects WHERE batch_id = ?", [batch_id]) == [(rejected,)]


def source_counts(bundle: dict) -> Counter:
    """Counted from the JSON, independently of the reader."""
    c = Counter()
    for e in bundle["entry"]:
        r = e["resource"]
        t = r["resourceType"]
        if t == "Observation":
            if any(cd.get("code") == "laboratory" for cat in r.get("category", []) for cd in cat.get("coding", [])):
                c["lab_result"] += 1
        else:
            c[{"Patient": "person", "Encounter": "encounter", "Condition": "diagnosis", "Immunization": "immunization",
               "MedicationRequest": "prescription", "Practitioner": "practitioner",
               "Procedure": "procedure"}.get(t, "other:" + t)] += 1
    return c


# ------------------------------------------------------------------ Synthea (real FHIR R4 transaction/batch bundles)

@needs_synthea
def test_synthea_bundles_fill_every_data_set_with_resolved_references(lake_env):
    s = lake_env
    write_registry(s, registry())
    names = ["practitionerInformation1646420022724.json"] + SMALL_BUNDLES
    for n in names:  # the practitioners' batch bundle sorts first: "a_…"
        put(s, "R01", ("a_" if n.startswith("practitioner") else "b_") + n, (SYNTHEA / n).read_bytes())
    results = ingest_landing(s)
    assert [r.status for r in results] == ["loaded"] * 3
    expected = Counter()
    for n in names:
        expected.update(source_counts(json.loads((SYNTHEA / n).read_text())))
    for t in TABLES:
        assert q(s, f"SELECT count(*) FROM bronze.{t}") == [(expected[t],)], t
    assert expected["person"] == 2 and expected["practitioner"] == 173 and min(expected.values()) > 0
    mapped = sum(expected[t] for t in TABLES)
    assert sum(r.rows_read for r in results) == mapped and sum(r.rows_rejected for r in results) == 0
    # references: every encounter's patient is a loaded person, every practitioner a loaded practitioner
    assert q(s, "SELECT count(*) FROM bronze.encounter e ANTI JOIN bronze.person p USING (patient_id)") == [(0,)]
    assert q(s, "SELECT count(*) FROM bronze.encounter e WHERE practitioner_id NOT IN "
                "(SELECT practitioner_id FROM bronze.practitioner)") == [(0,)]
    for t in ("lab_result", "procedure", "diagnosis"):
        assert q(s, f"SELECT count(*) FROM bronze.{t} ANTI JOIN bronze.encounter USING (encounter_id)") == [(0,)]
    assert q(s, "SELECT count(*) FROM bronze.practitioner WHERE practitioner_id IS NULL") == [(0,)]
    # unmapped resource types are counted in the notes, not rejected
    assert results[1].notes["not_mapped"]["Claim"] > 0 and results[1].notes["filtered_out"]["Observation"] > 0
    assert q(s, "SELECT count(*) FROM ops.fhir_resource_index WHERE resource_type = 'Practitioner'") == [(173,)]
    accounting_holds(s)


@needs_synthea
def test_bulk_export_ndjson_and_broken_files(lake_env):
    s = lake_env
    write_registry(s, registry())
    bundle = json.loads((SYNTHEA / SMALL_BUNDLES[0]).read_text())
    by_type: dict[str, list[str]] = {}
    for e in bundle["entry"]:
        text = json.dumps(e["resource"]).replace('"reference": "urn:uuid:', '"reference": "Patient/')
        by_type.setdefault(e["resource"]["resourceType"], []).append(text)
    encounters = by_type["Encounter"]
    # a bulk $export: one file per type, references as Patient/<id>; Encounter sorts before Patient
    put(s, "R01", "Encounter.ndjson", ("\n".join(encounters[:2] + [encounters[2][:80]] + encounters[3:]) + "\n").encode())
    put(s, "R01", "Patient.ndjson", (by_type["Patient"][0] + "\n").encode())
    raw = (SYNTHEA / SMALL_BUNDLES[0]).read_bytes()
    put(s, "R01", "truncated.json", raw[: len(raw) // 2])
    put(s, "R01", "zero.json", b"")
    put(s, "R01", "notjson.json", b"<Bundle xmlns='http://hl7.org/fhir'/>")
    enc, pat, notjson, trunc, zero = ingest_landing(s)
    assert (enc.status, enc.rows_read, enc.rows_loaded, enc.rows_rejected) == ("loaded", len(encounters),
                                                                              len(encounters) - 1, 1)
    assert (pat.rows_read, pat.rows_loaded) == (1, 1)
    [(row, etype, reason)] = q(s, "SELECT source_row, error_type, reason FROM bronze._rejects")
    assert (row, etype) == (3, "INVALID JSON") and reason.startswith("line 3, column")
    # Patient/<id> resolves without the Patient (its key path is id): the person loaded later matches
    assert q(s, "SELECT count(*) FROM bronze.encounter ANTI JOIN bronze.person USING (patient_id)") == [(0,)]
    assert trunc.status == "failed" and "not valid JSON at line" in trunc.error and "truncated" in trunc.error
    assert zero.status == "failed" and "empty (0 bytes)" in zero.error
    assert notjson.status == "failed" and "not valid JSON at line 1, column 1" in notjson.error
    accounting_holds(s)


# ------------------------------------------------------------------ a township centre's own FHIR server (Chinese)

def test_collection_and_searchset_resolve_in_bundle_and_to_earlier_loads(lake_env):
    s = lake_env
    m = mapping(patient_key="identifier[system=urn:nj:T01:mr].value",
                practitioner_key="identifier[system=urn:nj:staff].value")
    write_registry(s, registry("T01", m))
    put(s, "T01", "t01_collection_zh.json", (FIXTURES / "t01_collection_zh.json").read_bytes())
    put(s, "T01", "t01_searchset_zh.json", (FIXTURES / "t01_searchset_zh.json").read_bytes())
    coll, search = ingest_landing(s)
    # collection: 11 entries; Claim not mapped, the vital-signs Observation filtered out -> 9 in scope:
    # 7 loaded, the misspelt 'Pateint' and the Observation of an unknown patient rejected
    assert (coll.rows_read, coll.rows_loaded, coll.rows_rejected) == (9, 7, 2)
    assert coll.notes["not_mapped"] == {"Claim": 1} and coll.notes["filtered_out"] == {"Observation": 1}
    rejects = q(s, "SELECT source_row, error_type, reason, raw_line FROM bronze._rejects ORDER BY source_row")
    assert [(r[0], r[1]) for r in rejects] == [(10, "UNKNOWN RESOURCE TYPE"), (11, "DANGLING REFERENCE")]
    assert "did you mean 'Patient'" in rejects[0][2]
    assert "lab_result.patient_id refers to 'urn:uuid:nobody'" in rejects[1][2]
    assert json.loads(rejects[1][3])["id"] == "o3"  # the resource is kept whole
    assert q(s, "SELECT patient_id, name, sex_code, birth_date, id_number, phone, address_text FROM bronze.person") == [
        ("T0001", "王秀英", "female", "1958-03-07", "511011195803071234", "13900002222", "内江市东兴区椑木镇新桥村3组")]
    assert q(s, "SELECT practitioner_id, name, title, licence_number FROM bronze.practitioner") == [
        ("D009", "刘医生", "执业医师", "110511000012345")]
    assert q(s, "SELECT diagnosis_code, diagnosis_name, patient_id, encounter_id FROM bronze.diagnosis") == [
        ("I10", "原发性高血压", "T0001", "e1")]
    assert q(s, "SELECT drug_code, drug_name, dose, dose_unit, frequency, patient_id FROM bronze.prescription") == [
        ("XC09AAA", "卡托普利片", "25", "mg", "3/1d", "T0001")]
    assert q(s, "SELECT vaccine_code, vaccine_name, dose_seq, vaccinated_date, lot_number FROM bronze.immunization") \
        == [("5601", "流感疫苗", "1", "2026-10-20", "202609A")]
    # searchset: Patient/p1 and Practitioner/d9 are not in it; they resolve to the keys loaded before
    assert (search.rows_read, search.rows_loaded, search.rows_rejected) == (2, 2, 0)
    assert search.notes["references_from_lake"] == 2 and search.notes["not_mapped"] == {"OperationOutcome": 1}
    assert q(s, "SELECT encounter_id, patient_id, practitioner_id, visit_type_code, _source_row FROM bronze.encounter "
                "ORDER BY 1") == [("e1", "T0001", "D009", "AMB", 3), ("e2", "T0001", "D009", "AMB", 1)]
    assert q(s, "SELECT lab_result_id, patient_id, encounter_id, item_code, result_value, unit, reference_range, "
                "abnormal_flag FROM bronze.lab_result ORDER BY 1") == [
        ("o1", "T0001", "e1", "GLU", "7.8", "mmol/L", "3.9-6.1", "H"),
        ("o4", "T0001", "e2", "GLU", "6.2", "mmol/L", "3.9-6.1", "H")]
    # the same content again under another name: skipped, nothing doubled
    put(s, "T01", "t01_collection_zh_resent.json", (FIXTURES / "t01_collection_zh.json").read_bytes())
    assert [r.status for r in ingest_landing(s)] == ["skipped"] * 3
    assert q(s, "SELECT count(*) FROM bronze.person") == [(1,)]
    assert q(s, "SELECT count(*) FROM ops.ingest_batch") == [(2,)]
    accounting_holds(s)


# ------------------------------------------------------------------ paths and registry

def test_paths():
    res = {"identifier": [{"system": "a", "value": "1"}, {"system": "b", "value": "2", "type": {"coding": [{"code": "X"}]}}],
           "name": [{"given": ["秀", "英"]}], "value": 1.50, "flag": True}
    assert evaluate(parse_path("identifier[system=b].value"), res) == ["2"]
    assert evaluate(parse_path("identifier[type.coding.code=X].value"), res) == ["2"]
    assert evaluate(parse_path("identifier[1].system"), res) == ["b"]
    assert evaluate(parse_path("name.given"), res) == ["秀", "英"]
    assert evaluate(parse_path("value"), res) == [1.5] and evaluate(parse_path("missing.path"), res) == []


@pytest.mark.parametrize("change, message", [
    ({"lab_result": {"resource": "Observaton", "lab_result_id": "id", "patient_id": "ref(subject)",
                     "item_code": "code.text"}}, "did you mean 'Observation'"),
    ({"lab_result": {"wher": {"status": "final"}, "lab_result_id": "id", "patient_id": "ref(subject)",
                     "item_code": "code.text"}}, "did you mean 'where'"),
    ({"person": {"patient_id": "identifier[system=a.value"}}, "is not a path step"),
    ({"procedur": {"procedure_id": "id"}}, "unknown standard data set 'procedur'"),
])
def test_registry_checks_fhir_mappings(change, message):
    with pytest.raises(RegistryError) as e:
        parse_registry(registry(m=change))
    assert message in str(e.value)

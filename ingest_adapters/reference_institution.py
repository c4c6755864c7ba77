"""The real public files of ``../shared/reference`` as one "reference" institution of the registry.

Synthea CSV (patients, encounters) and FHIR R4 bundles, the 35 HL7 v2 sample messages and the
14 DICOM files are delivered to the landing zone under the institution ``REFERENCE`` and read by
the real readers through its registry entry. The reader tests (test_reader_fhir, test_reader_hl7v2,
test_synthea_marts) take their mappings from here, and ``make demo`` (``healthlake.cli``) adds the
institution to the demo city when the folder exists::

    entry = reference_institution(reference_dir)          # the registry entry (a dict, as in YAML)
    counts = deliver_reference(reference_dir, landing)    # files into landing/REFERENCE/<feed>/
    # counts (source_counts): feed id -> {"files": n, "records": n} counted from the sources, not by the readers

Source counts: Synthea CSV 59 patients and 2,590 encounters; 35 HL7 messages; 14 DICOM files;
the FHIR bundles' resources of the mapped types.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import zipfile
from functools import lru_cache
from pathlib import Path

CODE = "REFERENCE"
NAME = "公开参考数据（Synthea · HL7 v2 · DICOM）"

# ---------------------------------------------------------------------------------- Synthea CSV
SYNTHEA_CSV_FEEDS = [
    {"id": "synthea_patients", "dataset": "person", "format": "csv", "encoding": "utf-8",
     "mapping": {"patient_id": "Id", "name": "FIRST", "sex_code": "GENDER", "birth_date": "BIRTHDATE",
                 "address_text": "ADDRESS"}},
    {"id": "synthea_encounters", "dataset": "encounter", "format": "csv", "encoding": "utf-8",
     "mapping": {"encounter_id": "Id", "patient_id": "PATIENT", "visit_type_code": "ENCOUNTERCLASS",
                 "practitioner_id": "PROVIDER", "visit_at": "START", "discharge_at": "STOP",
                 "total_fee": "TOTAL_CLAIM_COST"}},
]
SYNTHEA_CSV_FILES = {"synthea_patients": "patients.csv", "synthea_encounters": "encounters.csv"}

# ---------------------------------------------------------------------------------- Synthea FHIR R4
NPI = "http://hl7.org/fhir/sid/us-npi"


def synthea_fhir_mapping(patient_key: str = "id", practitioner_key: str = f"identifier[system={NPI}].value") -> dict:
    """The FHIR feed mapping of Synthea's bundles onto the standard data sets."""
    return {
        "person": {"patient_id": patient_key, "name": "name[0].text | {name[0].family}{name[0].given}",
                   "sex_code": "gender", "birth_date": "birthDate", "phone": "telecom[system=phone].value",
                   "id_number": "identifier[type.coding.code=01].value | identifier[type.coding.code=SS].value",
                   "address_text": "address[0].text | address[0].line"},
        "encounter": {"encounter_id": "id", "patient_id": "ref(subject)", "visit_type_code": "class.code",
                      "practitioner_id": "ref(participant.individual)", "visit_at": "period.start",
                      "discharge_at": "period.end"},
        "diagnosis": {"diagnosis_id": "id", "encounter_id": "ref(encounter)", "patient_id": "ref(subject)",
                      "diagnosis_code": "code.coding[0].code", "diagnosis_name": "code.text",
                      "diagnosed_at": "onsetDateTime | recordedDate"},
        "lab_result": {"resource": "Observation", "where": {"category.coding.code": "laboratory"},
                       "lab_result_id": "id", "patient_id": "ref(subject)", "encounter_id": "ref(encounter)",
                       "item_code": "code.coding[0].code | code.text", "item_name": "code.text",
                       "result_value": "valueQuantity.value | valueString | valueCodeableConcept.text",
                       "unit": "valueQuantity.unit",
                       "reference_range": "{referenceRange[0].low.value}-{referenceRange[0].high.value}",
                       "abnormal_flag": "interpretation[0].coding[0].code", "reported_at": "issued | effectiveDateTime"},
        "prescription": {"order_id": "id", "encounter_id": "ref(encounter)", "patient_id": "ref(subject)",
                         "drug_code": "medicationCodeableConcept.coding[0].code",
                         "drug_name": "medicationCodeableConcept.text",
                         "dose": "dosageInstruction[0].doseAndRate[0].doseQuantity.value",
                         "dose_unit": "dosageInstruction[0].doseAndRate[0].doseQuantity.unit",
                         "frequency": "{dosageInstruction[0].timing.repeat.frequency}/"
                                      "{dosageInstruction[0].timing.repeat.period}"
                                      "{dosageInstruction[0].timing.repeat.periodUnit}",
                         "ordered_at": "authoredOn"},
        "immunization": {"immunization_id": "id", "vaccine_code": "vaccineCode.coding[0].code",
                         "vaccine_name": "vaccineCode.text", "dose_seq": "protocolApplied[0].doseNumberPositiveInt",
                         "vaccinated_date": "occurrenceDateTime", "lot_number": "lotNumber"},
        "procedure": {"procedure_id": "id", "encounter_id": "ref(encounter)", "patient_id": "ref(subject)",
                      "procedure_code": "code.coding[0].code", "procedure_name": "code.text",
                      "procedure_at": "performedPeriod.start | performedDateTime", "procedure_end_at": "performedPeriod.end",
                      "operator_id": "ref(performer.actor)"},
        "practitioner": {"practitioner_id": practitioner_key, "name": "name[0].text | {name[0].family}{name[0].given}",
                         "sex_code": "gender", "title": "qualification[0].code.text",
                         "licence_number": "qualification[0].identifier[0].value"},
    }


# ---------------------------------------------------------------------------------- HL7 v2
HL7_PATIENT = "PID-3[5=MR].1 | PID-3.1"
HL7_MAPPING = {
    "person": {"patient_id": HL7_PATIENT, "name": "PID-5.1", "sex_code": "PID-8", "birth_date": "PID-7",
               "id_number": "PID-3[5=ID].1", "phone": "PID-13.1", "address_text": "PID-11.1"},
    "encounter": {"encounter_id": "PV1-19.1 | {MSH-10}", "patient_id": HL7_PATIENT, "visit_type_code": "PV1-2",
                  "department_code": "PV1-3.1", "practitioner_id": "PV1-7.1", "visit_at": "PV1-44 | EVN-2 | MSH-7",
                  "discharge_at": "PV1-45"},
    "lab_result": {"segment": "OBX", "messages": ["ORU^R01"], "lab_result_id": "{MSH-10}-{OBX-1}",
                   "encounter_id": "PV1-19.1", "patient_id": HL7_PATIENT, "item_code": "OBX-3.1", "item_name": "OBX-3.2",
                   "result_value": "OBX-5", "unit": "OBX-6.1", "reference_range": "OBX-7", "abnormal_flag": "OBX-8",
                   "reported_at": "OBX-14 | OBR-22 | MSH-7"},
    "immunization": {"segment": "RXA", "messages": ["VXU^V04"], "immunization_id": "{MSH-10}-{RXA-2}",
                     "name": "PID-5.1", "birth_date": "PID-7", "vaccine_code": "RXA-5.1", "vaccine_name": "RXA-5.2",
                     "vaccinated_date": "RXA-3", "lot_number": "RXA-15"},
}


def hl7_messages(reference: Path) -> list[bytes]:
    """The sample messages (one per file), in name order."""
    return [p.read_bytes() for p in sorted((Path(reference) / "hl7v2").glob("*.hl7"))]


# ---------------------------------------------------------------------------------- the institution
def _feeds(reference: Path) -> list[dict]:
    from ingest_adapters.dicom import DEFAULT_MAPPING

    reference = Path(reference)
    feeds = []
    if (reference / "synthea" / "csv").is_dir():
        feeds += [dict(f) for f in SYNTHEA_CSV_FEEDS]
    if (reference / "synthea" / "fhir_r4").is_dir():
        full = synthea_fhir_mapping()
        for fid, (datasets, _) in fhir_feeds(reference).items():
            feeds.append({"id": fid, "format": "fhir", "mapping": {d: full[d] for d in full if d in datasets}})
    if (reference / "hl7v2").is_dir():
        feeds.append({"id": "hl7_samples", "format": "hl7v2", "mapping": HL7_MAPPING})
    if (reference / "dicom").is_dir():
        feeds.append({"id": "dicom_samples", "dataset": "imaging_instance", "format": "dicom", "encoding": "utf-8",
                      "mapping": DEFAULT_MAPPING})
    return feeds


def reference_institution(reference: Path) -> dict:
    """The registry entry of the reference institution (the feeds whose source folders exist)."""
    return {"code": CODE, "name": NAME, "kind": "other", "level": "未定级", "division_code": "511000",
            "feeds": _feeds(reference)}


_DATASET_OF = {"Patient": "person", "Encounter": "encounter", "Condition": "diagnosis", "MedicationRequest": "prescription",
               "Immunization": "immunization", "Procedure": "procedure", "Practitioner": "practitioner"}


def _fhir_counts(bundle: dict) -> dict[str, int]:
    """Data set -> resources of its type in the bundle (laboratory Observations for lab_result),
    counted from the JSON."""
    out = {d: 0 for d in list(_DATASET_OF.values()) + ["lab_result"]}
    for e in bundle.get("entry", []):
        r = e.get("resource", {})
        t = r.get("resourceType")
        if t in _DATASET_OF:
            out[_DATASET_OF[t]] += 1
        elif t == "Observation" and any(c.get("code") == "laboratory" for cat in r.get("category", [])
                                        for c in cat.get("coding", [])):
            out["lab_result"] += 1
    return out


@lru_cache(maxsize=4)
def fhir_feeds(reference: Path) -> dict[str, tuple[tuple[str, ...], list[Path]]]:
    """The Synthea bundles grouped into feeds: feed id -> (data sets it maps, bundles).

    ``synthea_directory``: the practitioner and hospital bundles (practitioner), named to sort and
    load first, so the patients' references to practitioners resolve to earlier loads;
    ``synthea_fhir``: the patient bundles holding every clinical data set; a patient bundle without
    conditions or prescriptions goes to ``synthea_fhir_without_<data sets>``, which does not map them.
    Why: the quality gate decides each (batch, data set) of a multi-data-set batch from its bronze
    rows, and cannot decide a data set the batch has no row of (the run then stops before the
    marts), so every data set a feed maps has rows in each of its files."""
    clinical = ("person", "encounter", "diagnosis", "lab_result", "prescription", "immunization", "procedure")
    groups: dict[str, tuple[tuple[str, ...], list[Path]]] = {}
    for p in sorted((Path(reference) / "synthea" / "fhir_r4").glob("*.json")):
        counts = _fhir_counts(json.loads(p.read_bytes()))
        if not counts["person"]:
            fid, datasets = "synthea_directory", ("practitioner",)
        else:
            datasets = tuple(d for d in clinical if counts[d])
            missing = [d for d in clinical if not counts[d]]
            fid = "synthea_fhir" + ("_without_" + "_".join(missing) if missing else "")
        groups.setdefault(fid, (datasets, []))[1].append(p)
    return dict(sorted(groups.items()))


def deliver_reference(reference: Path, landing: Path, count: bool = True) -> dict[str, dict]:
    """Copy the reference files into ``landing/REFERENCE/<feed>/``; return ``source_counts``
    (unless ``count`` is false: then {}). The Synthea practitioner and hospital bundles are named
    to sort (and load) first, so the patients' references to them resolve to earlier loads. The
    HL7 samples are one delivery, the DICOM files one zip. Same sources → same bytes, so a second
    delivery is skipped by the ingest as the same content."""
    reference, landing = Path(reference), Path(landing)
    for feed in _feeds(reference):
        fid = feed["id"]
        out = landing / CODE / fid
        out.mkdir(parents=True, exist_ok=True)
        if fid in SYNTHEA_CSV_FILES:
            src = reference / "synthea" / "csv" / SYNTHEA_CSV_FILES[fid]
            _copy(src, out / src.name)
        elif fid.startswith("synthea_"):
            for src in fhir_feeds(reference)[fid][1]:
                _copy(src, out / src.name)
        elif fid == "hl7_samples":
            data = b"".join(m if m.endswith((b"\r", b"\n")) else m + b"\r" for m in hl7_messages(reference))
            _write(out / "hl7_samples.hl7", data)
        elif fid == "dicom_samples":
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
                for p in sorted((reference / "dicom").glob("*.dcm")):
                    info = zipfile.ZipInfo(p.name, date_time=(2026, 1, 1, 0, 0, 0))
                    info.compress_type = zipfile.ZIP_DEFLATED
                    zf.writestr(info, p.read_bytes())
            _write(out / "dicom_samples.zip", buf.getvalue())
    return source_counts(reference) if count else {}


def _copy(src: Path, dst: Path) -> None:
    if not dst.exists() or dst.stat().st_size != src.stat().st_size or dst.read_bytes() != src.read_bytes():
        shutil.copyfile(src, dst)


def _write(dst: Path, data: bytes) -> None:
    if not dst.exists() or dst.read_bytes() != data:
        dst.write_bytes(data)


def source_counts(reference: Path) -> dict[str, dict]:
    """Per feed, the files delivered and the records they hold, counted from the sources without
    the readers: CSV rows, FHIR resources of the mapped types, HL7 messages (MSH segments),
    DICOM files."""
    reference = Path(reference)
    counts: dict[str, dict] = {}
    for feed in _feeds(reference):
        fid = feed["id"]
        if fid in SYNTHEA_CSV_FILES:
            with open(reference / "synthea" / "csv" / SYNTHEA_CSV_FILES[fid], encoding="utf-8", newline="") as fh:
                counts[fid] = {"files": 1, "records": sum(1 for _ in csv.DictReader(fh))}
        elif fid.startswith("synthea_"):
            datasets, bundles = fhir_feeds(reference)[fid]
            counts[fid] = {"files": len(bundles), "records": sum(sum(_fhir_counts(json.loads(p.read_bytes()))[d]
                                                                     for d in datasets) for p in bundles)}
        elif fid == "hl7_samples":
            counts[fid] = {"files": 1, "records": sum(len(re.findall(rb"(?:^|[\r\n])MSH\|", m))
                                                      for m in hl7_messages(reference))}
        elif fid == "dicom_samples":
            counts[fid] = {"files": 1, "records": len(list((reference / "dicom").glob("*.dcm")))}
    return counts


def add_to_registry(registry_path: Path, reference: Path) -> bool:
    """Add (or refresh) the reference institution in a registry YAML; True when it changed."""
    from healthlake.yamlfile import dump_yaml, read_yaml

    path = Path(registry_path)
    data = read_yaml(path) or {}
    entry = reference_institution(reference)
    institutions = [i for i in data.get("institutions") or [] if str(i.get("code")) != CODE]
    before = [i for i in data.get("institutions") or [] if str(i.get("code")) == CODE]
    if before == [entry]:
        return False
    data["institutions"] = institutions + [entry]
    path.write_text(dump_yaml(data, width=120),
                    encoding="utf-8", newline="\n")
    return True

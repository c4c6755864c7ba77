"""HL7 v2 and FHIR NDJSON → bronze (our ingest: several data sets per record, lineage,
accounting, one DuckLake transaction) vs a limit measured in the same run on the same file.

- ``ingest_hl7``: BENCH_HL7_MESSAGES (20,000) messages cycled from the 35 reference messages
  (../shared/reference/hl7v2). Limit: bare ``hl7.parse`` of every message (no mapping, no lake).
- ``ingest_fhir``: BENCH_FHIR_RESOURCES (100,000) resources cycled from the Synthea bundles as a
  bulk-export NDJSON. Limit: a bare DuckDB ``COPY (SELECT * FROM read_json(…)) TO '….parquet'``.

Printed: records/s of each and the ratio limit time / our time (1.0 = as fast as the limit).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from pathlib import Path

import duckdb
import yaml

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"
HL7_MESSAGES = int(os.environ.get("BENCH_HL7_MESSAGES", "20000"))
FHIR_RESOURCES = int(os.environ.get("BENCH_FHIR_RESOURCES", "100000"))

HL7_MAPPING = {
    "person": {"patient_id": "PID-3[5=MR].1 | PID-3.1", "name": "PID-5.1", "sex_code": "PID-8", "birth_date": "PID-7"},
    "encounter": {"encounter_id": "PV1-19.1 | {MSH-10}", "patient_id": "PID-3.1", "visit_type_code": "PV1-2",
                  "visit_at": "PV1-44 | MSH-7"},
    "lab_result": {"segment": "OBX", "messages": ["ORU^R01"], "lab_result_id": "{MSH-10}-{OBX-1}",
                   "patient_id": "PID-3.1", "item_code": "OBX-3.1", "item_name": "OBX-3.2", "result_value": "OBX-5",
                   "unit": "OBX-6.1", "reference_range": "OBX-7", "abnormal_flag": "OBX-8"},
    "immunization": {"segment": "RXA", "messages": ["VXU^V04"], "immunization_id": "{MSH-10}-{RXA-2}",
                     "vaccine_code": "RXA-5.1", "vaccinated_date": "RXA-3"},
}
FHIR_MAPPING = {
    "person": {"patient_id": "id", "name": "{name[0].family}{name[0].given}", "sex_code": "gender",
               "birth_date": "birthDate"},
    "encounter": {"encounter_id": "id", "patient_id": "ref(subject)", "visit_type_code": "class.code",
                  "visit_at": "period.start", "discharge_at": "period.end"},
    "lab_result": {"where": {"category.coding.code": "laboratory"}, "lab_result_id": "id",
                   "patient_id": "ref(subject)", "encounter_id": "ref(encounter)", "item_code": "code.coding[0].code",
                   "result_value": "valueQuantity.value | valueString", "unit": "valueQuantity.unit"},
    "immunization": {"immunization_id": "id", "vaccine_code": "vaccineCode.coding[0].code",
                     "vaccinated_date": "occurrenceDateTime"},
    "diagnosis": {"diagnosis_id": "id", "encounter_id": "ref(encounter)", "patient_id": "ref(subject)",
                  "diagnosis_code": "code.coding[0].code"},
}


def _ingest(workdir: Path, fmt: str, mapping: dict, src: Path):
    os.environ["HEALTHLAKE_ROOT"] = str(workdir / "root")
    os.environ["HEALTHLAKE_LANDING"] = str(workdir / "city" / "landing")
    from healthlake.config import settings
    from healthlake.lake import connect
    from ingest_adapters import ingest_landing, load_registry
    from ingest_adapters.ingest import ensure_bronze_tables

    s = settings()
    target = s.landing / "B001" / fmt / src.name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(src.read_bytes())
    s.registry.write_text(yaml.safe_dump({"institutions": [{
        "code": "B001", "name": "基准医院", "kind": "hospital",
        "feeds": [{"id": fmt, "format": fmt, "mapping": mapping}]}]}, allow_unicode=True, sort_keys=False),
        encoding="utf-8")
    con = connect(s)
    try:
        ensure_bronze_tables(con)  # table creation is not part of the measured ingest
        t0 = time.perf_counter()
        [result] = ingest_landing(s, load_registry(s.registry), con)
        return time.perf_counter() - t0, result
    finally:
        con.close()


def _report(name: str, n: int, limit_s: float, ours_s: float, result) -> None:
    print(f"{name}: {n:,} records; limit {n / limit_s:,.0f}/s ({limit_s:.2f} s), ours {n / ours_s:,.0f}/s "
          f"({ours_s:.2f} s); ratio {limit_s / ours_s:.2f}× of the limit")
    print(f"  batch: read {result.rows_read:,} = loaded {result.rows_loaded:,} + rejected {result.rows_rejected:,}; "
          f"rows per data set {result.notes.get('rows_by_dataset')}")


def ingest_hl7() -> None:
    import hl7

    messages = [p.read_bytes() for p in sorted((REFERENCE / "hl7v2").glob("*.hl7"))]
    with tempfile.TemporaryDirectory(prefix="bench_hl7_") as tmp:
        tmp = Path(tmp)
        src = tmp / "lis_oru_20261020.hl7"
        with open(src, "wb") as f:
            for i in range(HL7_MESSAGES):
                f.write(messages[i % len(messages)])
        # limit: split and parse every message with python-hl7, nothing else
        t0 = time.perf_counter()
        text = src.read_bytes().decode("utf-8")
        parsed = 0
        for chunk in re.split(r"\r(?=MSH\|)", text):
            if chunk.strip():
                hl7.parse(chunk)
                parsed += 1
        limit = time.perf_counter() - t0
        assert parsed == HL7_MESSAGES, parsed
        ours, result = _ingest(tmp, "hl7v2", HL7_MAPPING, src)
        assert result.status == "loaded" and result.rows_loaded == HL7_MESSAGES, result
        _report("HL7 v2", HL7_MESSAGES, limit, ours, result)


def ingest_fhir() -> None:
    resources = []
    for p in sorted((REFERENCE / "synthea" / "fhir_r4").glob("*_*_*.json")):
        for e in json.loads(p.read_text())["entry"]:
            resources.append(json.dumps(e["resource"]).replace('"reference": "urn:uuid:', '"reference": "Patient/'))
    with tempfile.TemporaryDirectory(prefix="bench_fhir_") as tmp:
        tmp = Path(tmp)
        src = tmp / "export_20261020.ndjson"
        with open(src, "w", encoding="utf-8") as f:
            for i in range(FHIR_RESOURCES):
                f.write(resources[i % len(resources)])
                f.write("\n")
        con = duckdb.connect()
        t0 = time.perf_counter()
        con.execute(f"COPY (SELECT * FROM read_json('{src}', format='newline_delimited', records=false, "
                    f"columns={{'json': 'JSON'}})) TO '{tmp / 'limit.parquet'}' (FORMAT parquet)")
        limit = time.perf_counter() - t0
        con.close()
        ours, result = _ingest(tmp, "fhir", FHIR_MAPPING, src)
        assert result.status == "loaded", result
        n = FHIR_RESOURCES
        _report("FHIR NDJSON (all resources; in scope: mapped types)", n, limit, ours, result)


def main() -> None:
    ingest_hl7()
    ingest_fhir()


if __name__ == "__main__":
    main()

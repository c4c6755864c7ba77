"""The public reference files as the registry's "reference" institution (ingest_adapters.reference_institution):
Synthea CSV and FHIR, the 35 HL7 v2 messages and the 14 DICOM files, read by the real readers, every
count equal to the source's (59 Synthea patients, 2,590 encounters, 35 messages, 14 DICOM files).
"""

from __future__ import annotations

import pytest
import yaml

from healthlake.config import SHARED_REFERENCE
from ingest_adapters import ingest_landing, load_registry
from ingest_adapters.reference_institution import CODE, add_to_registry, deliver_reference, reference_institution
from tests.lake_reader import q

pytestmark = pytest.mark.skipif(not (SHARED_REFERENCE / "synthea").exists() or not (SHARED_REFERENCE / "hl7v2").exists()
                                or not (SHARED_REFERENCE / "dicom").exists(),
                                reason="../shared/reference is not on this machine")


def test_reference_institution_through_the_registry_and_the_real_readers(lake_env):
    s = lake_env
    s.registry.parent.mkdir(parents=True, exist_ok=True)
    s.registry.write_text(yaml.safe_dump({"institutions": []}), encoding="utf-8")
    assert add_to_registry(s.registry, SHARED_REFERENCE) and not add_to_registry(s.registry, SHARED_REFERENCE)
    registry = load_registry(s.registry)
    feeds = [f.id for f in registry.institution(CODE).feeds]
    assert feeds[:3] == ["synthea_patients", "synthea_encounters", "synthea_directory"]
    assert feeds[-2:] == ["hl7_samples", "dicom_samples"] and "synthea_fhir" in feeds
    counts = deliver_reference(SHARED_REFERENCE, s.landing)
    assert counts["synthea_patients"]["records"] == 59 and counts["synthea_encounters"]["records"] == 2590
    assert counts["hl7_samples"]["records"] == 35 and counts["dicom_samples"]["records"] == 14
    fhir = [c for f, c in counts.items() if f.startswith("synthea_") and f not in ("synthea_patients", "synthea_encounters")]
    assert sum(c["files"] for c in fhir) == 22 and counts["synthea_directory"]["records"] == 173
    assert sum(c["records"] for c in fhir) > 2000

    results = ingest_landing(s, registry)
    assert {r.status for r in results} == {"loaded"}, [(r.source_file, r.error) for r in results if r.error]
    by_feed: dict[str, list[int]] = {}
    for r in results:
        t = by_feed.setdefault(r.feed, [0, 0, 0])
        t[0] += r.rows_read
        t[1] += r.rows_loaded
        t[2] += r.rows_rejected
    for feed, c in counts.items():
        read, loaded, rejected = by_feed[feed]
        assert read == loaded + rejected == c["records"], feed
    # the sources are clean: nothing rejected, except the FHIR bundles' references to Synthea's
    # organisations and locations, which no feed maps (kept as text, never rejected)
    assert sum(v[2] for v in by_feed.values()) == 0
    assert q(s, "SELECT count(*) FROM bronze.person WHERE _feed = 'synthea_patients'") == [(59,)]
    assert q(s, "SELECT count(*) FROM bronze.encounter WHERE _feed = 'synthea_encounters'") == [(2590,)]
    assert q(s, "SELECT count(*) FROM bronze.imaging_instance WHERE _institution_code = ?", [CODE]) == [(14,)]
    assert q(s, "SELECT count(DISTINCT _source_row) FROM bronze.person WHERE _feed = 'hl7_samples'")[0][0] > 0
    # every data set a FHIR feed maps has rows in each of its batches (the quality gate decides per batch and data set)
    for feed in registry.institution(CODE).feeds:
        if feed.format == "fhir":
            for r in results:
                if r.feed == feed.id and r.source_file.endswith("hospitalInformation1646420022724.json"):
                    continue   # organisations only: no mapped resource (an empty batch)
                if r.feed == feed.id:
                    assert all(r.notes["rows_by_dataset"][d] > 0 for d in feed.datasets), (r.source_file, r.notes)

    # delivered again: the same bytes, skipped as the same content
    deliver_reference(SHARED_REFERENCE, s.landing)
    again = ingest_landing(s, registry)
    assert {r.status for r in again} == {"skipped"}


def test_only_the_parts_present_are_registered(tmp_path):
    (tmp_path / "hl7v2").mkdir()
    entry = reference_institution(tmp_path)
    assert entry["code"] == CODE and [f["id"] for f in entry["feeds"]] == ["hl7_samples"]

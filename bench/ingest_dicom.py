"""DICOM delivery → bronze.imaging_instance (our ingest) vs the limit: a bare pydicom loop over the
same files, ``dcmread(stop_before_pixels=True)`` and the same header attributes read, nothing else.

Ours also does per file what a PACS feed needs: sha256, the structure walk that catches truncated
files, strict character-set decoding, the raw archive copy, the de-identified header copy and the
DuckLake commit with lineage and accounting. Ratio = limit time / our time (headers/s ours ÷ bare).
Files: BENCH_DICOM_FILES (2,000) copies of the reference CT (39 KB, 128×128) with their own UIDs,
one zip delivery.
"""

from __future__ import annotations

import io
import os
import tempfile
import time
import zipfile
from pathlib import Path

import yaml

FILES = int(os.environ.get("BENCH_DICOM_FILES", "2000"))


def make_delivery(path: Path, n: int) -> None:
    from pydicom import dcmread
    from pydicom.uid import generate_uid

    from healthlake.config import SHARED_REFERENCE

    src = SHARED_REFERENCE / "dicom" / "CT_small.dcm"
    if not src.exists():
        import pydicom

        src = Path(pydicom.__file__).parent / "data" / "test_files" / "CT_small.dcm"
    template = dcmread(src)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for i in range(n):
            if i % 50 == 0:  # a study of 50 instances in one series
                study, series = generate_uid(), generate_uid()
                template.PatientID = f"BENCH{i // 50:05d}"
            template.StudyInstanceUID, template.SeriesInstanceUID = study, series
            template.SOPInstanceUID = template.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            template.InstanceNumber = i % 50 + 1
            buf = io.BytesIO()
            template.save_as(buf)
            zf.writestr(f"{i // 50:05d}/{i:06d}.dcm", buf.getvalue())


def bare_loop(path: Path) -> float:
    from pydicom import dcmread

    from ingest_adapters.dicom import HEADER_TAGS

    keywords = [k for k in HEADER_TAGS if k != "SpecificCharacterSet"]
    t0 = time.perf_counter()
    with zipfile.ZipFile(path) as zf:
        for info in sorted(zf.infolist(), key=lambda i: i.filename):
            ds = dcmread(io.BytesIO(zf.read(info)), stop_before_pixels=True)
            [ds.get(k) for k in keywords]
    return time.perf_counter() - t0


def our_ingest(workdir: Path, path: Path) -> tuple[float, object]:
    os.environ["HEALTHLAKE_ROOT"] = str(workdir / "root")
    os.environ["HEALTHLAKE_LANDING"] = str(workdir / "city" / "landing")
    from healthlake.config import settings
    from healthlake.lake import connect
    from ingest_adapters import ingest_landing, load_registry
    from ingest_adapters.dicom import DEFAULT_MAPPING
    from ingest_adapters.ingest import ensure_bronze_tables

    s = settings()
    target = s.landing / "PACS01" / "dicom" / path.name
    target.parent.mkdir(parents=True, exist_ok=True)
    os.link(path, target)
    s.registry.write_text(yaml.safe_dump({"institutions": [{
        "code": "PACS01", "name": "影像中心", "kind": "hospital", "feeds": [{
            "id": "dicom", "dataset": "imaging_instance", "format": "dicom", "mapping": DEFAULT_MAPPING}]}]},
        allow_unicode=True), encoding="utf-8")
    registry = load_registry(s.registry)
    con = connect(s)
    try:
        ensure_bronze_tables(con)  # lake set-up is not part of the measured ingest
        t0 = time.perf_counter()
        (result,) = ingest_landing(s, registry, con)
        return time.perf_counter() - t0, result
    finally:
        con.close()


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-dicom-") as d:
        work = Path(d)
        delivery = work / "pacs_bench.zip"
        t0 = time.perf_counter()
        make_delivery(delivery, FILES)
        print(f"delivery: {FILES:,} DICOM files, {delivery.stat().st_size / 1e6:.1f} MB zip "
              f"(made in {time.perf_counter() - t0:.1f} s)")
        import pandas  # noqa: F401 — pyarrow imports it on first use (1-2 s, once per process): not per file

        limit = bare_loop(delivery)
        ours, result = our_ingest(work, delivery)
        assert result.status == "loaded" and result.rows_loaded == FILES, (result.status, result.error)
        print(f"bare pydicom dcmread loop : {limit:7.2f} s  {FILES / limit:8,.0f} headers/s")
        print(f"our ingest (archive, de-id, lake): {ours:7.2f} s  {FILES / ours:8,.0f} headers/s")
        print(f"ratio (bare time / our time): {limit / ours:.2f}  (rows read {result.rows_read:,} = loaded "
              f"{result.rows_loaded:,} + rejected {result.rows_rejected:,})")


if __name__ == "__main__":
    main()

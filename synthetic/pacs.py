"""The 放射科 PACS of the two 三级 hospitals: DICOM files of the imaging exams of the city's encounters.

内江市第一人民医院's and 内江市中医医院's PACS archive one imaging study (CT, MR, DR or
ultrasound) per imaged encounter and deliver, once a day, the day's files as one zip:
``landing/<institution>/pacs_image/pacs_image_<YYYYMMDD>.zip``, members
``<AccessionNumber>/<series>/<instance>.dcm`` — the layout the DICOM reader
(``ingest_adapters/dicom.py``) reads: every member is one source record, in name order.

Every file is written by pydicom as a DICOM Part 10 file (preamble, ``DICM``, file meta, explicit
VR little endian) with a real SOP class (CT, MR, DX, US Image Storage), Study/Series/SOP Instance
UIDs from ``pydicom.uid.generate_uid`` with entropy from the seed (the same seed gives the same
UIDs and bytes), the patient as the hospital knows them (PatientID = the HIS patient id, so the
lake links the study to the person through the hospital's person feed), AccessionNumber = the RIS
report's (``SQ<encounter>``, so ``fct_imaging_study`` finds the report; ``YX<encounter>`` for
imaging the main diagnosis does not call for), and an 8 × 8 image. About a third of outpatient, half
of emergency and most inpatient encounters of the PACS hospitals have a study (``IMAGING_RATE``).
The CT and MR consoles (联影) declare SpecificCharacterSet ``GB18030`` and write the Chinese name
and institution; the DR and ultrasound devices write ASCII (pinyin name ``ZHANG^SAN``).

Defects, sparing: an instance cut short while the PACS exported it (``truncated``: the reader
rejects it ``TRUNCATED``), and a scanned request form exported as ``申请单.dcm`` beside a study's
images (``not_dicom``: rejected ``NOT DICOM``). The truth, ``truth/imaging.csv``, has one row per
delivered file: where it is (zip, member, ``source_row``), whose it is (person_uid, patient_id),
its UIDs, modality, body part, study date, and the defect with the error the reader must give.
"""

from __future__ import annotations

import csv
import io
import zipfile
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

from synthetic.rng import rng

FEED_ID = "pacs_image"
DATASET = "imaging_instance"
# institution code -> the PACS's names (the ASCII name the DR/US devices write)
PACS = {"511002H001": {"ascii_name": "NEIJIANG FIRST PEOPLES HOSPITAL"},
        "511011H001": {"ascii_name": "NEIJIANG HOSPITAL OF TCM"}}
# share of a hospital's encounters with an imaging exam, by visit type (1 门诊, 2 急诊, 3 住院)
IMAGING_RATE = {1: 0.35, 2: 0.5, 3: 0.9}
# the exam when the main diagnosis calls for none in particular (services._EXAMS): (category, item, part, weight)
GENERIC_EXAMS = (("放射", "胸部X线摄影（正位）", "胸部", 5), ("超声", "腹部彩色多普勒超声", "肝胆胰脾", 3),
                 ("放射", "头颅CT平扫", "头颅", 2))
TRUNCATED_RATE = 0.02       # per instance
NOT_DICOM_RATE = 0.03       # per study: a scanned request form beside the images
UID_ROOT = "1.2.826.0.1.3680043.8.498."   # pydicom's root (a demo has no registered root of its own)
IMPLEMENTATION_UID = UID_ROOT + "20261001.1"
IMPLEMENTATION_VERSION = "HEALTHLAKE_PACS"

SOP_CLASS = {"CT": "1.2.840.10008.5.1.4.1.1.2", "MR": "1.2.840.10008.5.1.4.1.1.4",
             "DX": "1.2.840.10008.5.1.4.1.1.1.1", "US": "1.2.840.10008.5.1.4.1.1.6.1"}
# modality -> (manufacturer, model, writes Chinese (GB18030), bits, (series min, max), (instances min, max))
DEVICE = {"CT": ("UIH", "uCT 760", True, 16, (1, 2), (2, 3)), "MR": ("UIH", "uMR 780", True, 16, (2, 2), (2, 2)),
          "DX": ("WANDONG", "NewVision DR", False, 8, (1, 1), (1, 2)),
          "US": ("MINDRAY", "Resona 7", False, 8, (1, 1), (2, 3))}
BODY_PART = {"胸部": "CHEST", "头颅": "HEAD", "肝胆胰脾": "ABDOMEN", "髋关节": "HIP", "膝关节": "KNEE",
             "子宫及附件": "PELVIS"}
SERIES_DESCRIPTION = {"CT": ("平扫", "薄层重建"), "MR": ("T1WI", "T2WI"), "DX": ("正位",), "US": ("灰阶",)}
TRUTH_COLUMNS = ["institution_code", "feed_id", "file", "member", "source_row", "person_uid", "patient_id",
                 "accession_number", "study_instance_uid", "series_instance_uid", "sop_instance_uid", "modality",
                 "body_part", "study_date", "defect", "error_type"]
ERROR_OF = {"none": "", "truncated": "TRUNCATED", "not_dicom": "NOT DICOM"}


def modality_of(category: str, item: str, r) -> str | None:
    """The modality of an exam item, None when it is not imaging the PACS stores."""
    if category == "超声":
        return "US"
    if category != "放射":
        return None
    if "CT" in item:
        return "MR" if item.startswith("头颅") and r.random() < 0.3 else "CT"
    return "DX"


@dataclass
class _File:
    member: str
    data: bytes
    truth: dict


def _pinyin_name(name: str) -> str:
    from pypinyin import Style, lazy_pinyin

    n = 2 if len(name) > 3 else 1   # 欧阳/司马/诸葛: two-character surnames on four-character names
    sur = "".join(lazy_pinyin(name[:n], style=Style.NORMAL)).upper()
    given = "".join(lazy_pinyin(name[n:], style=Style.NORMAL)).upper()
    return f"{sur}^{given}"


def _age(birth: date, on: date) -> str:
    years = on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))
    if years >= 1:
        return f"{years:03d}Y"
    return f"{max(0, (on - birth).days // 30):03d}M"


def instance_bytes(**kw) -> bytes:
    """One DICOM Part 10 file (pydicom), explicit VR little endian, with an 8 × 8 image.

    The AccessionNumber is the RIS's (19 characters, beyond the 16 of VR SH, as many Chinese RIS
    numbers are; the PACS keeps it so the report links): pydicom's length check is off while writing."""
    from pydicom import config

    saved = config.settings.reading_validation_mode, config.settings.writing_validation_mode
    config.settings.reading_validation_mode = config.settings.writing_validation_mode = config.IGNORE
    try:
        return _instance_bytes(**kw)
    finally:
        config.settings.reading_validation_mode, config.settings.writing_validation_mode = saved


def _instance_bytes(*, modality: str, uids: tuple[str, str, str], patient: dict, study: dict, series_no: int,
                   series_description: str, instance_no: int, institution: str, chinese: bool, pixels: bytes) -> bytes:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.filewriter import dcmwrite
    from pydicom.uid import ExplicitVRLittleEndian

    study_uid, series_uid, sop_uid = uids
    manufacturer, model, _, bits, _, _ = DEVICE[modality]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SOP_CLASS[modality]
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = IMPLEMENTATION_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    ds = Dataset()
    ds.file_meta = meta
    if chinese:
        ds.SpecificCharacterSet = "GB18030"
    ds.SOPClassUID = SOP_CLASS[modality]
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = study["date"]
    ds.SeriesDate = study["date"]
    ds.StudyTime = study["time"]
    ds.AccessionNumber = study["accession"]
    ds.Modality = modality
    ds.Manufacturer = manufacturer
    ds.InstitutionName = institution
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = study["description"] if chinese else study["description_ascii"]
    ds.SeriesDescription = series_description if chinese else f"SERIES {series_no}"
    ds.ManufacturerModelName = model
    ds.PatientName = patient["name"] if chinese else patient["name_ascii"]
    ds.PatientID = patient["id"]
    ds.PatientBirthDate = patient["birth_date"]
    ds.PatientSex = patient["sex"]
    ds.PatientAge = patient["age"]
    ds.BodyPartExamined = study["body_part"]
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = study["accession"][-8:]
    ds.SeriesNumber = series_no
    ds.InstanceNumber = instance_no
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = 8
    ds.Columns = 8
    ds.BitsAllocated = bits
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    ds.PixelData = pixels
    ds.preamble = b"\x00" * 128
    buf = io.BytesIO()
    dcmwrite(buf, ds, enforce_file_format=True, implicit_vr=False, little_endian=True)
    return buf.getvalue()


_REQUEST_FORM = b"%PDF-1.4\n% scanned request form (\xe7\x94\xb3\xe8\xaf\xb7\xe5\x8d\x95)\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n"


class Pacs:
    """Collects the day's studies of the PACS hospitals; ``close_day`` writes the day's zips."""

    def __init__(self, out: Path, seed: int, institutions):
        self.out, self.seed = Path(out), seed
        self.landing = self.out / "landing"
        self.institutions = {i.code: i for i in institutions if i.code in PACS}
        self.day_files: dict[str, list[_File]] = {}
        self.fh = open(self.out / "truth" / "imaging.csv", "w", encoding="utf-8", newline="")
        self.truth = csv.writer(self.fh, lineterminator="\n")
        self.truth.writerow(TRUTH_COLUMNS)
        self.stats: dict[str, dict[str, int]] = {
            code: {"files": 0, "instances_written": 0, "instances_loadable": 0, "rejected": 0, "studies": 0,
                   "studies_loadable": 0, "persons": 0} for code in self.institutions}
        self._persons: dict[str, set[str]] = {code: set() for code in self.institutions}

    # ------------------------------------------------------------------ registry
    @staticmethod
    def registry_entry(inst_code: str) -> dict:
        from ingest_adapters.dicom import DEFAULT_MAPPING

        return {"id": FEED_ID, "dataset": DATASET, "format": "dicom", "encoding": "gb18030", "cadence": "daily",
                "mapping": dict(DEFAULT_MAPPING)}

    def add_to_registry(self, document: dict) -> None:
        for entry in document["institutions"]:
            if entry["code"] in self.institutions:
                entry["feeds"].append(self.registry_entry(entry["code"]))

    # ------------------------------------------------------------------ one encounter
    def encounter(self, inst, p, pid: str, enc_id: str, visit_type: int, visit_at: datetime, main_code: str) -> None:
        """The imaging study of a hospital encounter, if it has one (called for every new hospital
        encounter by ``services.exam_reports``; own random stream, so nothing else changes).
        The exam the main diagnosis calls for (services._EXAMS) keeps the RIS report's accession
        number (``SQ…``), so a report of the same exam links to the study; any other imaging gets
        ``YX…`` (services.accession_number)."""
        from synthetic.services import _EXAMS, accession_number

        if inst.code not in self.institutions:
            return
        r = rng(self.seed, "pacs", inst.code, enc_id)
        if r.random() >= IMAGING_RATE[visit_type]:
            return
        exam = _EXAMS.get(main_code[:3])
        if exam is not None and exam[0] in ("放射", "超声"):
            category, item, part, _ = exam
            accession = accession_number("SQ", enc_id)
        else:
            x = r.random() * sum(w for *_, w in GENERIC_EXAMS)
            for category, item, part, w in GENERIC_EXAMS:
                x -= w
                if x < 0:
                    break
            accession = accession_number("YX", enc_id)
        modality = modality_of(category, item, r)
        person_uid = p.uid
        manufacturer, model, chinese, bits, n_series, n_instances = DEVICE[modality]
        at = min(visit_at + timedelta(minutes=r.randint(10, 90)), datetime.combine(visit_at.date(), datetime.max.time()))
        study_uid = self._uid(inst.code, accession)
        name_ascii = _pinyin_name(p.name)
        patient = {"id": pid, "name": f"{name_ascii}={p.name[:2] if len(p.name) > 3 else p.name[:1]}^"
                                      f"{p.name[2:] if len(p.name) > 3 else p.name[1:]}",
                   "name_ascii": name_ascii, "birth_date": f"{p.birth:%Y%m%d}",
                   "sex": {"1": "M", "2": "F"}.get(p.sex, "O"), "age": _age(p.birth, at.date())}
        study = {"date": f"{at:%Y%m%d}", "time": f"{at:%H%M%S}", "accession": accession, "description": item,
                 "description_ascii": f"{modality} {BODY_PART.get(part, 'UNKNOWN')}",
                 "body_part": BODY_PART.get(part, "")}
        institution = inst.name if chinese else PACS[inst.code]["ascii_name"]
        day = at.date()
        files = self.day_files.setdefault(inst.code, [])
        base = {"institution_code": inst.code, "feed_id": FEED_ID, "person_uid": person_uid, "patient_id": pid,
                "accession_number": accession, "study_instance_uid": study_uid, "modality": modality,
                "body_part": study["body_part"], "study_date": day.isoformat()}
        for s in range(1, r.randint(*n_series) + 1):
            series_uid = self._uid(inst.code, accession, s)
            description = SERIES_DESCRIPTION[modality][(s - 1) % len(SERIES_DESCRIPTION[modality])]
            for k in range(1, r.randint(*n_instances) + 1):
                sop_uid = self._uid(inst.code, accession, s, k)
                pixels = bytes(r.randrange(256) for _ in range(64 * bits // 8))
                data = instance_bytes(modality=modality, uids=(study_uid, series_uid, sop_uid), patient=patient,
                                      study=study, series_no=s, series_description=description, instance_no=k,
                                      institution=institution, chinese=chinese, pixels=pixels)
                defect = "none"
                if r.random() < TRUNCATED_RATE:
                    defect = "truncated"
                    data = data[:len(data) - r.randint(8, 40)]   # cut inside the pixel data
                files.append(_File(f"{accession}/{s:02d}/{k:03d}.dcm", data,
                                   dict(base, series_instance_uid=series_uid, sop_instance_uid=sop_uid, defect=defect)))
        if r.random() < NOT_DICOM_RATE:
            files.append(_File(f"{accession}/申请单.dcm", _REQUEST_FORM + accession.encode(),
                               dict(base, series_instance_uid="", sop_instance_uid="", defect="not_dicom")))

    def _uid(self, inst_code: str, *parts) -> str:
        from pydicom.uid import generate_uid

        return str(generate_uid(prefix=UID_ROOT, entropy_srcs=[str(self.seed), inst_code, *map(str, parts)]))

    # ------------------------------------------------------------------ the day's delivery
    def close_day(self, day: date) -> None:
        for code, files in sorted(self.day_files.items()):
            if not files:
                continue
            rel = f"{code}/{FEED_ID}/{FEED_ID}_{day:%Y%m%d}.zip"
            path = self.landing / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            files.sort(key=lambda f: f.member)   # the reader numbers the members in name order
            with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
                for f in files:
                    info = zipfile.ZipInfo(f.member, date_time=(day.year, day.month, day.day, 23, 0, 0))
                    info.compress_type = zipfile.ZIP_DEFLATED
                    zf.writestr(info, f.data)
            st = self.stats[code]
            st["files"] += 1
            studies, loadable = set(), set()
            for n, f in enumerate(files, start=1):
                t = f.truth
                self.truth.writerow([t["institution_code"], t["feed_id"], rel, f.member, n, t["person_uid"],
                                     t["patient_id"], t["accession_number"], t["study_instance_uid"],
                                     t["series_instance_uid"], t["sop_instance_uid"], t["modality"], t["body_part"],
                                     t["study_date"], t["defect"], ERROR_OF[t["defect"]]])
                st["instances_written"] += 1
                studies.add(t["study_instance_uid"])
                if t["defect"] == "none":
                    st["instances_loadable"] += 1
                    loadable.add(t["study_instance_uid"])
                    self._persons[code].add(t["person_uid"])
                else:
                    st["rejected"] += 1
            st["studies"] += len(studies)
            st["studies_loadable"] += len(loadable)
            st["persons"] = len(self._persons[code])
        self.day_files = {}

    def close(self) -> None:
        self.fh.close()

    def summary(self) -> dict:
        """Per PACS institution: zips delivered, files in them (instances_written, the reader's rows),
        the loadable instances, the rejected files, studies and persons."""
        return {code: dict(st, feed_id=FEED_ID, format="dicom") for code, st in self.stats.items()}

"""DICOM reader (pydicom): headers only, one row per instance of ``imaging_instance``.

A delivery is a ``.dcm`` file, a ``.zip`` of them, or a directory of them; every file in it is
one source record (``_source_row`` = its position in the delivery, files in name order), so
rows read = instances loaded + files rejected, exactly.

Per file:

1. **Is it DICOM?** A Part 10 file: 128-byte preamble, ``DICM``, file meta. Anything else (an
   empty file, a PDF named ``.dcm``) is rejected ``NOT DICOM``; a DICOMDIR (media directory, no
   image) is rejected ``NOT AN INSTANCE``.
2. **Headers only**: ``dcmread(stop_before_pixels=True)``: pixel data is never decoded.
3. **Complete?** pydicom does not notice a short last value (it reads what is there), so the
   element structure is walked from the file meta to the end of the file (lengths, sequence
   items and encapsulated fragments; no value is decoded): a file that ends inside an element is
   rejected ``TRUNCATED`` with the byte offset. (Deflated transfer syntax: the inflate stream must
   end, instead.) An image instance without Pixel Data is rejected too (``TRUNCATED`` when the
   file stops before the image attributes, ``NO PIXEL DATA`` when it has them): the archive copy
   of an image must hold the image.
4. **Study / series / instance UIDs** must be present (``MISSING UID``): an instance without a
   StudyInstanceUID cannot be placed in the patient → study → series → instance index.
5. **Text** is decoded from the raw bytes by the declared Specific Character Set (0008,0005),
   strictly: GB18030/GBK, ISO_IR 192 (UTF-8), ISO_IR 100, ISO 2022 code extensions (via
   pydicom) … A file that declares no character set but holds non-ASCII bytes (common in Chinese
   PACS exports) is decoded with the feed's ``encoding`` (e.g. ``gb18030``) when the bytes are
   valid in it, and the file name is noted in ``charset_assumed``; so is text declared ISO_IR 100
   (Latin-1, which any byte satisfies) on a feed registered as ``gb18030``/``gbk``, as many Chinese
   PACS declare Latin-1 and write GBK. Bytes invalid in the declared
   set, or an unknown character set name, reject the file ``INVALID ENCODING``: never a row of
   mojibake.

Values stay as the header holds them (DA ``YYYYMMDD``, TM ``HHMMSS.ffffff``, PN
``Wang^XiaoDong=王^小东``); the bronze rules and staging parse them.

Every non-empty file, loaded or rejected, is archived unchanged in the lake's raw area
(``raw/dicom/<institution>/<sha256>.dcm``, see ``rawstore``); every loaded instance also gets a
de-identified header copy (``raw/dicom_deid/<institution>/<sha256>.dcm``, no pixel data), see
``deidentify``. Both are content-addressed, so a re-run writes nothing new.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import io
import logging
import os
import struct
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import duckdb
import pyarrow as pa

from ingest_adapters.errors import UnreadableFileError
from ingest_adapters.scan import Reject, SourceScan

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_MAPPING", "DEID_PSEUDONYMISED", "DEID_REMOVED", "DicomReject", "deidentify",
           "open_dicom", "pseudonym", "read_instance"]

# DICOM keyword -> tag of the header attributes the scan exposes (its source column names).
HEADER_TAGS: dict[str, int] = {
    "SOPInstanceUID": 0x00080018, "SOPClassUID": 0x00080016, "StudyInstanceUID": 0x0020000D,
    "SeriesInstanceUID": 0x0020000E, "AccessionNumber": 0x00080050, "PatientID": 0x00100020,
    "PatientName": 0x00100010, "PatientSex": 0x00100040, "PatientBirthDate": 0x00100030,
    "PatientAge": 0x00101010, "Modality": 0x00080060, "BodyPartExamined": 0x00180015,
    "StudyDate": 0x00080020, "StudyTime": 0x00080030, "StudyDescription": 0x00081030,
    "SeriesNumber": 0x00200011, "SeriesDescription": 0x0008103E, "InstanceNumber": 0x00200013,
    "InstitutionName": 0x00080080, "ReferringPhysicianName": 0x00080090, "Manufacturer": 0x00080070,
    "ManufacturerModelName": 0x00081090, "SpecificCharacterSet": 0x00080005,
}
PN_TAGS = {0x00100010, 0x00080090}
# Columns the reader adds about the file itself.
FILE_COLUMNS = ("TransferSyntaxUID", "_file_name", "_sha256", "_bytes", "_archive_uri", "_deid_uri")
ORDINAL = "_file_no"
SCAN_COLUMNS = list(HEADER_TAGS) + list(FILE_COLUMNS)

# Standard data element -> scan column: what a registry feed of format `dicom` usually maps.
DEFAULT_MAPPING: dict[str, str] = {
    "sop_instance_uid": "SOPInstanceUID", "sop_class_uid": "SOPClassUID",
    "study_instance_uid": "StudyInstanceUID", "series_instance_uid": "SeriesInstanceUID",
    "accession_number": "AccessionNumber", "patient_id": "PatientID", "patient_name": "PatientName",
    "patient_sex": "PatientSex", "patient_birth_date": "PatientBirthDate", "patient_age": "PatientAge",
    "modality": "Modality", "body_part_examined": "BodyPartExamined", "study_date": "StudyDate",
    "study_time": "StudyTime", "study_description": "StudyDescription", "series_number": "SeriesNumber",
    "series_description": "SeriesDescription", "instance_number": "InstanceNumber",
    "institution_name": "InstitutionName", "referring_physician_name": "ReferringPhysicianName",
    "manufacturer": "Manufacturer", "manufacturer_model_name": "ManufacturerModelName",
    "specific_character_set": "SpecificCharacterSet", "transfer_syntax_uid": "TransferSyntaxUID",
    "file_name": "_file_name", "file_sha256": "_sha256", "file_bytes": "_bytes",
    "archive_uri": "_archive_uri", "deid_uri": "_deid_uri",
}

MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
DEFLATED = "1.2.840.10008.1.2.1.99"
CHINESE_FALLBACKS = ("gb18030", "gbk")
DEMO_DEID_SECRET = "healthlake-demo-deid-secret"  # demo only; production sets HEALTHLAKE_DEID_SECRET


class DicomReject(Exception):
    """One file of a delivery cannot be loaded: its error type and a reason a person can act on."""

    def __init__(self, error_type: str, reason: str):
        super().__init__(reason)
        self.error_type = error_type
        self.reason = reason


@dataclass
class Instance:
    values: dict[str, str | None]  # scan column -> text
    dataset: object  # the pydicom FileDataset (headers only)
    charset_assumed: str | None = None


# ----------------------------------------------------------------------- structure check

_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
_UNDEFINED = 0xFFFFFFFF


class _Short(Exception):
    pass


def _walk_dataset(data: bytes, pos: int, end: int, little: bool, explicit: bool, nested: bool,
                  stop_group: int | None = None) -> int:
    """Walk elements from ``pos``; returns the position after them (after the item delimiter
    when ``nested``). Raises _Short when an element runs past the end of the file."""
    e = "<" if little else ">"
    while pos < end:
        if pos + 8 > end:
            raise _Short(f"the file ends inside an element header at byte {pos}")
        group, elem = struct.unpack_from(e + "HH", data, pos)
        if stop_group is not None and group != stop_group:
            return pos
        if group == 0xFFFE and elem == 0xE00D:  # item delimitation
            return pos + 8
        if explicit and group != 0xFFFE:
            vr = data[pos + 4:pos + 6]
            if vr in _LONG_VRS:
                if pos + 12 > end:
                    raise _Short(f"the file ends inside the header of ({group:04X},{elem:04X}) at byte {pos}")
                (length,) = struct.unpack_from(e + "L", data, pos + 8)
                hdr = 12
            else:
                (length,) = struct.unpack_from(e + "H", data, pos + 6)
                hdr = 8
        else:
            vr = None
            (length,) = struct.unpack_from(e + "L", data, pos + 4)
            hdr = 8
        start = pos
        pos += hdr
        if length == _UNDEFINED:
            # a sequence, or encapsulated pixel data; UN of undefined length is implicit VR inside
            pos = _walk_items(data, pos, end, little, explicit and vr != b"UN", (group, elem))
        else:
            if pos + length > end:
                raise _Short(f"element ({group:04X},{elem:04X}) at byte {start} declares {length} bytes "
                             f"but only {end - pos} remain")
            pos += length
    if nested:
        raise _Short("the file ends inside a sequence item (no item delimiter)")
    return pos


def _walk_items(data: bytes, pos: int, end: int, little: bool, explicit: bool, owner: tuple[int, int]) -> int:
    e = "<" if little else ">"
    while True:
        if pos + 8 > end:
            raise _Short(f"the file ends inside ({owner[0]:04X},{owner[1]:04X}) (no sequence delimiter)")
        group, elem, length = struct.unpack_from(e + "HHL", data, pos)
        pos += 8
        if (group, elem) == (0xFFFE, 0xE0DD):
            return pos
        if (group, elem) != (0xFFFE, 0xE000):
            raise _Short(f"({owner[0]:04X},{owner[1]:04X}) holds ({group:04X},{elem:04X}) at byte {pos - 8} "
                         f"where an item was expected")
        if length == _UNDEFINED:
            pos = _walk_dataset(data, pos, end, little, explicit, nested=True)
        else:
            if pos + length > end:
                raise _Short(f"an item of ({owner[0]:04X},{owner[1]:04X}) at byte {pos - 8} declares {length} "
                             f"bytes but only {end - pos} remain")
            pos += length


def check_complete(data: bytes, transfer_syntax: str) -> None:
    """Raise DicomReject('TRUNCATED') unless every element of the file fits in it."""
    try:
        pos = _walk_dataset(data, 132, len(data), True, True, nested=False, stop_group=0x0002)
        if transfer_syntax == DEFLATED:
            d = zlib.decompressobj(-zlib.MAX_WBITS)
            d.decompress(data[pos:])
            if not d.eof:
                raise _Short("the deflated data set stream does not end")
            return
        from pydicom.uid import UID

        ts = UID(transfer_syntax)
        little = ts.is_little_endian if ts.is_transfer_syntax else True
        explicit = not ts.is_implicit_VR if ts.is_transfer_syntax else True
        _walk_dataset(data, pos, len(data), little, explicit, nested=False)
    except _Short as e:
        raise DicomReject("TRUNCATED", f"truncated or malformed DICOM file: {e}") from None
    except struct.error as e:
        raise DicomReject("TRUNCATED", f"truncated or malformed DICOM file: {e}") from None


# ----------------------------------------------------------------------- text decoding

def _charsets(raw) -> list[str]:
    if raw is None:
        return []
    value = raw.value
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        terms = [str(v) for v in value]
    else:
        terms = str(value or "").split("\\")
    return [t.strip() for t in terms]


def decode_text(b: bytes, charsets: list[str], fallback: str, pn: bool = False) -> tuple[str, str | None]:
    """Decode one raw text value strictly. Returns (text, charset assumed or None)."""
    from pydicom.charset import python_encoding

    b = b.rstrip(b" \x00")
    if b"\x1b" not in b:
        try:
            return b.decode("ascii"), None
        except UnicodeDecodeError:
            pass
    declared = [c for c in charsets if c] if charsets else []
    if not declared or declared == ["ISO_IR 6"]:
        try:
            return b.decode(fallback), fallback
        except (UnicodeDecodeError, LookupError):
            raise DicomReject("INVALID ENCODING",
                              f"non-ASCII text but no Specific Character Set (0008,0005), and the bytes are not "
                              f"valid {fallback.upper()} (the feed's encoding)") from None
    if declared == ["ISO_IR 100"] and fallback in CHINESE_FALLBACKS:
        # Many Chinese PACS declare Latin-1 (the default of their DICOM toolkits) and write GBK.
        # Latin-1 decodes any byte, so the declaration cannot be checked; a feed registered with
        # a Chinese encoding says which one the institution really writes.
        try:
            return b.decode(fallback), fallback
        except UnicodeDecodeError:
            pass  # not valid in the feed's encoding: take the declaration at its word
    unknown = [c for c in declared if c not in python_encoding]
    if unknown:
        raise DicomReject("INVALID ENCODING", f"unknown Specific Character Set {unknown[0]!r} (0008,0005); "
                                              f"known e.g. GB18030, GBK, ISO_IR 192, ISO_IR 100")
    if len(declared) == 1 and not declared[0].startswith("ISO 2022"):
        codec = python_encoding[declared[0]]
        try:
            return b.decode(codec), None
        except UnicodeDecodeError as e:
            raise DicomReject("INVALID ENCODING", f"bytes at offset {e.start} are not valid {declared[0]} "
                                                  f"(the declared Specific Character Set)") from None
    from pydicom.charset import decode_bytes

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        text = decode_bytes(b, [python_encoding[c] for c in charsets or ["ISO_IR 6"]],
                            {"^", "="} if pn else set())
    if caught:
        declared_text = "\\".join(charsets)
        raise DicomReject("INVALID ENCODING", f"text not valid in {declared_text}: {caught[0].message}")
    return text, None


# ----------------------------------------------------------------------- one file

def _meta_transfer_syntax(data: bytes) -> str:
    """(0002,0010) from the raw file meta, for files pydicom cannot parse."""
    i = data.find(b"\x02\x00\x10\x00UI", 132, 132 + 4096)
    if i < 0:
        return "1.2.840.10008.1.2.1"
    (n,) = struct.unpack_from("<H", data, i + 6)
    return data[i + 8:i + 8 + n].decode("ascii", "replace").strip("\x00 ")


def read_instance(data: bytes, fallback_encoding: str = "utf-8") -> Instance:
    """Parse one file's header; raise DicomReject with a clear reason when it cannot be loaded."""
    from pydicom import dcmread
    from pydicom.uid import UID

    if not data:
        raise DicomReject("NOT DICOM", "empty file (0 bytes)")
    if len(data) < 132 or data[128:132] != b"DICM":
        raise DicomReject("NOT DICOM", "not a DICOM Part 10 file: no 'DICM' marker at byte 128 "
                                       f"(file starts with {data[:8]!r})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bio = io.BytesIO(data)
            ds = dcmread(bio, stop_before_pixels=True)
    except Exception as e:  # noqa: BLE001 — pydicom raises many types on broken input
        check_complete(data, _meta_transfer_syntax(data))  # a truncated file says so
        raise DicomReject("MALFORMED", f"unreadable DICOM header: {type(e).__name__}: {e}") from None
    meta = ds.file_meta
    ts = str(meta.get("TransferSyntaxUID", "") or "")
    if str(meta.get("MediaStorageSOPClassUID", "")) == MEDIA_STORAGE_DIRECTORY:
        raise DicomReject("NOT AN INSTANCE", "a DICOMDIR (media storage directory), not an image instance: "
                                             "the instances it lists are loaded from their own files")
    check_complete(data, ts)
    # A cut exactly between two elements leaves a well-formed header without its image.
    # pydicom stops with the file positioned at the pixel data element, if there is one.
    pixel_tags = {b"\xe0\x7f\x10\x00", b"\xe0\x7f\x08\x00", b"\xe0\x7f\x09\x00",
                  b"\x7f\xe0\x00\x10", b"\x7f\xe0\x00\x08", b"\x7f\xe0\x00\x09"}
    sop_class = UID(str(meta.get("MediaStorageSOPClassUID", "") or ""))
    is_image = "Rows" in ds or "Image Storage" in sop_class.name
    if ts != DEFLATED and is_image and data[bio.tell():bio.tell() + 4] not in pixel_tags:
        if "Rows" not in ds:
            raise DicomReject("TRUNCATED", f"truncated DICOM file: an image instance ({sop_class.name}) that ends at "
                                           f"byte {len(data)}, before its image attributes and Pixel Data")
        raise DicomReject("NO PIXEL DATA", "an image instance with image attributes (Rows, Columns) but no Pixel Data "
                                           "(7FE0,0010): truncated before the image, or a header-only export; the "
                                           "archive needs the complete file")

    charsets = _charsets(ds.get_item(0x00080005))
    values: dict[str, str | None] = {}
    assumed = None
    for keyword, tag in HEADER_TAGS.items():
        raw = ds.get_item(tag)
        if raw is None:
            values[keyword] = None
            continue
        if tag == 0x00080005:
            values[keyword] = "\\".join(charsets) or None
            continue
        value = raw.value
        if value is None or value == b"" or value == "":
            values[keyword] = None
            continue
        if not isinstance(value, bytes):  # already converted by pydicom (e.g. UIDs it needed)
            values[keyword] = str(value).strip() or None
            continue
        text, used = decode_text(value, charsets, fallback_encoding, pn=tag in PN_TAGS)
        assumed = assumed or used
        values[keyword] = text.strip() or None
    if not values["SOPInstanceUID"]:
        values["SOPInstanceUID"] = str(meta.get("MediaStorageSOPInstanceUID", "") or "").strip("\x00 ") or None
    for keyword, tag in (("StudyInstanceUID", "(0020,000D)"), ("SeriesInstanceUID", "(0020,000E)"),
                         ("SOPInstanceUID", "(0008,0018)")):
        if not values[keyword]:
            raise DicomReject("MISSING UID", f"no {keyword} {tag}: the instance cannot be placed in the "
                                             f"patient → study → series → instance index")
    values["TransferSyntaxUID"] = ts or None
    return Instance(values=values, dataset=ds, charset_assumed=assumed)


# ----------------------------------------------------------------------- de-identification

# Replaced by a keyed pseudonym HMAC-SHA256(secret, institution | value), 16 hex digits: the same
# patient (or accession) of the same institution always gets the same pseudonym, so de-identified
# copies still group by patient; without the secret a pseudonym cannot be confirmed. PatientName
# becomes ANON^<the PatientID's pseudonym>. The secret is HEALTHLAKE_DEID_SECRET.
DEID_PSEUDONYMISED = {0x00100010: "PatientName", 0x00100020: "PatientID", 0x00080050: "AccessionNumber"}
# Removed wherever they occur (also inside sequences); every other PN (person name) element is
# emptied, and all private tags are removed. A subset of the DICOM PS3.15 Annex E Basic Profile;
# UIDs, dates of the study, sex, age, modality and body part are retained (Retain UIDs and
# Retain Longitudinal Full Dates options) because the index and the timeline need them.
DEID_REMOVED = {
    0x00100030: "PatientBirthDate", 0x00100032: "PatientBirthTime", 0x00101000: "OtherPatientIDs",
    0x00101001: "OtherPatientNames", 0x00101002: "OtherPatientIDsSequence", 0x00101005: "PatientBirthName",
    0x00101040: "PatientAddress", 0x00101060: "PatientMotherBirthName", 0x00101090: "MedicalRecordLocator",
    0x00102154: "PatientTelephoneNumbers", 0x00102150: "CountryOfResidence", 0x00102152: "RegionOfResidence",
    0x00102180: "Occupation", 0x001021B0: "AdditionalPatientHistory", 0x00104000: "PatientComments",
    0x00101080: "MilitaryRank", 0x00100050: "PatientInsurancePlanCodeSequence", 0x00380010: "AdmissionID",
    0x00380400: "PatientInstitutionResidence", 0x00080081: "InstitutionAddress",
    0x00080092: "ReferringPhysicianAddress", 0x00080094: "ReferringPhysicianTelephoneNumbers",
    0x00321032: "RequestingPhysician", 0x00400006: "ScheduledPerformingPhysicianName",
    0x00081048: "PhysiciansOfRecord", 0x00081050: "PerformingPhysicianName",
    0x00081060: "NameOfPhysiciansReadingStudy", 0x00081070: "OperatorsName", 0x00200010: "StudyID",
    0x00321060: "RequestedProcedureDescription", 0x00400275: "RequestAttributesSequence",
}


def deid_secret() -> bytes:
    return os.environ.get("HEALTHLAKE_DEID_SECRET", DEMO_DEID_SECRET).encode()


def pseudonym(secret: bytes, institution: str, value: str) -> str:
    return hmac.new(secret, f"{institution}|{value}".encode(), hashlib.sha256).hexdigest()[:16].upper()


def _vr(d, tag) -> str:
    from pydicom.datadict import dictionary_VR

    elem = d.get_item(tag)
    vr = getattr(elem, "VR", None)
    if vr is None:  # implicit VR: the dictionary's
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            vr = "UN"
    return vr


def _scrub(d) -> None:
    """Remove private and listed tags, empty person names, recursively (sequences decoded only)."""
    from pydicom.dataelem import DataElement

    for tag in list(d.keys()):
        if tag.is_private or tag in DEID_REMOVED:
            del d[tag]
            continue
        vr = _vr(d, tag)
        if vr == "SQ":
            for item in d[tag].value or []:
                _scrub(item)
        elif vr == "PN" and tag not in DEID_PSEUDONYMISED:
            d[tag] = DataElement(tag, "PN", "")


def _short_element(tag: int, vr: str, value: str) -> bytes:
    b = value.encode("ascii")
    if len(b) % 2:
        b += b"\x00" if vr == "UI" else b" "
    return struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr.encode() + struct.pack("<H", len(b)) + b


def _replacements(instance: Instance, institution: str, secret: bytes) -> dict[int, tuple[str, str]]:
    """tag -> (VR, value) of the elements the copy gets instead of (or on top of) the original's."""
    out: dict[int, tuple[str, str]] = {}
    pid = instance.values.get("PatientID")
    for tag, keyword in DEID_PSEUDONYMISED.items():
        original = instance.values.get(keyword)
        if original is None:
            continue
        if keyword == "PatientName":  # named after the patient's pseudonymous id, when there is one
            out[tag] = ("PN", "ANON^" + pseudonym(secret, institution, pid or original))
        else:
            out[tag] = ("LO" if keyword == "PatientID" else "SH", pseudonym(secret, institution, original))
    out[0x00120062] = ("CS", "YES")  # PatientIdentityRemoved
    out[0x00120063] = ("LO", "healthlake v1: PS3.15 E basic subset, HMAC pseudonyms")  # DeidentificationMethod
    return out


def _deid_explicit_le(data: bytes, instance: Instance, new: dict[int, tuple[str, str]]) -> bytes:
    """Byte-level copy of an explicit VR little endian file: kept elements are copied as they are,
    changed ones encoded, sequences scrubbed and re-encoded by pydicom; stops at the pixel data.
    pydicom's writer re-encoding every element was 60 % of the ingest (bench/ingest_dicom.py)."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_data_element

    end = len(data)
    pos = _walk_dataset(data, 132, end, True, True, nested=False, stop_group=0x0002)
    out = [data[:pos]]
    pending = sorted(new)
    charsets = _charsets(instance.dataset.get_item(0x00080005)) or None
    while pos < end:
        group, elem = struct.unpack_from("<HH", data, pos)
        tag = group << 16 | elem
        vr = data[pos + 4:pos + 6]
        if vr in _LONG_VRS:
            (length,) = struct.unpack_from("<L", data, pos + 8)
            hdr = 12
        else:
            (length,) = struct.unpack_from("<H", data, pos + 6)
            hdr = 8
        stop = (_walk_items(data, pos + hdr, end, True, vr != b"UN", (group, elem)) if length == _UNDEFINED
                else pos + hdr + length)
        while pending and pending[0] <= tag:
            t = pending.pop(0)
            out.append(_short_element(t, *new[t]))
        if group >= 0x7FE0:
            break  # pixel data and anything after it: not part of a header copy
        if group % 2 == 1 or tag in DEID_REMOVED or tag in new or tag in DEID_PSEUDONYMISED:
            pass
        elif vr == b"PN":
            out.append(struct.pack("<HH", group, elem) + b"PN\x00\x00")
        elif vr == b"SQ":
            element = instance.dataset[tag]
            for item in element.value or []:
                _scrub(item)
            fp = DicomBytesIO()
            fp.is_little_endian, fp.is_implicit_VR = True, False
            write_data_element(fp, element, charsets)
            out.append(fp.getvalue())
        else:
            out.append(data[pos:stop])
        pos = stop
    for t in pending:
        out.append(_short_element(t, *new[t]))
    return b"".join(out)


def deidentify(instance: Instance, institution: str, secret: bytes | None = None, data: bytes | None = None) -> bytes:
    """A de-identified copy of the header (no pixel data) as a DICOM Part 10 file.

    Given the file's bytes, an explicit VR little endian file (most files) is copied at the byte
    level. Otherwise ``instance.dataset`` is edited in place (consumed) and written by pydicom as
    explicit VR little endian: without pixel data the original transfer syntax has nothing left
    to describe.
    """
    from pydicom.dataelem import DataElement
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.filewriter import dcmwrite
    from pydicom.uid import ExplicitVRLittleEndian

    secret = secret or deid_secret()
    new = _replacements(instance, institution, secret)
    ds = instance.dataset
    if data is not None and instance.values.get("TransferSyntaxUID") == ExplicitVRLittleEndian:
        return _deid_explicit_le(data, instance, new)
    _scrub(ds)
    for tag, (vr, value) in new.items():
        ds[tag] = DataElement(tag, vr, value)
    for tag in DEID_PSEUDONYMISED:
        if tag in ds and tag not in new:
            del ds[tag]
    meta = FileMetaDataset(ds.file_meta)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    out = Dataset()
    for elem in ds:  # decodes every element
        out.add(elem)
    out.file_meta = meta
    out.preamble = b"\x00" * 128
    buf = io.BytesIO()
    dcmwrite(buf, out, enforce_file_format=True, implicit_vr=False, little_endian=True)
    return buf.getvalue()


# ----------------------------------------------------------------------- a delivery

def iter_delivery(path: Path) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of every file of a delivery, in name order."""
    path = Path(path)
    if path.is_dir():
        for p in sorted(path.rglob("*")):
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts):
                yield p.relative_to(path).as_posix(), p.read_bytes()
        return
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as zf:
                for info in sorted(zf.infolist(), key=lambda i: i.filename):
                    if info.is_dir() or info.filename.startswith("__MACOSX/"):
                        continue
                    yield info.filename, zf.read(info)
        except (zipfile.BadZipFile, zlib.error, EOFError) as e:
            raise UnreadableFileError(f"{path.name}: broken zip archive: {e}", path=str(path)) from None
        return
    data = path.read_bytes()
    if data[:4] == b"PK\x03\x04" or path.suffix.lower() == ".zip":
        raise UnreadableFileError(f"{path.name}: broken zip archive (no central directory: truncated?)",
                                  path=str(path))
    yield path.name, data


def _institution_of(path: Path) -> str:
    from healthlake.config import settings

    try:
        return Path(path).resolve().relative_to(settings().landing).parts[0]
    except (ValueError, IndexError):
        return Path(path).resolve().parent.parent.name or "unknown"


def open_dicom(con: duckdb.DuckDBPyConnection, path: Path, feed, workdir: Path,
               institution_code: str | None = None) -> SourceScan:
    from healthlake.config import settings
    from ingest_adapters.rawstore import put_raw

    s = settings()
    institution = institution_code or _institution_of(path)
    fallback = feed.encoding if feed.encoding not in ("utf-8-sig",) else "utf-8"
    columns = {c: [] for c in SCAN_COLUMNS}
    ordinals: list[int] = []
    rejects: list[Reject] = []
    assumed: list[str] = []
    secret = deid_secret()
    for number, (name, data) in enumerate(iter_delivery(path), start=1):
        sha = hashlib.sha256(data).hexdigest()
        archive = put_raw(s, f"dicom/{institution}/{sha}.dcm", data) if data else None
        try:
            inst = read_instance(data, fallback)
            deid = put_raw(s, f"dicom_deid/{institution}/{sha}.dcm", deidentify(inst, institution, secret, data))
        except DicomReject as e:
            where = f"{name} ({len(data)} bytes, sha256 {sha[:16]})" + (f" archived at {archive}" if archive else "")
            rejects.append(Reject(source_row=number, raw_line=where, error_type=e.error_type, reason=e.reason))
            continue
        if inst.charset_assumed:
            assumed.append(name)
        values = dict(inst.values, _file_name=name, _sha256=sha, _bytes=str(len(data)),
                      _archive_uri=archive, _deid_uri=deid)
        for c in SCAN_COLUMNS:
            columns[c].append(values.get(c))
        ordinals.append(number)
    table = pa.table({**{c: pa.array(v, pa.string()) for c, v in columns.items()},
                      ORDINAL: pa.array(ordinals, pa.int64())})
    view = f"_dicom_scan_{abs(hash((str(path), id(table))))}"
    con.register(view, table)

    def cleanup():
        try:
            con.unregister(view)
        except duckdb.Error:
            pass

    notes = {"files": len(ordinals) + len(rejects), "instances": len(ordinals),
             "studies": len({v for v in columns["StudyInstanceUID"] if v})}
    if assumed:
        notes["charset_assumed"] = {"encoding": fallback, "files": assumed[:20], "count": len(assumed)}
    return SourceScan(columns=SCAN_COLUMNS + [ORDINAL], from_sql=view, rejects=lambda c: list(rejects),
                      cleanup=cleanup, notes=notes, ordinal_column=ORDINAL)

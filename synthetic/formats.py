"""Extract formats other than CSV: which institution sends which feed how, the files and registry entries.

A city's institutions do not all export CSV (issue 3): the 二级 hospital 资中县人民医院 sends Excel
workbooks, township centres JSON or NDJSON from their 基本公卫系统, the CDC's front-end machine
(前置机) delivers a SQLite database, the lab system (LIS) of 内江市中医医院 sends HL7 v2 ORU^R01
messages, and the newer 隆昌市人民医院 sends FHIR R4 collection bundles for its EMR feeds. Every
other feed stays CSV (the 三级 hospital 内江市第一人民医院 keeps its GB18030 CSV).

Each format's file class has the interface of ``writer.FeedFile``: ``line(fields, malformed)``
gives the record's payload (written with ``write``; a duplicate re-writes the same payload), and
``malformations`` the malformed kinds the format can carry (NDJSON: all three, as invalid JSON
lines; the others none: a workbook, a SQLite table, an HL7 message or a FHIR resource built by
a library is well-formed, so those draws are ignored). Values are the same text the CSV would
carry (the institution's date and sex formats), so field defects survive every format; record
``n`` of a file is the reader's ``_source_row`` ``n``. A day without records delivers no file
(the readers refuse empty files, as an institution's exporter sends nothing).
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from datetime import date
from pathlib import Path

FORMAT_EXTENSION = {"csv": "csv", "excel": "xlsx", "ndjson": "ndjson", "json": "json", "sqlite": "sqlite",
                    "hl7v2": "hl7", "fhir": "json", "frontend": "sqlite"}
FHIR_DATASETS = ("person", "encounter", "diagnosis", "lab_result", "prescription", "practitioner")

# institution code -> {data set or '*': format}; the rest is CSV.
FORMATS: dict[str, dict[str, str]] = {
    "511025H001": {"*": "excel"},                               # 资中县人民医院 (二级甲等)
    "511024T001": {"*": "ndjson"},                              # 威远县新场镇中心卫生院
    "511024T002": {"*": "ndjson"},                              # 威远县连界镇卫生院
    "511025T002": {"*": "ndjson"},                              # 资中县归德镇卫生院
    "511083T002": {"*": "json"},                                # 隆昌市胡家镇中心卫生院
    "511002D001": {"*": "sqlite"},                              # 内江市疾病预防控制中心 前置机
    "511011H001": {"lab_result": "hl7v2"},                      # 内江市中医医院 LIS
    "511083H001": {d: "fhir" for d in FHIR_DATASETS},           # 隆昌市人民医院 (newer EMR)
}
# ``generate_city(frontend_db=True)``: these feeds are not delivered as daily files but written to
# the institution's front-end database (前置机), one SQLite database that grows every day
# (``FrontendDbFile``), pulled by the platform incrementally (``ingest_adapters.frontend_db``).
FRONTEND_DB = {"511002D001": ("immunization",)}                 # the CDC's 免疫规划 front-end machine
MALFORMED_ALL = frozenset({"malformed_ragged", "malformed_bad_quote", "malformed_undecodable"})
UNDECODABLE = b"\xff\xfe?"
_MARK = "\ue000"   # private-use placeholder for the undecodable bytes while the record is text


def format_of(inst_code: str, dataset: str) -> str:
    f = FORMATS.get(inst_code, {})
    return f.get(dataset) or f.get("*") or "csv"


# ------------------------------------------------------------------------------------------ registry
def registry_entry(feed, base: dict) -> dict:
    """The feed's registry entry for its format (``base``: the CSV-style entry)."""
    fmt = feed.format
    if fmt == "csv":
        return base
    out = {"id": base["id"], "dataset": base["dataset"], "format": fmt, "encoding": feed.encoding,
           "cadence": base["cadence"]}
    if fmt == "json":
        out["records_path"] = "data"
    elif fmt == "sqlite":
        out.update(table=sqlite_table(feed), watermark="seq")
    elif fmt == "frontend":   # pulled from the database (relative to registry.yaml), not delivered
        out.update(format="sqlite", database=frontend_path(feed.inst.code), table=sqlite_table(feed), watermark="seq")
    elif fmt == "excel":
        out["sheet"] = SHEET
    if fmt in ("hl7v2", "fhir"):
        del out["dataset"]
        out["mapping"] = {feed.dataset: (hl7_mapping(feed) if fmt == "hl7v2" else fhir_mapping(feed))}
        if fmt == "hl7v2":
            out["message_types"] = ["ORU^R01"]
    else:
        out["mapping"] = base["mapping"]
    out["value_formats"] = base["value_formats"]
    return out


# ------------------------------------------------------------------------------------------ files
class RecordFile:
    """Shared by the non-CSV formats: the day's file of one feed, opened on the first record."""

    malformations: frozenset = frozenset()

    def __init__(self, landing: Path, seed: int, feed, day: date):
        from synthetic.rng import rng
        from synthetic.writer import formatters

        self.feed, self.day = feed, day
        self.rel = feed.file_name(day)
        self.path = landing / self.rel
        self.fmts = formatters(feed)
        self.rng = rng(seed, "defects", feed.inst.code, feed.id, day.isoformat())
        self.rows = 0
        self.duplicates: list = []
        self._open = False

    def write(self, payload) -> None:
        if not self._open:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.start()
            self._open = True
        self.put(payload)

    def close(self) -> bool:
        """Finish the file; False when the day had no record (no file delivered)."""
        if not self._open:
            return False
        self.finish()
        return True

    def _target(self, fields: list[str]) -> int:
        from synthetic.writer import defect_target

        return defect_target(self.feed, [j for j, f in enumerate(fields) if f and '"' not in f and "\\" not in f])

    def values(self, fields: list[str]) -> dict[str, str]:
        """element -> text, empty values left out."""
        return {e: v for e, v in zip(self.feed.elements, fields) if v != ""}

    # the format's own part
    def start(self) -> None: ...
    def put(self, payload) -> None: ...
    def finish(self) -> None: ...
    def line(self, fields: list[str], malformed: str | None): ...


class NdjsonFile(RecordFile):
    """One JSON object per line, keys = the institution's field names, empty values as null.
    Malformed lines are invalid JSON: an extra value without a key (ragged), a string with text
    after its closing quote (bad quote), bytes FF FE inside a string (undecodable)."""

    malformations = MALFORMED_ALL

    def start(self):
        self.fh = open(self.path, "wb", buffering=1 << 16)

    def put(self, payload: bytes):
        self.fh.write(payload)

    def finish(self):
        self.fh.close()

    def line(self, fields, malformed):
        cols = self.feed.columns
        element = ""
        j = self._target(fields) if malformed in ("malformed_bad_quote", "malformed_undecodable") else -1
        parts = []
        for k, (c, v) in enumerate(zip(cols, fields)):
            value = json.dumps(v if v != "" else None, ensure_ascii=False)
            if k == j:
                element = self.feed.elements[j]
                value = (json.dumps(v, ensure_ascii=False) + "x" if malformed == "malformed_bad_quote"
                         else json.dumps(v + _MARK, ensure_ascii=False))
            parts.append(json.dumps(c, ensure_ascii=False) + ":" + value)
        if malformed == "malformed_ragged":
            parts.append('"补录"')
        data = ("{" + ",".join(parts) + "}\n").encode("utf-8")
        if malformed == "malformed_undecodable":
            data = data.replace(_MARK.encode("utf-8"), UNDECODABLE)
        return data, element


class _JsonArrayFile(RecordFile):
    """A JSON object whose last member is an array of the records, streamed: ``head()`` is the
    object's text up to and including the array's ``[``."""

    def head(self) -> bytes: ...

    def start(self):
        self.fh = open(self.path, "wb", buffering=1 << 16)
        self.fh.write(self.head() + b"\n")
        self.first = True

    def put(self, payload: bytes):
        if not self.first:
            self.fh.write(b",\n")
        self.first = False
        self.fh.write(payload)

    def finish(self):
        self.fh.write(b"\n]}\n")
        self.fh.close()


class JsonDocumentFile(_JsonArrayFile):
    """One JSON document per day, ``{"code": 0, "msg": "成功", "data": [records]}``, streamed."""

    def head(self) -> bytes:
        return '{"code":0,"msg":"成功","data":['.encode("utf-8")

    def line(self, fields, malformed):
        record = {c: (v if v != "" else None) for c, v in zip(self.feed.columns, fields)}
        return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8"), ""


SHEET = "数据"


class ExcelFile(RecordFile):
    """An .xlsx workbook (openpyxl, write-only: streamed), one sheet ``数据``: a title row above the
    header (the reader finds the header below it), every value a text cell (IDs and phones keep
    their digits), an empty value an empty cell."""

    _TITLES = {"person": "患者基本信息", "encounter": "就诊记录", "diagnosis": "诊断记录", "lab_result": "检验结果",
               "prescription": "处方明细", "department": "科室字典", "practitioner": "人员字典"}

    def start(self):
        from openpyxl import Workbook

        self.wb = Workbook(write_only=True)
        self.ws = self.wb.create_sheet(SHEET)
        title = self._TITLES.get(self.feed.dataset, self.feed.dataset)
        self.ws.append([f"{self.feed.inst.name} {title} {self.day:%Y年%m月%d日}"])
        self.ws.append(list(self.feed.columns))

    def put(self, payload: tuple):
        self.ws.append(list(payload))

    def finish(self):
        self.wb.save(self.path)
        _fix_zip_times(self.path)

    def line(self, fields, malformed):
        return tuple(v if v != "" else None for v in fields), ""


def _fix_zip_times(path: Path) -> None:
    """openpyxl stamps the zip members and docProps with the time of writing: rewrite them so the
    same city gives the same bytes."""
    import re
    import zipfile

    with zipfile.ZipFile(path) as z:
        members = [(i.filename, z.read(i.filename)) for i in z.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members:
            if name == "docProps/core.xml":
                data = re.sub(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", b"2026-01-01T00:00:00Z", data)
            info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, data)


def sqlite_table(feed) -> str:
    return f"t_{feed.id}"


class SqliteFile(RecordFile):
    """The CDC front-end machine's SQLite database, one per day: table ``t_<feed>`` with an
    autoincrement ``seq`` (the watermark) and the institution's columns as TEXT."""

    def start(self):
        self.path.unlink(missing_ok=True)
        self.db = sqlite3.connect(self.path)
        cols = ", ".join(f'"{c}" TEXT' for c in self.feed.columns)
        self.db.execute(f'CREATE TABLE "{sqlite_table(self.feed)}" (seq INTEGER PRIMARY KEY AUTOINCREMENT, {cols})')
        marks = ", ".join("?" for _ in self.feed.columns)
        names = ", ".join(f'"{c}"' for c in self.feed.columns)
        self.sql = f'INSERT INTO "{sqlite_table(self.feed)}" ({names}) VALUES ({marks})'

    def put(self, payload: tuple):
        self.db.execute(self.sql, payload)

    def finish(self):
        self.db.commit()
        self.db.close()

    def line(self, fields, malformed):
        return tuple(v if v != "" else None for v in fields), ""


def frontend_path(inst_code: str) -> str:
    """The front-end database of an institution, relative to the city directory (registry.yaml's)."""
    return f"frontend/{inst_code}/frontend.sqlite"


class FrontendDbFile(SqliteFile):
    """A day's rows appended to the institution's front-end database (one SQLite file for the whole
    window, under ``<city>/frontend/``, outside the landing zone): table ``t_<feed>`` with an
    autoincrement ``seq`` (the watermark) and ``sync_time`` (when the day's rows arrived). Record
    ``n`` in the truth is ``seq`` ``n``: a first pull of the whole table numbers its rows so."""

    def __init__(self, landing: Path, seed: int, feed, day: date):
        super().__init__(landing, seed, feed, day)
        self.path = landing.parent / frontend_path(feed.inst.code)
        self.rel = "../" + frontend_path(feed.inst.code)
        if self.path.exists():   # the rows of the earlier days: numbering goes on
            with sqlite3.connect(self.path) as db:
                self.rows = db.execute(f'SELECT count(*) FROM "{sqlite_table(feed)}"').fetchone()[0]

    def start(self):
        self.db = sqlite3.connect(self.path)
        cols = ", ".join(f'"{c}" TEXT' for c in self.feed.columns)
        self.db.execute(f'CREATE TABLE IF NOT EXISTS "{sqlite_table(self.feed)}" '
                        f'(seq INTEGER PRIMARY KEY AUTOINCREMENT, {cols}, sync_time TEXT)')
        marks = ", ".join("?" for _ in self.feed.columns)
        names = ", ".join(f'"{c}"' for c in self.feed.columns)
        self.sql = f'INSERT INTO "{sqlite_table(self.feed)}" ({names}, sync_time) VALUES ({marks}, ?)'
        self.sync_time = f"{self.day:%Y-%m-%d} 23:30:00"

    def put(self, payload: tuple):
        self.db.execute(self.sql, payload + (self.sync_time,))


# ------------------------------------------------------------------------------------------ HL7 v2
_HL7_PATHS = {"lab_result_id": "OBR-3.1", "encounter_id": "PV1-19.1", "patient_id": "PID-3.1",
              "item_code": "OBX-3.1", "item_name": "OBX-3.2", "result_value": "OBX-5", "unit": "OBX-6.1",
              "reference_range": "OBX-7", "abnormal_flag": "OBX-8", "reported_at": "OBX-14"}


def hl7_mapping(feed) -> dict:
    m = {"segment": "OBX", "messages": ["ORU^R01"]}
    m.update({e: _HL7_PATHS[e] for e in feed.elements})
    return m


def hl7_escape(v: str) -> str:
    return (v.replace("\\", "\\E\\").replace("|", "\\F\\").replace("^", "\\S\\").replace("&", "\\T\\")
            .replace("~", "\\R\\"))


class Hl7File(RecordFile):
    """The LIS's ORU^R01 messages, one per lab result (MSH, PID, PV1, OBR, OBX), segments ended by
    CR, in the institution's encoding declared in MSH-18."""

    _CHARSET = {"gb18030": "GB 18030-2000", "utf-8": "UNICODE UTF-8", "utf-8-sig": "UNICODE UTF-8"}

    def start(self):
        self.fh = open(self.path, "wb", buffering=1 << 16)

    def put(self, payload: bytes):
        self.fh.write(payload)

    def finish(self):
        self.fh.close()

    def line(self, fields, malformed):
        v = {e: hl7_escape(x) for e, x in zip(self.feed.elements, fields)}
        g = v.get
        inst = self.feed.inst
        ts = g("reported_at", "")
        enc = "utf-8" if inst.encoding == "utf-8-sig" else inst.encoding
        segs = [
            f"MSH|^~\\&|LIS|{inst.code}|HEALTHLAKE|511000|{ts}||ORU^R01^ORU_R01|{g('lab_result_id')}|P|2.5.1"
            f"|||||CHN|{self._CHARSET[inst.encoding]}",
            f"PID|1||{g('patient_id')}^^^{inst.code}^PI",
            f"PV1|1|O" + "|" * 17 + g("encounter_id", ""),
            f"OBR|1||{g('lab_result_id')}|{g('item_code', '')}^{g('item_name', '')}^WS/T 102|||{ts}",
            f"OBX|1|ST|{g('item_code', '')}^{g('item_name', '')}^WS/T 102||{g('result_value', '')}|{g('unit', '')}"
            f"|{g('reference_range', '')}|{g('abnormal_flag', '')}|||F|||{ts}",
        ]
        return ("\r".join(segs) + "\r\n").encode(enc), ""


# ------------------------------------------------------------------------------------------ FHIR R4
EXT = "http://healthlake.example/fhir/StructureDefinition/"
SEX_EXTENSION = EXT + "gbt2261-sex"


def _ext(name: str, kind: str = "valueString") -> str:
    return f"extension[url={EXT}{name}].{kind}"

_FHIR_RESOURCE = {"person": "Patient", "encounter": "Encounter", "diagnosis": "Condition",
                  "lab_result": "Observation", "prescription": "MedicationRequest", "practitioner": "Practitioner"}
# element -> (mapping path, where to put the value in the resource)
_FHIR_PATHS = {
    "person": {"patient_id": "id", "name": "name[0].text", "sex_code": f"extension[url={SEX_EXTENSION}].valueString",
               "birth_date": "birthDate", "id_type_code": "identifier[0].type.coding[0].code",
               "id_number": "identifier[0].value", "mother_id_number": _ext("mother-id-number"),
               "ethnicity_code": _ext("ethnicity", "valueCode"),
               "marital_status_code": "maritalStatus.coding[0].code", "phone": "telecom[0].value",
               "address_division_code": "address[0].district", "address_text": "address[0].text",
               "updated_at": "meta.lastUpdated"},
    "encounter": {"encounter_id": "id", "patient_id": "subject.identifier.value",
                  "id_number": "subject." + _ext("id-number"), "visit_type_code": "class.code",
                  "department_code": "serviceProvider.identifier.value",
                  "practitioner_id": "participant[0].individual.identifier.value", "visit_at": "period.start",
                  "discharge_at": "period.end", "payment_method_code": _ext("payment-method", "valueCode"),
                  "total_fee": _ext("total-fee")},
    "diagnosis": {"diagnosis_id": "id", "encounter_id": "encounter.identifier.value",
                  "patient_id": "subject.identifier.value", "diagnosis_seq": _ext("diagnosis-seq"),
                  "diagnosis_code": "code.coding[0].code", "diagnosis_name": "code.coding[0].display",
                  "diagnosed_at": "recordedDate"},
    "lab_result": {"lab_result_id": "id", "encounter_id": "encounter.identifier.value",
                   "patient_id": "subject.identifier.value", "item_code": "code.coding[0].code",
                   "item_name": "code.coding[0].display", "result_value": "valueString",
                   "unit": _ext("unit"), "reference_range": "referenceRange[0].text",
                   "abnormal_flag": "interpretation[0].coding[0].code", "reported_at": "issued"},
    "prescription": {"order_id": "id", "encounter_id": "encounter.identifier.value",
                     "patient_id": "subject.identifier.value", "drug_code": "medicationCodeableConcept.coding[0].code",
                     "drug_name": "medicationCodeableConcept.text", "dose": "dosageInstruction[0].doseAndRate[0].doseQuantity.value",
                     "dose_unit": "dosageInstruction[0].doseAndRate[0].doseQuantity.unit",
                     "frequency": "dosageInstruction[0].timing.code.text",
                     "days": "dispenseRequest.expectedSupplyDuration.value", "ordered_at": "authoredOn"},
    "practitioner": {"practitioner_id": "id", "name": "name[0].text",
                     "sex_code": f"extension[url={SEX_EXTENSION}].valueString",
                     "department_code": _ext("department"), "profession": "qualification[0].code.text",
                     "title": "qualification[1].code.text", "licence_number": "qualification[0].identifier[0].value"},
}
_FHIR_STATIC = {
    "person": {}, "encounter": {"status": "finished"}, "diagnosis": {},
    "lab_result": {"status": "final", "category": [{"coding": [{"code": "laboratory"}]}]},
    "prescription": {"status": "active", "intent": "order"}, "practitioner": {},
}
_TIMESTAMPS = {"updated_at", "visit_at", "discharge_at", "diagnosed_at", "reported_at", "ordered_at"}


def fhir_mapping(feed) -> dict:
    m = {"resource": _FHIR_RESOURCE[feed.dataset]}
    m.update({e: _FHIR_PATHS[feed.dataset][e] for e in feed.elements})
    return m


# FHIR wants a date-time as 'YYYY-MM-DDTHH:MM:SS+08:00': dbt (macros/parsing.sql) and the bronze format
# rules (quality/rules, since 0941e15) read it. False sends the local 'YYYY-MM-DD HH:MM:SS' text instead.
FHIR_OFFSET_DATETIMES = True


def fhir_datetime(text: str) -> str:
    """'YYYY-MM-DD HH:MM:SS' (Beijing time) -> FHIR dateTime with its offset (when
    FHIR_OFFSET_DATETIMES); other text as sent."""
    if FHIR_OFFSET_DATETIMES and len(text) == 19 and text[10] == " ":
        return text[:10] + "T" + text[11:] + "+08:00"
    return text


def _put(resource: dict, path: str, value) -> None:
    """Set ``value`` at a mapping path (dotted steps, ``[n]`` and ``[url=...]`` list items)."""
    node = resource
    steps = _steps(path)
    for k, step in enumerate(steps):
        last = k == len(steps) - 1
        if "[" in step:
            name, sel = step[:-1].split("[", 1)
            items = node.setdefault(name, [])
            if sel.startswith("url="):
                item = next((x for x in items if x.get("url") == sel[4:]), None)
                if item is None:
                    item = {"url": sel[4:]}
                    items.append(item)
            else:
                i = int(sel)
                while len(items) <= i:
                    items.append({})
                item = items[i]
            if last:
                raise ValueError(path)
            node = item
        elif last:
            node[step] = value
        else:
            node = node.setdefault(step, {})


def _steps(path: str) -> list[str]:
    """Dotted steps, dots inside ``[...]`` kept."""
    out, depth, cur = [], 0, ""
    for ch in path:
        if ch == "." and depth == 0:
            out.append(cur)
            cur = ""
            continue
        depth += (ch == "[") - (ch == "]")
        cur += ch
    return out + [cur]


class FhirFile(_JsonArrayFile):
    """A FHIR R4 collection Bundle per day and feed, streamed entry by entry; each record one
    resource whose ``id`` is the business key and whose references to other feeds' resources
    carry the institution's identifiers (``subject.identifier.value``); date-times: see
    FHIR_OFFSET_DATETIMES."""

    def head(self) -> bytes:
        head = {"resourceType": "Bundle", "id": f"{self.feed.inst.code}-{self.feed.id}-{self.day:%Y%m%d}",
                "type": "collection", "timestamp": f"{self.day.isoformat()}T23:59:59+08:00"}
        return json.dumps(head, ensure_ascii=False)[:-1].encode("utf-8") + b',"entry":['

    def line(self, fields, malformed):
        ds = self.feed.dataset
        rtype = _FHIR_RESOURCE[ds]
        res = {"resourceType": rtype}
        res.update(json.loads(json.dumps(_FHIR_STATIC[ds])))
        for e, v in zip(self.feed.elements, fields):
            if v == "":
                continue
            if e in _TIMESTAMPS:
                v = fhir_datetime(v)
            _put(res, _FHIR_PATHS[ds][e], v)
        name = self.feed.inst.code + "/" + rtype + "/" + str(res.get("id"))
        full = f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, name)}"
        entry = {"fullUrl": full, "resource": res}
        return json.dumps(entry, ensure_ascii=False, separators=(",", ":")).encode("utf-8"), ""


FILE_CLASSES = {"ndjson": NdjsonFile, "json": JsonDocumentFile, "excel": ExcelFile, "sqlite": SqliteFile,
                "hl7v2": Hl7File, "fhir": FhirFile, "frontend": FrontendDbFile}

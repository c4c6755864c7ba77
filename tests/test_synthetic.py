"""The synthetic city: determinism, valid identities, registry contract and truth that matches the files.

Most tests share one city (4,000 residents, 3 days), re-read from disk with an independent parser:
every count in truth/summary.json and every defect in truth/defects.csv is recomputed from the
landing files themselves.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta
from functools import lru_cache
from pathlib import Path

import pytest
import yaml

from synthetic import check_char, generate_city, is_valid
from synthetic.clinical import LAB_ITEMS
from synthetic.gb11643 import birth_date_of, make_id, sex_code_of
from synthetic.reference import icd10, lab_item_codes

CATALOG = Path(__file__).resolve().parents[1] / "catalog" / "standard_datasets.yaml"
START = date(2026, 10, 1)
MALFORMED = ("malformed_ragged", "malformed_bad_quote", "malformed_undecodable")
EVENT_DATE = {"encounter": "visit_at", "diagnosis": "diagnosed_at", "lab_result": "reported_at",
              "prescription": "ordered_at", "chronic_followup": "followup_date", "immunization": "vaccinated_date"}


# ---------------------------------------------------------------------------- helpers
def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def read_csv(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


class Row:
    __slots__ = ("n", "raw", "status", "values")

    def __init__(self, n, raw, status, values):
        self.n, self.raw, self.status, self.values = n, raw, status, values


def parse_extract(path: Path, feed: dict) -> tuple[list[str], list[Row]]:
    """An independent strict reader: one physical line per record (the generator never writes
    line breaks inside fields); a record is malformed when it does not decode, does not parse
    strictly or has more fields than the header."""
    data = path.read_bytes()
    encoding = feed["encoding"]
    if encoding == "utf-8-sig":
        assert data.startswith(b"\xef\xbb\xbf")
        data, encoding = data[3:], "utf-8"
    lines = data.split(b"\n")
    assert lines[-1] == b"", f"{path} must end with a line terminator"
    lines = [ln[:-1] if ln.endswith(b"\r") else ln for ln in lines[:-1]]
    header = next(csv.reader([lines[0].decode(encoding)], strict=True))
    reverse = {col: el for el, col in feed["mapping"].items()}
    rows = []
    for n, raw in enumerate(lines[1:], 1):
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError:
            rows.append(Row(n, raw, "malformed_undecodable", None))
            continue
        try:
            fields = next(csv.reader([text], strict=True))
        except csv.Error:
            rows.append(Row(n, raw, "malformed_bad_quote", None))
            continue
        if len(fields) > len(header):
            rows.append(Row(n, raw, "malformed_ragged", None))
            continue
        assert len(fields) == len(header), f"{path}:{n}: short row {text!r}"
        rows.append(Row(n, raw, "ok", {reverse[c]: v for c, v in zip(header, fields)}))
    return header, rows


# ---------------------------------------------------------------------------- the other formats
# Each parsed independently of ingest_adapters (json, openpyxl, sqlite3, plain text splitting) into
# the same rows: record n of a file is its n-th record; ``raw`` is what a duplicate repeats.
RAGGED_JSON = ',"补录"}'.encode("utf-8")
MULTI_OPTIONS = ("resource", "segment", "messages")


def feed_view(feed: dict) -> dict:
    """A registry feed as the tests read it: data set and element mapping also for HL7 and FHIR feeds,
    whose mapping is keyed by data set (one data set per synthetic feed)."""
    if feed["format"] not in ("hl7v2", "fhir"):
        return feed
    [(dataset, spec)] = feed["mapping"].items()
    return {**feed, "dataset": dataset, "mapping": {e: p for e, p in spec.items() if e not in MULTI_OPTIONS}}


def parse_ndjson(path: Path, feed: dict):
    reverse = {col: el for el, col in feed["mapping"].items()}
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b""
    rows = []
    for n, raw in enumerate(lines[:-1], 1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            rows.append(Row(n, raw, "malformed_undecodable", None))
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError:
            rows.append(Row(n, raw, "malformed_ragged" if raw.endswith(RAGGED_JSON) else "malformed_bad_quote", None))
            continue
        assert set(obj) == set(reverse), (path, n)
        rows.append(Row(n, raw, "ok", {reverse[c]: ("" if v is None else v) for c, v in obj.items()}))
    return list(feed["mapping"].values()), rows


def parse_json_document(path: Path, feed: dict):
    reverse = {col: el for el, col in feed["mapping"].items()}
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert doc["code"] == 0
    records = doc[feed["records_path"]]
    return list(feed["mapping"].values()), [
        Row(n, json.dumps(obj, ensure_ascii=False), "ok", {reverse[c]: ("" if v is None else v) for c, v in obj.items()})
        for n, obj in enumerate(records, 1)]


def parse_excel(path: Path, feed: dict):
    from openpyxl import load_workbook

    wb = load_workbook(path, read_only=True)
    ws = wb[feed["sheet"]]
    cells = [tuple(c for c in r) for r in ws.iter_rows(values_only=True)]
    wb.close()
    assert len([c for c in cells[0] if c]) == 1   # a title row above the header
    header = list(cells[1])
    reverse = {col: el for el, col in feed["mapping"].items()}
    rows = []
    for n, r in enumerate(cells[2:], 1):
        assert all(v is None or isinstance(v, str) for v in r), (path, n)   # every value a text cell
        rows.append(Row(n, r, "ok", {reverse[c]: ("" if v is None else v) for c, v in zip(header, r)}))
    return header, rows


def parse_sqlite(path: Path, feed: dict):
    import sqlite3

    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        cur = db.execute(f'SELECT * FROM "{feed["table"]}" ORDER BY "{feed["watermark"]}"')
        header = [d[0] for d in cur.description][1:]
        data = [r[1:] for r in cur.fetchall()]
    finally:
        db.close()
    reverse = {col: el for el, col in feed["mapping"].items()}
    return header, [Row(n, r, "ok", {reverse[c]: ("" if v is None else v) for c, v in zip(header, r)})
                    for n, r in enumerate(data, 1)]


HL7_UNESCAPE = {"F": "|", "S": "^", "T": "&", "R": "~", "E": "\\"}


def hl7_value(segments: dict, path: str) -> str:
    seg, rest = path.split("-")
    field, _, comp = rest.partition(".")
    fields = segments[seg]
    v = fields[int(field)] if int(field) < len(fields) else ""
    if comp:
        parts = v.split("^")
        v = parts[int(comp) - 1] if int(comp) <= len(parts) else ""
    import re

    return re.sub(r"\\([FSTRE])\\", lambda m: HL7_UNESCAPE[m.group(1)], v)


def parse_hl7(path: Path, feed: dict):
    encoding = {"gb18030": "gb18030"}.get(feed["encoding"], "utf-8")
    data = path.read_bytes()
    assert data.endswith(b"\r\n")
    rows = []
    for n, raw in enumerate(data.split(b"\r\n")[:-1], 1):
        segs = raw.decode(encoding).split("\r")
        assert [s[:3] for s in segs] == ["MSH", "PID", "PV1", "OBR", "OBX"]
        assert segs[0].split("|")[8] == "ORU^R01^ORU_R01" and segs[0].split("|")[17] in ("GB 18030-2000", "UNICODE UTF-8")
        by = {s[:3]: s.split("|") for s in segs}
        by["MSH"] = ["MSH"] + by["MSH"]   # MSH-1 is the field separator itself
        rows.append(Row(n, raw, "ok", {e: hl7_value(by, p) for e, p in feed["mapping"].items()}))
    return None, rows


def fhir_value(node, path: str) -> str:
    import re

    for step in re.findall(r"(?:[^.\[]+(?:\[[^\]]*\])?)", path):
        name, _, sel = step.partition("[")
        node = node.get(name) if isinstance(node, dict) else None
        if node is None:
            return ""
        if sel:
            sel = sel[:-1]
            if sel.startswith("url="):
                node = next((x for x in node if x.get("url") == sel[4:]), None)
            else:
                node = node[int(sel)] if int(sel) < len(node) else None
            if node is None:
                return ""
    return str(node)


def parse_fhir(path: Path, feed: dict):
    bundle = json.loads(path.read_text(encoding="utf-8"))
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "collection"
    resource = next(iter(feed["_raw_mapping"].values()))["resource"]
    rows = []
    for n, entry in enumerate(bundle["entry"], 1):
        res = entry["resource"]
        assert res["resourceType"] == resource and entry["fullUrl"].startswith("urn:uuid:")
        values = {}
        for e, p in feed["mapping"].items():
            v = fhir_value(res, p)
            if len(v) == 25 and v[10] == "T" and v.endswith("+08:00"):
                v = v[:10] + " " + v[11:19]   # a FHIR dateTime: back to the institution's local time text
            values[e] = v
        rows.append(Row(n, json.dumps(entry, ensure_ascii=False, sort_keys=True), "ok", values))
    return None, rows


PARSERS = {"csv": parse_extract, "ndjson": parse_ndjson, "json": parse_json_document, "excel": parse_excel,
           "sqlite": parse_sqlite, "hl7v2": parse_hl7, "fhir": parse_fhir}


def parse_moment(text: str, fmt: str) -> datetime:
    if fmt == "compact":
        return datetime.strptime(text, "%Y%m%d%H%M%S" if len(text) == 14 else "%Y%m%d")
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S" if len(text) == 19 else "%Y-%m-%d")


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    out = tmp_path_factory.mktemp("city")
    result = generate_city(out, 4000, 3, 7)
    registry = yaml.safe_load((out / "registry.yaml").read_text(encoding="utf-8"))
    feeds = {}   # relative file path -> (institution, feed, header, rows)
    for inst in registry["institutions"]:
        for raw_feed in inst["feeds"]:
            feed = {**feed_view(raw_feed), "_raw_mapping": raw_feed["mapping"]}
            for path in sorted((out / "landing" / inst["code"] / feed["id"]).glob("*")):
                header, rows = PARSERS[feed["format"]](path, feed)
                feeds[str(path.relative_to(out / "landing"))] = (inst, feed, header, rows)
    defects = read_csv(out / "truth" / "defects.csv")
    by_row = defaultdict(set)
    for d in defects:
        by_row[(d["file"], int(d["source_row"]))].add(d["defect"])
    return {"out": out, "result": result, "registry": registry, "files": feeds, "defects": defects,
            "by_row": by_row, "summary": json.loads((out / "truth" / "summary.json").read_text(encoding="utf-8")),
            "persons": read_csv(out / "truth" / "persons.csv"),
            "identities": read_csv(out / "truth" / "identities.csv")}


# ---------------------------------------------------------------------------- GB 11643
def test_check_character_of_known_numbers():
    assert check_char("11010519491231002") == "X"       # the standard's own example
    assert is_valid("11010519491231002X") and is_valid("11010519491231002x")
    assert not is_valid("110105194912310021")
    assert not is_valid("11010519491331002X".replace("X", check_char("11010519491331002")))  # month 13
    number = make_id("511002", date(1990, 2, 28), 457)
    assert is_valid(number) and sex_code_of(number) == "1" and birth_date_of(number) == date(1990, 2, 28)
    for pos in range(17):   # MOD 11-2 catches every single-digit substitution
        for digit in "0123456789":
            if digit != number[pos]:
                assert not is_valid(number[:pos] + digit + number[pos + 1:])


# ---------------------------------------------------------------------------- determinism
def test_same_seed_same_bytes_other_seed_other_city(tmp_path):
    generate_city(tmp_path / "a", 300, 2, 1)
    generate_city(tmp_path / "b", 300, 2, 1)
    generate_city(tmp_path / "c", 300, 2, 2)
    a, b, c = (tree_digest(tmp_path / x) for x in "abc")
    assert a == b
    csv_files = lambda d: {k for k in d if k.endswith(".csv")}   # noqa: E731 (other formats: no file on an empty day)
    assert csv_files(a) == csv_files(c) and a != c


def test_regenerating_into_the_same_directory_replaces_it(tmp_path):
    generate_city(tmp_path, 200, 2, 3)
    first = tree_digest(tmp_path)
    generate_city(tmp_path, 200, 1, 3)
    second = tree_digest(tmp_path)
    assert not any(k.endswith("_20261002.csv") for k in second)
    assert first != second


# ---------------------------------------------------------------------------- residents
def test_truth_persons_have_valid_unique_ids_matching_birth_and_sex(city):
    persons = city["persons"]
    assert len(persons) == 4000 == city["summary"]["city"]["persons"]
    assert len({p["id_number"] for p in persons}) == len(persons)
    divisions = Counter()
    for p in persons:
        assert is_valid(p["id_number"]), p
        assert birth_date_of(p["id_number"]).isoformat() == p["birth_date"]
        assert sex_code_of(p["id_number"]) == p["sex_code"]
        assert p["birth_date"] < START.isoformat()
        assert 2 <= len(p["name"]) <= 4
        assert p["phone"] == "" or (len(p["phone"]) == 11 and p["phone"][:2] in ("13", "15", "16", "17", "18", "19"))
        assert p["household_id"].startswith(p["division_code"])
        divisions[p["division_code"]] += 1
    assert set(divisions) == {"511002", "511011", "511024", "511025", "511083"}
    sizes = Counter(Counter(p["household_id"] for p in persons).values())
    assert max(sizes) <= 6 and sizes[1] and sizes[2] and sizes[3]
    ages = [(START - date.fromisoformat(p["birth_date"])).days / 365.25 for p in persons]
    assert 0.15 < sum(a >= 60 for a in ages) / len(ages) < 0.35     # an ageing Sichuan city
    assert 0.08 < sum(a < 14 for a in ages) / len(ages) < 0.25


# ---------------------------------------------------------------------------- registry contract
def test_registry_shape_and_mappings_match_catalog_and_headers(city):
    registry, files = city["registry"], city["files"]
    catalog = {ds: {e["name"]: e for e in spec["elements"]}
               for ds, spec in yaml.safe_load(CATALOG.read_text(encoding="utf-8"))["datasets"].items()}
    assert list(registry) == ["deployment", "institutions"]
    assert registry["deployment"] == {"name": "内江市全民健康信息平台（演示）", "division_code": "511000",
                                      "generated_by": "synthetic", "seed": 7, "residents": 4000, "days": 3,
                                      "start_date": "2026-10-01"}
    kinds = Counter(i["kind"] for i in registry["institutions"])
    assert kinds == {"hospital": 5, "maternal_child": 1, "cdc": 1, "township_health_centre": 6,
                     "community_health_centre": 2}
    headers = {}
    for rel, (inst, feed, header, _) in files.items():
        headers[(inst["code"], feed["id"])] = header
    styles = set()
    for inst in registry["institutions"]:
        assert list(inst) == ["code", "name", "kind", "level", "division_code", "feeds"]
        assert len(inst["code"]) == 10 and inst["code"][:6] == inst["division_code"]
        assert inst["level"] in ("三级甲等", "三级乙等", "二级甲等", "二级乙等", "一级", "未定级")
        for feed in map(feed_view, inst["feeds"]):
            assert feed["dataset"] in catalog
            assert feed["format"] in PARSERS
            assert feed["encoding"] in ("utf-8", "utf-8-sig", "gb18030")
            if feed["format"] == "csv":
                assert feed["delimiter"] == ","
            elements = catalog[feed["dataset"]]
            keys = [n for n, e in elements.items() if e.get("key")]
            required = [n for n, e in elements.items() if e.get("required")]
            assert set(feed["mapping"]) <= set(elements)
            assert set(keys) <= set(feed["mapping"]) and set(required) <= set(feed["mapping"])
            header = headers.get((inst["code"], feed["id"]))
            if feed["format"] in ("hl7v2", "fhir"):
                continue   # element -> segment field / resource path (checked by the reader's registry test)
            if header is None:
                continue   # no delivery in this small city
            assert sorted(header) == sorted(feed["mapping"].values())
            styles.add("chinese" if "\u4e00" <= header[0][0] <= "\u9fff" else
                       "pinyin" if header[0].isupper() and "_" not in header[0] else "english")
    assert styles == {"chinese", "pinyin", "english"}
    encodings = {(i["kind"], i["level"], i["feeds"][0]["encoding"]) for i in registry["institutions"]}
    assert ("hospital", "三级甲等", "utf-8") not in encodings
    assert ("hospital", "二级甲等", "gb18030") in encodings
    assert any(e == "utf-8-sig" for *_, e in encodings)


def test_one_file_per_feed_per_day_and_dictionaries_on_day_one(city):
    names = Counter()
    for rel, (inst, feed, _, _) in city["files"].items():
        names[(inst["code"], feed["id"])] += 1
        assert rel.startswith(f"{inst['code']}/{feed['id']}/{feed['id']}_2026100")
    summary = city["summary"]["institutions"]
    for inst in city["registry"]["institutions"]:
        for feed in map(feed_view, inst["feeds"]):
            expected = 1 if feed["cadence"] == "on_change" else 3   # dictionaries: day 1 only
            got = names[(inst["code"], feed["id"])]
            assert got == summary[inst["code"]]["datasets"][feed["dataset"]]["files"]
            if feed["format"] == "csv":
                assert got == expected, feed["id"]
            else:   # a day without records delivers no file (the readers refuse empty files)
                assert 0 < got <= expected or summary[inst["code"]]["datasets"][feed["dataset"]]["rows_written"] == 0


def test_gb18030_files_decode_and_carry_chinese(city):
    gb = [(rel, f) for rel, f in city["files"].items() if f[1]["encoding"] == "gb18030"]
    assert len({f[0]["code"] for _, f in gb}) >= 3
    for rel, (inst, feed, header, rows) in gb:
        good = b"\n".join(r.raw for r in rows if r.status != "malformed_undecodable")
        text = good.decode("gb18030")       # everything but the injected rows decodes
        if feed["dataset"] in ("person", "department", "practitioner") and any(r.status == "ok" for r in rows):
            assert any("\u4e00" <= ch <= "\u9fff" for ch in text)
            with pytest.raises(UnicodeDecodeError):   # and it really is GB18030, not UTF-8
                good.decode("utf-8")


def test_ids_and_phones_are_text(city):
    for rel, (inst, feed, header, rows) in city["files"].items():
        for r in rows:
            if r.status != "ok":
                continue
            for element in ("id_number", "phone", "patient_id"):
                v = r.values.get(element)
                if v:
                    assert "E+" not in v and "e+" not in v and "." not in v, (rel, r.n, v)


# ---------------------------------------------------------------------------- truth agrees with the files
def test_malformed_rows_are_exactly_the_recorded_ones(city):
    found, recorded = set(), set()
    kinds = Counter()
    for rel, (inst, feed, header, rows) in city["files"].items():
        for r in rows:
            if r.status != "ok":
                found.add((rel, r.n, r.status))
                kinds[r.status] += 1
    for d in city["defects"]:
        if d["defect"] in MALFORMED:
            recorded.add((d["file"], int(d["source_row"]), d["defect"]))
    assert found == recorded
    assert set(kinds) == set(MALFORMED), kinds   # this seed exercises all three


def test_summary_counts_match_a_recount(city):
    summary = city["summary"]
    per = defaultdict(lambda: {"rows": 0, "malformed": 0, "dups": 0, "keys": set()})
    for rel, (inst, feed, header, rows) in city["files"].items():
        key_el = next(n for n in feed["mapping"] if _is_key(feed["dataset"], n))
        s = per[(inst["code"], feed["dataset"])]
        seen = set()
        for r in rows:
            s["rows"] += 1
            if r.status != "ok":
                s["malformed"] += 1
                continue
            if r.raw in seen:
                s["dups"] += 1
                assert "duplicate_row" in city["by_row"][(rel, r.n)]
            seen.add(r.raw)
            s["keys"].add(r.values[key_el])
    encounters = records = 0
    for (code, dataset), s in per.items():
        got = summary["institutions"][code]["datasets"][dataset]
        assert got["rows_written"] == s["rows"], (code, dataset)
        assert got["malformed_rows"] == s["malformed"], (code, dataset)
        assert got["duplicate_rows"] == s["dups"], (code, dataset)
        assert got["distinct_keys_loadable"] == len(s["keys"]), (code, dataset)
        encounters += len(s["keys"]) if dataset == "encounter" else 0
        records += len(s["keys"]) if dataset == "health_record" else 0
    c = summary["city"]
    assert c["encounters_loadable"] == encounters and c["health_records_loadable"] == records
    assert c["institutions"] == len(summary["institutions"]) == 15
    assert sum(d["duplicate_rows"] for i in summary["institutions"].values() for d in i["datasets"].values()) > 0
    unloadable = read_csv(city["out"] / "truth" / "unloadable_keys.csv")
    total_distinct = sum(d["distinct_keys"] - d["distinct_keys_loadable"]
                         for i in summary["institutions"].values() for d in i["datasets"].values())
    assert len(unloadable) == total_distinct


@lru_cache(maxsize=None)
def _catalog() -> dict:
    return yaml.safe_load(CATALOG.read_text(encoding="utf-8"))["datasets"]


def _is_key(dataset: str, element: str) -> bool:
    return any(e["name"] == element and e.get("key") for e in _catalog()[dataset]["elements"])


def test_identity_numbers_are_valid_except_recorded_defects(city):
    truth_ids = {p["id_number"] for p in city["persons"]}
    invalid_seen = 0
    for rel, (inst, feed, header, rows) in city["files"].items():
        if "id_number" not in feed["mapping"]:
            continue
        for r in rows:
            if r.status != "ok":
                continue
            flags = city["by_row"][(rel, r.n)]
            v = r.values["id_number"]
            if v == "" and feed["dataset"] == "vital_event" and r.values.get("event_type_code") == "1":
                continue   # a birth certificate: the newborn has no ID number yet (the mother's is sent)
            if v == "":
                assert "missing_id_number" in flags, (rel, r.n)
            elif is_valid(v):
                assert v in truth_ids and not flags & {"invalid_checksum", "missing_id_number"}, (rel, r.n)
            else:   # a mistyped digit, two digits swapped or a placeholder: the check character fails
                invalid_seen += 1
                assert "invalid_checksum" in flags, (rel, r.n, v)
                assert len(v) == 18 and v[:17].isdigit()
    recorded = sum(1 for d in city["defects"] if d["defect"] == "invalid_checksum"
                   and city["files"][d["file"]][3][int(d["source_row"]) - 1].status == "ok")
    assert invalid_seen == recorded > 0


def test_identities_truth(city):
    by_uid = {p["person_uid"]: p for p in city["persons"]}
    idents = city["identities"]
    assert {i["dataset"] for i in idents} == {"person", "health_record", "immunization"}
    assert len({(i["institution_code"], i["dataset"], i["source_id"]) for i in idents}) == len(idents)
    for i in idents:
        true_id = by_uid[i["person_uid"]]["id_number"]
        sent = i["id_number_sent"]
        if i["id_defect"] == "none":
            assert sent == true_id
        elif i["id_defect"] in ("missing", "newborn_missing"):
            assert sent == ""
        elif i["id_defect"] == "placeholder":
            assert not is_valid(sent) and len(set(sent)) == 1
        elif i["id_defect"] == "transposition":
            assert not is_valid(sent) and sorted(sent) == sorted(true_id)
            diff = [k for k in range(18) if sent[k] != true_id[k]]
            assert len(diff) == 2 and diff[1] == diff[0] + 1
        else:
            assert i["id_defect"] == "invalid_checksum" and not is_valid(sent)
            assert sum(a != b for a, b in zip(sent, true_id)) == 1
        person = by_uid[i["person_uid"]]
        if i["name_variant"] == "none":
            assert i["name_sent"] == person["name"]
        else:
            assert i["name_variant"] in ("traditional", "homophone", "pinyin", "spaced")
            assert i["name_sent"] != person["name"]
    # every patient_id / record_id / immunization_id in the files is a known identity of that institution
    known = {(i["institution_code"], i["dataset"], i["source_id"]) for i in idents}
    key_of = {"person": "patient_id", "health_record": "record_id", "immunization": "immunization_id"}
    for rel, (inst, feed, header, rows) in city["files"].items():
        if feed["dataset"] in key_of:
            for r in rows:
                if r.status == "ok":
                    assert (inst["code"], feed["dataset"], r.values[key_of[feed["dataset"]]]) in known


def test_mothers_and_the_mothers_id_on_childrens_records(city):
    """persons.mother_uid: a woman of the same household, at least 14 years older; a child's record
    carries the mother's number as that institution holds her (her own identity's defect kind)."""
    from datetime import date

    from synthetic.defects import CHILD_YEARS

    by_uid = {p["person_uid"]: p for p in city["persons"]}
    children = [p for p in city["persons"] if p["mother_uid"]]
    assert len(children) > 0.1 * len(city["persons"])
    for p in children:
        m = by_uid[p["mother_uid"]]
        assert m["sex_code"] == "2" and m["household_id"] == p["household_id"] and m["person_uid"] != p["person_uid"]
        assert int(p["birth_date"][:4]) - int(m["birth_date"][:4]) >= 14
    held = {(i["institution_code"], i["person_uid"]): i for i in city["identities"]}
    sent = [i for i in city["identities"] if i["mother_id_sent"]]
    newborns = [i for i in city["identities"] if i["id_defect"] == "newborn_missing"]
    assert sent and sum(1 for i in newborns if i["mother_id_sent"]) > 0.6 * len(newborns)
    kinds = set()
    for i in city["identities"]:
        p = by_uid[i["person_uid"]]
        child = (date(2026, 10, 1) - date.fromisoformat(p["birth_date"])).days < CHILD_YEARS * 365
        if not (child and p["mother_uid"]):
            assert i["mother_id_sent"] == "", i
            continue
        mother = by_uid[p["mother_uid"]]
        own = held.get((i["institution_code"], mother["person_uid"]))   # the mother's own record there, if any
        if own is not None:
            assert i["mother_id_sent"] == own["id_number_sent"]
        if i["mother_id_sent"] == mother["id_number"]:
            kinds.add("exact")
        elif i["mother_id_sent"] == "":
            kinds.add("missing")
        else:
            assert not is_valid(i["mother_id_sent"]) and len(i["mother_id_sent"]) == 18
            kinds.add("malformed")
    assert "exact" in kinds
    # the element reaches the files: every identity feed maps it, and the values are the truth's
    key_of = {"person": "patient_id", "health_record": "record_id", "immunization": "immunization_id"}
    truth_of = {(i["institution_code"], i["dataset"], i["source_id"]): i["mother_id_sent"] for i in city["identities"]}
    seen = 0
    for rel, (inst, feed, header, rows) in city["files"].items():
        if feed["dataset"] in key_of:
            assert "mother_id_number" in feed["mapping"], rel
            for r in rows:
                if r.status == "ok":
                    k = (inst["code"], feed["dataset"], r.values[key_of[feed["dataset"]]])
                    assert r.values.get("mother_id_number", "") == truth_of[k], (rel, r.n)
                    seen += r.values.get("mother_id_number", "") != ""
    assert seen > 0


def test_persons_with_valid_id_in_any_feed(city):
    uid_of_id = {p["id_number"]: p["person_uid"] for p in city["persons"]}
    found = set()
    for rel, (inst, feed, header, rows) in city["files"].items():
        if feed["dataset"] in ("person", "health_record"):
            for r in rows:
                if r.status == "ok" and r.values["id_number"] in uid_of_id:
                    found.add(uid_of_id[r.values["id_number"]])
    assert city["summary"]["city"]["persons_with_valid_id_in_any_feed"] == len(found)
    assert 0.8 * 4000 < len(found) < 4000


def test_field_defects_are_exactly_the_recorded_ones(city):
    """future dates, discharges before admission, unknown sex codes and missing diagnosis codes."""
    kinds = Counter()
    for rel, (inst, feed, header, rows) in city["files"].items():
        fmt = feed["value_formats"]["date"]
        day = datetime.strptime(rel.rsplit("_", 1)[1][:8], "%Y%m%d")
        ds = feed["dataset"]
        for r in rows:
            if r.status != "ok":
                continue
            flags = city["by_row"][(rel, r.n)]
            v = r.values
            event = EVENT_DATE.get(ds)
            if event in v and v[event]:
                future = parse_moment(v[event], fmt) >= day + timedelta(days=1)
                assert future == ("future_date" in flags), (rel, r.n, v[event])
                kinds["future_date"] += future
            if ds == "encounter" and v.get("discharge_at"):
                backwards = parse_moment(v["discharge_at"], fmt) < parse_moment(v["visit_at"], fmt)
                assert backwards == ("discharge_before_admission" in flags), (rel, r.n)
                kinds["discharge_before_admission"] += backwards
                assert v["visit_type_code"] == "3"
            if "sex_code" in v:
                ok = v["sex_code"] in (("1", "2") if feed["value_formats"]["sex"] == "code" else ("男", "女"))
                assert ok != ("unknown_sex_code" in flags), (rel, r.n, v["sex_code"])
                kinds["unknown_sex_code"] += not ok
            if ds == "diagnosis":
                assert (v["diagnosis_code"] == "") == ("missing_diagnosis_code" in flags)
                kinds["missing_diagnosis_code"] += v["diagnosis_code"] == ""
    # discharges are few in a small city: discharge_before_admission is exercised in the next test
    assert all(kinds[k] > 0 for k in ("future_date", "unknown_sex_code", "missing_diagnosis_code")), kinds


def test_row_defects_at_full_rate():
    import random

    from synthetic.defects import BAD_SEX, PROFILES, apply_row_defects, draw_malformed

    always = {k: 1.0 for k in PROFILES["poor"]}
    visit, discharge = datetime(2026, 10, 2, 9), datetime(2026, 10, 6, 10)
    row = {"visit_at": visit, "discharge_at": discharge}
    found = apply_row_defects(random.Random(1), always, "encounter", row, {"visit_at": "a", "discharge_at": "b"})
    assert found == [("discharge_at", "discharge_before_admission")] and row["discharge_at"] < visit
    row = {"visit_at": visit, "discharge_at": None}
    assert apply_row_defects(random.Random(1), always, "encounter", row, {"visit_at": "a"}) == [
        ("visit_at", "future_date")] and row["visit_at"].year > 2026
    row = {"sex_code": "1"}
    apply_row_defects(random.Random(1), always, "person", row, {"sex_code": "XB"})
    assert row["sex_code"] == BAD_SEX
    assert apply_row_defects(random.Random(1), always, "person", {"sex_code": "1"}, {}) == []   # not sent
    assert draw_malformed(random.Random(1), PROFILES["clean"]) is None


def test_defect_rows_point_at_the_right_business_key(city):
    key_cols = {}
    for rel, (inst, feed, header, rows) in city["files"].items():
        key_el = next(n for n in feed["mapping"] if _is_key(feed["dataset"], n))
        key_cols[rel] = key_el
    for d in city["defects"]:
        inst, feed, header, rows = city["files"][d["file"]]
        assert d["institution_code"] == inst["code"] and d["feed_id"] == feed["id"]
        assert d["dataset"] == feed["dataset"]
        row = rows[int(d["source_row"]) - 1]
        if row.status == "ok":
            assert row.values[key_cols[d["file"]]] == d["business_key"]
            if d["element"]:
                assert d["element"] in feed["mapping"]


# ---------------------------------------------------------------------------- clinical content
def test_clinical_content_uses_reference_codes(city):
    icd = icd10()
    labs = lab_item_codes()
    assert all(item.code in labs for item in LAB_ITEMS.values())
    visit_types, codes, flags = Counter(), Counter(), Counter()
    for rel, (inst, feed, header, rows) in city["files"].items():
        fmt = feed["value_formats"]["date"]
        for r in rows:
            if r.status != "ok":
                continue
            v = r.values
            if feed["dataset"] == "diagnosis" and v["diagnosis_code"]:
                assert v["diagnosis_code"] in icd and icd[v["diagnosis_code"]] == v["diagnosis_name"]
                codes[v["diagnosis_code"]] += 1
            elif feed["dataset"] == "encounter":
                visit_types[v["visit_type_code"]] += 1
                if v.get("discharge_at") and "discharge_before_admission" not in city["by_row"][(rel, r.n)]:
                    los = parse_moment(v["discharge_at"], fmt) - parse_moment(v["visit_at"], fmt)
                    assert timedelta(0) < los <= timedelta(days=21)
            elif feed["dataset"] == "lab_result":
                assert v["item_code"] in labs
                lo, hi = (float(x) for x in v["reference_range"].split("-"))
                value = float(v["result_value"])
                assert v["abnormal_flag"] == ("H" if value > hi else "L" if value < lo else "N")
                flags[v["abnormal_flag"]] += 1
    assert visit_types.keys() == {"1", "2", "3"}
    assert codes.most_common(1)[0][0] in ("I10", "J06.9")
    assert flags["N"] > flags["H"] > 0 and flags["L"] > 0


def test_health_records_followups_and_vaccinations(city):
    files = city["files"]
    records, followups, vaccines = {}, [], []
    for rel, (inst, feed, header, rows) in files.items():
        for r in rows:
            if r.status != "ok":
                continue
            if feed["dataset"] == "health_record":
                records[r.values["record_id"]] = (inst["code"], r.values)
            elif feed["dataset"] == "chronic_followup":
                followups.append((inst["code"], r.values))
            elif feed["dataset"] == "immunization":
                vaccines.append(r.values)
    assert 0.75 * 4000 < len(records) <= 4000
    staff = {(i["code"], r.values["practitioner_id"]) for rel, (i, f, h, rows) in files.items()
             if f["dataset"] == "practitioner" for r in rows if r.status == "ok"}
    for code, v in records.values():
        if v.get("family_doctor_id"):
            assert (code, v["family_doctor_id"]) in staff
    assert followups and vaccines
    for code, v in followups:
        assert v["disease_code"] in ("I10", "E11.9")
        assert v["record_id"] in records and records[v["record_id"]][0] == code
        if v["disease_code"] == "E11.9":
            assert v["fasting_glucose"]
    names = {"乙肝疫苗", "卡介苗", "脊灰灭活疫苗", "二价脊灰减毒活疫苗", "百白破疫苗", "麻腮风疫苗"}
    assert {v["vaccine_name"] for v in vaccines} <= names
    codes = {i["code"] for i in city["registry"]["institutions"]}
    assert all(v["vaccinating_institution_code"] in codes and int(v["dose_seq"]) >= 1 for v in vaccines)


def test_references_resolve_within_each_institution(city):
    """Every patient, encounter, department, practitioner and record a row refers to is sent by the
    same institution (unless its only rows were malformed: truth/unloadable_keys.csv)."""
    keys = defaultdict(set)
    for code, dataset, key in ((u["institution_code"], u["dataset"], u["business_key"])
                               for u in read_csv(city["out"] / "truth" / "unloadable_keys.csv")):
        keys[(code, dataset)].add(key)
    rows_by = []
    for rel, (inst, feed, header, rows) in city["files"].items():
        key_el = next(n for n in feed["mapping"] if _is_key(feed["dataset"], n))
        for r in rows:
            if r.status == "ok":
                keys[(inst["code"], feed["dataset"])].add(r.values[key_el])
                rows_by.append((inst["code"], feed["dataset"], r.values))
    refs = {"patient_id": "person", "encounter_id": "encounter", "department_code": "department",
            "practitioner_id": "practitioner", "record_id": "health_record", "family_doctor_id": "practitioner"}
    checked = Counter()
    for code, dataset, v in rows_by:
        for element, target in refs.items():
            if target == dataset or not v.get(element):
                continue
            assert v[element] in keys[(code, target)], (code, dataset, element, v[element])
            checked[element] += 1
    assert all(checked[e] > 0 for e in refs), checked


# ---------------------------------------------------------------------------- every format
def test_every_format_is_written_and_its_truth_counts_match_a_recount(city):
    """Excel (二级 hospital), NDJSON and JSON (township centres), SQLite (CDC front-end machine), HL7 v2
    ORU^R01 (a hospital's LIS), FHIR R4 bundles (a newer hospital) and GB18030 CSV (a 三级 hospital):
    each parsed above by its own independent parser; truth/summary.json's per-format counts agree."""
    formats = city["summary"]["city"]["formats"]
    assert set(formats) == {"csv", "excel", "ndjson", "json", "sqlite", "hl7v2", "fhir"}
    recount = defaultdict(lambda: {"files": 0, "rows_written": 0, "malformed_rows": 0, "keys": set()})
    for rel, (inst, feed, header, rows) in city["files"].items():
        t = recount[feed["format"]]
        t["files"] += 1
        t["rows_written"] += len(rows)
        t["malformed_rows"] += sum(r.status != "ok" for r in rows)
        key_el = next(n for n in feed["mapping"] if _is_key(feed["dataset"], n))
        t["keys"] |= {(inst["code"], feed["dataset"], r.values[key_el]) for r in rows if r.status == "ok"}
    for fmt, t in formats.items():
        got = recount[fmt]
        assert (got["files"], got["rows_written"], got["malformed_rows"], len(got["keys"])) == (
            t["files"], t["rows_written"], t["malformed_rows"], t["distinct_keys_loadable"]), fmt
        assert t["files"] > 0 and t["rows_written"] > 0, fmt
    # the formats that can be malformed are (CSV: ragged, bad quote, undecodable; NDJSON: invalid JSON lines)
    assert formats["csv"]["malformed_rows"] > 0   # NDJSON's rate is the same (too few rows here): next test
    assert all(formats[f]["malformed_rows"] == 0 for f in ("excel", "json", "sqlite", "hl7v2", "fhir"))
    # field defects survive every format (values are the institution's text in each)
    defect_formats = {city["files"][d["file"]][1]["format"] for d in city["defects"]
                      if d["defect"] in ("future_date", "invalid_checksum", "missing_id_number", "unknown_sex_code")}
    assert {"csv", "excel", "ndjson", "sqlite", "hl7v2", "fhir"} <= defect_formats
    dup_formats = {city["files"][d["file"]][1]["format"] for d in city["defects"] if d["defect"] == "duplicate_row"}
    assert {"csv", "excel", "ndjson", "hl7v2", "fhir"} <= dup_formats
    # a 三级 hospital keeps GB18030 CSV, a 二级 hospital sends Excel
    by_code = {i["code"]: i for i in city["registry"]["institutions"]}
    assert by_code["511002H001"]["level"].startswith("三级") and {
        (f["format"], f["encoding"]) for f in by_code["511002H001"]["feeds"]} == {("csv", "gb18030")}
    assert by_code["511025H001"]["level"].startswith("二级") and {f["format"] for f in by_code["511025H001"]["feeds"]} == {"excel"}
    assert by_code["511002D001"]["kind"] == "cdc" and {f["format"] for f in by_code["511002D001"]["feeds"]} == {"sqlite"}


@pytest.mark.parametrize("kind", MALFORMED)
def test_ndjson_malformed_lines_are_invalid_json_and_the_rest_parses(kind):
    from types import SimpleNamespace

    from synthetic.formats import NdjsonFile

    f = NdjsonFile.__new__(NdjsonFile)
    f.feed = SimpleNamespace(elements=["patient_id", "name", "phone"], columns=["BRBH", "XM", "LXDH"])
    good, _ = f.line(["0001", "张三", ""], None)
    assert json.loads(good) == {"BRBH": "0001", "XM": "张三", "LXDH": None}
    bad, element = f.line(["0001", "张三", ""], kind)
    assert element == ("" if kind == "malformed_ragged" else "name")
    header, rows = parse_ndjson_bytes(good + bad, {"mapping": {"patient_id": "BRBH", "name": "XM", "phone": "LXDH"}})
    assert [r.status for r in rows] == ["ok", kind]


def parse_ndjson_bytes(data: bytes, feed: dict):
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "x.ndjson"
        p.write_bytes(data)
        return parse_ndjson(p, feed)

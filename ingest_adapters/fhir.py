"""FHIR R4: Bundles (transaction, batch, collection, searchset, …) and bulk-export NDJSON.

A file is a Bundle, a single resource, or NDJSON (one resource per line, as a bulk
``$export`` writes). Each resource fills the data sets whose mapping names its type::

    mapping:
      person:     {resource: Patient, patient_id: id, name: "{name[0].family}{name[0].given}", sex_code: gender}
      encounter:  {resource: Encounter, encounter_id: id, patient_id: ref(subject), visit_type_code: class.code,
                   visit_at: period.start, discharge_at: period.end, practitioner_id: ref(participant.individual)}
      lab_result: {resource: Observation, where: {category.coding.code: laboratory}, lab_result_id: id,
                   patient_id: ref(subject), encounter_id: ref(encounter), item_code: code.coding[0].code,
                   result_value: "valueQuantity.value | valueString | valueCodeableConcept.text", ...}

Paths are a small FHIRPath subset: dotted steps over collections, ``[n]`` picks one item,
``[key.path=value]`` keeps the items where it holds (``identifier[system=http://…].value``),
``a | b`` the first non-empty, ``{path}`` inside a text builds a value from several paths.
``ref(path)`` follows a Reference to its target and gives the target's business key as
*its* mapping says (a Patient's ``patient_id`` path), so an Encounter's patient_id is the
same value the person row carries. References are resolved in the bundle (``fullUrl``,
``urn:uuid:``, ``Patient/123``, conditional ``Patient?identifier=system|value``), then
against resources loaded earlier from the same institution (every resource a file holds
is indexed in ``ops.fhir_resource_index`` in its batch's transaction), then derived when
the key needs no target (``Patient/123`` when the key path is ``id``; a conditional
reference by the identifier the key path reads). A reference that stays unresolved
rejects its resource when it feeds a key or required element ("dangling reference"); an
optional element keeps the reference text.

Accounting: the unit is the resource of a mapped type (``_source_row`` = its entry number
in the bundle, or its NDJSON line). A resource of an unknown type, a dangling reference,
an invalid NDJSON line is rejected with its JSON and the reason; resources of types the
feed does not map (Claim, Provenance, …) or filtered out by ``where`` are counted in the
batch notes, not in rows read. A Bundle that is not valid JSON (e.g. truncated) fails its
batch with the line and column of the error.
"""

from __future__ import annotations

import difflib
import json
import re
import weakref
from dataclasses import dataclass
from pathlib import Path

import duckdb
import orjson
import pyarrow as pa

from catalog.standard import Dataset, get_dataset
from ingest_adapters.bookkeeping import INDEX_DDL, INDEX_TABLE
from ingest_adapters.errors import UnreadableFileError
from ingest_adapters.jsonl import render_number
from ingest_adapters.multi import MappingChecker, MultiScan, Rows, fail
from ingest_adapters.registry import Feed
from ingest_adapters.scan import Reject

__all__ = ["open_fhir", "MAPPING_CHECKER", "RESOURCE_TYPES", "DEFAULT_RESOURCE"]

# Every resource type of FHIR R4 (4.0.1).
RESOURCE_TYPES = frozenset("""
Account ActivityDefinition AdverseEvent AllergyIntolerance Appointment AppointmentResponse AuditEvent Basic Binary
BiologicallyDerivedProduct BodyStructure Bundle CapabilityStatement CarePlan CareTeam CatalogEntry ChargeItem
ChargeItemDefinition Claim ClaimResponse ClinicalImpression CodeSystem Communication CommunicationRequest
CompartmentDefinition Composition ConceptMap Condition Consent Contract Coverage CoverageEligibilityRequest
CoverageEligibilityResponse DetectedIssue Device DeviceDefinition DeviceMetric DeviceRequest DeviceUseStatement
DiagnosticReport DocumentManifest DocumentReference EffectEvidenceSynthesis Encounter Endpoint EnrollmentRequest
EnrollmentResponse EpisodeOfCare EventDefinition Evidence EvidenceVariable ExampleScenario ExplanationOfBenefit
FamilyMemberHistory Flag Goal GraphDefinition Group GuidanceResponse HealthcareService ImagingStudy Immunization
ImmunizationEvaluation ImmunizationRecommendation ImplementationGuide InsurancePlan Invoice Library Linkage List
Location Measure MeasureReport Media Medication MedicationAdministration MedicationDispense MedicationKnowledge
MedicationRequest MedicationStatement MedicinalProduct MedicinalProductAuthorization MedicinalProductContraindication
MedicinalProductIndication MedicinalProductIngredient MedicinalProductInteraction MedicinalProductManufactured
MedicinalProductPackaged MedicinalProductPharmaceutical MedicinalProductUndesirableEffect MessageDefinition
MessageHeader MolecularSequence NamingSystem NutritionOrder Observation ObservationDefinition OperationDefinition
OperationOutcome Organization OrganizationAffiliation Parameters Patient PaymentNotice PaymentReconciliation Person
PlanDefinition Practitioner PractitionerRole Procedure Provenance Questionnaire QuestionnaireResponse RelatedPerson
RequestGroup ResearchDefinition ResearchElementDefinition ResearchStudy ResearchSubject RiskAssessment
RiskEvidenceSynthesis Schedule SearchParameter ServiceRequest Slot Specimen SpecimenDefinition StructureDefinition
StructureMap Subscription Substance SubstanceNucleicAcid SubstancePolymer SubstanceProtein
SubstanceReferenceInformation SubstanceSourceMaterial SubstanceSpecification SupplyDelivery SupplyRequest Task
TerminologyCapabilities TestReport TestScript ValueSet VerificationResult VisionPrescription""".split())

# The resource a data set is filled from when its mapping does not say ``resource:``.
DEFAULT_RESOURCE = {"person": "Patient", "encounter": "Encounter", "diagnosis": "Condition",
                    "lab_result": "Observation", "prescription": "MedicationRequest", "immunization": "Immunization",
                    "practitioner": "Practitioner", "department": "Organization", "procedure": "Procedure",
                    "imaging_study": "ImagingStudy", "exam_report": "DiagnosticReport"}


_REF = re.compile(r"^ref\((?P<path>[^()]+)\)$")
_STEP = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<sel>(?:\[[^\]]*\])*)$")
_TEMPLATE = re.compile(r"\{([^{}]+)\}")
_LITERAL = re.compile(r"^(?:(?P<base>https?://\S+?)/)?(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})"
                      r"(?:/_history/\S+)?$")
_CONDITIONAL = re.compile(r"^(?P<type>[A-Z][A-Za-z]+)\?identifier=(?P<system>[^|]*)\|(?P<value>.+)$")


# ------------------------------------------------------------------ paths

@dataclass(frozen=True)
class Step:
    name: str
    selectors: tuple  # int (index) or (tuple path, value) filters


@dataclass(frozen=True)
class FPath:
    steps: tuple[Step, ...]
    ref: bool = False  # ref(path): the business key of the referenced resource
    text: str = ""


def _split_dots(text: str) -> list[str]:
    parts, depth, cur = [], 0, []
    for c in text:
        if c == "[":
            depth += 1
        elif c == "]":
            depth -= 1
        if c == "." and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
    parts.append("".join(cur))
    return parts


def parse_path(text: str) -> FPath:
    text = text.strip()
    m = _REF.match(text)
    inner = m["path"].strip() if m else text
    steps = []
    for part in _split_dots(inner):
        sm = _STEP.match(part)
        if not sm:
            raise ValueError(f"'{text}': '{part}' is not a path step like name, name[0] or identifier[system=…]")
        selectors = []
        for sel in re.findall(r"\[([^\]]*)\]", sm["sel"]):
            if sel.isdigit():
                selectors.append(int(sel))
            elif "=" in sel:
                k, v = sel.split("=", 1)
                if not all(_STEP.match(x) for x in k.strip().split(".")):
                    raise ValueError(f"'{text}': '[{sel}]' is not a filter like [system=http://…]")
                selectors.append((tuple(k.strip().split(".")), v.strip()))
            else:
                raise ValueError(f"'{text}': '[{sel}]' is neither an index [0] nor a filter [key=value]")
        steps.append(Step(sm["name"], tuple(selectors)))
    return FPath(tuple(steps), ref=bool(m), text=text)


def _walk(items: list, names) -> list:
    for name in names:
        nxt = []
        for it in items:
            if isinstance(it, dict) and name in it:
                v = it[name]
                if isinstance(v, list):
                    nxt.extend(v)
                elif v is not None:
                    nxt.append(v)
        items = nxt
    return items


def _scalar(v) -> str | None:
    if v is None:
        return None
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return render_number(v)
    return orjson.dumps(v).decode()


def evaluate(path: FPath, resource: dict) -> list:
    items = [resource]
    for step in path.steps:
        items = _walk(items, [step.name])
        for sel in step.selectors:
            if isinstance(sel, int):
                items = items[sel:sel + 1]
            else:
                keys, want = sel
                items = [it for it in items if any(_scalar(v) == want for v in _walk([it], keys))]
    return items


@dataclass(frozen=True)
class Expr:
    alternatives: tuple[tuple[str | FPath, ...], ...]

    @property
    def has_ref(self) -> bool:
        return any(isinstance(p, FPath) and p.ref for alt in self.alternatives for p in alt)


def parse_expr(text: str) -> Expr:
    alts = []
    for alt in text.split(" | "):
        alt = alt.strip()
        if "{" in alt:
            parts, pos = [], 0
            for m in _TEMPLATE.finditer(alt):
                if m.start() > pos:
                    parts.append(alt[pos:m.start()])
                parts.append(parse_path(m.group(1)))
                pos = m.end()
            if pos < len(alt):
                parts.append(alt[pos:])
            alts.append(tuple(parts))
        else:
            alts.append((parse_path(alt),))
    return Expr(tuple(alts))


class _Checker(MappingChecker):
    options = frozenset({"resource", "where"})

    def __call__(self, where: str, ds: Dataset, elements: dict[str, str], options: dict) -> None:
        rtype = options.get("resource", DEFAULT_RESOURCE.get(ds.name))
        if rtype is None:
            raise fail(f"{where}: say which resource fills '{ds.name}' (resource: Observation, …)")
        if rtype not in RESOURCE_TYPES:
            close = difflib.get_close_matches(str(rtype), sorted(RESOURCE_TYPES), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise fail(f"{where}.resource: '{rtype}' is not a FHIR R4 resource type{hint}")
        for element, text in elements.items():
            try:
                parse_expr(text)
            except ValueError as e:
                raise fail(f"{where}.{element}: {e}") from None
        cond = options.get("where")
        if cond is not None:
            if not isinstance(cond, dict):
                raise fail(f"{where}.where: expected {{path: value or [values]}}, got {cond!r}")
            for k in cond:
                try:
                    parse_path(str(k))
                except ValueError as e:
                    raise fail(f"{where}.where: {e}") from None


MAPPING_CHECKER = _Checker()


# ------------------------------------------------------------------ reading the file

def _load(path: Path, encoding: str) -> tuple[str, list[tuple[int, object, str | None, str | None]], dict]:
    """('bundle'|'resource'|'ndjson', [(ordinal, value, fullUrl, problem)], notes)."""
    data = path.read_bytes()
    if not data.strip():
        raise UnreadableFileError("the file is empty" + (" (0 bytes)" if not data else " (only whitespace)"),
                                  path=str(path))
    try:
        text = data.decode(encoding).lstrip("\ufeff")
    except UnicodeDecodeError as e:
        raise UnreadableFileError(f"bytes that are not valid {encoding.upper()} at byte {e.start}: "
                                  f"declare the feed's encoding", path=str(path)) from None
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError:
        doc = None
    try:
        if doc is None:
            doc = json.loads(text)
    except json.JSONDecodeError as e:
        first = text.lstrip().split("\n", 1)[0]
        try:
            json.loads(first)
            is_ndjson = e.msg == "Extra data"
        except json.JSONDecodeError:
            is_ndjson = False
        if not is_ndjson:
            raise UnreadableFileError(f"not valid JSON at line {e.lineno}, column {e.colno}: {e.msg}"
                                      + (" (the file ends early: truncated?)" if e.pos >= len(text.rstrip()) - 1
                                         else ""), path=str(path)) from None
        return "ndjson", _ndjson(text), {}
    if not isinstance(doc, dict) or "resourceType" not in doc:
        raise UnreadableFileError("the file is not a FHIR resource (a JSON object with 'resourceType')",
                                  path=str(path))
    if doc["resourceType"] != "Bundle":
        return "resource", [(1, doc, None, None)], {}
    entries = doc.get("entry") or []
    if not isinstance(entries, list):
        raise UnreadableFileError("Bundle.entry is not an array", path=str(path))
    out, deletes = [], 0
    for i, e in enumerate(entries, start=1):
        if isinstance(e, dict) and "resource" not in e and (e.get("request") or {}).get("method") == "DELETE":
            deletes += 1
            continue
        res = e.get("resource") if isinstance(e, dict) else None
        out.append((i, res, e.get("fullUrl") if isinstance(e, dict) else None,
                    None if isinstance(e, dict) else "a Bundle entry that is not an object"))
    return "bundle", out, {"bundle_type": doc.get("type"), "entries": len(entries), "delete_entries": deletes}


def _ndjson(text: str) -> list:
    out = []
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:  # orjson: 4x the standard parser on Synthea resources; the standard one words the errors
            out.append((lineno, orjson.loads(line), None, None))
        except orjson.JSONDecodeError:
            try:
                out.append((lineno, json.loads(line), None, None))
            except json.JSONDecodeError as e:
                out.append((lineno, line.rstrip("\r"), None, f"line {lineno}, column {e.colno}: not valid JSON: {e.msg}"))
    return out


# ------------------------------------------------------------------ references

# Connections known to have the index: it is never dropped, and asking the lake's information schema
# costs ~0.1 s on a lake of a hundred tables (a city delivers dozens of FHIR files per run). The
# ingest creates the index with the other ops tables, committed before any file's transaction, so a
# "yes" cannot come from a creation that a file's (or a group's) rollback then undoes.
_indexed: "weakref.WeakKeyDictionary[duckdb.DuckDBPyConnection, bool]" = weakref.WeakKeyDictionary()


def _has_index(con: duckdb.DuckDBPyConnection) -> bool:
    if con not in _indexed:
        from healthlake.lake import table_exists

        if not table_exists(con, "ops", "fhir_resource_index"):
            return False
        _indexed[con] = True
    return True


class _Resolver:
    def __init__(self, con, institution: str | None, key_exprs: dict[str, Expr], key_paths: dict[str, str]):
        self.con, self.institution = con, institution
        self.key_exprs, self.key_paths = key_exprs, key_paths
        self.by_url: dict[str, dict] = {}
        self.by_type_id: dict[tuple[str, str], dict] = {}
        self.by_ident: dict[tuple[str, str, str], dict] = {}
        self.cache: dict[str, str | None] = {}
        self.lake_hits = self.derived = 0
        self.prefetched: dict[str, str | None] = {}
        self.has_index = False
        if con is not None and institution is not None:
            self.has_index = _has_index(con)

    def add(self, res: dict, full_url: str | None) -> None:
        rtype, rid = res.get("resourceType"), res.get("id")
        if full_url:
            self.by_url[full_url] = res
        if rid:
            self.by_type_id[(rtype, str(rid))] = res
        for ident in res.get("identifier") or []:
            if isinstance(ident, dict) and ident.get("value") is not None:
                self.by_ident[(rtype, str(ident.get("system", "")), str(ident["value"]))] = res

    def key(self, res: dict) -> str | None:
        expr = self.key_exprs.get(res.get("resourceType"))
        if expr is None:
            return _scalar(res.get("id"))
        return _value(expr, res, None)

    def resolve(self, reference: str) -> str | None:
        if reference in self.cache:
            return self.cache[reference]
        out = self._resolve(reference)
        self.cache[reference] = out
        return out

    def _resolve(self, ref: str) -> str | None:
        target = self.by_url.get(ref)
        lit = _LITERAL.match(ref)
        cond = _CONDITIONAL.match(ref)
        if target is None and lit:
            target = self.by_type_id.get((lit["type"], lit["id"]))
        if target is None and cond:
            target = self.by_ident.get((cond["type"], cond["system"], cond["value"]))
        if target is not None:
            return self.key(target)
        hit = self._lake(ref, lit, cond)
        if hit is not None:
            self.lake_hits += 1
            return hit
        # No target: derive the key when it needs none.
        if lit:
            kp = self.key_paths.get(lit["type"])
            if kp is None or kp == "id":
                self.derived += 1
                return lit["id"]
        if cond:
            kp = self.key_paths.get(cond["type"])
            if kp is None or kp.replace(" ", "") == f"identifier[system={cond['system']}].value":
                self.derived += 1
                return cond["value"]
        return None

    def prefetch(self, resources) -> None:
        """Look up, in one lake query, every reference in these resources that the file itself does
        not resolve (one query per reference costs ~50 ms on an index of many small files)."""
        if not self.has_index:
            return
        refs: set[str] = set()

        def walk(x):
            if isinstance(x, dict):
                r = x.get("reference")
                if isinstance(r, str):
                    refs.add(r)
                for v in x.values():
                    if isinstance(v, (dict, list)):
                        walk(v)
            elif isinstance(x, list):
                for v in x:
                    if isinstance(v, (dict, list)):
                        walk(v)

        for res in resources:
            walk(res)
        wanted: dict[str, tuple] = {}
        for ref in refs:
            lit, cond = _LITERAL.match(ref), _CONDITIONAL.match(ref)
            if self.by_url.get(ref) is not None:
                continue
            if lit and (lit["type"], lit["id"]) in self.by_type_id:
                continue
            if cond and (cond["type"], cond["system"], cond["value"]) in self.by_ident:
                continue
            wanted[ref] = (("id", lit["type"], lit["id"]) if lit else
                           ("ident", cond["type"], cond["system"], cond["value"]) if cond else ("url", ref))
        self.prefetched = {}
        if not wanted:
            return
        ids = sorted({w[2] for w in wanted.values() if w[0] == "id"})
        values = sorted({w[3] for w in wanted.values() if w[0] == "ident"})
        urls = sorted({w[1] for w in wanted.values() if w[0] == "url"})
        found: dict[tuple, str] = {}
        for rtype, rid, system, value, url, key in self.con.execute(
                f"SELECT resource_type, resource_id, identifier_system, identifier_value, full_url, key_value "
                f"FROM {INDEX_TABLE} WHERE institution_code = ? AND (list_contains(?, resource_id) "
                f"OR list_contains(?, identifier_value) OR list_contains(?, full_url))",
                [self.institution, ids, values, urls]).fetchall():
            found.setdefault(("id", rtype, rid), key)
            found.setdefault(("ident", rtype, system, value), key)
            found.setdefault(("url", url), key)
        self.prefetched = {ref: found.get(w) for ref, w in wanted.items()}

    def _lake(self, ref, lit, cond) -> str | None:
        if not self.has_index:
            return None
        if ref in self.prefetched:
            return self.prefetched[ref]
        q = f"SELECT key_value FROM {INDEX_TABLE} WHERE institution_code = ? AND "
        if lit:
            row = self.con.execute(q + "resource_type = ? AND resource_id = ? LIMIT 1",
                                   [self.institution, lit["type"], lit["id"]]).fetchone()
        elif cond:
            row = self.con.execute(q + "resource_type = ? AND identifier_system = ? AND identifier_value = ? LIMIT 1",
                                   [self.institution, cond["type"], cond["system"], cond["value"]]).fetchone()
        else:
            row = self.con.execute(q + "full_url = ? LIMIT 1", [self.institution, ref]).fetchone()
        return row[0] if row else None


class _Dangling(Exception):
    pass


def _value(expr: Expr, res: dict, resolver: _Resolver | None, unresolved: list | None = None) -> str | None:
    for alt in expr.alternatives:
        parts, found = [], False
        for part in alt:
            if isinstance(part, str):
                parts.append(part)
                continue
            items = evaluate(part, res)
            if part.ref:
                v = None
                for it in items:
                    ref = it.get("reference") if isinstance(it, dict) else (it if isinstance(it, str) else None)
                    if not ref:
                        continue
                    if ref.startswith("#"):  # a contained resource: its key, or its id
                        target = next((c for c in res.get("contained") or []
                                       if isinstance(c, dict) and c.get("id") == ref[1:]), None)
                        if target is not None and resolver is not None:
                            v = resolver.key(target)
                            break
                        continue
                    v = resolver.resolve(ref) if resolver is not None else None
                    if v is None:
                        if unresolved is not None:
                            unresolved.append(ref)
                        v = ref if unresolved is not None else None
                    break
            else:
                v = next((s for s in map(_scalar, items) if s not in (None, "")), None)
            if v:
                found = True
                parts.append(v)
        if found:
            return "".join(parts)
    return None


# ------------------------------------------------------------------ the reader

@dataclass
class _Plan:
    dataset: str
    resource: str
    elements: list[str]
    exprs: list[Expr]
    strict: list[bool]  # key or required: an unresolved reference rejects the resource
    where: list[tuple[FPath, frozenset[str]]]


def _plans(feed: Feed) -> list[_Plan]:
    plans = []
    for m in feed.mappings:
        ds = get_dataset(m.dataset)
        strict = {e.name for e in ds.elements if e.key or e.required}
        cond = m.options.get("where") or {}
        where = [(parse_path(str(k)), frozenset(str(x) for x in (v if isinstance(v, list) else [v])))
                 for k, v in cond.items()]
        plans.append(_Plan(m.dataset, m.options.get("resource", DEFAULT_RESOURCE.get(m.dataset)), list(m.elements),
                           [parse_expr(m.elements[e]) for e in m.elements], [e in strict for e in m.elements], where))
    return plans


def _index_rows(institution: str, resources: list[tuple[dict, str | None]], resolver: _Resolver) -> list[tuple]:
    rows = []
    for res, url in resources:
        rtype, rid = res.get("resourceType"), _scalar(res.get("id"))
        key = resolver.key(res)
        idents = [i for i in res.get("identifier") or [] if isinstance(i, dict) and i.get("value") is not None]
        for ident in idents or [None]:
            rows.append((institution, rtype, rid, url,
                         None if ident is None else str(ident.get("system", "")),
                         None if ident is None else _scalar(ident["value"]), key))
    return rows


def open_fhir(con: duckdb.DuckDBPyConnection | None, path: Path, feed: Feed, work_dir: Path | None, *,
              institution_code: str | None = None) -> MultiScan:
    path = Path(path)
    kind, items, notes = _load(path, feed.encoding)
    plans = _plans(feed)
    mapped_types = {p.resource for p in plans}
    key_exprs, key_paths = {}, {}
    for p in plans:
        if p.resource in key_exprs:
            continue
        key = get_dataset(p.dataset).key_elements[0]
        key_exprs[p.resource] = p.exprs[p.elements.index(key)]
        key_paths[p.resource] = feed.mappings[plans.index(p)].elements[key].strip()
    resolver = _Resolver(con, institution_code, key_exprs, key_paths)
    good: list[tuple[int, dict, str | None]] = []
    rejects: list[Reject] = []
    ignored: dict[str, int] = {}
    filtered: dict[str, int] = {}
    records = 0

    def reject(ordinal, raw, error_type, reason):
        rejects.append(Reject(source_row=ordinal, raw_line=raw if isinstance(raw, str) else _scalar(raw),
                              error_type=error_type, reason=reason))

    where_word = "line" if kind == "ndjson" else "entry"
    for ordinal, res, url, problem in items:
        if problem or not isinstance(res, dict) or not isinstance(res.get("resourceType"), str):
            records += 1
            reject(ordinal, res, "INVALID JSON" if problem and "JSON" in problem else "NOT A RESOURCE",
                   problem or f"{where_word} {ordinal}: not a FHIR resource (a JSON object with 'resourceType')")
            continue
        rtype = res["resourceType"]
        if rtype not in RESOURCE_TYPES:
            records += 1
            close = difflib.get_close_matches(rtype, sorted(RESOURCE_TYPES), n=1)
            reject(ordinal, res, "UNKNOWN RESOURCE TYPE",
                   f"{where_word} {ordinal}: '{rtype}' is not a FHIR R4 resource type"
                   + (f" (did you mean '{close[0]}'?)" if close else ""))
            continue
        resolver.add(res, url)
        good.append((ordinal, res, url))

    resolver.prefetch(res for _, res, _ in good if res["resourceType"] in mapped_types)
    rows = Rows(feed)
    loaded = unresolved_optional = 0
    for ordinal, res, url in good:
        rtype = res["resourceType"]
        if rtype not in mapped_types:
            ignored[rtype] = ignored.get(rtype, 0) + 1
            continue
        pending, dangling = [], None
        for plan in plans:
            if plan.resource != rtype:
                continue
            if any(not any(_scalar(v) in allowed for v in evaluate(fp, res)) for fp, allowed in plan.where):
                continue
            values = []
            for element, expr, strict in zip(plan.elements, plan.exprs, plan.strict):
                if expr.has_ref:
                    missing: list[str] = []
                    v = _value(expr, res, resolver, missing)
                    if missing and strict:
                        dangling = (plan.dataset, element, missing[0])
                        break
                    unresolved_optional += len(missing)
                else:
                    v = _value(expr, res, None)
                values.append(v)
            if dangling:
                break
            pending.append((plan.dataset, values))
        if dangling is None and not pending:
            filtered[rtype] = filtered.get(rtype, 0) + 1
            continue
        records += 1
        if dangling is not None:
            ds, element, ref = dangling
            reject(ordinal, res, "DANGLING REFERENCE",
                   f"{where_word} {ordinal}: {rtype}/{res.get('id', '?')} {ds}.{element} refers to '{ref}', which "
                   f"is neither in this file nor loaded before from this institution")
            continue
        for ds, values in pending:
            rows.add(ds, ordinal, values)
        loaded += 1

    notes.update(format=kind, resources=len(good), not_mapped=ignored, filtered_out=filtered,
                 references_from_lake=resolver.lake_hits, references_derived=resolver.derived,
                 unresolved_optional_references=unresolved_optional)
    index = _index_rows(institution_code or "", [(r, u) for _, r, u in good], resolver)

    def on_commit(c: duckdb.DuckDBPyConnection, batch_id: str) -> None:
        if not index or institution_code is None:
            return
        c.execute(INDEX_DDL)
        t = pa.Table.from_pylist([dict(zip(("institution_code", "resource_type", "resource_id", "full_url",
                                             "identifier_system", "identifier_value", "key_value"), r),
                                       batch_id=batch_id) for r in index])
        c.register("_hl_fhir_index", t)
        try:
            c.execute(f"INSERT INTO {INDEX_TABLE} SELECT institution_code, resource_type, resource_id, full_url, "
                      f"identifier_system, identifier_value, key_value, batch_id FROM _hl_fhir_index")
        finally:
            c.unregister("_hl_fhir_index")

    return MultiScan(tables=rows.tables(), records=records, loaded=loaded, rejects=rejects, notes=notes,
                     on_commit=on_commit)

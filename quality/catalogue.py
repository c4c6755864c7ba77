"""The rule catalogue (规则目录): YAML files under ``quality/rules/``, one per lake table.

Format (see ``quality/rules/README.md``)::

    table: population.dim_person          # <schema>.<table> in the lake
    rules:
      - id: POP-001                       # unique in the catalogue
        name: 人员主键非空                  # Chinese name shown to the quality office
        dimension: completeness           # completeness|validity|consistency|uniqueness|timeliness|plausibility
        severity: critical                # critical|major|minor
        expectation: expect_column_values_to_not_be_null   # a GX 1.x expectation (snake_case or ClassName)
        kwargs: {column: person_key}      # the expectation's arguments
        threshold: 1.0                    # pass when rows passing / rows checked >= threshold (default 0.95)
        element: id_number                # optional: the data element a rectification list shows
                                          # (default: kwargs.column)
        fix: 核对身份证号码后重新报送         # optional: suggested fix on the rectification list (整改建议)

Structural mistakes (a missing field, an unknown dimension or expectation, a duplicate id) raise
``QualityError`` when the file is loaded. Mistakes only the database can see (a missing column, a
bad regex, wrong kwargs) make that one rule ``ERROR`` when it runs.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from healthlake.yamlfile import YAMLError, parse_yaml

from quality.errors import QualityError

__all__ = ["Rule", "RuleFile", "RULES_DIR", "DIMENSIONS", "SEVERITIES", "DEFAULT_THRESHOLD", "gate_threshold",
           "load_rules_file", "load_catalogue", "parse_rules", "expectation_class"]

RULES_DIR = Path(__file__).with_name("rules")
DIMENSIONS = ("completeness", "validity", "consistency", "uniqueness", "timeliness", "plausibility")
SEVERITIES = ("critical", "major", "minor")
DEFAULT_THRESHOLD = 0.95
THRESHOLD_ENV = "HEALTHLAKE_QUALITY_THRESHOLD"


def gate_threshold() -> float:
    """The platform's batch threshold (合格率 a batch needs to be promoted): ``HEALTHLAKE_QUALITY_THRESHOLD``
    (a share, 0–1), else 95 %. A feed's ``quality_threshold`` in the registry overrides it for that feed."""
    import os

    raw = os.environ.get(THRESHOLD_ENV)
    if raw in (None, ""):
        return DEFAULT_THRESHOLD
    try:
        value = float(raw)
    except ValueError:
        raise QualityError(f"{THRESHOLD_ENV}={raw!r} is not a number; give a share between 0 and 1 (e.g. 0.95)") from None
    if not 0 <= value <= 1:
        raise QualityError(f"{THRESHOLD_ENV}={raw!r} must be between 0 and 1 (a share, e.g. 0.95 for 95 %)")
    return value
# GX's own success criterion; ours is the rule's threshold over row-level counts.
_FORBIDDEN_KWARGS = {"mostly": "use the rule's `threshold` instead of `mostly`",
                     "result_format": "the runner chooses the result format",
                     "meta": "the runner sets `meta`"}
_ID = re.compile(r"^[A-Z][A-Z0-9]*-[0-9]{3,}$")
_RULE_FIELDS = {"id", "name", "dimension", "severity", "expectation", "kwargs", "threshold", "description",
                "element", "fix"}


@dataclass(frozen=True)
class Rule:
    id: str
    name: str
    dimension: str
    severity: str
    expectation: str                      # GX snake_case name, e.g. expect_column_values_to_not_be_null
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    threshold: float = DEFAULT_THRESHOLD
    description: str | None = None
    element: str | None = None            # the data element the rule is about (rectification lists)
    fix: str | None = None                # suggested fix for the institution (整改建议); default by expectation

    @property
    def field(self) -> str | None:
        """The data element whose value explains a failure: ``element``, else ``kwargs['column']``."""
        return self.element or self.kwargs.get("column")

    def build_expectation(self, meta: dict | None = None, description: str | None = None):
        """The GX expectation object (raises if the kwargs do not fit it); ``meta`` adds to the rule id,
        ``description`` replaces ``docs_description``."""
        return expectation_class(self.expectation)(**dict(self.kwargs), meta={"rule_id": self.id, **(meta or {})},
                                                   description=description or self.docs_description)

    @property
    def docs_description(self) -> str:
        """What GX's Data Docs show for the rule (GX renders a description in place of its English
        template): the id and Chinese name, and for a SQL rule its query. ``$`` is doubled: GX
        renders the description as a ``string.Template``."""
        text = f"【{self.id}】{self.name}"
        query = self.kwargs.get("unexpected_rows_query") if self.expectation == "unexpected_rows_expectation" else None
        if query:
            text += "：" + " ".join(str(query).split())
        return text.replace("$", "$$")


@dataclass(frozen=True)
class RuleFile:
    table: str
    rules: tuple[Rule, ...]
    path: Path | None = None


def expectation_class(name: str):
    """GX expectation class for a snake_case name (``expect_column_values_to_not_be_null``) or class name."""
    from great_expectations.expectations.registry import (
        get_expectation_impl,
        list_registered_expectation_implementations,
    )
    import great_expectations.expectations  # noqa: F401  (registers the core expectations)

    snake = _snake(name)
    try:
        return get_expectation_impl(snake)
    except Exception:
        known = list_registered_expectation_implementations()
        close = difflib.get_close_matches(snake, known, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise QualityError(f"unknown GX expectation '{name}'{hint}") from None


def _snake(name: str) -> str:
    if "_" in name or name.islower():
        return name
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def parse_rules(items: Iterable[Mapping[str, Any] | Rule], where: str = "rules") -> tuple[Rule, ...]:
    """Validate rule dicts (or Rules) and return Rules; raises QualityError naming the bad rule."""
    rules: list[Rule] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        rule = item if isinstance(item, Rule) else _parse_rule(item, f"{where}[{i}]")
        if isinstance(item, Rule):
            _check_rule(rule, f"{where}[{i}]")
        if rule.id in seen:
            raise QualityError(f"{where}: duplicate rule id {rule.id}")
        seen.add(rule.id)
        rules.append(rule)
    return tuple(rules)


def _parse_rule(item: Mapping[str, Any], where: str) -> Rule:
    if not isinstance(item, Mapping):
        raise QualityError(f"{where}: a rule must be a mapping, got {type(item).__name__}")
    unknown = set(item) - _RULE_FIELDS
    if unknown:
        raise QualityError(f"{where}: unknown field(s) {sorted(unknown)}; allowed: {sorted(_RULE_FIELDS)}")
    missing = [k for k in ("id", "name", "dimension", "severity", "expectation") if not item.get(k)]
    if missing:
        raise QualityError(f"{where} ({item.get('id', 'no id')}): missing {', '.join(missing)}")
    kwargs = item.get("kwargs") or {}
    if not isinstance(kwargs, Mapping):
        raise QualityError(f"{where} ({item['id']}): kwargs must be a mapping")
    threshold = item.get("threshold", DEFAULT_THRESHOLD)
    rule = Rule(id=str(item["id"]), name=str(item["name"]), dimension=str(item["dimension"]),
                severity=str(item["severity"]), expectation=_snake(str(item["expectation"])),
                kwargs=dict(kwargs), threshold=threshold, description=item.get("description"),
                element=None if item.get("element") is None else str(item["element"]),
                fix=None if item.get("fix") is None else str(item["fix"]))
    _check_rule(rule, where)
    return rule


def _check_rule(rule: Rule, where: str) -> None:
    at = f"{where} ({rule.id})"
    if not _ID.match(rule.id):
        raise QualityError(f"{at}: id must look like POP-001 (upper-case prefix, dash, 3+ digits)")
    if rule.dimension not in DIMENSIONS:
        raise QualityError(f"{at}: dimension '{rule.dimension}' is not one of {', '.join(DIMENSIONS)}")
    if rule.severity not in SEVERITIES:
        raise QualityError(f"{at}: severity '{rule.severity}' is not one of {', '.join(SEVERITIES)}")
    if isinstance(rule.threshold, bool) or not isinstance(rule.threshold, (int, float)) or not 0 <= rule.threshold <= 1:
        raise QualityError(f"{at}: threshold must be a number between 0 and 1, got {rule.threshold!r}")
    for key, why in _FORBIDDEN_KWARGS.items():
        if key in rule.kwargs:
            raise QualityError(f"{at}: kwargs may not contain '{key}': {why}")
    expectation_class(rule.expectation)


# (path, text) → the RuleFile parsed from it: a demo run reads the 36 rules files ~115 times (the
# definitions, the gate's scoring, Data Docs and rectification lists); a changed file is parsed anew.
_parsed: dict[tuple[str, str], RuleFile] = {}


def load_rules_file(path: str | Path) -> RuleFile:
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    key = (str(path), text)
    cached = _parsed.get(key)
    if cached is not None:
        return cached
    rule_file = _load_rules_text(path, text)
    _parsed[key] = rule_file
    return rule_file


def _load_rules_text(path: Path, text: str) -> RuleFile:
    try:
        doc = parse_yaml(text)
    except YAMLError as e:
        raise QualityError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(doc, Mapping) or "table" not in doc or "rules" not in doc:
        raise QualityError(f"{path}: a rules file needs `table: <schema>.<table>` and `rules: [...]`")
    from quality.gx_duckdb import split_table

    table = str(doc["table"])
    split_table(table)
    rules = doc["rules"] or []
    if not isinstance(rules, list):
        raise QualityError(f"{path}: `rules` must be a list")
    return RuleFile(table=table, rules=parse_rules(rules, where=str(path.name)), path=path)


def load_catalogue(rules_dir: str | Path | None = None) -> list[RuleFile]:
    """Every ``*.yaml`` under ``rules_dir`` (default ``quality/rules/``); ids unique across files."""
    rules_dir = Path(rules_dir) if rules_dir else RULES_DIR
    files = [load_rules_file(p) for p in sorted(rules_dir.glob("*.y*ml"))]
    seen: dict[str, str] = {}
    tables: dict[str, str] = {}
    for f in files:
        if f.table in tables:
            raise QualityError(f"{f.path.name}: table {f.table} already has a rules file ({tables[f.table]})")
        tables[f.table] = f.path.name
        for r in f.rules:
            if r.id in seen:
                raise QualityError(f"{f.path.name}: rule id {r.id} is also used in {seen[r.id]}")
            seen[r.id] = f.path.name
    return files

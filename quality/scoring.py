"""Row-level scoring of the bronze rules per institution and per batch (数据质量合格率).

GX is the validation engine of record: ``run_table_rules("bronze.<dataset>")`` validates a whole
bronze table with the catalogue's expectations (Data Docs, overall status, ``quality.rule_result``).
GX cannot group its counts by institution and batch (its ``row_condition`` would mean one full
validation per group: 15 institutions × 3 days × 10 data sets = 450 suites for the demo city).
So the grouped counts come from SQL *derived from the same rule definitions*:

* ``unexpected_rows_expectation``: the rule's own ``unexpected_rows_query``, with ``{batch}``
  filled in exactly as GX fills it (``(SELECT * FROM <rows in scope>) AS subselect``);
* column-map expectations: the failing-row predicate of the expectation, with GX's semantics
  (nulls skipped except by ``..._to_not_be_null``; for a column-map rule filed under
  ``completeness`` nulls fail too, as ``runner._interpret`` counts them), see ``failing_rows_sql``.

All rules of a data set are evaluated in ONE scan of its rows (``combined_failing_rows_sql``: each
rule as a boolean row flag, ``failing_flag_sql``, side by side, unpivoted to the failing rows); a rule
of another shape, or every rule when the combined pass fails (a broken rule), runs as its own query,
so a broken rule is still ERROR alone. When only counts are wanted (the gate), the pass aggregates
(``combined_counts_sql``) and two things keep its cost linear in the rows: the rules with a window
(duplicates, conflicting keys) are evaluated first over the few columns they name, their failing row
ids (DuckLake ``rowid``) joined back (``windowed_flags_sql``) — a window in the wide one-pass select
would materialise every row with every column the other rules read; and calls repeated across rules
(the GB 11643 check digit, a parsed date) are computed once per row (``hoist_common_calls``). ``bench/quality.py`` measures this against one hand-written
aggregate pass. Each rule's failing rows are collected once (``_batch_id``, ``_source_row``: the row's identity in
bronze) in a temporary table; grouped counts, the critical-rule union per batch and the
rectification lists all read that one table. ``tests/test_quality_scoring.py`` checks that the
grouped counts summed over the groups equal GX's whole-table ``unexpected_count`` for every rule.

Per batch (= one delivered file of one feed): rows_checked = the batch's rows in bronze; a batch
with no rows (a header-only file) is NOT_APPLICABLE, never a pass. The batch's 合格率 = rows passing
every critical rule ÷ rows; the batch passes when that is ≥ its threshold (the feed's
``quality_threshold`` in the registry, else 95 %). An institution's 合格率 = its rows passing every
critical rule ÷ its rows, over all data sets run; the platform's = share of institutions (with
rows) at or above the threshold.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import time
import uuid
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Sequence

from healthlake.config import Settings, settings as load_settings
from healthlake.lake import LAKE, connect, one_transaction, quote_ident, strict_in_one_transaction, table_exists
from quality.catalogue import DEFAULT_THRESHOLD, RULES_DIR, Rule, RuleFile, gate_threshold, load_rules_file
from quality.errors import QualityError
from quality.runner import ERROR, FAIL, NOT_APPLICABLE, PASS, RuleResult, _short

__all__ = ["GroupResult", "BatchScore", "InstitutionScore", "DatasetRun", "BronzeRun", "run_dataset_rules",
           "run_bronze_rules", "failing_rows_sql", "score_institutions", "platform_pass_rate", "bronze_datasets",
           "rules_for_dataset", "GROUP_TABLE", "BATCH_SCORE_TABLE", "INSTITUTION_SCORE_TABLE", "SCOPE_VIEW"]

log = logging.getLogger(__name__)

SCHEMA = "quality"
GROUP_TABLE = f"{SCHEMA}.rule_result_by_institution"
BATCH_SCORE_TABLE = f"{SCHEMA}.batch_score"
INSTITUTION_SCORE_TABLE = f"{SCHEMA}.institution_score"
SCOPE_VIEW = "_quality_scope"
FAIL_TABLE = "_quality_fail"
SCOPE_RID_VIEW = "_quality_scope_rid"
WINDOW_TABLE = "_quality_window_fail"
# GX 1.24.1 replaces {batch} in an unexpected_rows_query by "(SELECT ... WHERE true) AS subselect"
# (UnexpectedRowsExpectation on a SQL table asset); we substitute the same shape so that a query
# that works in one works in the other (e.g. an alias after {batch} is a syntax error in both).
_BATCH_SQL = "(SELECT * FROM {scope}) AS subselect"

GROUP_COLUMNS: tuple[tuple[str, str], ...] = (
    ("run_id", "VARCHAR"), ("run_at", "TIMESTAMP WITH TIME ZONE"), ("dataset", "VARCHAR"),
    ("institution_code", "VARCHAR"), ("feed", "VARCHAR"), ("batch_id", "VARCHAR"), ("rule_id", "VARCHAR"),
    ("rule_name", "VARCHAR"), ("severity", "VARCHAR"), ("dimension", "VARCHAR"), ("rows_checked", "BIGINT"),
    ("rows_failed", "BIGINT"), ("pass_rate", "DOUBLE"), ("threshold", "DOUBLE"), ("status", "VARCHAR"),
    ("message", "VARCHAR"),
)
BATCH_COLUMNS: tuple[tuple[str, str], ...] = (
    ("run_id", "VARCHAR"), ("run_at", "TIMESTAMP WITH TIME ZONE"), ("dataset", "VARCHAR"),
    ("institution_code", "VARCHAR"), ("feed", "VARCHAR"), ("batch_id", "VARCHAR"), ("rows_checked", "BIGINT"),
    ("rows_passing", "BIGINT"), ("pass_rate", "DOUBLE"), ("threshold", "DOUBLE"), ("status", "VARCHAR"),
    ("critical_rules_failed", "VARCHAR"),
)
INSTITUTION_COLUMNS: tuple[tuple[str, str], ...] = (
    ("run_id", "VARCHAR"), ("run_at", "TIMESTAMP WITH TIME ZONE"), ("institution_code", "VARCHAR"),
    ("datasets", "VARCHAR"), ("batches", "BIGINT"), ("rows_checked", "BIGINT"), ("rows_passing", "BIGINT"),
    ("pass_rate", "DOUBLE"), ("threshold", "DOUBLE"), ("meets_threshold", "BOOLEAN"),
)


@dataclass(frozen=True)
class GroupResult:
    """One rule on one batch of one institution: a row of ``quality.rule_result_by_institution``."""
    dataset: str
    institution_code: str
    feed: str | None
    batch_id: str
    rule_id: str
    rule_name: str
    severity: str
    dimension: str
    rows_checked: int
    rows_failed: int | None
    pass_rate: float | None
    threshold: float
    status: str
    message: str


@dataclass(frozen=True)
class BatchScore:
    """A batch's record-level 合格率 on the critical rules: a row of ``quality.batch_score``."""
    dataset: str
    institution_code: str
    feed: str | None
    batch_id: str
    rows_checked: int
    rows_passing: int | None
    pass_rate: float | None
    threshold: float
    status: str                       # PASS | FAIL | NOT_APPLICABLE (no rows) | ERROR (a critical rule errored)
    critical_rules_failed: tuple[str, ...] = ()


@dataclass(frozen=True)
class InstitutionScore:
    institution_code: str
    datasets: tuple[str, ...]
    batches: int
    rows_checked: int
    rows_passing: int
    pass_rate: float | None
    threshold: float
    meets_threshold: bool


@dataclass
class DatasetRun:
    dataset: str
    run_id: str
    run_at: datetime
    results: list[GroupResult]
    batches: list[BatchScore]
    rule_errors: dict[str, str] = field(default_factory=dict)
    gx_results: list[RuleResult] | None = None          # whole-table GX validation, when asked for
    seconds: dict[str, float] = field(default_factory=dict)

    def by_institution(self) -> dict[tuple[str, str], tuple[int, int | None]]:
        """(institution_code, rule_id) → (rows_checked, rows_failed) summed over the batches."""
        out: dict[tuple[str, str], list] = {}
        for r in self.results:
            acc = out.setdefault((r.institution_code, r.rule_id), [0, 0])
            if r.status == NOT_APPLICABLE:      # an empty batch adds nothing
                continue
            acc[0] += r.rows_checked
            acc[1] = None if acc[1] is None or r.rows_failed is None else acc[1] + r.rows_failed
        return {k: (v[0], v[1]) for k, v in out.items()}


@dataclass
class BronzeRun:
    run_id: str
    run_at: datetime
    datasets: dict[str, DatasetRun]
    institutions: list[InstitutionScore]
    platform_pass_rate: float | None
    threshold: float = DEFAULT_THRESHOLD

    @property
    def results(self) -> list[GroupResult]:
        return [r for d in self.datasets.values() for r in d.results]

    @property
    def batches(self) -> list[BatchScore]:
        return [b for d in self.datasets.values() for b in d.batches]


# --- rule → failing-row SQL -------------------------------------------------------------------

def _lit(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, (int, float)):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


def _predicate(rule: Rule) -> str:
    """The failing-row condition of a column-map expectation, with GX's null handling."""
    kw = dict(rule.kwargs)
    unsupported = set(kw) - {"column", "value_set", "regex", "min_value", "max_value", "strict_min",
                             "strict_max", "value"}
    if unsupported:
        raise QualityError(f"{rule.id}: kwargs {sorted(unsupported)} are not supported by the grouped scoring")
    if "column" not in kw:
        raise QualityError(f"{rule.id}: a column-map expectation needs `column`")
    c = quote_ident(kw["column"])
    e = rule.expectation
    if e == "expect_column_values_to_not_be_null":
        return f"{c} IS NULL"
    if e == "expect_column_values_to_be_null":
        return f"{c} IS NOT NULL"
    if e in ("expect_column_values_to_be_in_set", "expect_column_values_to_not_be_in_set"):
        values = kw.get("value_set")
        if not isinstance(values, (list, tuple)) or not values:
            raise QualityError(f"{rule.id}: value_set must be a non-empty list")
        listed = ", ".join(_lit(v) for v in values)
        cond = f"{c} NOT IN ({listed})" if e.endswith("to_be_in_set") else f"{c} IN ({listed})"
    elif e == "expect_column_values_to_match_regex":
        cond = f"NOT regexp_matches({c}, {_lit(kw['regex'])})"
    elif e == "expect_column_values_to_not_match_regex":
        cond = f"regexp_matches({c}, {_lit(kw['regex'])})"
    elif e in ("expect_column_values_to_be_between", "expect_column_value_lengths_to_be_between"):
        x = c if e == "expect_column_values_to_be_between" else f"length({c})"
        parts = []
        if kw.get("min_value") is not None:
            parts.append(f"{x} {'<=' if kw.get('strict_min') else '<'} {_lit(kw['min_value'])}")
        if kw.get("max_value") is not None:
            parts.append(f"{x} {'>=' if kw.get('strict_max') else '>'} {_lit(kw['max_value'])}")
        if not parts:
            raise QualityError(f"{rule.id}: min_value or max_value is required")
        cond = " OR ".join(parts)
    elif e == "expect_column_value_lengths_to_equal":
        cond = f"length({c}) <> {_lit(kw['value'])}"
    else:
        raise QualityError(f"{rule.id}: expectation {e} has no grouped (SQL) form; use unexpected_rows_expectation")
    # GX evaluates column-map expectations on non-null values only; completeness rules count nulls too.
    if rule.dimension == "completeness":
        return f"({c} IS NULL OR ({cond}))"
    return f"({c} IS NOT NULL AND ({cond}))"


def failing_rows_sql(rule: Rule, scope: str = SCOPE_VIEW) -> str:
    """SQL returning the failing rows (all columns) of ``rule`` among the rows of relation ``scope``."""
    batch = _BATCH_SQL.format(scope=scope)
    if rule.expectation == "unexpected_rows_expectation":
        query = rule.kwargs.get("unexpected_rows_query")
        if not query:
            raise QualityError(f"{rule.id}: unexpected_rows_query is missing")
        return str(query).format(batch=batch)
    if rule.expectation == "expect_column_values_to_be_unique":
        c = quote_ident(rule.kwargs["column"])
        return f"SELECT * FROM {batch} WHERE {c} IS NOT NULL QUALIFY count(*) OVER (PARTITION BY {c}) > 1"
    return f"SELECT * FROM {batch} WHERE {_predicate(rule)}"


_ROW_RULE = re.compile(r"^SELECT \* FROM \{batch\}(?: WHERE (?P<where>.*?))?(?: QUALIFY (?P<qualify>.*))?$", re.S)


def failing_flag_sql(rule: Rule) -> str | None:
    """The rule as a boolean over one row of ``{batch}`` (true = the row fails), or None.

    The same rows as ``failing_rows_sql`` for the shapes that select rows of the batch one for one:
    column-map expectations, uniqueness (a window), and ``SELECT * FROM {batch} [WHERE c] [QUALIFY w]``.
    QUALIFY sees only the rows WHERE kept, so ``c`` becomes the leading key of every window partition.
    Any other query (a join, a GROUP BY, another alias) is None: it runs on its own.
    """
    e = rule.expectation
    if e == "unexpected_rows_expectation":
        query = " ".join(str(rule.kwargs.get("unexpected_rows_query") or "").split())
        m = _ROW_RULE.match(query)
        if not m or "{" in (m.group("where") or "") + (m.group("qualify") or ""):
            return None
        where, qualify = m.group("where"), m.group("qualify")
        if where and re.search(r"\b(QUALIFY|GROUP BY|ORDER BY|LIMIT|UNION)\b", where):
            return None
        if not qualify:
            return f"coalesce({where}, false)" if where else "true"
        if qualify.count(" OVER (") != qualify.count(" OVER (PARTITION BY "):
            return None
        c = where or "true"
        return f"(coalesce({c}, false) AND coalesce({qualify.replace(' OVER (PARTITION BY ', f' OVER (PARTITION BY ({c}), ')}, false))"
    if e == "expect_column_values_to_be_unique":
        col = quote_ident(rule.kwargs["column"])
        return f"({col} IS NOT NULL AND count(*) OVER (PARTITION BY {col}) > 1)"
    try:
        return f"coalesce({_predicate(rule)}, false)"
    except (QualityError, KeyError):
        return None


def combined_failing_rows_sql(rules: Sequence[Rule], scope: str = SCOPE_VIEW) -> str:
    """One pass over ``scope``: (rule_id, _batch_id, _source_row) of every failing row of every rule.

    Every rule must have a ``failing_flag_sql``. The flags are computed side by side on one read of
    the rows and unpivoted: the same rows as one ``failing_rows_sql`` query per rule, for one scan.
    """
    flags = [(r.id, failing_flag_sql(r)) for r in rules]
    cols = ", ".join(f"{f} AS {quote_ident(rid)}" for rid, f in flags)
    names = ", ".join(quote_ident(rid) for rid, _ in flags)
    return (f"SELECT rule_id, _batch_id, _source_row FROM ("
            f"SELECT _batch_id, _source_row, {cols} FROM {_BATCH_SQL.format(scope=scope)}) AS _flags "
            f"UNPIVOT (failed FOR rule_id IN ({names})) WHERE failed")


_CALL = re.compile(r"[A-Za-z_][A-Za-z_0-9]*\s*\(")
_LAMBDA = re.compile(r"\blambda\b", re.I)
_NOT_HOISTED = re.compile(r"\bOVER\s*\(|\bSELECT\b|\?", re.I)
# words before a parenthesis that are not function calls (IN (…), OVER (…), PARTITION BY (…), AND (…))
_KEYWORDS = frozenset("""AND OR NOT IN BY OVER EXISTS AS WHEN THEN ELSE CASE END ON FROM WHERE SELECT IS BETWEEN LIKE
    ILIKE GLOB SIMILAR ANY ALL SOME VALUES FILTER WITHIN USING JOIN PARTITION ORDER GROUP HAVING QUALIFY UNION EXCEPT
    INTERSECT LIMIT DISTINCT INTERVAL ASC DESC NULLS WITH LATERAL ROWS RANGE""".split())
CSE_PREFIX = "_hlq_cse"
_CSE_MIN_LENGTH = 24            # shorter calls (length(x), upper(x)) cost less than a column


def _quoted(text: str) -> list[bool]:
    """Per character: inside a '…' literal or a "…" identifier."""
    mask, quote = [False] * len(text), None
    for i, ch in enumerate(text):
        if quote:
            mask[i] = True
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote, mask[i] = ch, True
    return mask


def _call_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of every function call of ``text`` that may be computed on its own: outside
    literals and outside a lambda's body (whose names may be the lambda's variables)."""
    mask = _quoted(text)
    calls = []
    for m in _CALL.finditer(text):
        i = m.start()
        if mask[i] or (i and (text[i - 1].isalnum() or text[i - 1] in "_.\"")) or \
                m.group(0).rstrip("( ").upper() in _KEYWORDS:
            continue
        depth, j = 0, m.end() - 1
        while j < len(text):
            if not mask[j]:
                depth += text[j] == "("
                depth -= text[j] == ")"
                if depth == 0:
                    break
            j += 1
        if depth == 0:
            calls.append((i, j + 1))
    lambdas = []
    for m in _LAMBDA.finditer(text):
        if mask[m.start()]:
            continue
        inner = [c for c in calls if c[0] < m.start() < c[1]]      # the call the lambda is an argument of
        if inner:
            lambdas.append((m.start(), min(inner, key=lambda c: c[1] - c[0])[1]))
    return [c for c in calls if not any(a <= c[0] < b for a, b in lambdas)]


def hoist_common_calls(flags: Sequence[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Common sub-expressions of the rules' flags, computed once per row instead of once per rule.

    The rules of a data set repeat expensive calls (the GB 11643 check digit in three rules, a date
    parsed in five); DuckDB evaluates each occurrence. A call (function + arguments, no window, no
    subquery, not inside a lambda) that occurs at least twice is computed once in an inner select
    as ``_hlq_cseN`` and the flags read that column: the same values, row for row (longest calls
    first, so nested repeats go with them). Returns (flags, [(name, expression), ...]).
    """
    texts, hoisted = list(flags), []
    while True:
        counts: dict[str, int] = defaultdict(int)
        for t in texts:
            for a, b in _call_spans(t):
                call = t[a:b]
                if len(call) >= _CSE_MIN_LENGTH and not _NOT_HOISTED.search(call) and CSE_PREFIX not in call:
                    counts[call] += 1
        repeated = [c for c, n in counts.items() if n >= 2]
        if not repeated:
            return texts, hoisted
        best = max(repeated, key=lambda c: (len(c), c))
        name = f"{CSE_PREFIX}{len(hoisted)}"
        hoisted.append((name, best))
        out = []
        for t in texts:
            for a, b in sorted(_call_spans(t), reverse=True):
                if t[a:b] == best and not any(x < a and b < y and t[x:y] == best for x, y in _call_spans(t)):
                    t = t[:a] + name + t[b:]
            out.append(t)
        texts = out


def combined_counts_sql(rules: Sequence[Rule], critical: Sequence[str], scope: str = SCOPE_VIEW,
                        windowed: str | None = None, cse: bool = True) -> str:
    """One pass over ``scope``: per batch, the failing rows of each rule (columns in rule order) and,
    last, the rows failing at least one of the ``critical`` rule ids (all of which must be in ``rules``).

    ``windowed``: a table (``_rid`` plus one boolean column per rule id, see ``windowed_flags_sql``)
    holding the failing rows of the rules whose flag has a window; those flags are read from it by
    the row id ``_rid`` (``scope`` must have it) instead of being computed in this pass. Without a
    window the pass streams: no row is materialised, whatever the size of the batch.
    """
    flags = [(r.id, failing_flag_sql(r)) for r in rules]
    crit = " OR ".join(quote_ident(c) for c in critical) or "false"
    counts = ", ".join(f"count_if({quote_ident(rid)})" for rid, _ in flags)
    batch = _BATCH_SQL.format(scope=scope)
    computed = [(rid, f) for rid, f in flags if windowed is None or not _has_window(f)]
    if cse:
        texts, hoisted = hoist_common_calls([f for _, f in computed])
        computed = [(rid, t) for (rid, _), t in zip(computed, texts)]
        if hoisted:
            batch = (f"(SELECT *, {', '.join(f'{e} AS {n}' for n, e in hoisted)} FROM {batch}) AS subselect")
    if windowed is None:
        cols = ", ".join(f"{f} AS {quote_ident(rid)}" for rid, f in computed)
        return (f"SELECT _batch_id, {counts}, count_if({crit}) FROM ("
                f"SELECT _batch_id, {cols} FROM {batch}) AS _flags GROUP BY _batch_id")
    cols = ", ".join(["_rid", "_batch_id"] + [f"{f} AS {quote_ident(rid)}" for rid, f in computed])
    outer = ", ".join(f"_flags.{quote_ident(rid)}" if not _has_window(f) else f"coalesce(_w.{quote_ident(rid)}, false) AS {quote_ident(rid)}"
                      for rid, f in flags)
    return (f"SELECT _batch_id, {counts}, count_if({crit}) FROM ("
            f"SELECT _flags._batch_id, {outer} FROM (SELECT {cols} FROM {batch}) AS _flags "
            f"LEFT JOIN {windowed} AS _w ON _w._rid = _flags._rid) AS _all GROUP BY _batch_id")


def _has_window(flag: str | None) -> bool:
    return flag is not None and " OVER (" in flag


def windowed_flags_sql(rules: Sequence[Rule], scope: str) -> str:
    """The failing rows (``_rid`` and one boolean per rule) of the rules whose flag has a window.

    A window materialises the rows it sees; here it sees only the columns its rules name (the
    duplicate rules: batch, row hash, row number), not the wide rows of the one-pass select. The
    flags are the same expressions over the same rows as in ``combined_counts_sql``; few rows fail,
    so the result is small.
    """
    flags = [(r.id, failing_flag_sql(r)) for r in rules]
    cols = ", ".join(f"{f} AS {quote_ident(rid)}" for rid, f in flags)
    anyf = " OR ".join(quote_ident(rid) for rid, _ in flags)
    return (f"SELECT * FROM (SELECT _rid, {cols} FROM {_BATCH_SQL.format(scope=scope)}) AS _flags "
            f"WHERE {anyf}")


# --- running ----------------------------------------------------------------------------------

def bronze_datasets(rules_dir: str | Path | None = None) -> list[str]:
    """Data sets with a ``bronze.<dataset>.yaml`` rules file."""
    d = Path(rules_dir) if rules_dir else RULES_DIR
    return sorted(p.name[len("bronze."):-len(".yaml")] for p in d.glob("bronze.*.yaml"))


def rules_for_dataset(dataset: str, rules_dir: str | Path | None = None) -> RuleFile:
    path = (Path(rules_dir) if rules_dir else RULES_DIR) / f"bronze.{dataset}.yaml"
    if not path.exists():
        import difflib

        known = bronze_datasets(rules_dir)
        close = difflib.get_close_matches(dataset, known, n=1)
        raise QualityError(f"no rules file {path.name}" + (f" (did you mean '{close[0]}'?)" if close else "")
                           + f"; data sets with rules: {', '.join(known)}")
    return load_rules_file(path)


def _loaded_batches(con, batch_ids: Sequence[str] | None) -> dict[str, list[tuple]]:
    """``ops.ingest_batch`` data set → (batch_id, institution_code, feed) of its loaded batches (in
    ``batch_ids``)."""
    where, params = "", []
    if batch_ids is not None:
        where, params = " AND batch_id IN (SELECT unnest(?::VARCHAR[]))", [list(batch_ids)]
    out: dict[str, list[tuple]] = {}
    for d, b, i, f in con.execute(
            f"SELECT dataset, batch_id, institution_code, feed FROM {LAKE}.ops.ingest_batch "
            f"WHERE status = 'loaded'{where}", params).fetchall():
        out.setdefault(d, []).append((b, i, f))
    return out


def _scope_batches(con, dataset: str, batch_ids: Sequence[str] | None,
                   loaded: dict[str, list[tuple]]) -> list[tuple[str, str, str | None, int]]:
    """(batch_id, institution_code, feed, rows) of every loaded batch in scope, empty ones included.
    ``loaded``: ``_loaded_batches(con, batch_ids)``."""
    table = f"{LAKE}.bronze.{dataset}"
    params = [] if batch_ids is None else [list(batch_ids)]
    ops = loaded.get(dataset, [])
    bwhere = "" if batch_ids is None else " WHERE _batch_id IN (SELECT unnest(?::VARCHAR[]))"
    rows = con.execute(f"SELECT _batch_id, any_value(_institution_code), any_value(_feed), count(*) FROM {table}"
                       f"{bwhere} GROUP BY 1", params).fetchall()
    out = {b: (b, i, f, n) for b, i, f, n in rows}
    for b, i, f in ops:
        out.setdefault(b, (b, i, f, 0))
    return sorted(out.values())


def _feed_thresholds(con) -> dict[tuple[str, str], float]:
    try:
        return {(i, f): float(t) for i, f, t in con.execute(
            f"SELECT institution_code, feed, quality_threshold FROM {LAKE}.{SCHEMA}.ref_feed "
            f"WHERE quality_threshold IS NOT NULL").fetchall()}
    except Exception:
        return {}


def run_dataset_rules(dataset: str, batch_ids: Sequence[str] | None = None, settings: Settings | None = None, *,
                      rules: RuleFile | Iterable[Rule] | None = None, run_id: str | None = None,
                      run_at: datetime | None = None, store: bool = True, gx: bool = False,
                      registry=None, keep_failures: bool = False, con=None, sync: bool = True,
                      loaded: dict[str, list[tuple]] | None = None,
                      thresholds: dict[tuple[str, str], float] | None = None, strict: bool = False) -> DatasetRun:
    """Score the rules of ``bronze.<dataset>`` per institution and per batch.

    ``batch_ids``: only these batches (default: every batch of the data set). One scan of the rows in
    scope for every rule (per-rule queries when that fails); the results go to ``quality.rule_result_by_institution`` and
    ``quality.batch_score`` (when ``store``). With ``gx=True`` GX also validates the whole table
    (the engine of record; stored in ``quality.rule_result`` under the same run id).
    ``keep_failures``: leave the temporary failing-row table ``_quality_fail`` (rule_id, _batch_id,
    _source_row) on ``con`` for the caller (the rectification lists use it). ``loaded`` and
    ``thresholds``: ``_loaded_batches`` and ``_feed_thresholds``, when the caller read them for
    several data sets (asking the lake's information_schema whether ``ops.ingest_batch`` exists right
    after a commit reloads its whole catalog: ~0.3 s of CPU). ``strict``: a failing query raises instead of being retried rule by rule
    (inside a transaction, which DuckDB aborts at its first error: ``strict_in_one_transaction``).
    """
    from quality.reference import sync_reference

    s = settings or load_settings()
    rule_file = rules if isinstance(rules, RuleFile) else None
    if rules is None:
        rule_file = rules_for_dataset(dataset)
    if rule_file is not None:
        rule_list = tuple(rule_file.rules)
    else:
        from quality.catalogue import parse_rules

        rule_list = parse_rules(rules)
    run_id = run_id or uuid.uuid4().hex
    run_at = run_at or datetime.now(timezone.utc)
    timings: dict[str, float] = {}
    own = con is None
    con = con or connect(s)
    try:
        if sync:  # run_bronze_rules syncs once for all data sets
            t0 = time.perf_counter()
            sync_reference(con, s, registry=registry)
            timings["reference"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        if loaded is None:
            loaded = _loaded_batches(con, batch_ids) if table_exists(con, "ops", "ingest_batch") else {}
        batches = _scope_batches(con, dataset, batch_ids, loaded)
        if thresholds is None:
            thresholds = _feed_thresholds(con)
        default = gate_threshold()
        ids = [b[0] for b in batches]
        scope_where = ("" if batch_ids is None else
                       " WHERE _batch_id IN (" + (", ".join(_lit(b) for b in ids) or "NULL") + ")")
        con.execute(f"CREATE OR REPLACE TEMP VIEW {SCOPE_VIEW} AS SELECT * FROM {LAKE}.bronze.{dataset}{scope_where}")
        # the same rows with their row id (DuckLake's rowid: unique and stable), for the windowed rules
        con.execute(f"CREATE OR REPLACE TEMP VIEW {SCOPE_RID_VIEW} AS SELECT rowid AS _rid, * "
                    f"FROM {LAKE}.bronze.{dataset}{scope_where}")
        con.execute(f"CREATE OR REPLACE TEMP TABLE {FAIL_TABLE} (rule_id VARCHAR, _batch_id VARCHAR, _source_row BIGINT)")
        timings["scope"] = time.perf_counter() - t0
        errors: dict[str, str] = {}
        t0 = time.perf_counter()
        # One scan for every rule that selects rows of the batch one for one; the rest (and all of
        # them, if the combined pass fails: a broken rule must be ERROR alone) one query per rule.
        combined = [r for r in rule_list if failing_flag_sql(r) is not None]
        single = [r for r in rule_list if r not in combined]
        critical = [r.id for r in rule_list if r.severity == "critical"]
        failed = defaultdict(int)
        # Counts only (no failing-row ids wanted) and every critical rule in the pass: aggregate in it.
        fast_crit: dict[str, int] | None = None
        if not keep_failures and len(combined) > 1 and set(critical) <= {r.id for r in combined}:
            try:
                fast_crit = {}
                windowed = [r for r in combined if _has_window(failing_flag_sql(r))]
                if windowed:  # first the windows, on the few columns they need; then one streaming pass
                    con.execute(f"CREATE OR REPLACE TEMP TABLE {WINDOW_TABLE} AS "
                                f"{windowed_flags_sql(windowed, SCOPE_RID_VIEW)}")
                scope, wtable = (SCOPE_RID_VIEW, WINDOW_TABLE) if windowed else (SCOPE_VIEW, None)
                try:
                    rows = con.execute(combined_counts_sql(combined, critical, scope, wtable)).fetchall()
                except Exception as e:  # noqa: BLE001 - a hoisted call may fail on a row its rule's guard skips
                    if strict:
                        raise
                    log.info("quality: one pass over %s with shared sub-expressions failed (%s); without", dataset,
                             _short(e))
                    rows = con.execute(combined_counts_sql(combined, critical, scope, wtable, cse=False)).fetchall()
                for row in rows:
                    for r, n in zip(combined, row[1:-1]):
                        if n:
                            failed[(r.id, row[0])] = n
                    fast_crit[row[0]] = row[-1]
            except Exception as e:  # noqa: BLE001 - find the broken rule(s) one by one below
                if strict:
                    raise
                log.info("quality: combined pass over %s failed (%s); rules run one by one", dataset, _short(e))
                failed.clear()
                fast_crit = None
                single = list(rule_list)
        elif len(combined) > 1:
            try:
                con.execute(f"INSERT INTO {FAIL_TABLE} {combined_failing_rows_sql(combined, SCOPE_VIEW)}")
            except Exception as e:  # noqa: BLE001 - find the broken rule(s) one by one below
                if strict:
                    raise
                log.info("quality: combined pass over %s failed (%s); rules run one by one", dataset, _short(e))
                single = list(rule_list)
        else:
            single = list(rule_list)
        for rule in single:
            try:
                sql = failing_rows_sql(rule, SCOPE_VIEW)
                con.execute(f"INSERT INTO {FAIL_TABLE} SELECT {_lit(rule.id)}, _batch_id, _source_row FROM ({sql})")
            except Exception as e:  # one broken rule is ERROR alone
                if strict:
                    raise
                errors[rule.id] = _short(e)
        timings["rules_sql"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        for rid, b, n in con.execute(f"SELECT rule_id, _batch_id, count(*) FROM {FAIL_TABLE} GROUP BY ALL").fetchall():
            failed[(rid, b)] = n
        if fast_crit is not None:
            crit_fail = {b: (n, sorted(c for c in critical if failed.get((c, b)))) for b, n in fast_crit.items() if n}
        else:
            crit_fail = {b: (n, rl) for b, n, rl in con.execute(
                f"SELECT _batch_id, count(DISTINCT _source_row), list(DISTINCT rule_id ORDER BY rule_id) FROM {FAIL_TABLE} "
                f"WHERE rule_id IN (SELECT unnest(?::VARCHAR[])) GROUP BY 1", [critical]).fetchall()}
        con.execute(f"DROP TABLE IF EXISTS {WINDOW_TABLE}")
        con.execute(f"DROP VIEW IF EXISTS {SCOPE_RID_VIEW}")
        if not keep_failures:
            con.execute(f"DROP TABLE IF EXISTS {FAIL_TABLE}")
            con.execute(f"DROP VIEW IF EXISTS {SCOPE_VIEW}")

        results: list[GroupResult] = []
        scores: list[BatchScore] = []
        for batch_id, inst, feed, rows in batches:
            for rule in rule_list:
                threshold = float(rule.threshold)
                base = dict(dataset=dataset, institution_code=inst, feed=feed, batch_id=batch_id, rule_id=rule.id,
                            rule_name=rule.name, severity=rule.severity, dimension=rule.dimension,
                            rows_checked=rows, threshold=threshold)
                if rule.id in errors:
                    results.append(GroupResult(**base, rows_failed=None, pass_rate=None, status=ERROR,
                                               message=f"规则无法执行：{errors[rule.id]}"))
                elif rows == 0:
                    results.append(GroupResult(**base, rows_failed=None, pass_rate=None, status=NOT_APPLICABLE,
                                               message="批次中没有数据，规则不适用"))
                else:
                    n = failed.get((rule.id, batch_id), 0)
                    if n > rows:
                        results.append(GroupResult(**base, rows_failed=None, pass_rate=None, status=ERROR,
                                                   message=f"规则无法执行：查询返回 {n} 行，多于批次的 {rows} 行"))
                        continue
                    rate = (rows - n) / rows
                    status = PASS if rate >= threshold - 1e-12 else FAIL
                    results.append(GroupResult(**base, rows_failed=n, pass_rate=rate, status=status,
                                               message=f"检查 {rows} 行，不合格 {n} 行，合格率 {rate * 100:.2f}%"))
            threshold = thresholds.get((inst, feed), default)
            n_fail, which = crit_fail.get(batch_id, (0, []))
            crit_errors = [r for r in critical if r in errors]
            if rows == 0:
                scores.append(BatchScore(dataset, inst, feed, batch_id, 0, None, None, threshold, NOT_APPLICABLE))
            elif crit_errors:
                scores.append(BatchScore(dataset, inst, feed, batch_id, rows, None, None, threshold, ERROR,
                                         tuple(crit_errors)))
            else:
                rate = (rows - n_fail) / rows
                scores.append(BatchScore(dataset, inst, feed, batch_id, rows, rows - n_fail, rate, threshold,
                                         PASS if rate >= threshold - 1e-12 else FAIL, tuple(which)))
        timings["aggregate"] = time.perf_counter() - t0
        run = DatasetRun(dataset, run_id, run_at, results, scores, errors, seconds=timings)
        if store:
            t0 = time.perf_counter()
            _store_runs(con, [run])
            timings["store"] = time.perf_counter() - t0
    finally:
        if own:
            con.close()
    if gx:
        from quality.runner import run_table_rules, store_results

        t0 = time.perf_counter()
        run.gx_results = run_table_rules(f"bronze.{dataset}", list(rule_list), settings=s)
        if store:
            store_results(run.gx_results, run_id, run_at, settings=s)
        timings["gx_whole_table"] = time.perf_counter() - t0
    return run


def _store_runs(con, runs: Sequence[DatasetRun]) -> None:
    """The group results and batch scores of data set runs: one append per table for all of them.
    A ``GroupResult``'s fields are plain values: its ``vars`` are its ``asdict`` without the deep
    copy (5,800 results on the demo gate: 0.8 s of profiled CPU)."""
    _store(con, GROUP_TABLE, GROUP_COLUMNS, [
        {"run_id": run.run_id, "run_at": run.run_at, **vars(r)} for run in runs for r in run.results])
    _store(con, BATCH_SCORE_TABLE, BATCH_COLUMNS, [
        {"run_id": run.run_id, "run_at": run.run_at, **asdict(b),
         "critical_rules_failed": ",".join(b.critical_rules_failed)} for run in runs for b in run.batches])


def _store(con, table: str, columns: Sequence[tuple[str, str]], rows: list[dict]) -> None:
    """Append rows to a lake table in one statement (one DuckLake snapshot)."""
    import pyarrow as pa

    con.execute(f"CREATE SCHEMA IF NOT EXISTS {LAKE}.{SCHEMA}")
    con.execute(f"CREATE TABLE IF NOT EXISTS {LAKE}.{table} ({', '.join(f'{n} {t}' for n, t in columns)})")
    if not rows:
        return
    pa_types = {"VARCHAR": pa.string(), "BIGINT": pa.int64(), "DOUBLE": pa.float64(), "BOOLEAN": pa.bool_(),
                "TIMESTAMP WITH TIME ZONE": pa.timestamp("us", tz="UTC")}
    names = [n for n, _ in columns]
    arrow = pa.Table.from_pylist([{n: r.get(n) for n in names} for r in rows],
                                 schema=pa.schema([(n, pa_types[t]) for n, t in columns]))
    con.register("_quality_new_rows", arrow)
    try:
        con.execute(f"INSERT INTO {LAKE}.{table} ({', '.join(names)}) SELECT {', '.join(names)} FROM _quality_new_rows")
    finally:
        con.unregister("_quality_new_rows")


# --- institution and platform ----------------------------------------------------------------

def score_institutions(batches: Iterable[BatchScore], threshold: float = DEFAULT_THRESHOLD) -> list[InstitutionScore]:
    """An institution's 合格率 = its rows passing every critical rule ÷ its rows (batches with rows).

    A batch whose critical rules could not run (ERROR) counts as not passing: a score is never
    better for a broken rule.
    """
    acc: dict[str, dict] = {}
    for b in batches:
        a = acc.setdefault(b.institution_code, {"datasets": set(), "batches": 0, "rows": 0, "passing": 0})
        a["datasets"].add(b.dataset)
        a["batches"] += 1
        if b.rows_checked:
            a["rows"] += b.rows_checked
            a["passing"] += b.rows_passing or 0
    out = []
    for code in sorted(acc):
        a = acc[code]
        rate = a["passing"] / a["rows"] if a["rows"] else None
        out.append(InstitutionScore(code, tuple(sorted(a["datasets"])), a["batches"], a["rows"], a["passing"], rate,
                                    threshold, rate is not None and rate >= threshold - 1e-12))
    return out


def platform_pass_rate(institutions: Iterable[InstitutionScore]) -> float | None:
    """Share of institutions (with rows) whose 合格率 is at or above the threshold (平台数据质量合格率)."""
    scored = [i for i in institutions if i.pass_rate is not None]
    return sum(i.meets_threshold for i in scored) / len(scored) if scored else None


def run_bronze_rules(datasets: Sequence[str] | None = None, batch_ids: Sequence[str] | None = None,
                     settings: Settings | None = None, *, store: bool = True, gx: bool = False,
                     threshold: float | None = None, registry=None, con=None) -> BronzeRun:
    """Every bronze data set with rules (or ``datasets``), one run id; stores institution scores too.
    ``con``: an open lake connection (read-write) to use instead of a new one. The data sets' results
    are stored together at the end, one append per table (a DuckLake commit each: 3 instead of 35 on
    the demo's 17 data sets)."""
    s = settings or load_settings()
    threshold = gate_threshold() if threshold is None else threshold
    run_id, run_at = uuid.uuid4().hex, datetime.now(timezone.utc)
    names = list(datasets) if datasets is not None else bronze_datasets()
    runs: dict[str, DatasetRun] = {}
    from quality.reference import sync_reference

    with (contextlib.nullcontext(con) if con is not None else contextlib.closing(connect(s))) as con:
        sync_reference(con, s, registry=registry)
        existing = set(con.execute(
            "SELECT table_schema, table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE' "
            "AND table_catalog = ? AND table_schema IN ('bronze', 'ops')", [LAKE]).fetchall())
        has_ops = ("ops", "ingest_batch") in existing
        loaded = _loaded_batches(con, batch_ids) if has_ops else {}     # one query for every data set
        thresholds = _feed_thresholds(con)
        for name in names:
            if ("bronze", name) not in existing:
                log.info("quality: bronze.%s is not in the lake yet", name)
                continue
            # its ~10 statements in one read transaction (17 data sets on the demo)
            runs[name] = strict_in_one_transaction(con, functools.partial(
                run_dataset_rules, name, batch_ids, s, run_id=run_id, run_at=run_at, store=False, gx=False,
                con=con, sync=False, loaded=loaded, thresholds=thresholds), f"quality: {name}")
        institutions = score_institutions([b for r in runs.values() for b in r.batches], threshold)
        if store:  # the three appends in one transaction: one DuckLake snapshot, all or nothing
            with one_transaction(con):
                _store_runs(con, list(runs.values()))
                _store(con, INSTITUTION_SCORE_TABLE, INSTITUTION_COLUMNS, [
                    {"run_id": run_id, "run_at": run_at, **asdict(i), "datasets": ",".join(i.datasets)}
                    for i in institutions])
    if gx:
        from quality.runner import run_table_rules, store_results

        for name, r in runs.items():
            r.gx_results = run_table_rules(f"bronze.{name}", rules_for_dataset(name), settings=s)
            if store:
                store_results(r.gx_results, run_id, run_at, settings=s)
    return BronzeRun(run_id, run_at, runs, institutions, platform_pass_rate(institutions), threshold)

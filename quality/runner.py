"""Run the rule catalogue against lake tables with GX (SQL pushed down to DuckDB) and store results.

Row-level pass rate (数据质量合格率) of a rule = rows passing / rows checked, where

* ``rows_checked`` is every row of the table, for every rule;
* ``rows_failed`` depends on the expectation:
  - column-map expectations (not_null, in_set, match_regex, unique, ...): GX's ``unexpected_count``.
    GX evaluates those over non-null values only, so a null *passes* a validity/uniqueness rule:
    nulls are the business of completeness rules. ``expect_column_values_to_not_be_null`` counts
    nulls as its unexpected rows; for any other column-map expectation filed under the
    ``completeness`` dimension the nulls (``missing_count``) are added to the failures.
  - uniqueness (``expect_column_values_to_be_unique``): every row whose value occurs more than
    once fails, the first occurrence included (a value seen 3 times fails 3 rows).
  - ``unexpected_rows_expectation`` (SQL-native rules): the number of rows its query returns; the
    query must return one row per failing table row.
  - any other (table-level / aggregate) expectation has no row count: ``rows_failed`` and
    ``pass_rate`` are None and the status is GX's success.
* ``status``: ``PASS`` when pass_rate >= threshold, else ``FAIL``; ``ERROR`` when the rule could not
  be evaluated (missing column, bad regex, bad kwargs, missing table), without affecting the
  others; ``NOT_APPLICABLE`` when the table has no rows.

Unexpected *values* are never put in messages or stored: they are personal data (ID numbers...).
"""

from __future__ import annotations

import contextlib
import logging
import re
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from healthlake.config import Settings, settings as load_settings
from healthlake.lake import LAKE, connect, lake_tables
from quality.catalogue import Rule, RuleFile, load_catalogue, load_rules_file, parse_rules
from quality.errors import QualityError

__all__ = ["RuleResult", "QualityRun", "run_table_rules", "run_all", "store_results", "RESULT_TABLE",
           "PASS", "FAIL", "ERROR", "NOT_APPLICABLE"]

log = logging.getLogger(__name__)

PASS, FAIL, ERROR, NOT_APPLICABLE = "PASS", "FAIL", "ERROR", "NOT_APPLICABLE"
RESULT_SCHEMA = "quality"
RESULT_TABLE = f"{RESULT_SCHEMA}.rule_result"
RESULT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("run_id", "VARCHAR"), ("run_at", "TIMESTAMP WITH TIME ZONE"), ("table_name", "VARCHAR"),
    ("rule_id", "VARCHAR"), ("rule_name", "VARCHAR"), ("dimension", "VARCHAR"), ("severity", "VARCHAR"),
    ("status", "VARCHAR"), ("rows_checked", "BIGINT"), ("rows_failed", "BIGINT"), ("pass_rate", "DOUBLE"),
    ("threshold", "DOUBLE"), ("message", "VARCHAR"),
)
_ROW_COUNT_ID = "__row_count__"
_NOT_NULL = "expect_column_values_to_not_be_null"
_UNEXPECTED_ROWS = "unexpected_rows_expectation"
# Counts only: no unexpected values fetched (they are personal data, and the query costs a scan).
_RESULT_FORMAT = {"result_format": "BASIC", "partial_unexpected_count": 0}
_MAX_MESSAGE = 400


@dataclass(frozen=True)
class RuleResult:
    table_name: str
    rule_id: str
    rule_name: str
    dimension: str
    severity: str
    status: str                 # PASS | FAIL | ERROR | NOT_APPLICABLE
    rows_checked: int | None    # all rows of the table
    rows_failed: int | None
    pass_rate: float | None     # (rows_checked - rows_failed) / rows_checked
    threshold: float
    message: str


@dataclass(frozen=True)
class QualityRun:
    run_id: str
    run_at: datetime
    results: list[RuleResult]
    tables_run: list[str] = field(default_factory=list)
    tables_skipped: list[str] = field(default_factory=list)   # rules file present, table not in the lake


def _result(table: str, rule: Rule, status: str, message: str, rows_checked=None, rows_failed=None,
            pass_rate=None) -> RuleResult:
    return RuleResult(table_name=table, rule_id=rule.id, rule_name=rule.name, dimension=rule.dimension,
                      severity=rule.severity, status=status, rows_checked=rows_checked,
                      rows_failed=rows_failed, pass_rate=pass_rate, threshold=float(rule.threshold),
                      message=message)


def _resolve_rules(table: str, rules: str | Path | RuleFile | Iterable[Rule | Mapping[str, Any]]) -> tuple[Rule, ...]:
    if isinstance(rules, (str, Path)):
        rules = load_rules_file(rules)
    if isinstance(rules, RuleFile):
        if rules.table != table:
            raise QualityError(f"{rules.path or 'rules file'} is for table {rules.table}, not {table}")
        return rules.rules
    return parse_rules(rules)


# DuckDB quotes the offending value in cast/parse errors ("Could not convert string '5110...' to
# INT32"): that value is personal data and must not reach stored results or reports.
_QUOTED_VALUE = re.compile(r"\b(string|value) '(?:[^']|'')*'")


def _short(message: str) -> str:
    """First meaningful part of a GX/DuckDB error: no SQL echo, no data values, bounded length."""
    text = str(message).split("\n[SQL:")[0].split("(Background on this error at:")[0].strip()
    text = _QUOTED_VALUE.sub(r"\1 '…'", " ".join(text.split()))
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 1] + "…"


def _exception_message(gx_result) -> str | None:
    info = getattr(gx_result, "exception_info", None) or {}
    if info.get("raised_exception"):
        return _short(info.get("exception_message") or "error")
    for value in info.values():
        if isinstance(value, Mapping) and value.get("raised_exception"):
            return _short(value.get("exception_message") or "error")
    return None


def _pct(x: float) -> str:
    return f"{x * 100:.2f}%"


def _interpret(table: str, rule: Rule, gx_result, row_count: int) -> RuleResult:
    error = _exception_message(gx_result)
    if error:
        return _result(table, rule, ERROR, f"规则无法执行：{error}")
    res = gx_result.result or {}
    row_level = rule.expectation == _UNEXPECTED_ROWS or "unexpected_count" in res
    if row_level and row_count == 0:
        return _result(table, rule, NOT_APPLICABLE, "表中没有数据，规则不适用", rows_checked=0)
    if rule.expectation == _UNEXPECTED_ROWS:
        failed = res.get("observed_value")
        if not isinstance(failed, int):
            return _result(table, rule, ERROR, "规则无法执行：GX 未返回不合格行数")
        if failed > row_count:
            return _result(table, rule, ERROR,
                           f"规则无法执行：查询返回 {failed} 行，多于表的 {row_count} 行；"
                           f"unexpected_rows_query 必须每个不合格行只返回一行")
    elif "unexpected_count" in res:
        failed = int(res["unexpected_count"])
        if rule.dimension == "completeness" and rule.expectation != _NOT_NULL:
            failed += int(res.get("missing_count") or 0)
    else:
        status = PASS if gx_result.success else FAIL
        observed = res.get("observed_value")
        obs = f"，观测值 {observed}" if observed is not None and not isinstance(observed, (list, dict)) else ""
        return _result(table, rule, status, f"表级规则{'通过' if status == PASS else '未通过'}{obs}",
                       rows_checked=row_count)
    pass_rate = (row_count - failed) / row_count
    # A hair of tolerance so that e.g. 95/100 against 0.95 is not lost to floating point.
    status = PASS if pass_rate >= rule.threshold - 1e-12 else FAIL
    verdict = "达到" if status == PASS else "低于"
    message = (f"检查 {row_count} 行，不合格 {failed} 行，合格率 {_pct(pass_rate)}，"
               f"{verdict}阈值 {_pct(rule.threshold)}")
    return _result(table, rule, status, message, rows_checked=row_count, rows_failed=failed,
                   pass_rate=pass_rate)


def run_table_rules(table: str, rules: str | Path | RuleFile | Iterable[Rule | Mapping[str, Any]],
                    settings: Settings | None = None, context=None, *, docs_run_id: str | None = None,
                    lake_con=None, refresh_reference: bool = True, docs_index: bool = True,
                    transaction: bool = False) -> list[RuleResult]:
    """Evaluate ``rules`` on lake table ``table`` ('<schema>.<table>'); one RuleResult per rule, in order.

    ``rules`` is a rules file path, a loaded RuleFile, or a list of Rule objects / rule dicts. All
    rules run as one GX suite on one read-only DuckDB connection (GX bundles the column metrics of a
    table into few scans); a rule that fails to evaluate is ERROR and the others still run.
    ``docs_run_id``: also write this validation's GX Data Docs page (self-contained, see
    ``quality.data_docs``) under that run id. ``lake_con``: an open lake connection (read-only is
    enough with ``refresh_reference=False``) that GX's connections are cursors of, instead of new
    connections: several tables in a row share one. ``refresh_reference=False``: the caller already
    refreshed the reference tables in this run. ``docs_index=False``: the Data Docs index is left
    to the caller (several tables in a row: written once after them). ``transaction``: GX's
    statements read in one DuckDB transaction (one DuckLake snapshot for the table's ~20 queries);
    DuckDB aborts it at the first failing statement, so when any rule errors (or anything fails)
    the table is validated again in autocommit mode, where each rule errs alone, as without it.
    """
    import great_expectations as gx

    from quality.gx_duckdb import get_context, lake_batch, split_table

    schema, _ = split_table(table)
    rules = _resolve_rules(table, rules)
    if not rules:
        return []
    if schema == "bronze" or any("quality.ref_" in str(r.kwargs.get("unexpected_rows_query", "")) for r in rules):
        if refresh_reference:
            _ensure_reference(settings, lake_con)

    results: dict[str, RuleResult] = {}
    expectations = {}
    for rule in rules:
        try:
            expectations[rule.id] = rule.build_expectation()
        except Exception as e:  # pydantic validation of kwargs, e.g. a missing `column`
            results[rule.id] = _result(table, rule, ERROR, f"规则配置错误：{_short(e)}")
    expectations[_ROW_COUNT_ID] = gx.expectations.ExpectTableRowCountToBeBetween(
        min_value=0, meta={"rule_id": _ROW_COUNT_ID})

    context = context or get_context()
    suite = gx.ExpectationSuite(name=f"healthlake:{table}", expectations=list(expectations.values()))

    def validate(held: bool):
        """GX's results by rule id, validated in one held transaction or in autocommit mode. When
        several metrics of one bundled query fail, GX gives all of them the *last* error's message
        (ExecutionEngine._process_direct_and_bundled_metric_computation_configurations): in
        autocommit mode each erroring rule is validated again alone, so its message is its own."""
        with lake_batch(table, settings=settings, context=context, lake_con=lake_con, transaction=held) as batch:
            outcome = batch.validate(suite, result_format=_RESULT_FORMAT)
            by_id = {r.expectation_config.meta.get("rule_id"): r for r in outcome.results}
            failed = [rid for rid, r in by_id.items() if _exception_message(r)]
            if held and failed:  # the first error aborted the transaction: the later results are its
                return None, None
            if len(failed) > 1:
                for rid in failed:
                    by_id[rid] = batch.validate(expectations[rid], result_format=_RESULT_FORMAT)
        return outcome, by_id

    outcome = by_id = None
    try:
        if transaction:
            try:
                outcome, by_id = validate(held=True)
                if outcome is None:
                    log.info("quality: %s has an erring rule; validated again in autocommit mode", table)
            except Exception as e:  # noqa: BLE001 - again without the transaction, which reports it as before
                log.info("quality: %s in one transaction failed (%s); again in autocommit mode", table, _short(e))
        if outcome is None:
            outcome, by_id = validate(held=False)
    except Exception as e:  # the table is missing or unreadable: every rule is ERROR
        message = f"无法读取表 {table}：{_short(getattr(e, 'cause', None) or e)}"
        log.warning("quality: %s", message)
        return [results.get(r.id) or _result(table, r, ERROR, message) for r in rules]
    if docs_run_id is not None:
        try:
            from quality.data_docs import write_data_docs

            write_data_docs(outcome, table, docs_run_id, settings=settings, index=docs_index)
        except Exception as e:  # noqa: BLE001 - the docs are a view of the result, never its cause
            log.warning("quality: could not write the Data Docs of %s: %s", table, _short(e))

    count_result = by_id.get(_ROW_COUNT_ID)
    row_count = (count_result.result or {}).get("observed_value") if count_result is not None else None
    if not isinstance(row_count, int):
        why = _exception_message(count_result) if count_result is not None else None
        message = f"无法统计表 {table} 的行数：{why or '未知原因'}"
        return [results.get(r.id) or _result(table, r, ERROR, message) for r in rules]

    for rule in rules:
        if rule.id in results:
            continue
        gx_result = by_id.get(rule.id)
        if gx_result is None:
            results[rule.id] = _result(table, rule, ERROR, "规则无法执行：GX 没有返回该规则的结果")
        else:
            results[rule.id] = _interpret(table, rule, gx_result, row_count)
    return [results[r.id] for r in rules]


def _ensure_reference(settings: Settings | None, con=None) -> None:
    """The bronze rules (and a few mart rules) join to ``lake.quality.ref_*`` (quality/reference.py): create or
    refresh them.

    Best effort: when another writer holds the catalog the tables are normally already there (the
    sync writes only on change); a rule whose reference table is missing is ERROR on its own.
    """
    from quality.reference import sync_reference

    try:
        if con is not None:
            sync_reference(con, settings)
            return
        with contextlib.closing(connect(settings or load_settings())) as own:
            sync_reference(own, settings)
    except Exception as e:  # noqa: BLE001 - reported per rule if it matters
        log.warning("quality: could not refresh the reference tables: %s", _short(e))


def ensure_result_table(con) -> None:
    """Create lake.quality.rule_result if it is missing (empty until a validation stores results)."""
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {LAKE}.{RESULT_SCHEMA}")
    cols = ", ".join(f"{n} {t}" for n, t in RESULT_COLUMNS)
    con.execute(f"CREATE TABLE IF NOT EXISTS {LAKE}.{RESULT_TABLE} ({cols})")


def store_results(results: Sequence[RuleResult], run_id: str, run_at: datetime,
                  settings: Settings | None = None, con=None) -> int:
    """Append results to ``lake.quality.rule_result`` in one statement (one snapshot, one file)."""
    import pyarrow as pa

    if not results:
        return 0
    rows = [{"run_id": run_id, "run_at": run_at, **asdict(r)} for r in results]
    names = [n for n, _ in RESULT_COLUMNS]
    arrow = pa.Table.from_pylist([{n: row[n] for n in names} for row in rows], schema=pa.schema([
        ("run_id", pa.string()), ("run_at", pa.timestamp("us", tz="UTC")), ("table_name", pa.string()),
        ("rule_id", pa.string()), ("rule_name", pa.string()), ("dimension", pa.string()),
        ("severity", pa.string()), ("status", pa.string()), ("rows_checked", pa.int64()),
        ("rows_failed", pa.int64()), ("pass_rate", pa.float64()), ("threshold", pa.float64()),
        ("message", pa.string())]))
    own = con is None
    con = con or connect(settings or load_settings())
    try:
        ensure_result_table(con)
        con.register("_quality_rule_result_new", arrow)
        try:
            con.execute(f"INSERT INTO {LAKE}.{RESULT_TABLE} ({', '.join(names)}) "
                        f"SELECT {', '.join(names)} FROM _quality_rule_result_new")
        finally:
            con.unregister("_quality_rule_result_new")
    finally:
        if own:
            con.close()
    return len(rows)


def run_all(settings: Settings | None = None, rules_dir: str | Path | None = None, store: bool = True) -> QualityRun:
    """Run every rules file whose table exists in the lake; append the results to quality.rule_result.

    Tables with a rules file but not (yet) in the lake are listed in ``tables_skipped``.
    """
    from quality.gx_duckdb import get_context

    s = settings or load_settings()
    files = load_catalogue(rules_dir)
    with contextlib.closing(connect(s, read_only=True)) as con:
        existing = {f"{schema}.{name}" for schema, name in lake_tables(con)}
    run_id = uuid.uuid4().hex
    run_at = datetime.now(timezone.utc)
    context = get_context()
    results: list[RuleResult] = []
    ran, skipped = [], []
    for f in files:
        if f.table not in existing:
            skipped.append(f.table)
            continue
        ran.append(f.table)
        results.extend(run_table_rules(f.table, f, settings=s, context=context))
    if store:
        store_results(results, run_id, run_at, settings=s)
    return QualityRun(run_id=run_id, run_at=run_at, results=results, tables_run=ran, tables_skipped=skipped)

"""The bronze rule catalogue on a small synthetic city: injected defects recovered per institution and
rule, row-level scores per institution and batch (SQL) agreeing with GX, stored results, the
rectification lists and the gate.

One module-scoped city (800 residents × 2 days, generate + ingest only, no dbt: ≈ 25 s) and one
scored run shared by the tests.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re

import pytest

from healthlake.config import settings as load_settings
from healthlake.lake import connect
from quality import ERROR, FAIL, NOT_APPLICABLE, PASS, QualityError, load_catalogue
from quality.scoring import (BatchScore, bronze_datasets, failing_rows_sql, platform_pass_rate,
                             rules_for_dataset, run_bronze_rules, run_dataset_rules, score_institutions)
from quality.truth import DEFECT_RULES, compare_with_truth

RESIDENTS, DAYS, SEED = 800, 2, 11
ENV = ("HEALTHLAKE_ROOT", "HEALTHLAKE_CATALOG", "HEALTHLAKE_DATA_PATH", "HEALTHLAKE_REGISTRY", "HEALTHLAKE_LANDING")


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    from ingest_adapters.ingest import ingest_landing
    from synthetic import generate_city

    root = tmp_path_factory.mktemp("bronze_quality") / "root"
    with pytest.MonkeyPatch.context() as mp:
        for var in ENV:
            mp.delenv(var, raising=False)
        mp.setenv("HEALTHLAKE_ROOT", str(root))
        s = load_settings()
        generate_city(s.city_dir, residents=RESIDENTS, days=DAYS, seed=SEED)
        results = ingest_landing(s)
        assert results and all(r.status in ("loaded", "skipped") for r in results)   # skipped: identical empty files
        truth = json.loads((s.city_dir / "truth" / "summary.json").read_text(encoding="utf-8"))
        run = run_bronze_rules(settings=s)
        yield s, run, truth


def q(s, sql, params=None):
    with contextlib.closing(connect(s, read_only=True)) as con:
        return con.execute(sql, params or []).fetchall()


def profile(truth, code):
    return truth["institutions"][code]["defect_profile"]


# --- the catalogue ------------------------------------------------------------------------------

def test_catalogue_has_a_rules_file_per_standard_data_set_and_enough_rules():
    from catalog.standard import datasets

    files = load_catalogue()
    bronze = [f for f in files if f.table.startswith("bronze.")]
    assert sorted(f.table.split(".")[1] for f in bronze) == sorted(datasets()) == bronze_datasets()
    n_bronze = sum(len(f.rules) for f in bronze)
    assert n_bronze >= 45 and sum(len(f.rules) for f in files) >= 60
    dims = {r.dimension for f in bronze for r in f.rules}
    assert dims == {"completeness", "validity", "consistency", "uniqueness", "timeliness", "plausibility"}


def test_bronze_rules_name_real_data_elements():
    from catalog.standard import get_dataset

    lineage = {"_institution_code", "_feed", "_batch_id", "_source_file", "_source_row", "_ingested_at", "_row_hash"}
    for name in bronze_datasets():
        ds = get_dataset(name)
        for rule in rules_for_dataset(name).rules:
            assert any("\u4e00" <= ch <= "\u9fff" for ch in rule.name), rule.id      # a Chinese name
            if rule.field:
                assert rule.field in ds.element_names, (rule.id, rule.field)
            if rule.expectation == "unexpected_rows_expectation":
                sql = rule.kwargs["unexpected_rows_query"]
                # GX writes {batch} as "(SELECT ...) AS subselect": an alias after it cannot work
                assert "{batch}" in sql and not re.search(r"\{batch\}\s+(?!WHERE\b|QUALIFY\b)\w", sql), rule.id
            rule.build_expectation()


def test_date_rules_read_every_accepted_date_time_form():
    """The "not in the future" and date-order rules read every form the format rules accept, the
    FHIR/JSON feeds' ISO 8601 with an offset included (converted to Beijing time), instead of
    skipping what they cannot parse."""
    import duckdb

    from catalog.standard import get_dataset

    ingested = "2026-10-02 12:00:00+08"
    forms = {  # value -> is it after the ingest time (Beijing wall time)?
        "2026-10-01 10:00:00": False, "20261001100000": False, "2026-10-01": False, "2026-10-01T10:00:00": False,
        "2026-10-01T10:00:00+08:00": False, "2026-10-02T05:00:00+00:00": True, "2026-10-02T11:30:00+08:00": False,
        "2026-10-02T04:30:00+00:00": True, "2027-01-01T00:00:00+08:00": True, "20270101": True}
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    checked = set()
    for name in bronze_datasets():
        ds = get_dataset(name)
        for rule in rules_for_dataset(name).rules:
            sql = rule.kwargs.get("unexpected_rows_query", "")
            col = rule.field
            if "非未来日期" not in rule.name or not col.endswith("_at"):  # date-only elements accept dates only
                continue
            cols = ", ".join(f"NULL::VARCHAR AS {e}" for e in ds.element_names if e != col)
            con.execute(f"CREATE OR REPLACE TABLE t AS SELECT v AS {col}, {cols}, TIMESTAMPTZ '{ingested}' AS _ingested_at "
                        f"FROM (VALUES " + ", ".join(f"('{v}')" for v in forms) + ") x(v)")
            flagged = {r[0] for r in con.execute(f"SELECT {col} FROM ({sql.format(batch='t')})").fetchall()}
            assert flagged == {v for v, future in forms.items() if future}, rule.id
            checked.add(rule.id)
        order = [r for r in rules_for_dataset(name).rules if name == "encounter" and r.field == "discharge_at"
                 and "<" in r.kwargs.get("unexpected_rows_query", "")]
        for rule in order:
            cols = ", ".join(f"NULL::VARCHAR AS {e}" for e in ds.element_names if e not in ("visit_at", "discharge_at"))
            con.execute(f"CREATE OR REPLACE TABLE t AS SELECT v AS visit_at, d AS discharge_at, {cols}, "
                        f"TIMESTAMPTZ '{ingested}' AS _ingested_at FROM (VALUES "
                        "('2026-10-01T10:00:00+08:00', '2026-10-01T01:00:00+00:00'), "    # 09:00 Beijing: before the visit
                        "('2026-10-01T10:00:00+08:00', '2026-10-01 11:00:00'), "
                        "('2026-10-01 10:00:00', '2026-10-01T03:00:00+00:00')) x(v, d)")  # 11:00 Beijing
            flagged = con.execute(f"SELECT discharge_at FROM ({rule.kwargs['unexpected_rows_query'].format(batch='t')})").fetchall()
            assert flagged == [("2026-10-01T01:00:00+00:00",)], rule.id
            checked.add(rule.id)
    assert len(checked) >= 6, checked


# --- truth: injected defects recovered ------------------------------------------------------------

def test_injected_defect_rates_recovered_per_institution_and_rule(city):
    s, run, _ = city
    rows = compare_with_truth(run, settings=s)
    assert len(rows) > 200
    assert sum(r.expected_failed for r in rows) > 100               # the city is not clean
    worst = max(rows, key=lambda r: r.error_pp if r.error_pp is not None else 1e9)
    assert all(r.error_pp is not None for r in rows)
    assert worst.error_pp <= 0.5, worst
    # every defect kind present in the truth was found somewhere
    found = {r.defect for r in rows if r.expected_failed and r.measured_failed}
    assert found == {r.defect for r in rows if r.expected_failed}


def test_no_false_positives_on_legitimate_formats(city):
    """Rules without an injected defect kind find nothing: ISO and compact dates, sex codes and
    sex text, optional elements not sent — all accepted. (Timeliness is the exception: the
    synthetic city's files are dated before today, so every daily batch is late.)"""
    s, run, _ = city
    defect_rules = {rid for by_ds in DEFECT_RULES.values() for rid in by_ds.values()}
    noisy = {}
    for r in run.results:
        if r.rule_id in defect_rules or "及时报送" in r.rule_name:
            continue
        if r.rows_failed:
            noisy[r.rule_id] = noisy.get(r.rule_id, 0) + r.rows_failed
    assert noisy == {}
    assert not [r for r in run.results if r.status == ERROR]


def test_clean_institution_passes_and_dirty_one_is_flagged(city):
    s, run, truth = city
    scores = {i.institution_code: i for i in run.institutions}
    clean = [c for c in scores if profile(truth, c) == "clean"]
    assert clean
    for code in clean:
        assert scores[code].pass_rate == 1.0 and scores[code].meets_threshold
        assert all(b.status in (PASS, NOT_APPLICABLE) for b in run.batches if b.institution_code == code)
    dirty = [i for i in run.institutions if i.pass_rate < 0.95]
    assert dirty and all(not i.meets_threshold for i in dirty)
    assert all(profile(truth, i.institution_code) in ("poor", "fair") for i in dirty)
    assert run.platform_pass_rate == pytest.approx(sum(i.meets_threshold for i in run.institutions) / len(run.institutions))
    assert 0 < run.platform_pass_rate < 1


# --- the engine: SQL groups agree with GX ------------------------------------------------------------

@pytest.mark.parametrize("dataset", ["person", "encounter", "diagnosis", "health_record", "lab_result"])
def test_grouped_counts_sum_to_gx_whole_table_counts(city, dataset):
    from quality import run_table_rules

    s, run, _ = city
    gx = {r.rule_id: r for r in run_table_rules(f"bronze.{dataset}", rules_for_dataset(dataset), settings=s)}
    sums: dict[str, list[int]] = {}
    for g in run.datasets[dataset].results:
        if g.status in (PASS, FAIL):
            acc = sums.setdefault(g.rule_id, [0, 0])
            acc[0] += g.rows_checked
            acc[1] += g.rows_failed
    for rid, r in gx.items():
        assert r.status in (PASS, FAIL), r
        assert (r.rows_checked, r.rows_failed) == tuple(sums[rid]), rid


@pytest.mark.parametrize("dataset", ["person", "encounter", "health_record"])
def test_one_pass_equals_the_failing_row_table(city, dataset):
    """The counts-only pass (windows first on their own columns, shared sub-expressions computed once)
    gives the same per-rule and critical-union counts as the materialised failing rows of each rule."""
    s, run, _ = city
    fast = run.datasets[dataset]
    slow = run_dataset_rules(dataset, None, s, store=False, keep_failures=True)
    assert not fast.rule_errors and not slow.rule_errors
    key = lambda g: (g.batch_id, g.rule_id)                                   # noqa: E731
    assert sorted((key(g), g.rows_failed) for g in fast.results) == sorted((key(g), g.rows_failed) for g in slow.results)
    assert sorted((b.batch_id, b.rows_passing, b.critical_rules_failed) for b in fast.batches) == \
        sorted((b.batch_id, b.rows_passing, b.critical_rules_failed) for b in slow.batches)


def test_shared_sub_expressions_are_hoisted_safely():
    import duckdb

    from quality.scoring import CSE_PREFIX, hoist_common_calls

    check = "substr('10X', 1 + list_sum(list_transform(string_split(left(id, 3), ''), lambda c: ascii(c) - 48))::INTEGER % 3, 1)"
    flags = [f"coalesce(length(id) = 4 AND {check} <> substr(id, 4, 1), false)",
             f"coalesce(length(id) = 4 AND {check} = substr(id, 4, 1) AND d IN ('a', 'b'), false)",
             "coalesce(try_strptime(d2, ['%Y%m%d', '%Y-%m-%d']) IS NULL AND d IN ('a', 'b'), false)",
             "coalesce(try_strptime(d2, ['%Y%m%d', '%Y-%m-%d'])::DATE > DATE '2026-01-01', false)",
             "coalesce(row_number() OVER (PARTITION BY (d IN ('a', 'b')), id ORDER BY d) > 1, false)"]
    texts, hoisted = hoist_common_calls(flags)
    exprs = [e for _, e in hoisted]
    assert check in exprs and "try_strptime(d2, ['%Y%m%d', '%Y-%m-%d'])" in exprs
    assert not any("ascii(c)" == e or e.startswith(("IN", "BY")) for e in exprs)     # lambda bodies, keywords
    assert texts[4] == flags[4] and all(CSE_PREFIX in t for t in texts[:4])
    con = duckdb.connect()
    con.execute("CREATE TABLE t AS SELECT * FROM (VALUES ('1234', 'a', '20260105'), ('1230', 'b', 'x'), "
                "('12', 'c', NULL), ('9994', 'a', '2025-12-31'), (NULL, 'b', '20270101')) v(id, d, d2)")
    # ordered: with the window function DuckDB may return the rows in any order (a flaky comparison)
    plain = con.execute(f"SELECT {', '.join(flags)} FROM t ORDER BY id NULLS LAST, d").fetchall()
    cols = ", ".join(f"{e} AS {n}" for n, e in hoisted)
    assert con.execute(f"SELECT {', '.join(texts)} FROM (SELECT *, {cols} FROM t) AS subselect "
                       f"ORDER BY id NULLS LAST, d").fetchall() == plain


def test_batch_scope_and_empty_batches(city):
    s, run, _ = city
    # a header-only file is a loaded batch with no rows: NOT_APPLICABLE, never a pass
    empty = q(s, "SELECT batch_id FROM ops.ingest_batch WHERE status = 'loaded' AND rows_loaded = 0 "
                 "AND dataset = 'encounter' LIMIT 1")
    some = q(s, "SELECT _batch_id, count(*) FROM bronze.encounter GROUP BY 1 ORDER BY 2 DESC LIMIT 1")[0]
    ids = [some[0]] + [e[0] for e in empty]
    one = run_dataset_rules("encounter", ids, s, store=False)
    assert {b.batch_id for b in one.batches} == set(ids)
    full = next(b for b in one.batches if b.batch_id == some[0])
    assert full.rows_checked == some[1]
    assert {r.batch_id for r in one.results} == set(ids)
    for e in empty:
        [b] = [b for b in one.batches if b.batch_id == e[0]]
        assert (b.status, b.rows_checked, b.pass_rate) == (NOT_APPLICABLE, 0, None)


def test_a_broken_rule_is_error_alone_in_the_grouped_scoring(city):
    s, _, _ = city
    rules = [
        {"id": "Z-001", "name": "正常规则", "dimension": "completeness", "severity": "critical",
         "expectation": "expect_column_values_to_not_be_null", "kwargs": {"column": "patient_id"}},
        {"id": "Z-002", "name": "错误 SQL", "dimension": "consistency", "severity": "major",
         "expectation": "unexpected_rows_expectation",
         "kwargs": {"unexpected_rows_query": "SELECT * FROM {batch} WHERE no_such_column > 1"}},
        {"id": "Z-003", "name": "别名", "dimension": "consistency", "severity": "major",
         "expectation": "unexpected_rows_expectation",       # an alias after {batch} fails in GX too
         "kwargs": {"unexpected_rows_query": "SELECT * FROM {batch} b WHERE b.patient_id IS NULL"}},
    ]
    run = run_dataset_rules("person", None, s, rules=rules, store=False)
    by_rule = {}
    for r in run.results:
        by_rule.setdefault(r.rule_id, set()).add(r.status)
    assert by_rule["Z-001"] <= {PASS, NOT_APPLICABLE} and by_rule["Z-002"] <= {ERROR, NOT_APPLICABLE}
    assert ERROR in by_rule["Z-003"]
    assert "no_such_column" in run.rule_errors["Z-002"]
    # the gate's scoring runs each data set in one transaction, which the broken rule aborts: the
    # data set runs again statement by statement, with the same results as above
    from healthlake.lake import strict_in_one_transaction

    strict_runs = []

    def person(strict=False):
        strict_runs.append(strict)
        return run_dataset_rules("person", None, s, rules=rules, store=False, sync=False, con=con, strict=strict)

    with contextlib.closing(connect(s)) as con:
        again = strict_in_one_transaction(con, person, "test")
        assert con.execute("SELECT 42").fetchone() == (42,)          # no transaction left aborted
    assert strict_runs == [True, False]                               # the transaction, then the fallback
    assert again.results == run.results and again.batches == run.batches
    assert again.rule_errors == run.rule_errors


def test_scoring_in_one_transaction_per_data_set_equals_statement_by_statement(city, monkeypatch):
    """run_bronze_rules: every data set in one read transaction, the loaded batches and thresholds
    read once for all of them: the same results and batch scores as each data set on its own."""
    import quality.scoring
    from quality.scoring import run_bronze_rules

    s, _, _ = city
    real = quality.scoring.strict_in_one_transaction
    fell_back = []

    def spied(con, run, what):
        def counted(strict=False):
            if not strict:
                fell_back.append(what)
            return run(strict=strict)
        return real(con, counted, what)

    monkeypatch.setattr(quality.scoring, "strict_in_one_transaction", spied)
    together = run_bronze_rules(settings=s, store=False)
    assert together.datasets and fell_back == []   # every data set stayed in its one transaction
    # each data set alone, statement by statement, reading its own batches and thresholds
    monkeypatch.setattr(quality.scoring, "strict_in_one_transaction",
                        lambda con, run, what: run.func(*run.args, **{k: v for k, v in run.keywords.items()
                                                                       if k not in ("loaded", "thresholds")}))
    alone = run_bronze_rules(settings=s, store=False)
    assert together.datasets.keys() == alone.datasets.keys() and together.batches
    for name in together.datasets:
        assert together.datasets[name].results == alone.datasets[name].results
        assert together.datasets[name].batches == alone.datasets[name].batches
    assert together.institutions == alone.institutions


def test_failing_rows_sql_matches_gx_semantics_for_column_maps():
    from quality.catalogue import parse_rules

    [in_set, complete, regex] = parse_rules([
        {"id": "S-001", "name": "值域", "dimension": "validity", "severity": "major",
         "expectation": "expect_column_values_to_be_in_set", "kwargs": {"column": "sex_code", "value_set": ["1", "2"]}},
        {"id": "S-002", "name": "值域非空", "dimension": "completeness", "severity": "major",
         "expectation": "expect_column_values_to_be_in_set", "kwargs": {"column": "sex_code", "value_set": ["1", "2"]}},
        {"id": "S-003", "name": "正则", "dimension": "validity", "severity": "major",
         "expectation": "expect_column_values_to_match_regex", "kwargs": {"column": "x", "regex": "^a'b$"}},
    ])
    import duckdb

    con = duckdb.connect()
    con.execute("CREATE TABLE t AS SELECT * FROM (VALUES ('1', 'a''b'), ('3', 'c'), (NULL, NULL)) v(sex_code, x)")
    assert con.execute(f"SELECT count(*) FROM ({failing_rows_sql(in_set, 't')})").fetchone()[0] == 1
    assert con.execute(f"SELECT count(*) FROM ({failing_rows_sql(complete, 't')})").fetchone()[0] == 2
    assert con.execute(f"SELECT count(*) FROM ({failing_rows_sql(regex, 't')})").fetchone()[0] == 1


# --- stored results ----------------------------------------------------------------------------------

def test_results_are_stored_per_institution_and_batch(city):
    s, run, _ = city
    cols = [c[0] for c in q(s, "DESCRIBE quality.rule_result_by_institution")]
    for c in ("run_id", "run_at", "dataset", "institution_code", "batch_id", "rule_id", "severity", "dimension",
              "rows_checked", "rows_failed", "pass_rate", "status"):
        assert c in cols
    n = q(s, "SELECT count(*) FROM quality.rule_result_by_institution WHERE run_id = ?", [run.run_id])[0][0]
    assert n == len(run.results)
    stored = q(s, "SELECT institution_code, rows_checked, rows_passing, pass_rate, meets_threshold "
                  "FROM quality.institution_score WHERE run_id = ? ORDER BY 1", [run.run_id])
    assert stored == [(i.institution_code, i.rows_checked, i.rows_passing, pytest.approx(i.pass_rate), i.meets_threshold)
                      for i in run.institutions]
    # the institution's rows = its rows in bronze over every data set
    bronze_rows = sum(q(s, f"SELECT count(*) FROM bronze.{d} WHERE _institution_code = '511024H001'")[0][0]
                      for d in run.datasets)
    assert {i.institution_code: i.rows_checked for i in run.institutions}["511024H001"] == bronze_rows
    assert q(s, "SELECT count(*) FROM quality.batch_score WHERE run_id = ?", [run.run_id])[0][0] == len(run.batches)


def test_institution_and_platform_scores():
    b = [BatchScore("person", "A", "f", "A1", 100, 96, 0.96, 0.95, PASS),
         BatchScore("encounter", "A", "g", "A2", 100, 92, 0.92, 0.95, FAIL, ("BENC-009",)),
         BatchScore("person", "B", "f", "B1", 50, 50, 1.0, 0.95, PASS),
         BatchScore("person", "C", "f", "C1", 0, None, None, 0.95, NOT_APPLICABLE)]
    scores = {i.institution_code: i for i in score_institutions(b)}
    assert scores["A"].pass_rate == pytest.approx(0.94) and not scores["A"].meets_threshold
    assert scores["B"].meets_threshold and scores["C"].pass_rate is None
    assert platform_pass_rate(scores.values()) == 0.5           # C has no rows: not counted


# --- rectification lists ---------------------------------------------------------------------------

def test_rectification_list_for_a_dirty_institution(city):
    import openpyxl

    from quality.rectification import LIST_HEADERS, write_rectification_lists

    s, run, _ = city
    dirty = min(run.institutions, key=lambda i: i.pass_rate).institution_code
    paths = write_rectification_lists(run, s, institution_codes=[dirty])
    path = paths[dirty]
    assert path == s.reports_dir / "quality" / "rectification" / f"{dirty}.xlsx"
    wb = openpyxl.load_workbook(path, read_only=True)
    assert wb.sheetnames == ["汇总", "整改清单"]
    summary = {r[0]: r[1] for r in wb["汇总"].iter_rows(values_only=True) if r and r[0]}
    assert summary["机构代码"] == dirty and summary["是否达标"] == "未达标"
    rows = list(wb["整改清单"].iter_rows(values_only=True))
    assert tuple(rows[0]) == LIST_HEADERS
    body = rows[1:]
    # one line per failing row of every critical and major rule of that institution
    expected = sum(r.rows_failed or 0 for r in run.results
                   if r.institution_code == dirty and r.severity in ("critical", "major"))
    assert len(body) == expected > 0
    h = {name: i for i, name in enumerate(LIST_HEADERS)}
    # rows point at the delivered file and record number: they match the truth's defects
    truth = {(f, int(r)) for f, r in q(s, "SELECT file, source_row FROM read_csv(?, all_varchar = true) "
                                          "WHERE institution_code = ?",
                                       [str(s.city_dir / "truth" / "defects.csv"), dirty])}
    rejected = set(q(s, "SELECT source_file, source_row FROM bronze._rejects WHERE institution_code = ?", [dirty]))
    listed = {(r[h["源文件"]], r[h["行号"]]) for r in body}
    assert listed == truth - rejected
    # level-4 values are masked
    ids = [r[h["值"]] for r in body if r[h["字段"]] == "id_number" and r[h["值"]]]
    assert ids and all(v[6:14] == "********" and len(v) == 18 for v in ids)
    assert all(r[h["规则名称"]] and r[h["原因"]].startswith("未通过规则") for r in body)
    assert all(r[h["整改建议"]] for r in body)                  # every line says what to do
    summary_rows = list(wb["汇总"].iter_rows(values_only=True))
    head = next(i for i, r in enumerate(summary_rows) if r and r[0] == "数据集")
    cols = summary_rows[head]
    failing = [r for r in summary_rows[head + 1:] if r and r[cols.index("不合格行数")]]
    assert failing and all(r[cols.index("整改建议")] for r in failing)


def test_rectification_rows_in_one_pass_equal_one_query_per_rule(city, monkeypatch):
    """The rules that select rows one for one are listed together in one pass: the same lines, in
    the same order, as each rule's own failing-row query."""
    import quality.scoring
    from quality.rectification import rectification_rows

    s, run, _ = city
    codes = sorted({i.institution_code for i in run.institutions})
    with contextlib.closing(connect(s, read_only=True)) as con:
        together = {d: rectification_rows(con, d, rules_for_dataset(d).rules, codes) for d in run.datasets}
        monkeypatch.setattr(quality.scoring, "failing_flag_sql", lambda rule: None)
        alone = {d: rectification_rows(con, d, rules_for_dataset(d).rules, codes) for d in run.datasets}
    assert sum(map(len, together.values())) > 0
    assert together == alone


def test_rectification_rows_in_one_transaction_fall_back_after_an_error(city, monkeypatch):
    """The lists read every data set in one transaction; an error in it (here: the one pass of a
    data set) rolls it back and every data set is read again statement by statement: the same rows."""
    import quality.rectification as rect

    s, run, _ = city
    codes = sorted({i.institution_code for i in run.institutions})
    with contextlib.closing(connect(s, read_only=True)) as con:
        expected = [row for d in run.datasets
                    for row in rect.rectification_rows(con, d, rules_for_dataset(d).rules, codes)]
        strict_reads = []   # the `strict` of each data set's read: True in the transaction, False after it
        real_rows = rect.rectification_rows
        monkeypatch.setattr(rect, "rectification_rows",
                            lambda *a, **k: strict_reads.append(k.get("strict", False)) or real_rows(*a, **k))
        assert rect._rows_in_one_transaction(con, list(run.datasets), codes, None, ("critical", "major")) == expected
        assert strict_reads == [True] * len(run.datasets)       # no error: no second read
        strict_reads.clear()
        calls = []
        real = rect._failing_rows_together

        def fails_once(*a, **k):
            calls.append(1)
            if len(calls) == 2:
                raise RuntimeError("boom")
            return real(*a, **k)

        monkeypatch.setattr(rect, "_failing_rows_together", fails_once)
        assert rect._rows_in_one_transaction(con, list(run.datasets), codes, None, ("critical", "major")) == expected
        assert con.execute("SELECT 42").fetchone() == (42,)
    # the transaction stopped at the failing data set; then every data set was read again outside it
    in_transaction = strict_reads.index(False)
    assert 1 <= in_transaction <= len(run.datasets)
    assert strict_reads == [True] * in_transaction + [False] * len(run.datasets)
    assert expected


def test_list_rows_serialised_directly_are_the_bytes_openpyxl_writes():
    """The list sheet's rows are written by ``_stream_plain_rows`` (openpyxl's cell writer cost ~4 s
    of the demo gate): every part of the workbook is byte for byte what openpyxl writes, for plain
    values and for the ones handed back to openpyxl (formula-like, error codes, blanks at either
    end, dates, decimals, booleans, NaN, over-long text)."""
    import datetime as dt
    import decimal
    import io
    import zipfile

    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.styles import Font

    from quality.rectification import _stream_plain_rows

    rows = [("a", "&<>\"'", "tab\there", "line\nbreak\r\n", " lead", "trail ", "  ", "", "=1+1", "=", "#N/A",
             "中文 值", "😀", "]]>"),
            (1, -5, 0, 10**17, 1.5, 1e-20, 3.0, float("nan"), float("inf"), True, False, None,
             decimal.Decimal("1.20"), dt.date(2026, 1, 2)),
            (dt.datetime(2026, 1, 2, 3, 4, 5), None, None, "x" * 40000, "a&b", 2**70, "ok")]

    def build(direct: bool) -> bytes:
        wb = Workbook(write_only=True)
        ws = wb.create_sheet("s")
        ws.freeze_panes = "A2"
        head = WriteOnlyCell(ws, value="h")
        head.font = Font(bold=True)
        ws.append([head, "h2"])
        if direct:
            _stream_plain_rows(ws)
            assert "write_row" in vars(ws._writer)   # the direct writer is in place (not openpyxl's)
        for row in rows * 3:
            ws.append(row)
        out = io.BytesIO()
        wb.save(out)
        return out.getvalue()

    a, b = (zipfile.ZipFile(io.BytesIO(build(direct))) for direct in (False, True))
    assert a.namelist() == b.namelist()
    for name in a.namelist():
        if not name.startswith("docProps/"):       # creation time
            assert a.read(name) == b.read(name), name


def test_masking():
    from quality.rectification import mask_value

    assert mask_value("id_number", "511002198001011234") == "511002********1234"
    assert mask_value("phone", "13812345678") == "138****5678"
    assert mask_value("name", "欧阳娜娜") == "欧***"
    assert mask_value("address_text", "内江市市中区") == "内江***"
    assert mask_value("phone", None) is None


# --- the gate ----------------------------------------------------------------------------------------

def test_gate_promotes_clean_holds_dirty_and_override_releases(city):
    from quality.gate import HELD, PROMOTED, current_decisions_sql, gate_run, record_override

    s, run, truth = city
    decisions = gate_run(run, s)
    assert len(decisions) == len(run.batches)
    by_batch = {d.batch_id: d for d in decisions}
    clean = {c for c in truth["institutions"] if profile(truth, c) == "clean"}
    assert all(d.decision == PROMOTED for d in decisions if d.institution_code in clean)
    held = [d for d in decisions if d.decision == HELD]
    assert held and all(d.pass_rate < d.threshold for d in held)
    assert all(d.institution_code not in clean for d in held)
    # other institutions proceed
    assert any(d.decision == PROMOTED for d in decisions if d.institution_code != held[0].institution_code)

    with pytest.raises(QualityError, match="who"):
        record_override(held[0].batch_id, "", "test", settings=s)
    record_override(held[0].batch_id, "质控科 张三", "已核实：未来日期为院方系统时钟错误，已另行更正", settings=s)
    again = {d.batch_id: d for d in gate_run(run, s)}
    released = again[held[0].batch_id]
    assert released.decision == PROMOTED and released.override_by == "质控科 张三"
    assert "人工放行" in released.reason
    assert all(again[d.batch_id].decision == HELD for d in held[1:])
    current = dict(q(s, f"SELECT batch_id, decision FROM ({current_decisions_sql()})"))
    assert current[held[0].batch_id] == PROMOTED
    assert by_batch[held[0].batch_id].decision == HELD          # the first decision stays in the history
    assert q(s, "SELECT decided_by FROM quality.batch_override WHERE batch_id = ?", [held[0].batch_id]) == [("质控科 张三",)]


def test_per_feed_threshold_from_the_registry(city):
    from ingest_adapters.registry import load_registry

    s, run, _ = city
    worst = min((b for b in run.batches if b.pass_rate is not None), key=lambda b: b.pass_rate)
    assert worst.status == FAIL
    reg = load_registry(s.registry)
    insts = []
    for inst in reg.institutions:
        feeds = tuple(dataclasses.replace(f, options={**f.options, "quality_threshold": 0.5})
                      if inst.code == worst.institution_code and f.id == worst.feed else f for f in inst.feeds)
        insts.append(dataclasses.replace(inst, feeds=feeds))
    lenient = dataclasses.replace(reg, institutions=tuple(insts))
    try:
        rerun = run_dataset_rules(worst.dataset, [worst.batch_id], s, store=False, registry=lenient)
        [b] = rerun.batches
        assert (b.threshold, b.status) == (0.5, PASS)
    finally:
        run_dataset_rules(worst.dataset, [worst.batch_id], s, store=False)   # restore the reference tables


# --- the quality office's report ----------------------------------------------------------------------

def test_office_report_from_the_stored_history(city):
    from quality.data_docs import EXTERNAL_URL
    from quality.gate import gate_run
    from quality.office import write_office_report

    s, run, _ = city
    gate_run(run, s)
    out = write_office_report(s, rectification=False)
    assert out.report == s.reports_dir / "quality" / "office.html"
    page = out.report.read_text(encoding="utf-8")
    for text in ("平台概况", "平台数据质量合格率", "机构排名", "质量维度", "严重程度", "问题最多的规则", "趋势",
                 "按数据日期", "闸门", "<svg", "完整性", "严重"):
        assert text in page, text
    # the platform's figure is the share of institutions at or above the threshold, as scored
    assert f"{run.platform_pass_rate * 100:.2f}%" in page
    assert f"{sum(i.meets_threshold for i in run.institutions)} / {len(run.institutions)}" in page
    worst = min(run.institutions, key=lambda i: i.pass_rate)
    assert worst.institution_code in page and f"{worst.pass_rate * 100:.2f}%" in page
    # the institutions are ranked best first
    order = [i["institution_code"] for i in out.data["institutions"]]
    rates = [i["pass_rate"] for i in out.data["institutions"]]
    assert rates == sorted(rates, reverse=True) and set(order) == {i.institution_code for i in run.institutions}
    # sample failing rows name file and row; ID numbers are masked, none appears in clear
    assert re.search(r"\d{6}\*{8}[0-9X]{4}", page)
    assert not re.search(r"(?<![0-9])\d{17}[0-9X](?![0-9])", page)
    assert out.data["worst"] and ".csv" in page                   # samples name the delivered file
    # self-contained: readable offline
    assert not EXTERNAL_URL.search(page) and "<script" not in page and "<link" not in page


def test_gate_pages_from_shared_configurations_equal_pages_built_per_batch(city):
    """write_bronze_data_docs builds each rule's GX configuration once per data set and hands GX's
    renderer the expectation it came from (``_reused_expectations``): every page is the page of a
    configuration built for its batch alone (GX's element ids and render times aside)."""
    import re

    import quality.data_docs as dd

    s, run, _ = city
    noise = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|\d{8}T\d{6}\.\d+Z")

    def pages(shared: bool) -> list[str]:
        out = []
        for dataset, ds_run in run.datasets.items():
            rules = rules_for_dataset(dataset).rules
            configurations = dd.rule_configurations(rules) if shared else None
            out += [noise.sub("", dd.render_page(dd.bronze_validation_result(ds_run, b, rules, None, configurations)))
                    for b in ds_run.batches]
        return out

    alone = pages(False)
    with dd._reused_expectations():
        shared = pages(True)
        assert dd._BUILT
    assert dd._BUILT is None                     # emptied after the block
    assert shared == alone and len(alone) == len(run.batches)


def test_gate_validations_get_self_contained_gx_data_docs(city):
    """Every batch the gate scores is a GX validation with its own Data Docs page: the row-level counts
    the gate decided on, as GX ExpectationValidationResults, rendered by GX, readable offline."""
    from great_expectations.core import ExpectationSuiteValidationResult

    from quality.data_docs import (EXTERNAL_URL, bronze_validation_result, data_docs_dir, latest_batch_pages,
                                   write_bronze_data_docs)
    from quality.gate import HELD, gate_run
    from quality.office import write_office_report

    s, run, _ = city
    decisions = gate_run(run, s)
    pages = write_bronze_data_docs(run, s, decisions=decisions)
    newest = latest_batch_pages(s)
    assert len(newest) >= len(run.batches)   # a page for every batch (written now, or unchanged since the gate's)
    assert all((f"bronze.{b.dataset}", b.batch_id) in newest for b in run.batches)
    # the next gate run re-scores the same batches with the same result: no new page, no growth
    before = sorted(data_docs_dir(s).rglob("*.html"))
    assert write_bronze_data_docs(run, s, decisions=decisions) == []
    assert sorted(data_docs_dir(s).rglob("*.html")) == before and latest_batch_pages(s) == newest
    held = next(d for d in decisions if d.decision == HELD)
    ds_run = run.datasets[held.dataset]
    [batch] = [b for b in ds_run.batches if b.batch_id == held.batch_id]
    rules = rules_for_dataset(held.dataset).rules

    # a real GX validation result carrying the scoring's counts, rule by rule
    outcome = bronze_validation_result(ds_run, batch, rules, held)
    assert isinstance(outcome, ExpectationSuiteValidationResult) and outcome.success is False
    assert ExpectationSuiteValidationResult(**outcome.to_json_dict()).suite_name == f"healthlake:bronze.{held.dataset}"
    by_rule = {g.rule_id: g for g in ds_run.results if g.batch_id == batch.batch_id}
    assert [r.expectation_config.meta["rule_id"] for r in outcome.results] == [r.id for r in rules]
    for evr in outcome.results:
        g = by_rule[evr.expectation_config.meta["rule_id"]]
        assert evr.result["element_count"] == g.rows_checked == batch.rows_checked
        assert evr.result["unexpected_count"] == g.rows_failed
        assert evr.result["unexpected_percent"] == pytest.approx(100 * g.rows_failed / g.rows_checked)
        assert evr.success == (g.status == PASS)
    assert outcome.statistics["unsuccessful_expectations"] == sum(g.status != PASS for g in by_rule.values()) > 0
    assert outcome.meta["healthlake"]["pass_rate"] == batch.pass_rate and outcome.meta["healthlake"]["decision"] == HELD

    # the page: GX's rendering, the rules' Chinese names, the gate's decision; offline
    page_path = data_docs_dir(s) / latest_batch_pages(s)[(f"bronze.{held.dataset}", held.batch_id)]
    page = page_path.read_text(encoding="utf-8")
    for text in (f"healthlake:bronze.{held.dataset}", "Evaluated Expectations", "闸门决定", "拦截", held.batch_id,
                 f"{batch.pass_rate * 100:.2f}%", *(f"【{r.id}】{r.name}" for r in rules)):
        assert text in page, text
    failing = next(g for g in by_rule.values() if g.rows_failed and g.rule_id in batch.critical_rules_failed)
    assert f"{failing.rows_failed} unexpected values found" in page or f">{failing.rows_failed}<" in page
    assert not EXTERNAL_URL.search(page) and "<script" not in page.lower() and "<link" not in page.lower()
    # an empty batch is not applicable: a page without expectations, never a pass
    empty = [b for b in run.batches if b.rows_checked == 0]
    if empty:
        e = bronze_validation_result(run.datasets[empty[0].dataset], empty[0], rules_for_dataset(empty[0].dataset).rules)
        assert e.results == [] and e.success is False

    # listed in the index, linked from the office report's held batches
    index = (data_docs_dir(s) / "index.html").read_text(encoding="utf-8")
    assert page_path.relative_to(data_docs_dir(s)).as_posix() in index and not EXTERNAL_URL.search(index)
    office = write_office_report(s, rectification=False).report.read_text(encoding="utf-8")
    assert f'href="data_docs/{page_path.relative_to(data_docs_dir(s)).as_posix()}"' in office

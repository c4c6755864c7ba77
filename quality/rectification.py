"""整改清单: per institution, an Excel workbook listing every failing row of its bronze data.

    from quality.rectification import write_rectification_lists
    paths = write_rectification_lists(run)      # run: a BronzeRun (or None: every data set, all batches)
    # → {institution_code: <reports_dir>/quality/rectification/<institution_code>.xlsx}

Each workbook has two sheets:

* ``汇总`` (summary): the institution, the run, its 合格率 (rows passing every critical rule) against
  the threshold, and one line per rule with rows checked / failed and the pass rate;
* ``整改清单`` (the list): one line per failing row and rule: data set, source file, row number
  (``_source_row``: the data record's number in the delivered file, header not counted), business
  key, rule id and Chinese name, severity, field, value, reason.

Values of data elements whose classification level is ≥ 4 (``catalog/standard_datasets.yaml``) are
masked (``mask_value``): the list travels to the institution by ordinary channels. Business keys
(level ≤ 3) are shown so the row can be found. Only critical and major rules are listed by default
(minor rules and whole-batch timeliness findings appear in the summary counts); at most
``MAX_ROWS`` lines per workbook (Excel's limit is 1,048,576), the summary says when it was cut.
"""

from __future__ import annotations

import contextlib
import functools
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Sequence

import duckdb

from healthlake.config import Settings, settings as load_settings
from healthlake.lake import LAKE, connect, quote_ident, strict_in_one_transaction
from quality.catalogue import Rule
from quality.errors import QualityError

__all__ = ["write_rectification_lists", "rectification_rows", "mask_value", "rectification_dir", "suggest_fix",
           "LIST_HEADERS", "SUMMARY_SHEET", "LIST_SHEET", "MAX_ROWS"]

SUMMARY_SHEET, LIST_SHEET = "汇总", "整改清单"
LIST_HEADERS = ("数据集", "数据集名称", "源文件", "行号", "业务主键", "规则编号", "规则名称", "严重程度",
                "维度", "字段", "字段名称", "值", "原因", "整改建议")
MAX_ROWS = 200_000
MASK_LEVEL = 4
SEVERITY_ZH = {"critical": "严重", "major": "重要", "minor": "一般"}
DIMENSION_ZH = {"completeness": "完整性", "validity": "有效性", "consistency": "一致性",
                "uniqueness": "唯一性", "timeliness": "及时性", "plausibility": "合理性"}


def rectification_dir(settings: Settings | None = None) -> Path:
    return (settings or load_settings()).reports_dir / "quality" / "rectification"


def mask_value(element: str | None, value) -> str | None:
    """Mask a level ≥ 4 value: ID 6 + ******** + 4, phone 3 + **** + 4, name surname + *, else 2 + ***."""
    if value is None:
        return None
    v = str(value)
    if element == "id_number":
        return v[:6] + "********" + v[-4:] if len(v) > 10 else "*" * len(v)
    if element == "phone":
        return v[:3] + "****" + v[-4:] if len(v) >= 8 else "*" * len(v)
    if element == "name":
        return v[:1] + "*" * max(1, len(v) - 1)
    return v[:2] + "***" if len(v) > 2 else "*" * len(v)


_FIX_BY_EXPECTATION = {
    "expect_column_values_to_not_be_null": "补录「{f}」（必填项），在源系统中完善后重新报送",
    "expect_column_values_to_be_in_set": "按国家/行业标准代码表填写「{f}」，修正源系统字典映射后重新报送",
    "expect_column_values_to_match_regex": "按标准格式填写「{f}」，检查源系统录入校验与导出格式",
    "expect_column_values_to_not_match_regex": "按标准格式填写「{f}」，检查源系统录入校验与导出格式",
    "expect_column_values_to_be_unique": "删除重复记录或更正「{f}」，保证业务主键唯一",
    "expect_column_values_to_be_between": "核实「{f}」数值是否录入错误（单位、小数点），更正后重新报送",
    "expect_column_value_lengths_to_be_between": "按标准长度填写「{f}」",
    "expect_column_value_lengths_to_equal": "按标准长度填写「{f}」",
}
_FIX_BY_DIMENSION = {
    "completeness": "补录「{f}」后重新报送",
    "validity": "按标准填写「{f}」（格式、代码表），更正后重新报送",
    "consistency": "核对「{f}」与相关字段（日期先后、身份证号派生信息、关联记录）是否一致，更正后重新报送",
    "uniqueness": "删除重复记录，保证业务主键唯一后重新报送",
    "timeliness": "按注册表约定的报送周期及时报送，检查前置机抽取任务",
    "plausibility": "核实「{f}」是否录入错误（单位、数量级、未来日期），更正后重新报送",
}


def suggest_fix(rule: Rule, field_zh: str | None = None) -> str:
    """整改建议 of a rule: its own ``fix``, else one by expectation, else by dimension."""
    if rule.fix:
        return rule.fix
    f = field_zh or rule.field or "相关字段"
    template = _FIX_BY_EXPECTATION.get(rule.expectation) or _FIX_BY_DIMENSION.get(rule.dimension, "核实后更正并重新报送")
    return template.format(f=f)


def rectification_rows(con, dataset: str, rules: Sequence[Rule], institution_codes: Sequence[str] | None = None,
                       batch_ids: Sequence[str] | None = None,
                       severities: Iterable[str] = ("critical", "major"), strict: bool = False) -> list[tuple]:
    """Failing rows of ``lake.bronze.<dataset>`` as tuples (institution_code, *LIST_HEADERS).

    Runs each rule's failing-row SQL (``scoring.failing_rows_sql``) on the institutions' rows only:
    the rules that select rows one for one (``scoring.failing_flag_sql``) together in one pass over
    those rows, the others (and all of them when that pass fails) one query each. ``strict``: the
    one pass failing raises instead (inside a transaction, which DuckDB aborts at its first error).
    """
    from catalog.standard import get_dataset
    from quality.scoring import SCOPE_VIEW, _lit, failing_flag_sql, failing_rows_sql

    ds = get_dataset(dataset)
    levels = {e.name: e.level for e in ds.elements}
    zh = {e.name: e.zh for e in ds.elements}
    key = ds.key_elements[0] if ds.key_elements else None
    where = []
    if institution_codes is not None:
        where.append("_institution_code IN (" + (", ".join(_lit(c) for c in institution_codes) or "NULL") + ")")
    if batch_ids is not None:
        where.append("_batch_id IN (" + (", ".join(_lit(b) for b in batch_ids) or "NULL") + ")")
    view = f"{SCOPE_VIEW}_rect"
    scope = f"FROM {LAKE}.bronze.{dataset}" + (" WHERE " + " AND ".join(where) if where else "")
    con.execute(f"CREATE OR REPLACE TEMP VIEW {view} AS SELECT * {scope}")
    severities = set(severities)
    listed = [r for r in rules if r.severity in severities]
    fields = {r.id: r.field if r.field in levels else None for r in listed}
    key_sql = quote_ident(key) if key else "NULL"
    out: list[tuple] = []
    try:
        together = [r for r in listed if failing_flag_sql(r) is not None]
        found: dict[str, list[tuple]] = {}
        if len(together) > 1:
            # the same rows with DuckLake's row id (unique, in load order): rows of one rule with the
            # same file and row number (an HL7 message's OBX segments) keep their order
            con.execute(f"CREATE OR REPLACE TEMP VIEW {view}_rid AS SELECT rowid AS _rect_rid, * {scope}")
            try:
                found = _failing_rows_together(con, f"{view}_rid", together, fields, key_sql)
            except Exception:  # noqa: BLE001 - each rule on its own below: a broken one is named alone
                if strict:
                    raise
                together = []
        for rule in listed:
            field = fields[rule.id]
            if rule in together:
                rows = found.get(rule.id, [])
            else:
                value_sql = quote_ident(field) if field else "NULL"
                try:
                    rows = con.execute(
                        f"SELECT _institution_code, _source_file, _source_row, {key_sql}, {value_sql} "
                        f"FROM ({failing_rows_sql(rule, view)}) ORDER BY _source_file, _source_row").fetchall()
                except Exception as e:  # a rule that cannot run is reported by the scoring, not listed here
                    raise QualityError(f"{rule.id}: cannot list failing rows: {e}") from None
            reason = f"未通过规则「{rule.name}」" + (f"：{rule.description}" if rule.description else "")
            fix = suggest_fix(rule, zh.get(field) if field else None)
            for inst, src, row, bkey, value in rows:
                if field and value is not None and levels.get(field, 0) >= MASK_LEVEL:
                    value = mask_value(field, value)
                if key and bkey is not None and levels.get(key, 0) >= MASK_LEVEL:
                    bkey = mask_value(key, bkey)
                out.append((inst, dataset, ds.zh, src, row, bkey, rule.id, rule.name,
                            SEVERITY_ZH.get(rule.severity, rule.severity),
                            DIMENSION_ZH.get(rule.dimension, rule.dimension),
                            field or "（整行）", zh.get(field, "整条记录") if field else "整条记录",
                            value, reason, fix))
    finally:
        # strict: after an error the transaction is aborted and its rollback drops the views; a DROP
        # would only raise "transaction is aborted" in place of the error that caused it
        with contextlib.suppress(duckdb.Error) if strict else contextlib.nullcontext():
            con.execute(f"DROP VIEW IF EXISTS {view}")
            con.execute(f"DROP VIEW IF EXISTS {view}_rid")
    return out


def _failing_rows_together(con, view: str, rules: Sequence[Rule], fields: dict[str, str | None],
                           key_sql: str) -> dict[str, list[tuple]]:
    """rule id → its failing rows (institution, file, row, key, value) in one pass over ``view``.

    The rules' flags (``scoring.failing_flag_sql``: the same rows as each rule's failing-row query)
    side by side on one read, unpivoted; each rule's rows in the order of its own query
    (source file, row number; then load order: ``view`` has the row id as ``_rect_rid``). One query
    instead of one per rule: each costs a plan and a read of the lake table's metadata (demo gate,
    10 institutions' lists: 146 queries).
    """
    from quality.scoring import _BATCH_SQL, _lit, failing_flag_sql

    values = sorted({f for f in fields.values() if f})
    slot = {f: i for i, f in enumerate(values)}
    flags = ", ".join(f"{failing_flag_sql(r)} AS {quote_ident(r.id)}" for r in rules)
    names = ["_rect_key"] + [f"_rect_v{i}" for i in range(len(values))]
    cols = ", ".join(f"{e} AS {n}" for e, n in zip([key_sql] + [quote_ident(f) for f in values], names))
    order = "CASE rule_id " + " ".join(f"WHEN {_lit(r.id)} THEN {i}" for i, r in enumerate(rules)) + " END"
    rows = con.execute(
        f"SELECT rule_id, _institution_code, _source_file, _source_row, {', '.join(names)} "
        f"FROM (SELECT _rect_rid, _institution_code, _source_file, _source_row, {cols}, {flags} FROM {_BATCH_SQL.format(scope=view)}) "
        f"AS _flags UNPIVOT (failed FOR rule_id IN ({', '.join(quote_ident(r.id) for r in rules)})) WHERE failed "
        f"ORDER BY {order}, _source_file, _source_row, _rect_rid").fetchall()
    out: dict[str, list[tuple]] = {}
    for rule_id, inst, src, row, bkey, *vals in rows:
        field = fields[rule_id]
        out.setdefault(rule_id, []).append((inst, src, row, bkey, vals[slot[field]] if field else None))
    return out


def _rows_in_one_transaction(con, datasets: Sequence[str], codes, batch_ids, severities) -> list[tuple]:
    """``rectification_rows`` of every data set, read in one transaction: its ~5 statements per data
    set share one DuckLake snapshot, the temporary views without a commit each (~17 data sets on the
    demo). DuckDB aborts a transaction at its first error, and ``rectification_rows`` falls back
    query by query after one: on any error the transaction is rolled back and every data set is
    read again statement by statement, as before."""
    from quality.scoring import rules_for_dataset

    def read(strict: bool = False) -> list[tuple]:
        return [row for dataset in datasets
                for row in rectification_rows(con, dataset, rules_for_dataset(dataset).rules, codes, batch_ids,
                                              severities, strict=strict)]

    return strict_in_one_transaction(con, read, "quality: rectification rows")


def write_rectification_lists(run=None, settings: Settings | None = None, *,
                              institution_codes: Sequence[str] | None = None,
                              batch_ids: Sequence[str] | None = None,
                              only_below_threshold: bool = False,
                              severities: Iterable[str] = ("critical", "major"), con=None) -> dict[str, Path]:
    """Write ``<reports_dir>/quality/rectification/<institution_code>.xlsx`` per institution.

    ``run``: a ``scoring.BronzeRun`` (its data sets, batches and scores are used); without one, every
    bronze data set with rules is scored first (not stored). ``only_below_threshold``: only the
    institutions whose 合格率 is below the threshold (the ones the quality office writes to).
    ``con``: an open lake connection to read with instead of a new one.
    """
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.styles import Font, PatternFill

    from quality.scoring import rules_for_dataset, run_bronze_rules

    s = settings or load_settings()
    if run is None:
        run = run_bronze_rules(batch_ids=batch_ids, settings=s, store=False)
    scores = {i.institution_code: i for i in run.institutions}
    codes = sorted(scores) if institution_codes is None else list(institution_codes)
    if only_below_threshold:
        codes = [c for c in codes if c in scores and not scores[c].meets_threshold]
    severities = tuple(severities)
    names = {}
    rows_by_inst: dict[str, list[tuple]] = {c: [] for c in codes}
    with (contextlib.nullcontext(con) if con is not None else contextlib.closing(connect(s, read_only=True))) as con:
        with contextlib.suppress(Exception):
            names = dict(con.execute(f"SELECT institution_code, institution_name FROM {LAKE}.ops.institution").fetchall())
        for row in _rows_in_one_transaction(con, list(run.datasets), codes, batch_ids, severities):
            rows_by_inst[row[0]].append(row[1:])
    out_dir = rectification_dir(s)
    out_dir.mkdir(parents=True, exist_ok=True)
    bold = Font(bold=True)
    head_fill = PatternFill("solid", fgColor="EDF2F7")
    paths: dict[str, Path] = {}
    from quality.report import CHINA_TZ

    generated = datetime.now(timezone.utc).astimezone(CHINA_TZ).strftime("%Y-%m-%d %H:%M:%S（北京时间）")
    from catalog.standard import get_dataset

    rule_by_id: dict[tuple[str, str], Rule] = {}
    zh_by_dataset: dict[str, dict[str, str]] = {}
    for code in codes:
        rows = sorted(rows_by_inst.get(code, []), key=lambda r: (r[0], r[2], r[3], r[5]))
        # write-only workbook: rows are streamed to the file as they are appended (the in-memory
        # worksheet model took ~0.5 s of CPU per workbook on the demo); widths and panes go first
        wb = Workbook(write_only=True)
        summary = wb.create_sheet(SUMMARY_SHEET)
        for col, width in zip("ABC", (24, 36, 48)):
            summary.column_dimensions[col].width = width

        def styled(ws, values, fill=None):
            cells = []
            for v in values:
                c = WriteOnlyCell(ws, value=v)
                c.font = bold
                if fill is not None:
                    c.fill = fill
                cells.append(c)
            return cells

        score = scores.get(code)
        info = [("机构代码", code), ("机构名称", names.get(code, "")), ("质控运行", run.run_id), ("生成时间", generated),
                ("记录数", score.rows_checked if score else 0),
                ("通过全部严重规则的记录数", score.rows_passing if score else 0),
                ("数据质量合格率", None if not score or score.pass_rate is None else round(score.pass_rate * 100, 2)),
                ("合格率阈值（%）", round((score.threshold if score else 0.95) * 100, 2)),
                ("是否达标", "达标" if score and score.meets_threshold else "未达标"),
                ("清单行数", min(len(rows), MAX_ROWS)),
                ("说明", "清单列出严重、重要规则的不合格行；敏感字段（分级 ≥ 4 级）已脱敏"
                         + (f"；不合格行超过 {MAX_ROWS} 行，仅列出前 {MAX_ROWS} 行" if len(rows) > MAX_ROWS else ""))]
        for k, v in info:
            summary.append(styled(summary, [k]) + [v])
        summary.append([])
        header = ["数据集", "规则编号", "规则名称", "维度", "严重程度", "检查行数", "不合格行数", "合格率（%）", "阈值（%）", "状态", "整改建议"]
        summary.append(styled(summary, header, head_fill))
        per_rule: dict[tuple[str, str], list] = {}
        for dataset, drun in run.datasets.items():
            for g in drun.results:
                if g.institution_code != code or g.rows_checked == 0:
                    continue
                acc = per_rule.setdefault((dataset, g.rule_id), [g, 0, 0, False])
                acc[1] += g.rows_checked
                acc[2] += g.rows_failed or 0
                acc[3] = acc[3] or g.status == "ERROR"
        for (dataset, rid), (g, checked, failed, errored) in sorted(per_rule.items()):
            if (dataset, rid) not in rule_by_id:
                rule_by_id.update({(dataset, r.id): r for r in rules_for_dataset(dataset).rules})
                zh_by_dataset[dataset] = {e.name: e.zh for e in get_dataset(dataset).elements}
            rate = (checked - failed) / checked if checked else None
            status = "执行出错" if errored else ("通过" if rate is not None and rate >= g.threshold - 1e-12 else "不通过")
            summary.append([dataset, rid, g.rule_name, DIMENSION_ZH.get(g.dimension, g.dimension),
                            SEVERITY_ZH.get(g.severity, g.severity), checked, failed,
                            None if rate is None else round(rate * 100, 2), round(g.threshold * 100, 2), status,
                            suggest_fix(rule_by_id[(dataset, rid)], zh_by_dataset[dataset].get(
                                rule_by_id[(dataset, rid)].field)) if failed else ""])
        sheet = wb.create_sheet(LIST_SHEET)
        sheet.freeze_panes = "A2"
        for col, width in zip("ABCDEFGHIJKLMN", (14, 16, 44, 8, 22, 11, 40, 9, 8, 22, 18, 22, 60, 60)):
            sheet.column_dimensions[col].width = width
        sheet.append(styled(sheet, LIST_HEADERS, head_fill))
        _stream_plain_rows(sheet)
        for row in rows[:MAX_ROWS]:
            sheet.append(row)
        path = out_dir / f"{code}.xlsx"
        wb.save(path)
        paths[code] = path
    return paths


# --- the list sheet's rows, serialised directly --------------------------------------------------

_XML_TEXT = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})


def _stream_plain_rows(sheet) -> None:
    """From here on, rows appended to write-only ``sheet`` are serialised by ``_cell_xml``: the same
    bytes as openpyxl's cell writer (``openpyxl.cell._writer.etree_write_cell`` through et_xmlfile:
    ~30 µs a cell, ~4 s of the demo gate's 128,000 list cells), from the row's plain values. A value
    it does not serialise the same way (not a plain str/int/float, or a str openpyxl treats
    specially: a formula, an error code, an illegal character, longer than Excel's cell, blank at
    either end) goes through openpyxl's own cell writer. Call after the sheet's first ``append``
    (which creates its writer); with lxml installed openpyxl writes through lxml: left as it is.
    """
    from openpyxl.cell import Cell, WriteOnlyCell
    from openpyxl.cell import _writer as cell_writer

    writer = getattr(sheet, "_writer", None)
    if writer is None or cell_writer.write_cell is not cell_writer.etree_write_cell:
        return
    rules = _openpyxl_cell_rules()

    def write_row(xf, values, row_idx):
        out = getattr(xf, "_file", None)
        if out is None:  # an et_xmlfile without the raw writer: openpyxl's own path for this row
            return original(xf, values_to_row(values, row_idx), row_idx)
        parts = [f'<row r="{row_idx}">']
        for col, value in enumerate(values, 1):
            if value is None:
                continue
            xml = _cell_xml(col, row_idx, value, rules)
            if xml is not None:
                parts.append(xml)
                continue
            out("".join(parts))
            parts = []
            cell = value if isinstance(value, Cell) else WriteOnlyCell(sheet, value=value)
            cell.column, cell.row = col, row_idx
            cell_writer.write_cell(xf, sheet, cell, cell.has_style)
        parts.append("</row>")
        out("".join(parts))

    original, values_to_row = writer.write_row, sheet._values_to_row
    sheet._values_to_row = lambda values, row_idx: values  # the plain values reach write_row
    writer.write_row = write_row


_INF = (float("inf"), float("-inf"))


@functools.cache
def _openpyxl_cell_rules():
    """openpyxl's column letters (1-64), error codes and illegal characters: imported when a list is
    written, not with the package (openpyxl's import, ~0.2 s, stays out of every definitions load)."""
    from openpyxl.cell.cell import ERROR_CODES, ILLEGAL_CHARACTERS_RE
    from openpyxl.utils import get_column_letter

    return [get_column_letter(i) for i in range(1, 65)], ERROR_CODES, ILLEGAL_CHARACTERS_RE


def _cell_xml(col: int, row: int, value, rules) -> str | None:
    """A cell's XML as openpyxl writes it in a write-only sheet (inline string / number), or None.
    ``rules``: ``_openpyxl_cell_rules()``."""
    letters, error_codes, illegal = rules
    if col > len(letters):
        return None
    t = type(value)
    if t is str:
        if (not value or len(value) > 32767 or value[0] == "=" or value.strip() != value
                or illegal.search(value) or value in error_codes):
            return None
        return f'<c r="{letters[col - 1]}{row}" t="inlineStr"><is><t>{value.translate(_XML_TEXT)}</t></is></c>'
    if t is int or (t is float and value == value and value not in _INF):
        return f'<c r="{letters[col - 1]}{row}" t="n"><v>{"%.16g" % value}</v></c>'
    return None



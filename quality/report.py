"""A self-contained HTML summary of quality rule results: ``<reports_dir>/quality/index.html``.

One file, inline CSS, no scripts, no external links: it opens offline and can be mailed as is.
By default it shows the latest run stored in ``lake.quality.rule_result`` with the previous run's
pass rate per rule and a table of recent runs; ``write_report(results=...)`` renders given results.
"""

from __future__ import annotations

import contextlib
import html
import os
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from healthlake.config import Settings, settings as load_settings
from healthlake.lake import LAKE, connect, table_exists
from quality.runner import ERROR, FAIL, NOT_APPLICABLE, PASS, RESULT_COLUMNS, RESULT_TABLE, QualityRun, RuleResult

__all__ = ["write_report", "render_report", "report_path"]

CHINA_TZ = timezone(timedelta(hours=8), "CST")  # Asia/Shanghai: no daylight saving since 1991
DIMENSION_ZH = {"completeness": "完整性", "validity": "有效性", "consistency": "一致性",
                "uniqueness": "唯一性", "timeliness": "及时性", "plausibility": "合理性"}
SEVERITY_ZH = {"critical": "严重", "major": "重要", "minor": "一般"}
STATUS_ZH = {PASS: "通过", FAIL: "不通过", ERROR: "执行出错", NOT_APPLICABLE: "不适用"}
SCHEMA_ZH = {"population": "全员人口数据库", "emr": "电子病历数据库", "health_record": "健康档案数据库",
             "resource": "基础资源数据库", "indicators": "指标库", "bronze": "贴源层"}

_CSS = """
body{font-family:"Noto Sans CJK SC","Microsoft YaHei","PingFang SC",sans-serif;margin:24px;color:#222;background:#fafafa}
h1{font-size:22px;margin:0 0 8px} h2{font-size:18px;margin:28px 0 8px;border-left:4px solid #2b6cb0;padding-left:8px}
h3{font-size:15px;margin:20px 0 6px}
.meta{color:#555;font-size:13px}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin:12px 0}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:10px 16px;min-width:110px}
.card b{display:block;font-size:22px}
table{border-collapse:collapse;background:#fff;font-size:13px;margin-bottom:8px}
th,td{border:1px solid #ddd;padding:5px 8px;text-align:left;vertical-align:top}
th{background:#edf2f7} td.n{text-align:right;font-variant-numeric:tabular-nums}
.s{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;white-space:nowrap}
.PASS{background:#c6f6d5;color:#22543d}.FAIL{background:#fed7d7;color:#822727}
.ERROR{background:#feebc8;color:#7b341e}.NOT_APPLICABLE{background:#e2e8f0;color:#2d3748}
.crit{color:#822727;font-weight:bold}
footer{margin-top:28px;color:#777;font-size:12px}
"""


def report_path(settings: Settings | None = None) -> Path:
    return (settings or load_settings()).reports_dir / "quality" / "index.html"


def _e(value) -> str:
    return html.escape("" if value is None else str(value))


def _pct(x) -> str:
    return "—" if x is None else f"{x * 100:.2f}%"


def _int(x) -> str:
    return "—" if x is None else f"{x:,}"


def _when(dt) -> str:
    if dt is None:
        return "—"
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(CHINA_TZ).strftime("%Y-%m-%d %H:%M:%S")


def _table_zh(table: str) -> str:
    schema = table.split(".")[0]
    return f"{SCHEMA_ZH[schema]} · {table}" if schema in SCHEMA_ZH else table


def _status(status: str) -> str:
    return f'<span class="s {_e(status)}">{_e(STATUS_ZH.get(status, status))}</span>'


def _rule_pass_share(counts: Mapping[str, int]) -> float | None:
    decided = counts.get(PASS, 0) + counts.get(FAIL, 0)
    return counts.get(PASS, 0) / decided if decided else None


def render_report(results: Sequence[RuleResult], run_id: str | None = None, run_at: datetime | None = None,
                  previous: Mapping[tuple[str, str], float | None] | None = None,
                  history: Iterable[Mapping] = ()) -> str:
    """The report as an HTML string.

    ``previous`` maps (table_name, rule_id) to the previous run's pass rate; ``history`` rows have
    run_id, run_at and counts per status (n_pass, n_fail, n_error, n_na).
    """
    previous = previous or {}
    counts = Counter(r.status for r in results)
    critical_failing = sum(1 for r in results if r.severity == "critical" and r.status in (FAIL, ERROR))
    out: list[str] = []
    w = out.append
    w('<!DOCTYPE html><html lang="zh-CN"><head><meta charset="utf-8">')
    w('<meta name="viewport" content="width=device-width, initial-scale=1">')
    w(f"<title>数据质量检查报告</title><style>{_CSS}</style></head><body>")
    w("<h1>数据质量检查报告</h1>")
    w(f'<div class="meta">运行时间：{_e(_when(run_at))}（北京时间） · 运行编号：{_e(run_id or "—")} · '
      f"合格率 = 合格行数 ÷ 检查行数；空值只计入完整性规则</div>")

    w("<h2>总体情况</h2><div class='cards'>")
    for label, value in (("规则总数", len(results)), ("通过", counts[PASS]), ("不通过", counts[FAIL]),
                         ("执行出错", counts[ERROR]), ("不适用", counts[NOT_APPLICABLE]),
                         ("规则通过率", _pct(_rule_pass_share(counts))),
                         ("严重规则未通过", critical_failing)):
        w(f'<div class="card">{_e(label)}<b>{_e(value)}</b></div>')
    w("</div>")

    tables: dict[str, list[RuleResult]] = {}
    for r in results:
        tables.setdefault(r.table_name, []).append(r)

    w("<h2>各表汇总</h2>")
    if not tables:
        w("<p>本次运行没有规则结果。</p>")
    else:
        w("<table><tr><th>数据表</th><th>规则数</th><th>通过</th><th>不通过</th><th>执行出错</th>"
          "<th>不适用</th><th>最低合格率</th></tr>")
        for table, rows in tables.items():
            c = Counter(r.status for r in rows)
            rates = [r.pass_rate for r in rows if r.pass_rate is not None]
            w(f"<tr><td>{_e(_table_zh(table))}</td><td class='n'>{len(rows)}</td><td class='n'>{c[PASS]}</td>"
              f"<td class='n'>{c[FAIL]}</td><td class='n'>{c[ERROR]}</td><td class='n'>{c[NOT_APPLICABLE]}</td>"
              f"<td class='n'>{_pct(min(rates) if rates else None)}</td></tr>")
        w("</table>")

    w("<h2>规则明细</h2>")
    for table, rows in tables.items():
        w(f"<h3>{_e(_table_zh(table))}</h3>")
        w("<table><tr><th>规则编号</th><th>规则名称</th><th>维度</th><th>严重程度</th><th>状态</th>"
          "<th>检查行数</th><th>不合格行数</th><th>合格率</th><th>阈值</th><th>上次合格率</th><th>说明</th></tr>")
        for r in rows:
            sev = SEVERITY_ZH.get(r.severity, r.severity)
            sev_html = f"<span class='crit'>{_e(sev)}</span>" if r.severity == "critical" else _e(sev)
            w(f"<tr><td>{_e(r.rule_id)}</td><td>{_e(r.rule_name)}</td>"
              f"<td>{_e(DIMENSION_ZH.get(r.dimension, r.dimension))}</td><td>{sev_html}</td>"
              f"<td>{_status(r.status)}</td><td class='n'>{_int(r.rows_checked)}</td>"
              f"<td class='n'>{_int(r.rows_failed)}</td><td class='n'>{_pct(r.pass_rate)}</td>"
              f"<td class='n'>{_pct(r.threshold)}</td>"
              f"<td class='n'>{_pct(previous.get((r.table_name, r.rule_id)))}</td><td>{_e(r.message)}</td></tr>")
        w("</table>")

    history = list(history)
    if history:
        w("<h2>近期运行</h2><table><tr><th>运行时间（北京时间）</th><th>运行编号</th><th>规则数</th>"
          "<th>通过</th><th>不通过</th><th>执行出错</th><th>不适用</th><th>规则通过率</th></tr>")
        for h in history:
            c = {PASS: h["n_pass"], FAIL: h["n_fail"]}
            w(f"<tr><td>{_e(_when(h['run_at']))}</td><td>{_e(h['run_id'])}</td>"
              f"<td class='n'>{h['n_rules']}</td><td class='n'>{h['n_pass']}</td><td class='n'>{h['n_fail']}</td>"
              f"<td class='n'>{h['n_error']}</td><td class='n'>{h['n_na']}</td>"
              f"<td class='n'>{_pct(_rule_pass_share(c))}</td></tr>")
        w("</table>")
    w("<footer>healthlake 数据质量（质控）· 规则目录见 quality/rules/ · 本报告不含任何不合格数据值</footer>")
    w("</body></html>")
    return "\n".join(out)


def _load_from_lake(settings: Settings, run_id: str | None, history_runs: int):
    names = [n for n, _ in RESULT_COLUMNS]
    with contextlib.closing(connect(settings, read_only=True)) as con:
        if not table_exists(con, *RESULT_TABLE.split(".")):
            return None, None, [], {}, []
        runs = con.execute(
            f"SELECT run_id, max(run_at) AS run_at, count(*) AS n_rules, "
            f"count(*) FILTER (status = 'PASS') AS n_pass, count(*) FILTER (status = 'FAIL') AS n_fail, "
            f"count(*) FILTER (status = 'ERROR') AS n_error, count(*) FILTER (status = 'NOT_APPLICABLE') AS n_na "
            f"FROM {LAKE}.{RESULT_TABLE} GROUP BY run_id ORDER BY run_at DESC, run_id LIMIT ?",
            [max(history_runs, 2) if run_id is None else 10_000]).fetchall()
        cols = ["run_id", "run_at", "n_rules", "n_pass", "n_fail", "n_error", "n_na"]
        runs = [dict(zip(cols, r)) for r in runs]
        if not runs:
            return None, None, [], {}, []
        if run_id is None:
            current = runs[0]
        else:
            matching = [r for r in runs if r["run_id"] == run_id]
            if not matching:
                raise KeyError(f"no quality run {run_id} in {LAKE}.{RESULT_TABLE}")
            current = matching[0]
        rows = con.execute(f"SELECT {', '.join(names)} FROM {LAKE}.{RESULT_TABLE} WHERE run_id = ? "
                           f"ORDER BY table_name, rule_id", [current["run_id"]]).fetchall()
        results = [RuleResult(**{k: v for k, v in zip(names, row) if k not in ("run_id", "run_at")}) for row in rows]
        older = [r for r in runs if r["run_at"] < current["run_at"]]
        previous = {}
        if older:
            prev_rows = con.execute(f"SELECT table_name, rule_id, pass_rate FROM {LAKE}.{RESULT_TABLE} WHERE run_id = ?",
                                    [older[0]["run_id"]]).fetchall()
            previous = {(t, rid): rate for t, rid, rate in prev_rows}
        history = [r for r in runs if r["run_at"] <= current["run_at"]][:history_runs]
        return current["run_id"], current["run_at"], results, previous, history


def write_report(settings: Settings | None = None, results: QualityRun | Sequence[RuleResult] | None = None,
                 run_id: str | None = None, history_runs: int = 10) -> Path:
    """Write ``<reports_dir>/quality/index.html`` and return its path.

    Without ``results`` the report shows run ``run_id`` (default: the latest) from
    ``lake.quality.rule_result``, with the previous run's pass rates and recent runs.
    """
    s = settings or load_settings()
    if results is None:
        rid, run_at, rows, previous, history = _load_from_lake(s, run_id, history_runs)
        page = render_report(rows, run_id=rid, run_at=run_at, previous=previous, history=history)
    elif isinstance(results, QualityRun):
        page = render_report(results.results, run_id=results.run_id, run_at=results.run_at)
    else:
        page = render_report(list(results))
    path = report_path(s)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, path)
    return path

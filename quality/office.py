"""The quality office's report (质控报告): one self-contained HTML page from the stored history.

    from quality.office import write_office_report
    out = write_office_report()          # <reports_dir>/quality/office.html (+ rectification lists)
    out.report, out.rectification

What it shows, all read from ``lake.quality`` (so it can be rebuilt at any time, and trends are the
stored history, not the last run only):

* 平台概况: the platform's 数据质量合格率 (share of institutions at or above the threshold), the
  institutions meeting it, records checked and passing, batches promoted / held;
* 机构排名: institutions by 合格率 (records passing every critical rule ÷ records), with their held
  batches and a link to their rectification list;
* 按维度 / 按严重程度: rows checked and failing per quality dimension and severity;
* 问题最多的规则: the rules with most failing rows, each with sample failing rows (source file,
  row number, value; ID numbers, phones, names and addresses masked);
* 趋势: 合格率 per delivery date (the data date in the file name) and per quality run, as inline SVG;
* 闸门: held batches with their reasons, and the override history (who released what, and why).

A batch's current figures are its latest score (``quality.batch_score``); a batch scored again (a
held batch is re-scored every run until released) counts once. Inline CSS and SVG only: no
scripts, no external links, readable offline.
"""

from __future__ import annotations

import contextlib
import html
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from healthlake.config import Settings, settings as load_settings
from healthlake.lake import LAKE, connect, quote_ident, table_exists
from quality.catalogue import gate_threshold

__all__ = ["write_office_report", "render_office_report", "office_report_path", "OfficeReport", "load_office_data"]

SAMPLE_ROWS = 5
WORST_RULES = 12
_DATE_FROM_FILE = r"_([0-9]{8})[.][A-Za-z0-9]+$"


@dataclass
class OfficeReport:
    report: Path
    rectification: dict[str, Path] = field(default_factory=dict)
    data: dict = field(default_factory=dict)


def office_report_path(settings: Settings | None = None) -> Path:
    return (settings or load_settings()).reports_dir / "quality" / "office.html"


def _dicts(con, sql: str, params=None) -> list[dict]:
    cur = con.execute(sql, params or [])
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def load_office_data(con, threshold: float | None = None) -> dict:
    """Everything the report shows, as plain Python (dicts and lists); empty when nothing was scored."""
    threshold = gate_threshold() if threshold is None else threshold
    data: dict = {"threshold": threshold, "institutions": [], "dimensions": [], "severities": [], "worst": [],
                  "by_date": [], "by_run": [], "held": [], "overrides": [], "datasets": []}
    if not table_exists(con, "quality", "batch_score"):
        return data
    names = {}
    if table_exists(con, "ops", "institution"):
        names = dict(con.execute(f"SELECT institution_code, institution_name FROM {LAKE}.ops.institution").fetchall())
    has_ops = table_exists(con, "ops", "ingest_batch")
    con.execute(f"""CREATE OR REPLACE TEMP VIEW _office_batch AS
        SELECT * FROM {LAKE}.quality.batch_score
        QUALIFY row_number() OVER (PARTITION BY batch_id, dataset ORDER BY run_at DESC) = 1""")
    gate = table_exists(con, "quality", "batch_gate")
    con.execute(f"""CREATE OR REPLACE TEMP VIEW _office_gate AS """ + (
        f"SELECT * FROM {LAKE}.quality.batch_gate "
        f"QUALIFY row_number() OVER (PARTITION BY batch_id, dataset ORDER BY decided_at DESC) = 1"
        if gate else "SELECT NULL::VARCHAR AS batch_id, NULL::VARCHAR AS dataset, NULL::VARCHAR AS decision, NULL::VARCHAR AS reason, "
                     "NULL::VARCHAR AS override_by, NULL::TIMESTAMPTZ AS decided_at WHERE false"))
    inst = _dicts(con, """
        SELECT b.institution_code, count(*) AS batches, sum(b.rows_checked) AS rows_checked,
               sum(coalesce(b.rows_passing, 0)) AS rows_passing,
               count(*) FILTER (g.decision = 'held') AS held, count(*) FILTER (b.status = 'ERROR') AS errors,
               string_agg(DISTINCT b.dataset, ',' ORDER BY b.dataset) AS datasets
        FROM _office_batch b LEFT JOIN _office_gate g USING (batch_id, dataset)
        GROUP BY 1""")
    for i in inst:
        i["name"] = names.get(i["institution_code"], "")
        i["pass_rate"] = i["rows_passing"] / i["rows_checked"] if i["rows_checked"] else None
        i["meets"] = i["pass_rate"] is not None and i["pass_rate"] >= threshold - 1e-12
    inst.sort(key=lambda i: (i["pass_rate"] is None, -(i["pass_rate"] or 0), i["institution_code"]))
    data["institutions"] = inst
    data["datasets"] = _dicts(con, """
        SELECT dataset, count(*) AS batches, sum(rows_checked) AS rows_checked, sum(coalesce(rows_passing, 0)) AS rows_passing
        FROM _office_batch GROUP BY 1 ORDER BY 1""")
    if table_exists(con, "quality", "rule_result_by_institution"):
        con.execute(f"""CREATE OR REPLACE TEMP VIEW _office_rule AS
            SELECT r.* FROM {LAKE}.quality.rule_result_by_institution r
            JOIN _office_batch b ON b.batch_id = r.batch_id AND b.dataset = r.dataset AND b.run_id = r.run_id""")
        for key, into in (("dimension", "dimensions"), ("severity", "severities")):
            data[into] = _dicts(con, f"""
                SELECT {key} AS k, count(DISTINCT rule_id) AS rules, sum(rows_checked) AS rows_checked,
                       sum(coalesce(rows_failed, 0)) AS rows_failed,
                       count(*) FILTER (status = 'FAIL') AS groups_failing, count(*) FILTER (status = 'ERROR') AS errors
                FROM _office_rule WHERE status <> 'NOT_APPLICABLE' GROUP BY 1 ORDER BY 1""")
        data["worst"] = _dicts(con, f"""
            SELECT dataset, rule_id, any_value(rule_name) AS rule_name, any_value(dimension) AS dimension,
                   any_value(severity) AS severity, sum(rows_checked) AS rows_checked,
                   sum(coalesce(rows_failed, 0)) AS rows_failed,
                   count(DISTINCT institution_code) FILTER (rows_failed > 0) AS institutions
            FROM _office_rule WHERE status IN ('PASS', 'FAIL') GROUP BY 1, 2 HAVING sum(rows_failed) > 0
            ORDER BY CASE any_value(severity) WHEN 'critical' THEN 0 WHEN 'major' THEN 1 ELSE 2 END,
                     rows_failed DESC, rule_id LIMIT {WORST_RULES}""")
    if has_ops:
        data["by_date"] = _dicts(con, f"""
            SELECT try_strptime(regexp_extract(o.source_file, '{_DATE_FROM_FILE}', 1), '%Y%m%d')::DATE AS day,
                   count(*) AS batches, sum(b.rows_checked) AS rows_checked, sum(coalesce(b.rows_passing, 0)) AS rows_passing
            FROM _office_batch b JOIN {LAKE}.ops.ingest_batch o USING (batch_id)
            WHERE b.rows_checked > 0 GROUP BY 1 HAVING day IS NOT NULL ORDER BY 1""")
    if table_exists(con, "quality", "institution_score"):
        data["by_run"] = _dicts(con, f"""
            SELECT run_id, max(run_at) AS run_at, count(*) AS institutions,
                   count(*) FILTER (meets_threshold) AS meeting, sum(rows_checked) AS rows_checked,
                   sum(rows_passing) AS rows_passing
            FROM {LAKE}.quality.institution_score WHERE rows_checked > 0 GROUP BY 1 ORDER BY 2""")
    if gate:
        data["held"] = _dicts(con, """
            SELECT g.batch_id, g.institution_code, g.dataset, g.feed, g.rows_checked, g.pass_rate, g.threshold,
                   g.reason, g.decided_at FROM _office_gate g WHERE g.decision = 'held'
            ORDER BY g.institution_code, g.dataset, g.batch_id""")
        for h in data["held"]:
            h["name"] = names.get(h["institution_code"], "")
    if table_exists(con, "quality", "batch_override"):
        data["overrides"] = _dicts(con, f"""
            SELECT o.batch_id, g.institution_code, g.dataset, o.decided_by, o.reason, o.decided_at
            FROM {LAKE}.quality.batch_override o
            LEFT JOIN (SELECT batch_id, any_value(institution_code) AS institution_code,
                              string_agg(DISTINCT dataset, ',') AS dataset FROM _office_gate GROUP BY 1) g USING (batch_id)
            ORDER BY o.decided_at DESC""")
    data["decisions"] = dict(con.execute("SELECT decision, count(*) FROM _office_gate GROUP BY 1").fetchall())
    return data


def load_samples(con, worst: Sequence[dict], n: int = SAMPLE_ROWS) -> dict[str, list[dict]]:
    """Sample failing rows per worst rule: institution, file, row number, masked value."""
    from catalog.standard import get_dataset
    from quality.rectification import MASK_LEVEL, mask_value
    from quality.scoring import failing_rows_sql, rules_for_dataset

    out: dict[str, list[dict]] = {}
    for w in worst:
        try:
            rule = next(r for r in rules_for_dataset(w["dataset"]).rules if r.id == w["rule_id"])
            ds = get_dataset(w["dataset"])
            levels = {e.name: e.level for e in ds.elements}
            key = ds.key_elements[0] if ds.key_elements else None
            elem = rule.field if rule.field in levels else None
            cols = ["_institution_code", "_source_file", "_source_row"] + [c for c in (key, elem) if c]
            sql = failing_rows_sql(rule, f"{LAKE}.bronze.{w['dataset']}")
            rows = con.execute(f"SELECT DISTINCT {', '.join(quote_ident(c) for c in cols)} FROM ({sql}) "
                               f"ORDER BY 1, 2, 3 LIMIT {int(n)}").fetchall()
        except Exception:  # noqa: BLE001 - a rule that cannot sample shows no samples, the report still renders
            out[w["rule_id"]] = []
            continue
        samples = []
        for r in rows:
            d = dict(zip(cols, r))
            value = d.get(elem) if elem else None
            if elem and levels.get(elem, 0) >= MASK_LEVEL:
                value = mask_value(elem, value)
            bkey = d.get(key) if key else None
            if key and bkey is not None and levels.get(key, 0) >= MASK_LEVEL:
                bkey = mask_value(key, bkey)
            samples.append({"institution_code": d["_institution_code"], "file": d["_source_file"],
                            "row": d["_source_row"], "key": bkey,
                            "field": elem, "value": value})
        out[w["rule_id"]] = samples
    return out


# --- rendering -----------------------------------------------------------------------------------

def _e(v) -> str:
    return html.escape("" if v is None else str(v))


def _pct(x) -> str:
    return "—" if x is None else f"{x * 100:.2f}%"


def _rate(passing, checked):
    return None if not checked else passing / checked


def _svg_line(points: Sequence[tuple[str, float | None]], threshold: float, title: str) -> str:
    """A small inline SVG line chart of rates (0–100 %) with the threshold as a dashed line."""
    pts = [(label, v) for label, v in points if v is not None]
    if not pts:
        return "<p class='meta'>暂无数据</p>"
    w, h, left, right, top, bottom = 640, 220, 48, 16, 16, 44
    lo = min(0.5, min(v for _, v in pts) - 0.05, threshold - 0.05)
    lo = max(0.0, lo)

    def y(v):
        return top + (1 - (v - lo) / (1 - lo or 1)) * (h - top - bottom)

    step = (w - left - right) / max(1, len(pts) - 1)
    xs = [left + (i * step if len(pts) > 1 else (w - left - right) / 2) for i in range(len(pts))]
    out = [f'<svg role="img" aria-label="{_e(title)}" viewBox="0 0 {w} {h}" width="{w}" height="{h}" '
           'font-size="11">']
    for frac in (0, 0.25, 0.5, 0.75, 1):
        v = lo + frac * (1 - lo)
        out.append(f'<line x1="{left}" x2="{w - right}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#e2e8f0"/>'
                   f'<text x="{left - 4}" y="{y(v) + 4:.1f}" text-anchor="end" fill="#555">{v * 100:.0f}%</text>')
    out.append(f'<line x1="{left}" x2="{w - right}" y1="{y(threshold):.1f}" y2="{y(threshold):.1f}" '
               f'stroke="#c53030" stroke-dasharray="5,4"/><text x="{w - right}" y="{y(threshold) - 4:.1f}" '
               f'text-anchor="end" fill="#c53030">阈值 {threshold * 100:.0f}%</text>')
    out.append('<polyline fill="none" stroke="#2b6cb0" stroke-width="2" points="'
               + " ".join(f"{x:.1f},{y(v):.1f}" for x, (_, v) in zip(xs, pts)) + '"/>')
    every = max(1, len(pts) // 8)
    for i, (x, (label, v)) in enumerate(zip(xs, pts)):
        out.append(f'<circle cx="{x:.1f}" cy="{y(v):.1f}" r="3" fill="#2b6cb0"><title>{_e(label)}：{v * 100:.2f}%</title></circle>')
        if i % every == 0 or i == len(pts) - 1:
            out.append(f'<text x="{x:.1f}" y="{h - bottom + 16}" text-anchor="middle" fill="#555">{_e(label)}</text>')
    out.append("</svg>")
    return "".join(out)


def _batch_link(h: dict) -> str:
    """The batch id, linked to its gate validation's GX Data Docs page when there is one."""
    if h.get("docs"):
        return f'<a href="{_e(h["docs"])}" title="GX 数据文档">{_e(h["batch_id"])}</a>'
    return _e(h["batch_id"])


def _bar(rate) -> str:
    if rate is None:
        return ""
    width = max(0.0, min(1.0, rate)) * 100
    return f'<span class="bar"><span style="width:{width:.1f}%"></span></span>'


def render_office_report(data: dict, samples: dict[str, list[dict]] | None = None,
                         rectification: dict[str, Path] | None = None, generated: datetime | None = None,
                         links: dict[str, str] | None = None) -> str:
    from quality.report import _CSS, CHINA_TZ, DIMENSION_ZH, SEVERITY_ZH

    samples = samples or {}
    rectification = rectification or {}
    links = links or {}
    threshold = data["threshold"]
    inst = data["institutions"]
    scored = [i for i in inst if i["pass_rate"] is not None]
    meeting = sum(i["meets"] for i in scored)
    rows = sum(i["rows_checked"] or 0 for i in inst)
    passing = sum(i["rows_passing"] or 0 for i in inst)
    decisions = data.get("decisions", {})
    generated = (generated or datetime.now(timezone.utc)).astimezone(CHINA_TZ)
    out: list[str] = []
    w = out.append
    w('<!DOCTYPE html><html lang="zh-CN"><head><meta charset="utf-8">')
    w('<meta name="viewport" content="width=device-width, initial-scale=1">')
    w("<title>数据质量（质控）报告</title><style>" + _CSS +
      ".bar{display:inline-block;width:90px;height:8px;background:#fed7d7;border-radius:4px;vertical-align:middle;margin-left:6px}"
      ".bar span{display:block;height:8px;background:#38a169;border-radius:4px}"
      ".ok{color:#22543d}.bad{color:#822727;font-weight:bold} .small{font-size:12px;color:#555}"
      "nav a{margin-right:12px}</style></head><body>")
    w("<h1>医疗卫生机构健康医疗数据质量（质控）报告</h1>")
    w(f'<div class="meta">生成时间：{generated:%Y-%m-%d %H:%M:%S}（北京时间） · 合格率 = 通过全部严重规则的记录数 ÷ 记录数 · '
      f"机构达标阈值 {threshold * 100:.0f}% · 每个批次取最近一次评分</div>")
    nav = [("#summary", "平台概况"), ("#ranking", "机构排名"), ("#dims", "维度与严重程度"), ("#worst", "问题规则"),
           ("#trend", "趋势"), ("#gate", "闸门与放行")]
    w("<nav>" + "".join(f'<a href="{a}">{_e(t)}</a>' for a, t in nav)
      + "".join(f'<a href="{_e(href)}">{_e(t)}</a>' for t, href in links.items()) + "</nav>")

    w('<h2 id="summary">平台概况</h2><div class="cards">')
    platform = meeting / len(scored) if scored else None
    for label, value in (("平台数据质量合格率（达标机构占比）", _pct(platform)),
                         ("达标机构", f"{meeting} / {len(scored)}"),
                         ("记录合格率", _pct(_rate(passing, rows))),
                         ("检查记录数", f"{rows:,}"),
                         ("放行批次", decisions.get("promoted", 0)),
                         ("拦截批次", decisions.get("held", 0))):
        w(f'<div class="card">{_e(label)}<b>{_e(value)}</b></div>')
    w("</div>")
    if not inst:
        w("<p>尚无评分结果：采集后运行质控闸门（healthlake quality gate 或 Dagster 作业）。</p>")

    w('<h2 id="ranking">机构排名</h2>')
    if inst:
        w("<table><tr><th>排名</th><th>机构代码</th><th>机构名称</th><th>数据集</th><th>批次</th><th>记录数</th>"
          "<th>合格记录</th><th>合格率</th><th>是否达标</th><th>拦截批次</th><th>整改清单</th></tr>")
        for n, i in enumerate(inst, start=1):
            xlsx = rectification.get(i["institution_code"])
            link = f'<a href="rectification/{_e(Path(xlsx).name)}">{_e(Path(xlsx).name)}</a>' if xlsx else "—"
            verdict = "<span class='ok'>达标</span>" if i["meets"] else "<span class='bad'>未达标</span>"
            w(f"<tr><td class='n'>{n}</td><td>{_e(i['institution_code'])}</td><td>{_e(i['name'])}</td>"
              f"<td class='small'>{_e(i['datasets'])}</td><td class='n'>{i['batches']}</td>"
              f"<td class='n'>{i['rows_checked']:,}</td><td class='n'>{i['rows_passing']:,}</td>"
              f"<td class='n'>{_pct(i['pass_rate'])}{_bar(i['pass_rate'])}</td><td>{verdict}</td>"
              f"<td class='n'>{i['held']}</td><td>{link}</td></tr>")
        w("</table>")

    w('<h2 id="dims">按质量维度与严重程度</h2>')
    for key, title, zh in (("dimensions", "质量维度", DIMENSION_ZH), ("severities", "严重程度", SEVERITY_ZH)):
        items = data.get(key) or []
        if not items:
            continue
        w(f"<h3>{title}</h3><table><tr><th>{title}</th><th>规则数</th><th>检查行次</th><th>不合格行次</th>"
          "<th>规则合格率</th><th>未达阈值（机构×批次×规则）</th><th>执行出错</th></tr>")
        for d in items:
            rate = _rate((d["rows_checked"] or 0) - (d["rows_failed"] or 0), d["rows_checked"])
            w(f"<tr><td>{_e(zh.get(d['k'], d['k']))}</td><td class='n'>{d['rules']}</td>"
              f"<td class='n'>{d['rows_checked']:,}</td><td class='n'>{d['rows_failed']:,}</td>"
              f"<td class='n'>{_pct(rate)}{_bar(rate)}</td><td class='n'>{d['groups_failing']}</td>"
              f"<td class='n'>{d['errors']}</td></tr>")
        w("</table>")

    w('<h2 id="worst">问题最多的规则（严重、重要规则在前；含不合格样例）</h2>')
    if not data.get("worst"):
        w("<p>没有不合格行。</p>")
    for r in data.get("worst") or []:
        rate = _rate(r["rows_checked"] - r["rows_failed"], r["rows_checked"])
        w(f"<h3>{_e(r['rule_id'])} {_e(r['rule_name'])}</h3><div class='meta'>数据集 {_e(r['dataset'])} · "
          f"{_e(DIMENSION_ZH.get(r['dimension'], r['dimension']))} · {_e(SEVERITY_ZH.get(r['severity'], r['severity']))} · "
          f"不合格 {r['rows_failed']:,} / {r['rows_checked']:,} 行（合格率 {_pct(rate)}），涉及 {r['institutions']} 家机构</div>")
        ss = samples.get(r["rule_id"]) or []
        if ss:
            w("<table><tr><th>机构</th><th>源文件</th><th>行号</th><th>业务主键</th><th>字段</th><th>值（已脱敏）</th></tr>")
            for s_ in ss:
                w(f"<tr><td>{_e(s_['institution_code'])}</td><td class='small'>{_e(s_['file'])}</td>"
                  f"<td class='n'>{_e(s_['row'])}</td><td>{_e(s_['key'])}</td><td>{_e(s_['field'])}</td>"
                  f"<td>{_e(s_['value'])}</td></tr>")
            w("</table>")

    w('<h2 id="trend">趋势</h2>')
    by_date = data.get("by_date") or []
    w("<h3>按数据日期（报送批次）的记录合格率</h3>")
    w(_svg_line([(str(d["day"])[5:], _rate(d["rows_passing"], d["rows_checked"])) for d in by_date], threshold,
                "按数据日期的记录合格率"))
    if by_date:
        w("<table><tr><th>数据日期</th><th>批次</th><th>记录数</th><th>合格率</th></tr>" + "".join(
            f"<tr><td>{_e(d['day'])}</td><td class='n'>{d['batches']}</td><td class='n'>{d['rows_checked']:,}</td>"
            f"<td class='n'>{_pct(_rate(d['rows_passing'], d['rows_checked']))}</td></tr>" for d in by_date) + "</table>")
    by_run = data.get("by_run") or []
    w("<h3>按质控运行的平台合格率（达标机构占比）</h3>")
    w(_svg_line([(f"{r['run_at'].astimezone(CHINA_TZ):%m-%d %H:%M}", _rate(r["meeting"], r["institutions"]))
                 for r in by_run], threshold, "按质控运行的平台合格率"))
    if by_run:
        w("<table><tr><th>运行时间</th><th>运行编号</th><th>评分机构</th><th>达标机构</th><th>记录合格率</th></tr>" + "".join(
            f"<tr><td>{r['run_at'].astimezone(CHINA_TZ):%Y-%m-%d %H:%M:%S}</td><td class='small'>{_e(r['run_id'])}</td>"
            f"<td class='n'>{r['institutions']}</td><td class='n'>{r['meeting']}</td>"
            f"<td class='n'>{_pct(_rate(r['rows_passing'], r['rows_checked']))}</td></tr>" for r in by_run[-20:]) + "</table>")

    w('<h2 id="gate">闸门：被拦截的批次与人工放行</h2>')
    held = data.get("held") or []
    if held:
        w("<p class='meta'>被拦截的批次不进入四大数据库；机构整改后重新报送（新批次合格即放行），或由质控人员记录放行：<br>"
          "<code>healthlake quality override --batch 批次号 --by 姓名 --reason 原因</code><br>"
          "批次号链接到该批次的 GX 数据文档（每条规则的检查行数、不合格行数与闸门决定）。</p>")
        w("<table><tr><th>机构</th><th>机构名称</th><th>数据集</th><th>批次号</th><th>记录数</th><th>合格率</th>"
          "<th>阈值</th><th>原因</th></tr>")
        for h in held:
            w(f"<tr><td>{_e(h['institution_code'])}</td><td>{_e(h['name'])}</td><td>{_e(h['dataset'])}</td>"
              f"<td class='small'>{_batch_link(h)}</td><td class='n'>{h['rows_checked']}</td>"
              f"<td class='n'>{_pct(h['pass_rate'])}</td><td class='n'>{_pct(h['threshold'])}</td><td>{_e(h['reason'])}</td></tr>")
        w("</table>")
    else:
        w("<p>没有被拦截的批次。</p>")
    overrides = data.get("overrides") or []
    w("<h3>人工放行记录</h3>")
    if overrides:
        w("<table><tr><th>放行时间（北京时间）</th><th>批次号</th><th>机构</th><th>数据集</th><th>决定人</th><th>理由</th></tr>")
        for o in overrides:
            w(f"<tr><td>{o['decided_at'].astimezone(CHINA_TZ):%Y-%m-%d %H:%M:%S}</td><td class='small'>{_e(o['batch_id'])}</td>"
              f"<td>{_e(o['institution_code'])}</td><td>{_e(o['dataset'])}</td><td>{_e(o['decided_by'])}</td>"
              f"<td>{_e(o['reason'])}</td></tr>")
        w("</table>")
    else:
        w("<p>无。</p>")
    w("<footer>healthlake 数据质量（质控）· 规则目录见 quality/rules/ · 样例中的身份证号、电话、姓名、地址已脱敏</footer>")
    w("</body></html>")
    return "\n".join(out)


def write_office_report(settings: Settings | None = None, *, rectification: bool = True,
                        institution_codes: Sequence[str] | None = None, con=None) -> OfficeReport:
    """Write ``<reports_dir>/quality/office.html`` (and, with ``rectification``, each institution's 整改清单).

    Rectification lists are written for the institutions below the threshold or with held batches
    (or ``institution_codes``), from their current batches' scores. ``con``: an open lake connection
    to read with instead of a new one.
    """
    s = settings or load_settings()
    given = con
    with (contextlib.nullcontext(con) if con is not None else contextlib.closing(connect(s, read_only=True))) as con:
        data = load_office_data(con)
        samples = load_samples(con, data["worst"])
    lists: dict[str, Path] = {}
    if rectification and data["institutions"]:
        codes = list(institution_codes) if institution_codes is not None else sorted(
            {i["institution_code"] for i in data["institutions"] if not i["meets"] or i["held"]})
        if codes:
            from quality.rectification import write_rectification_lists

            lists = write_rectification_lists(None, s, institution_codes=codes, con=given)
    existing = {p.stem: p for p in (s.reports_dir / "quality" / "rectification").glob("*.xlsx")}
    path = office_report_path(s)
    links = {}
    if (path.parent / "index.html").exists():
        links["四大数据库规则结果"] = "index.html"
    if (path.parent / "data_docs" / "index.html").exists():
        links["GX 数据文档"] = "data_docs/index.html"
    from quality.data_docs import latest_batch_pages

    pages = latest_batch_pages(s)
    for h in data.get("held") or []:
        page = pages.get((f"bronze.{h['dataset']}", h["batch_id"]))
        if page:
            h["docs"] = f"data_docs/{page}"
    page = render_office_report(data, samples, {**existing, **lists}, links=links)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, path)
    return OfficeReport(path, lists, data)

"""GX Data Docs for every validation, self-contained: readable offline, mailable as one file.

GX renders a validation result with its own renderer (``ValidationResultsPageRenderer``) and page
view (``DefaultJinjaPageView``); in GX 1.24.1 that page loads Bootstrap, jQuery, Vega, Font Awesome
and the GX logos from CDNs (unpkg, jsdelivr, cdnjs, stackpath, code.jquery.com, S3): offline it
renders as unstyled text with broken images, and a reader's browser would call out to the internet.
``make_self_contained`` post-processes GX's page:

* every ``<link>`` (CDN stylesheets; a favicon at a path that does not exist in our reports) and
  every ``<script>`` is removed: the CDN ones, and the inline ones that drive Bootstrap widgets
  through the jQuery that is no longer loaded;
* images from the internet are removed; links to the internet keep their text, lose their target;
* GX's own stylesheet (already inlined by GX) stays, and ``_BOOTSTRAP_SUBSET`` adds the few
  Bootstrap rules the page's layout needs (grid, cards, tables, badges); collapsed sections are
  shown open, as there is no script to open them.

Pages go to ``<reports_dir>/quality/data_docs/<schema>.<table>/<run_id>.html`` with a small JSON
sidecar; ``index.html`` lists every validation (newest first) and is rewritten each time.

The bronze gate validations (``quality.scoring``: one SQL pass per data set, generated from the same
rules, counted per institution and batch) are GX validations too: ``bronze_validation_result`` turns
one batch's row-level counts into a GX ``ExpectationSuiteValidationResult`` — one
``ExpectationValidationResult`` per rule, built from the rule's own GX expectation, with
``element_count`` (the batch's rows), ``unexpected_count`` (its failing rows) and
``unexpected_percent``; ``success`` is the rule's status against its threshold, the suite's is the
gate's batch score (critical rules, record level). GX's renderer then draws it like any validation:
the docs show exactly what the gate decided. Those pages go to
``data_docs/bronze.<dataset>/<batch_id>/<run_id>.html`` (``write_bronze_data_docs``, called by the gate).
A batch whose counts, rules and decision equal its newest page's gets no new page (the gate re-scores
held batches on every run), and each table's or batch's folder keeps its HEALTHLAKE_DATA_DOCS_KEEP
(default 10) newest pages.
Every expectation carries the rule's id and Chinese name as its GX ``description``.
"""

from __future__ import annotations

import contextlib
import hashlib
import html
import json
import logging
import os
import re
from datetime import datetime, timezone
from pathlib import Path

from healthlake.config import Settings, settings as load_settings

log = logging.getLogger(__name__)

__all__ = ["write_data_docs", "make_self_contained", "data_docs_dir", "write_docs_index", "EXTERNAL_URL",
           "bronze_validation_result", "write_bronze_data_docs", "latest_batch_pages"]

EXTERNAL_URL = re.compile(r"https?://", re.I)
_LINK = re.compile(r"<link\b[^>]*>", re.I | re.S)
_SCRIPT = re.compile(r"<script\b[^>]*>.*?</script\s*>", re.I | re.S)
_IMG_EXT = re.compile(r"<img\b[^>]*\bsrc\s*=\s*[\"']?https?://[^>]*>", re.I | re.S)
_A_EXT = re.compile(r"<a\b([^>]*?)\bhref\s*=\s*([\"'])https?://[^\"']*\2([^>]*)>", re.I | re.S)
_ANY_URL = re.compile(r"https?://[^\s\"'<>)]+", re.I)

# The Bootstrap 4 rules GX's validation page relies on for its layout, nothing more.
_BOOTSTRAP_SUBSET = """
*,::after,::before{box-sizing:border-box}
body{margin:0;font-family:"Noto Sans CJK SC","Microsoft YaHei","PingFang SC",-apple-system,"Segoe UI",Roboto,Arial,sans-serif;
 font-size:14px;line-height:1.5;color:#212529;background:#fafafa}
.container,.container-fluid{width:100%;padding:0 15px;margin:0 auto}
.row{display:flex;flex-wrap:wrap;margin:0 -15px}
[class*="col-"],.col{position:relative;width:100%;padding:0 15px}
@media (min-width:768px){.col-md-2{flex:0 0 16.66%;max-width:16.66%}.col-md-3{flex:0 0 25%;max-width:25%}
 .col-md-9{flex:0 0 75%;max-width:75%}.col-md-10{flex:0 0 83.33%;max-width:83.33%}.col-md-12{flex:0 0 100%;max-width:100%}
 .col-md-6{flex:0 0 50%;max-width:50%}.col-md-4{flex:0 0 33.33%;max-width:33.33%}.col-md-8{flex:0 0 66.66%;max-width:66.66%}}
.card{background:#fff;border:1px solid rgba(0,0,0,.125);border-radius:.25rem;margin-bottom:1rem}
.card-header{padding:.5rem 1rem;background:#edf2f7;border-bottom:1px solid rgba(0,0,0,.125)}
.card-body{padding:1rem}
.table{width:100%;border-collapse:collapse;margin-bottom:1rem}
.table td,.table th{padding:.4rem .6rem;border-top:1px solid #dee2e6;vertical-align:top;text-align:left}
.table-sm td,.table-sm th{padding:.25rem .4rem}
.badge{display:inline-block;padding:.2em .5em;font-size:85%;border-radius:.25rem;background:#e2e8f0}
.badge-success,.text-success{color:#22543d}.badge-danger,.text-danger{color:#822727}
.badge-success{background:#c6f6d5}.badge-danger{background:#fed7d7}
.collapse{display:block!important}.d-none{display:none}
.navbar{display:flex;align-items:center;padding:.5rem 1rem;background:#fff;border-bottom:1px solid #dee2e6}
.sticky{position:sticky;top:0}
.btn{display:none}
.ge-walkthrough-modal,.modal{display:none!important}
.hl-banner{padding:10px 16px;background:#2b6cb0;color:#fff;font-size:15px}
.hl-banner a{color:#fff}
"""


def data_docs_dir(settings: Settings | None = None) -> Path:
    return (settings or load_settings()).reports_dir / "quality" / "data_docs"


def make_self_contained(page: str, banner: str | None = None) -> str:
    """Strip GX's CDN assets, scripts and outbound links; add the CSS the page needs."""
    page = _LINK.sub("", page)
    page = _SCRIPT.sub("", page)
    page = _IMG_EXT.sub("", page)
    page = _A_EXT.sub(lambda m: f"<a{m.group(1)}{m.group(3)}>", page)
    # any URL left in text or attributes (GX's footer, favicons…): keep it readable but not a URL
    page = _ANY_URL.sub(lambda m: m.group(0).split("://", 1)[1], page)
    style = f"<style>{_BOOTSTRAP_SUBSET}</style>"
    page = page.replace("</head>", style + "</head>", 1) if "</head>" in page else style + page
    if banner:
        page = re.sub(r"(<body[^>]*>)", lambda m: m.group(1) + f'<div class="hl-banner">{banner}</div>', page, count=1)
    page = page.replace("<html>", '<html lang="zh-CN">', 1)
    return page


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


_VIEW = None


def render_page(outcome) -> str:
    """GX's own HTML page of a validation result (one cached Jinja view: its templates compile once)."""
    global _VIEW
    from great_expectations.render.renderer.page_renderer import ValidationResultsPageRenderer
    from great_expectations.render.view.view import DefaultJinjaPageView

    if _VIEW is None:
        _VIEW = DefaultJinjaPageView()
        # GX's templates are package files that do not change while the process runs: no stat of
        # every template file at each of the ~50 template look-ups of a page (Jinja's auto_reload)
        _VIEW.env.auto_reload = False
    return _VIEW.render(ValidationResultsPageRenderer().render(outcome))


def _write_page(page: str, path: Path, meta: dict, keep: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, path)
    path.with_suffix(".json").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
    _prune(path.parent, keep)
    return path


def _folder_metas(folder: Path) -> list[tuple[str, Path, dict]]:
    """(run_at, page meta path, meta) of the pages in one table's or batch's folder, newest first."""
    out = []
    for p in folder.glob("*.json"):
        try:
            m = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        out.append((m.get("run_at") or "", p, m))
    return sorted(out, key=lambda t: t[0], reverse=True)


def _prune(folder: Path, keep: int) -> None:
    """Keep the ``keep`` newest pages of a table's (or a batch's) folder (HEALTHLAKE_DATA_DOCS_KEEP)."""
    for _, meta_path, _ in _folder_metas(folder)[keep:]:
        meta_path.with_suffix(".html").unlink(missing_ok=True)
        meta_path.unlink(missing_ok=True)


def _fingerprint(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False, sort_keys=True, default=str).encode()).hexdigest()[:32]


def write_data_docs(outcome, table: str, run_id: str, run_at: datetime | None = None,
                    settings: Settings | None = None, rule_names: dict[str, str] | None = None,
                    index: bool = True) -> Path:
    """Render one GX validation result (``ExpectationSuiteValidationResult``) to a self-contained page.
    ``index=False``: the caller rewrites ``index.html`` once after its pages (``write_docs_index``)."""
    s = settings or load_settings()
    run_at = run_at or datetime.now(timezone.utc)
    stats = dict(getattr(outcome, "statistics", {}) or {})
    banner = (f"healthlake 质控 · GX 数据文档 · {html.escape(table)} · 运行 {html.escape(run_id)} · "
              f'<a href="../index.html">全部验证</a>')
    page = make_self_contained(render_page(outcome), banner=banner)
    path = data_docs_dir(s) / _safe(table) / f"{_safe(run_id)}.html"
    meta = {"table": table, "run_id": run_id, "run_at": run_at.isoformat(), "success": bool(outcome.success),
            "evaluated": stats.get("evaluated_expectations"), "successful": stats.get("successful_expectations"),
            "unsuccessful": stats.get("unsuccessful_expectations"), "page": f"{_safe(table)}/{path.name}"}
    _write_page(page, path, meta, s.data_docs_keep)
    if index:
        write_docs_index(s)
    return path


# --- the bronze gate's validations ------------------------------------------------------------

def rule_configurations(rules) -> dict:
    """rule id → the GX ``ExpectationConfiguration`` of the rule as the gate's Data Docs show it (its
    severity, dimension and threshold in ``meta``, id and Chinese name as its description), or None
    for a rule GX cannot build. The same for every batch of a data set: built once per data set."""
    from quality.report import DIMENSION_ZH, SEVERITY_ZH

    out = {}
    for rule in rules:
        try:
            expectation = rule.build_expectation(
                meta={"severity": rule.severity, "dimension": rule.dimension, "threshold": float(rule.threshold)},
                description=f"{SEVERITY_ZH.get(rule.severity, rule.severity)}·"
                            f"{DIMENSION_ZH.get(rule.dimension, rule.dimension)} {rule.docs_description}")
            out[rule.id] = _built_configuration(expectation)
        except Exception:  # noqa: BLE001 - a rule GX cannot build was ERROR in the scoring too
            out[rule.id] = None
    return out


# id(configuration) → (configuration, the expectation it was built from), while _reused_expectations is open
_BUILT: dict[int, tuple] | None = None
_BuiltConfiguration = None


@contextlib.contextmanager
def _reused_expectations():
    """Within the block, ``rule_configurations`` registers each configuration with the expectation
    it was made from, and the configuration's ``to_domain_obj()`` returns that expectation. GX's page
    renderer asks each result's configuration for its expectation twice (to read its description)
    and builds a new one each time: a pydantic model, 11,000 for the demo gate's 445 pages (~0.4 s).
    Both are built from the same rule: the same description. The registry is emptied at the end."""
    global _BUILT
    outer, _BUILT = _BUILT, ({} if _BUILT is None else _BUILT)
    try:
        yield
    finally:
        if outer is None:
            _BUILT = None


def _built_configuration(expectation):
    """``expectation.configuration``; registered in ``_BUILT`` inside ``_reused_expectations``."""
    global _BuiltConfiguration
    config = expectation.configuration
    if _BUILT is None:
        return config
    if _BuiltConfiguration is None:
        from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

        class BuiltConfiguration(ExpectationConfiguration):
            def to_domain_obj(self):
                built = _BUILT.get(id(self)) if _BUILT is not None else None
                return built[1] if built is not None and built[0] is self else super().to_domain_obj()

        _BuiltConfiguration = BuiltConfiguration
    config.__class__ = _BuiltConfiguration
    _BUILT[id(config)] = (config, expectation)
    return config


def bronze_validation_result(run, batch, rules, decision=None, configurations=None, batch_results=None):
    """One batch's gate validation as a GX ``ExpectationSuiteValidationResult``.

    ``run``: a ``scoring.DatasetRun``; ``batch``: one of its ``BatchScore``; ``rules``: the rules
    scored (``Rule``); ``decision``: the gate's ``GateDecision`` of the batch, if taken. The counts are
    the scoring's own (rows of the batch, failing rows per rule): nothing is recomputed.
    ``configurations``: ``rule_configurations(rules)``, when the caller has it (several batches of
    one data set); ``batch_results``: the batch's ``GroupResult`` list, likewise. The
    configurations are only read: GX's renderer does not change them.
    """
    from great_expectations.core import ExpectationSuiteValidationResult, ExpectationValidationResult

    from quality.runner import ERROR, NOT_APPLICABLE, PASS

    if configurations is None:
        configurations = rule_configurations(rules)
    if batch_results is None:
        batch_results = [g for g in run.results if g.batch_id == batch.batch_id]
    by_rule = {g.rule_id: g for g in batch_results}
    results = []
    if batch.status != NOT_APPLICABLE:           # an empty batch: no expectation applies (not a pass)
        for rule in rules:
            g = by_rule.get(rule.id)
            if g is None:
                continue
            config = configurations.get(rule.id)
            if g.status == ERROR or config is None:
                results.append(ExpectationValidationResult(
                    success=False, expectation_config=config, result={},
                    exception_info={"raised_exception": True, "exception_message": g.message,
                                    "exception_traceback": None}))
                continue
            n, rows = int(g.rows_failed or 0), int(g.rows_checked)
            pct = 100.0 * n / rows if rows else 0.0
            result = {"element_count": rows, "unexpected_count": n, "unexpected_percent": pct,
                      "unexpected_percent_total": pct, "unexpected_percent_nonmissing": pct,
                      "partial_unexpected_list": []}
            if rule.expectation == "unexpected_rows_expectation":
                result["observed_value"] = n            # what GX reports for it: the rows the query returned
            results.append(ExpectationValidationResult(
                success=g.status == PASS, expectation_config=config, result=result,
                exception_info={"raised_exception": False, "exception_message": None, "exception_traceback": None}))
    ok = sum(bool(r.success) for r in results)
    table = f"bronze.{run.dataset}"
    return ExpectationSuiteValidationResult(
        success=batch.status == PASS,
        results=results,
        suite_name=f"healthlake:{table}",
        statistics={"evaluated_expectations": len(results), "successful_expectations": ok,
                    "unsuccessful_expectations": len(results) - ok,
                    "success_percent": 100.0 * ok / len(results) if results else None},
        meta={"great_expectations_version": _gx_version(),
              "batch_spec": {"data_asset_name": f"{table} · 机构 {batch.institution_code} · 批次 {batch.batch_id}"},
              "batch_markers": {}, "active_batch_definition": {},
              "run_id": {"run_name": run.run_id, "run_time": run.run_at.isoformat()},
              "validation_time": run.run_at.strftime("%Y%m%dT%H%M%S.%fZ"),
              "healthlake": {"dataset": run.dataset, "batch_id": batch.batch_id,
                             "institution_code": batch.institution_code, "feed": batch.feed,
                             "rows_checked": batch.rows_checked, "rows_passing": batch.rows_passing,
                             "pass_rate": batch.pass_rate, "threshold": batch.threshold, "status": batch.status,
                             "critical_rules_failed": list(batch.critical_rules_failed),
                             "decision": getattr(decision, "decision", None)}},
        batch_id=f"lake-{table}-{batch.batch_id}",
    )


def _gx_version() -> str:
    import great_expectations

    return great_expectations.__version__


_DECISION_ZH = {"promoted": "放行", "held": "拦截（暂缓入库）"}


def write_bronze_data_docs(bronze_run, settings: Settings | None = None, decisions=None, rules=None) -> list[Path]:
    """A self-contained GX Data Docs page for every batch of a ``scoring.BronzeRun`` (the gate's validations).

    ``decisions``: the gate's ``GateDecision`` list (shown on each page); ``rules``: dataset → rules
    scored (default: the catalogue's). Returns the pages written; the index is rewritten once.
    """
    with _reused_expectations():
        return _write_bronze_data_docs(bronze_run, settings, decisions, rules)


def _write_bronze_data_docs(bronze_run, settings: Settings | None, decisions, rules) -> list[Path]:
    from quality.scoring import rules_for_dataset

    s = settings or load_settings()
    by_batch = {(d.dataset, d.batch_id): d for d in (decisions or [])}
    out, unchanged = [], 0
    for dataset, run in bronze_run.datasets.items():
        rule_list = (rules or {}).get(dataset) or rules_for_dataset(dataset).rules
        table = f"bronze.{dataset}"
        rules_key = _fingerprint([(r.id, r.expectation, r.severity, r.threshold, dict(r.kwargs)) for r in rule_list])
        configurations = None                   # built at the data set's first new page (registered in _BUILT)
        results_by_batch: dict[str, list] = {}
        for g in run.results:
            results_by_batch.setdefault(g.batch_id, []).append(g)
        for batch in run.batches:
            decision = by_batch.get((dataset, batch.batch_id))
            rel_dir = f"{_safe(table)}/{_safe(batch.batch_id)}"
            # The same counts, rules and decision as the batch's newest page (every gate run re-scores
            # held batches): that page still documents it; no new page.
            fingerprint = _fingerprint(rules_key, batch.rows_checked, batch.rows_passing, batch.pass_rate,
                                       batch.threshold, batch.status, list(batch.critical_rules_failed),
                                       getattr(decision, "decision", None),
                                       sorted((g.rule_id, g.status, g.rows_checked, g.rows_failed, g.message)
                                              for g in results_by_batch.get(batch.batch_id, [])))
            newest = _folder_metas(data_docs_dir(s) / rel_dir)[:1]
            if newest and newest[0][2].get("fingerprint") == fingerprint:
                unchanged += 1
                continue
            if configurations is None:
                configurations = rule_configurations(rule_list)
            outcome = bronze_validation_result(run, batch, rule_list, decision, configurations,
                                               results_by_batch.get(batch.batch_id, []))
            rate = "不适用（批次无数据）" if batch.pass_rate is None else f"{batch.pass_rate * 100:.2f}%"
            verdict = _DECISION_ZH.get(getattr(decision, "decision", None), "未决定")
            crit = "、".join(batch.critical_rules_failed) or "无"
            banner = (f"healthlake 质控闸门 · GX 数据文档 · {html.escape(table)} · 机构 {html.escape(batch.institution_code)}"
                      f" · 批次 {html.escape(batch.batch_id)}<br>关键规则合格率（记录级）{rate}，阈值 "
                      f"{batch.threshold * 100:.2f}%，闸门决定：<b>{verdict}</b>；未通过的关键规则：{html.escape(crit)}"
                      f" · 运行 {html.escape(run.run_id)} · " + '<a href="../../index.html">全部验证</a>')
            page = make_self_contained(render_page(outcome), banner=banner)
            rel = f"{rel_dir}/{_safe(run.run_id)}.html"
            stats = outcome.statistics
            meta = {"table": table, "run_id": run.run_id, "run_at": run.run_at.isoformat(),
                    "success": bool(outcome.success), "evaluated": stats.get("evaluated_expectations"),
                    "successful": stats.get("successful_expectations"),
                    "unsuccessful": stats.get("unsuccessful_expectations"), "page": rel,
                    "batch_id": batch.batch_id, "institution_code": batch.institution_code,
                    "pass_rate": batch.pass_rate, "status": batch.status,
                    "decision": getattr(decision, "decision", None), "fingerprint": fingerprint}
            out.append(_write_page(page, data_docs_dir(s) / rel, meta, s.data_docs_keep))
    if out or not (data_docs_dir(s) / "index.html").exists():
        write_docs_index(s)
    if unchanged:
        log.info("GX Data Docs: %d batch page(s) written, %d batch(es) unchanged since their newest page", len(out), unchanged)
    return out


def _metas(d: Path) -> list[dict]:
    metas = []
    for p in list(d.glob("*/*.json")) + list(d.glob("*/*/*.json")):
        try:
            metas.append(json.loads(p.read_text(encoding="utf-8")))
        except ValueError:
            continue
    return metas


def latest_batch_pages(settings: Settings | None = None) -> dict[tuple[str, str], str]:
    """(table, batch_id) → the newest gate validation page of that batch, relative to ``data_docs/``."""
    out: dict[tuple[str, str], tuple[str, str]] = {}
    for m in _metas(data_docs_dir(settings)):
        if m.get("batch_id"):
            key = (m["table"], m["batch_id"])
            if key not in out or m["run_at"] > out[key][0]:
                out[key] = (m["run_at"], m["page"])
    return {k: v[1] for k, v in out.items()}


def write_docs_index(settings: Settings | None = None) -> Path:
    """``data_docs/index.html``: every validation page, newest first (self-contained, no scripts)."""
    from quality.report import _CSS

    d = data_docs_dir(settings)
    d.mkdir(parents=True, exist_ok=True)
    metas = _metas(d)
    metas.sort(key=lambda m: (m.get("run_at") or "", m.get("table") or ""), reverse=True)
    def result(m: dict) -> str:
        if m.get("batch_id"):       # a gate validation: the batch's score and the gate's decision
            rate = "不适用" if m.get("pass_rate") is None else f"{m['pass_rate'] * 100:.2f}%"
            verdict = _DECISION_ZH.get(m.get("decision"), "未决定")
            css = "FAIL" if m.get("decision") == "held" else "PASS"
            return f"<span class='s {css}'>{html.escape(verdict)}</span> 关键规则合格率 {rate}"
        ok = m.get("success")
        return f"<span class='s {'PASS' if ok else 'FAIL'}'>{'全部通过' if ok else '有未通过'}</span>"

    rows = "".join(
        f"<tr><td>{html.escape(m['run_at'][:19].replace('T', ' '))} UTC</td><td>{html.escape(m['table'])}</td>"
        f"<td>{html.escape(m.get('institution_code') or '')}</td>"
        f"<td class='small'>{html.escape(m.get('batch_id') or '整表')}</td>"
        f"<td class='n'>{m.get('evaluated') or 0}</td><td class='n'>{m.get('successful') or 0}</td>"
        f"<td class='n'>{m.get('unsuccessful') or 0}</td><td>{result(m)}</td>"
        f"<td><a href=\"{html.escape(m['page'])}\">{html.escape(m['run_id'])}</a></td></tr>" for m in metas)
    page = ('<!DOCTYPE html><html lang="zh-CN"><head><meta charset="utf-8"><title>GX 数据文档</title>'
            f"<style>{_CSS}</style></head><body><h1>GX 数据文档（每次验证一页）</h1>"
            "<div class='meta'>Great Expectations 验证结果，已去除外部链接，可离线阅读。"
            "贴源层（bronze）每个批次一页：质控闸门按机构、按批次逐行评分的结果（每条规则的检查行数、不合格行数、"
            "不合格比例）以 GX 验证结果呈现，与闸门的放行/拦截决定一致；四大数据库（marts）每次整表验证一页。"
            "GX 按期望计数（通过的期望数）；按行计的合格率见质控报告。</div>"
            "<p><a href=\"../office.html\">质控报告</a></p>"
            "<table><tr><th>验证时间</th><th>数据表</th><th>机构</th><th>批次</th><th>期望数</th><th>通过</th>"
            f"<th>未通过</th><th>结果</th><th>页面</th></tr>{rows}</table></body></html>")
    path = d / "index.html"
    path.write_text(page, encoding="utf-8")
    return path

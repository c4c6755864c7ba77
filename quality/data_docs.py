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
"""

from __future__ import annotations

import html
import json
import os
import re
from datetime import datetime, timezone
from pathlib import Path

from healthlake.config import Settings, settings as load_settings

__all__ = ["write_data_docs", "make_self_contained", "data_docs_dir", "write_docs_index", "EXTERNAL_URL"]

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


def write_data_docs(outcome, table: str, run_id: str, run_at: datetime | None = None,
                    settings: Settings | None = None, rule_names: dict[str, str] | None = None) -> Path:
    """Render one GX validation result (``ExpectationSuiteValidationResult``) to a self-contained page."""
    from great_expectations.render.renderer.page_renderer import ValidationResultsPageRenderer
    from great_expectations.render.view.view import DefaultJinjaPageView

    s = settings or load_settings()
    run_at = run_at or datetime.now(timezone.utc)
    document = ValidationResultsPageRenderer().render(outcome)
    page = DefaultJinjaPageView().render(document)
    stats = dict(getattr(outcome, "statistics", {}) or {})
    banner = (f"healthlake 质控 · GX 数据文档 · {html.escape(table)} · 运行 {html.escape(run_id)} · "
              f'<a href="../index.html">全部验证</a>')
    page = make_self_contained(page, banner=banner)
    folder = data_docs_dir(s) / _safe(table)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{_safe(run_id)}.html"
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, path)
    meta = {"table": table, "run_id": run_id, "run_at": run_at.isoformat(), "success": bool(outcome.success),
            "evaluated": stats.get("evaluated_expectations"), "successful": stats.get("successful_expectations"),
            "unsuccessful": stats.get("unsuccessful_expectations"), "page": f"{_safe(table)}/{path.name}"}
    path.with_suffix(".json").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
    write_docs_index(s)
    return path


def write_docs_index(settings: Settings | None = None) -> Path:
    """``data_docs/index.html``: every validation page, newest first (self-contained, no scripts)."""
    from quality.report import _CSS

    d = data_docs_dir(settings)
    d.mkdir(parents=True, exist_ok=True)
    metas = []
    for p in d.glob("*/*.json"):
        try:
            metas.append(json.loads(p.read_text(encoding="utf-8")))
        except ValueError:
            continue
    metas.sort(key=lambda m: (m.get("run_at") or "", m.get("table") or ""), reverse=True)
    rows = "".join(
        f"<tr><td>{html.escape(m['run_at'][:19].replace('T', ' '))} UTC</td><td>{html.escape(m['table'])}</td>"
        f"<td class='n'>{m.get('evaluated') or 0}</td><td class='n'>{m.get('successful') or 0}</td>"
        f"<td class='n'>{m.get('unsuccessful') or 0}</td>"
        f"<td><span class='s {'PASS' if m.get('success') else 'FAIL'}'>{'全部通过' if m.get('success') else '有未通过'}</span></td>"
        f"<td><a href=\"{html.escape(m['page'])}\">{html.escape(m['run_id'])}</a></td></tr>" for m in metas)
    page = ('<!DOCTYPE html><html lang="zh-CN"><head><meta charset="utf-8"><title>GX 数据文档</title>'
            f"<style>{_CSS}</style></head><body><h1>GX 数据文档（每次验证一页）</h1>"
            "<div class='meta'>Great Expectations 验证结果，已去除外部链接，可离线阅读。"
            "GX 按期望计数（通过的期望数）；按行计的合格率见质控报告。</div>"
            "<p><a href=\"../office.html\">质控报告</a></p>"
            "<table><tr><th>验证时间</th><th>数据表</th><th>期望数</th><th>通过</th><th>未通过</th><th>结果</th>"
            f"<th>页面</th></tr>{rows}</table></body></html>")
    path = d / "index.html"
    path.write_text(page, encoding="utf-8")
    return path

"""The resource directory as one self-contained HTML page (no CDN, no server): search, dataset pages
with data items and their classification, column lineage, related resources, quality and freshness.

The directory JSON is embedded in the page (``<script type="application/json">``, with ``</`` escaped
so no value can close the script element); the page renders it with a little plain JavaScript and
routes with the URL hash (``index.html#emr.fct_encounter``), so it opens from a file or any static
web server, offline.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["write_portal", "render_portal"]

_PAGE = """<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>数据资源目录 · 全民健康信息平台</title>
<style>
body{font-family:system-ui,"PingFang SC","Microsoft YaHei",sans-serif;margin:0;color:#1d2733;background:#f5f7fa}
header{background:#0b5394;color:#fff;padding:12px 24px}header h1{font-size:20px;margin:0}
header small{opacity:.8}main{padding:16px 24px}
input#q{width:100%;max-width:640px;font-size:16px;padding:8px;border:1px solid #9ab;border-radius:4px}
table{border-collapse:collapse;width:100%;background:#fff;margin:8px 0 16px}
th,td{border:1px solid #dde3ea;padding:4px 8px;text-align:left;font-size:13px;vertical-align:top}
th{background:#eef2f6}a{color:#0b5394;text-decoration:none}a:hover{text-decoration:underline}
.lv{display:inline-block;min-width:22px;text-align:center;border-radius:3px;color:#fff;font-weight:600}
.lv1{background:#5a9}.lv2{background:#59c}.lv3{background:#e9a23b}.lv4{background:#d6603d}.lv5{background:#a22}
.kv td:first-child{width:120px;background:#f8fafc;font-weight:600}.muted{color:#778}
.lin{font-family:ui-monospace,monospace;font-size:12px}
</style></head><body>
<header><h1>数据资源目录</h1><small>生成时间 <span id="gen"></span> · 分类分级依据 GB/T 39725-2020</small></header>
<main><div id="app"></div></main>
<script type="application/json" id="directory">__DATA__</script>
<script>
const DOC = JSON.parse(document.getElementById('directory').textContent);
const E = DOC.entries, L = DOC.labels;
document.getElementById('gen').textContent = DOC.generated_at;
const esc = s => String(s ?? '').replace(/[&<>"']/g, c => ({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;',"'":'&#39;'}[c]));
const lv = n => n ? `<span class="lv lv${n}">${n}</span>` : '<span class="muted">未分级</span>';
const pct = x => x == null ? '—' : (100 * x).toFixed(2) + '%';
const link = t => E.some(e => e.table === t) ? `<a href="#${esc(t)}">${esc(t)}</a>` : esc(t);
function list(q) {
  q = (q || '').trim().toLowerCase();
  const rows = E.filter(e => !q || [e.table, e.name_zh, e.summary, e.resource_code, e.database_zh]
      .concat(e.items.flatMap(i => [i.name, i.zh, i.description, i.de, i.value_set]))
      .some(v => String(v ?? '').toLowerCase().includes(q)));
  return `<p><input id="q" placeholder="搜索资源、数据项、数据元编码（如 高血压、身份证件号码、DE02.01.030.00）" value="${esc(q)}"></p>
  <p class="muted">${rows.length} / ${E.length} 个资源</p>
  <table><tr><th>${L.resource_code}</th><th>${L.name_zh}</th><th>${L.table}</th><th>${L.class_zh}</th><th>${L.share_type}</th>
  <th>${L.max_level}</th><th>${L.row_count}</th><th>${L.institutions}</th><th>${L.quality_pass_rate}</th><th>${L.last_snapshot_at}</th></tr>
  ${rows.map(e => `<tr><td>${esc(e.resource_code)}</td><td><a href="#${esc(e.table)}">${esc(e.name_zh)}</a></td><td>${esc(e.table)}</td>
  <td>${esc(e.class_zh)}</td><td>${esc(e.share_type)}</td><td>${lv(e.max_level)}</td><td>${e.row_count ?? '—'}</td>
  <td>${e.institutions ?? '—'}</td><td>${pct(e.quality_pass_rate)}</td><td>${esc(e.last_snapshot_at || '—')}</td></tr>`).join('')}</table>`;
}
function page(e) {
  const kv = ['resource_code','name_zh','table','database_zh','class_zh','summary','format','share_type','share_condition',
              'share_method','open_attr','update_cycle','published_at','row_count','last_snapshot_at','institutions','quality_pass_rate'];
  const val = k => k === 'quality_pass_rate' ? pct(e[k]) : esc(e[k] ?? '—');
  return `<p><a href="#">← 全部资源</a></p><h2>${esc(e.name_zh)} <small class="muted">${esc(e.table)}</small></h2>
  <table class="kv">${kv.map(k => `<tr><td>${L[k] || k}</td><td>${val(k)}</td></tr>`).join('')}
  <tr><td>${L.providers}</td><td>${e.providers.map(p => `${esc(p.code)} ${esc(p.name)}（${p.rows ?? '—'} 行）`).join('<br>')}</td></tr>
  <tr><td>${L.related}</td><td>上游：${(e.related.upstream || []).map(link).join('，') || '—'}<br>下游：${(e.related.downstream || []).map(link).join('，') || '—'}</td></tr></table>
  <h3>${L.items}（${e.items.length}）</h3>
  <table><tr><th>数据项</th><th>中文名</th><th>类型</th><th>数据元编码（WS 363）</th><th>值域</th><th>类别</th><th>级别</th><th>发布处理</th><th>列级血缘（直接上游）</th></tr>
  ${e.items.map(i => `<tr><td>${esc(i.name)}</td><td>${esc(i.zh || i.description)}</td><td>${esc(i.type)}</td><td>${esc(i.de || '')}</td>
  <td>${esc(i.value_set || '')}</td><td>${esc(i.category || '')}</td><td>${lv(i.level)}</td><td>${esc(i.kind || '')}</td>
  <td class="lin">${(i.lineage || []).map(c => { const t = c.split('.').slice(0, 2).join('.'); return E.some(x => x.table === t) ? `<a href="#${esc(t)}">${esc(c)}</a>` : esc(c); }).join('<br>')}</td></tr>`).join('')}</table>
  ${e.lineage_error ? `<p class="muted">列级血缘：${esc(e.lineage_error)}</p>` : ''}`;
}
function render() {
  const h = decodeURIComponent(location.hash.slice(1)), e = E.find(x => x.table === h || x.resource_code === h);
  const app = document.getElementById('app');
  app.innerHTML = e ? page(e) : list(h.startsWith('q=') ? h.slice(2) : '');
  const q = document.getElementById('q');
  if (q) { q.focus(); q.setSelectionRange(q.value.length, q.value.length);
           q.oninput = () => { history.replaceState(null, '', '#q=' + encodeURIComponent(q.value)); render(); }; }
}
window.onhashchange = render; render();
</script></body></html>
"""


def render_portal(doc: dict) -> str:
    data = json.dumps(doc, ensure_ascii=False, default=str).replace("</", "<\\/")
    return _PAGE.replace("__DATA__", data)


def write_portal(doc: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(render_portal(doc), encoding="utf-8")
    tmp.replace(path)
    return path

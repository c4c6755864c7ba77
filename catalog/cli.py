"""``healthlake catalog …``: the resource directory and the per-clearance publication.

    healthlake catalog search 高血压                 resources whose name, summary or data items match
    healthlake catalog show emr.fct_encounter [--json]   one entry: catalogue fields, figures, data items
    healthlake catalog build                       rebuild the directory (lake.catalog, JSON, HTML portal)
    healthlake catalog publish                     rewrite published/level_1..5.duckdb from the marts
    healthlake catalog classify                    unclassified columns and content-detector findings
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys

__all__ = ["add_catalog_parser"]


def _pct(x) -> str:
    return "—" if x is None else f"{x * 100:.2f}%"


def cmd_search(args) -> int:
    from catalog.directory import load_directory, search

    try:
        entries = load_directory()
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    hits = search(entries, args.text)
    if args.json:
        print(json.dumps([{"resource_code": e["resource_code"], "table": e["table"], "name_zh": e["name_zh"],
                           "matched": where} for e, where in hits], ensure_ascii=False, indent=1))
        return 0
    if not hits:
        print(f"未找到与“{args.text}”相关的资源（共 {len(entries)} 个资源）")
        return 1
    print(f"与“{args.text}”相关的资源 {len(hits)} 个：")
    for e, where in hits:
        print(f"  {e['resource_code']}  {e['table']:<44} {e['name_zh']}  [{e['share_type']}，最高 {e['max_level']} 级]")
        print(f"      匹配：{'；'.join(where[:4])}{' …' if len(where) > 4 else ''}")
    return 0


def cmd_show(args) -> int:
    from catalog.directory import FIELD_LABELS, find_entry, load_directory

    try:
        e = find_entry(load_directory(), args.resource)
    except (FileNotFoundError, KeyError) as err:
        print(f"error: {err.args[0] if err.args else err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(e, ensure_ascii=False, indent=1, default=str))
        return 0
    for k in ("resource_code", "name_zh", "table", "database_zh", "class_zh", "summary", "format", "share_type",
              "share_condition", "share_method", "open_attr", "update_cycle", "published_at", "row_count",
              "last_snapshot_at", "institutions", "quality_pass_rate"):
        v = _pct(e[k]) if k == "quality_pass_rate" else (e.get(k) if e.get(k) not in (None, "") else "—")
        print(f"{FIELD_LABELS[k]:<8} {v}")
    print(f"{FIELD_LABELS['providers']:<8} " + "；".join(f"{p['code']} {p['name']}（{p['rows']} 行）" for p in e["providers"]))
    print(f"{FIELD_LABELS['related']:<8} 上游 {', '.join(e['related']['upstream']) or '—'}；"
          f"下游 {', '.join(e['related']['downstream']) or '—'}")
    print(f"\n{FIELD_LABELS['items']}（{len(e['items'])}）:")
    print(f"  {'数据项':<28} {'中文名':<14} {'类型':<12} {'数据元':<16} {'值域':<16} {'类别':<6} 级别  直接上游")
    for i in e["items"]:
        print(f"  {i['name']:<28} {(i['zh'] or '')[:14]:<14} {i['type'][:12]:<12} {i['de'] or '':<16} "
              f"{(i['value_set'] or '')[:16]:<16} {i['category'] or '未分类':<6} {i['level'] or '—':<4}  "
              f"{', '.join(i['lineage'][:3])}{' …' if len(i['lineage']) > 3 else ''}")
    return 0


def cmd_build(args) -> int:
    from catalog.directory import build_directory, directory_json_path
    from healthlake.config import settings
    from healthlake.lake import connect

    s = settings()
    with contextlib.closing(connect(s)) as con:
        entries = build_directory(con, s)
    print(f"资源目录：{len(entries)} 个资源 → {directory_json_path(s)}；门户 {directory_json_path(s).with_name('index.html')}")
    return 0


def cmd_publish(args) -> int:
    from catalog.publish import PublishError, publish_all

    try:
        summary = publish_all()
    except PublishError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for r in summary:
        print(f"级别 {r['level']}: {r['path']}  表 {r['tables']}，行 {r['rows']:,}，{r['bytes']:,} 字节，列处理 {r['columns']}")
    return 0


def cmd_classify(args) -> int:
    from catalog.classification import detect_misclassified, unclassified_columns
    from healthlake.config import settings
    from healthlake.lake import connect

    with contextlib.closing(connect(settings(), read_only=True)) as con:
        unclassified = unclassified_columns(con)
        findings = detect_misclassified(con)
    for c in unclassified:
        print(f"未分类分级: {c}")
    for f in findings:
        print(f"定级过低:   {f.table}.{f.column}  {f.detector} 命中 {f.match_ratio:.0%}（抽样 {f.sampled}），"
              f"现 {f.level} 级，应 ≥ {f.expected_level} 级")
    if not unclassified and not findings:
        print("每一列都已分类分级，内容检测无发现")
    return 1 if unclassified or findings else 0


def add_catalog_parser(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("catalog", help="resource directory: search, show, build, publish, classify")
    csub = c.add_subparsers(dest="catalog_command", required=True)
    p = csub.add_parser("search", help="search resources and data items (中文或英文)")
    p.add_argument("text")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_search)
    p = csub.add_parser("show", help="one resource: schema.table or resource code")
    p.add_argument("resource")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_show)
    csub.add_parser("build", help="rebuild the directory, its JSON export and HTML portal").set_defaults(func=cmd_build)
    csub.add_parser("publish", help="rewrite the per-clearance databases").set_defaults(func=cmd_publish)
    csub.add_parser("classify", help="unclassified columns and detector findings").set_defaults(func=cmd_classify)

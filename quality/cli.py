"""``healthlake quality …``: the quality office's commands.

    healthlake quality gate                       score and decide every pending batch now
    healthlake quality held                       batches held back from the marts, with reasons
    healthlake quality override --batch ID --by NAME --reason TEXT   release a held batch (recorded)
    healthlake quality report                     the quality-office report (HTML) and rectification lists
"""

from __future__ import annotations

import argparse
import contextlib
import sys

__all__ = ["add_quality_parser", "gate_summary"]


def _pct(x) -> str:
    return "—" if x is None else f"{x * 100:.2f}%"


def gate_summary(settings=None) -> str:
    """Lines for the demo: batches promoted / held by the gate, and where the office report is."""
    from healthlake.config import settings as load_settings
    from healthlake.lake import connect
    from quality.gate import HELD, current_decisions

    s = settings or load_settings()
    try:
        with contextlib.closing(connect(s, read_only=True)) as con:
            current = current_decisions(con)
    except Exception as e:  # noqa: BLE001 - a summary line, never a failure of the demo
        return f"\n== 质控闸门 == 无法读取闸门决定：{e}"
    held = [d for d in current if d["decision"] == HELD]
    lines = [f"\n== 质控闸门（合格率 ≥ 阈值的批次进入四大数据库）== 批次 {len(current)}：放行 {len(current) - len(held)}，"
             f"拦截 {len(held)}（{len({d['institution_code'] for d in held})} 家机构）"]
    if held:
        lines.append("  查看：.venv/bin/healthlake quality held ；放行：healthlake quality override --batch ID --by 姓名 --reason 原因")
    return "\n".join(lines)


def cmd_gate(args) -> int:
    from quality.gate import HELD, gate_pending

    gate = gate_pending()
    decided = len(gate.decisions)
    held_now = [d for d in gate.decisions if d.decision == HELD]
    print(f"本次评分批次 {decided}：放行 {decided - len(held_now)}，拦截 {len(held_now)}；"
          f"当前共拦截 {len(gate.held)} 个批次")
    for code, path in sorted(gate.rectification.items()):
        print(f"  整改清单 {code}: {path}")
    return 0


def cmd_held(args) -> int:
    from healthlake.config import settings
    from healthlake.lake import connect
    from quality.gate import HELD, current_decisions

    with contextlib.closing(connect(settings(), read_only=True)) as con:
        held = [d for d in current_decisions(con) if d["decision"] == HELD]
    if not held:
        print("没有被拦截的批次")
        return 0
    for d in held:
        print(f"{d['batch_id']}\t{d['institution_code']}\t{d['dataset']}\t{d['rows_checked']} 行\t"
              f"合格率 {_pct(d['pass_rate'])}\t{d['reason']}")
    return 0


def cmd_override(args) -> int:
    from quality.errors import QualityError
    from quality.gate import record_override

    try:
        at = record_override(args.batch, args.by, args.reason)
    except QualityError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"已放行批次 {args.batch}（{args.by}，{at:%Y-%m-%d %H:%M:%S} UTC）：{args.reason}\n"
          f"下次 dbt 运行（healthlake demo / Dagster）时该批次进入四大数据库")
    return 0


def cmd_report(args) -> int:
    from quality.office import write_office_report

    out = write_office_report(rectification=not args.no_rectification)
    print(f"质控报告: {out.report}")
    for code, path in sorted(out.rectification.items()):
        print(f"整改清单 {code}: {path}")
    return 0


def add_quality_parser(sub) -> argparse.ArgumentParser:
    """Add the ``quality`` command group to the ``healthlake`` sub-parsers."""
    q = sub.add_parser("quality", help="quality office: gate, held batches, overrides, report (质控)")
    qs = q.add_subparsers(dest="quality_command", required=True)
    qs.add_parser("gate", help="score and decide every pending batch now").set_defaults(func=cmd_gate)
    qs.add_parser("held", help="batches held back from the marts").set_defaults(func=cmd_held)
    o = qs.add_parser("override", help="release a held batch, recording who and why")
    o.add_argument("--batch", required=True, help="batch id (healthlake quality held lists them)")
    o.add_argument("--by", required=True, help="who decides (name, office)")
    o.add_argument("--reason", required=True, help="why the batch is released despite its pass rate")
    o.set_defaults(func=cmd_override)
    r = qs.add_parser("report", help="write the quality-office report (HTML) and the rectification lists")
    r.add_argument("--no-rectification", action="store_true", help="only the HTML report")
    r.set_defaults(func=cmd_report)
    return q

"""Quality as asset checks: the batch gate on bronze (blocking) and the GX rules on the marts.

**The gate** (``build_gate_checks``): one step after the ingest scores every pending batch of every
bronze data set per institution and batch (``quality.gate.gate_pending``) and records promoted /
held in ``quality.batch_gate``; the dbt staging models read only promoted batches (the
``quality_gate_filter`` macro), so a held batch never reaches the marts while every other batch of
every institution does. Two checks per bronze asset report it:

* ``quality_gate`` (blocking, severity ERROR): passes when every loaded batch of the data set has a
  decision. It fails when the gate could not decide a batch; dbt then does not run at all in this
  run (fail closed: nothing unvetted reaches the marts). A blocking check stops *all* downstream
  assets of the step, which is why holding one institution's batch is the staging filter's job and
  not this check's failure: the marts are one dbt step over every institution.
* ``batches_held`` (severity ERROR, not blocking): fails while any batch of the data set is held,
  with the held batches, their 合格率 and reasons, and the institutions' rectification lists in its
  metadata. Release: a corrected re-delivery (a new batch that passes) or
  ``healthlake quality override --batch ID --by NAME --reason TEXT``.

**The mart rules** (``build_mart_checks``): one ``gx_rules`` check per rules file of a mart, all
evaluated in one step. A check fails when a critical rule is below its threshold or cannot be
evaluated; major and minor rules below threshold only warn. Results are appended to lake.quality.rule_result under the Dagster run id,
and the quality-office report is rewritten for that run.
"""

from datetime import datetime, timezone

import dagster as dg

from healthlake.config import settings
from quality import ERROR, FAIL, NOT_APPLICABLE, PASS, load_catalogue, run_table_rules, store_results, write_report
from quality.catalogue import RuleFile


def _markdown(results) -> str:
    def pct(x):
        return "—" if x is None else f"{x:.2%}"

    lines = ["| 规则 | 名称 | 维度 | 严重度 | 结果 | 检查行 | 不合格行 | 合格率 | 阈值 |", "|---|---|---|---|---|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r.rule_id} | {r.rule_name} | {r.dimension} | {r.severity} | {r.status} | "
                     f"{r.rows_checked if r.rows_checked is not None else '—'} | "
                     f"{r.rows_failed if r.rows_failed is not None else '—'} | {pct(r.pass_rate)} | {pct(r.threshold)} |")
    return "\n".join(lines)


def _mart_check_result(rule_file: RuleFile, results, report, docs) -> dg.AssetCheckResult:
    critical_bad = [r for r in results if r.severity == "critical" and r.status in (FAIL, ERROR)]
    other_bad = [r for r in results if r.severity != "critical" and r.status in (FAIL, ERROR)]
    checked = [r for r in results if r.pass_rate is not None]
    return dg.AssetCheckResult(
        asset_key=dg.AssetKey(rule_file.table.split(".")), check_name=MART_CHECK,
        passed=not critical_bad and not other_bad,
        severity=dg.AssetCheckSeverity.ERROR if critical_bad else dg.AssetCheckSeverity.WARN,
        metadata={
            "rules": len(results),
            "passed": sum(r.status == PASS for r in results),
            "failed": sum(r.status == FAIL for r in results),
            "errors": sum(r.status == ERROR for r in results),
            "not_applicable": sum(r.status == NOT_APPLICABLE for r in results),
            "lowest_pass_rate": dg.MetadataValue.float(min((r.pass_rate for r in checked), default=1.0)),
            "results": dg.MetadataValue.md(_markdown(results)),
            "report": dg.MetadataValue.path(str(report)),
            "data_docs": dg.MetadataValue.path(str(docs)),
        },
    )


MART_CHECK = "gx_rules"


def evaluate_marts(files: list[RuleFile], s, run_id: str) -> list[tuple[RuleFile, list]]:
    """Every mart's rules on two lake connections, not two per mart (each new connection loads the
    DuckDB extensions and attaches the catalog again: ~0.6 s of CPU): one writes (the reference
    tables refreshed once, the results stored in one statement), and every GX connection is a
    cursor of one read-only connection; one GX context."""
    from healthlake.lake import connect, release
    from quality.data_docs import write_docs_index
    from quality.gx_duckdb import get_context
    from quality.runner import _ensure_reference

    gx_context = get_context()
    con = connect(s)
    try:
        _ensure_reference(s, con)
        reader = connect(s, read_only=True)
        try:
            # the Data Docs index (every page's sidecar read) written once after the pages, not per mart
            # each table's GX queries in one read transaction (one DuckLake snapshot); a table with an
            # erroring rule is validated again in autocommit mode (run_table_rules)
            by_file = [(f, run_table_rules(f.table, f, settings=s, context=gx_context, docs_run_id=run_id,
                                           lake_con=reader, refresh_reference=False, docs_index=False,
                                           transaction=True))
                       for f in files]
        finally:
            release(reader)
        try:
            write_docs_index(s)
        except Exception as e:  # noqa: BLE001 - the docs are a view of the results, never their cause
            import logging

            logging.getLogger(__name__).warning("quality: could not write the Data Docs index: %s", e)
        store_results([r for _, results in by_file for r in results], run_id, datetime.now(timezone.utc),
                      settings=s, con=con)
    finally:
        release(con)
    return by_file


def build_mart_checks(rule_files: list[RuleFile]) -> dg.AssetChecksDefinition:
    """One ``gx_rules`` check per mart, evaluated in one step: one GX context for every mart, the
    results stored in one lake transaction and the quality-office report written once (19 steps that
    each built a context, stored and rewrote the report took most of the demo's check time)."""
    specs = [dg.AssetCheckSpec(MART_CHECK, asset=dg.AssetKey(f.table.split(".")),
                               description=f"质控规则（{len(f.rules)} 条，GX 下推 DuckDB）：{f.table}")
             for f in rule_files]

    @dg.multi_asset_check(specs=specs, name="mart_quality_rules", can_subset=True,
                          description="四大数据库各表的 GX 质控规则（下推 DuckDB），一步评估")
    def mart_quality_rules(context: dg.AssetCheckExecutionContext):
        from quality.data_docs import data_docs_dir

        s = settings()
        run_id = context.run.run_id
        selected = {key.asset_key for key in context.selected_asset_check_keys}
        files = [f for f in rule_files if dg.AssetKey(f.table.split(".")) in selected]
        by_file = evaluate_marts(files, s, run_id)
        report = write_report(s, run_id=run_id)
        for f, results in by_file:
            yield _mart_check_result(f, results, report, data_docs_dir(s) / f.table / f"{run_id}.html")

    return mart_quality_rules


GATE_CHECK, HELD_CHECK = "quality_gate", "batches_held"


def _pct(x) -> str:
    return "—" if x is None else f"{x:.2%}"


def _held_markdown(held: list[dict], lists: dict) -> str:
    lines = ["| 机构 | 批次 | 行数 | 合格率 | 阈值 | 原因 |", "|---|---|---:|---:|---:|---|"]
    for d in held[:50]:
        lines.append(f"| {d['institution_code']} | `{d['batch_id']}` | {d['rows_checked']} | {_pct(d['pass_rate'])} | "
                     f"{_pct(d['threshold'])} | {d['reason']} |")
    if len(held) > 50:
        lines.append(f"| … | 另有 {len(held) - 50} 个批次 | | | | |")
    if lists:
        lines.append("")
        lines.extend(f"- 整改清单 {code}: `{path}`" for code, path in sorted(lists.items()))
    return "\n".join(lines)


def _rates_markdown(current: list[dict]) -> str:
    """合格率 per institution over its current batches of one data set."""
    acc: dict[str, list] = {}
    for d in current:
        a = acc.setdefault(d["institution_code"], [0, 0.0, 0, 0])
        if d["pass_rate"] is not None and d["rows_checked"]:
            a[0] += d["rows_checked"]
            a[1] += d["pass_rate"] * d["rows_checked"]
        a[2] += 1
        a[3] += d["decision"] == "held"
    lines = ["| 机构 | 批次 | 记录数 | 合格率 | 拦截 |", "|---|---:|---:|---:|---:|"]
    for code in sorted(acc):
        rows, passing, batches, held = acc[code]
        lines.append(f"| {code} | {batches} | {rows} | {_pct(passing / rows if rows else None)} | {held} |")
    return "\n".join(lines)


def build_gate_checks() -> dg.AssetChecksDefinition:
    from catalog.standard import datasets
    from pipelines.defs.ingest.assets import bronze_key
    from quality.scoring import bronze_datasets

    names = [n for n in datasets() if n in set(bronze_datasets())]
    specs = []
    for name in names:
        specs.append(dg.AssetCheckSpec(GATE_CHECK, asset=bronze_key(name), blocking=True,
                                       description="质控闸门：每个批次按机构评分，合格率达到阈值（默认 95%）方可进入四大数据库"))
        specs.append(dg.AssetCheckSpec(HELD_CHECK, asset=bronze_key(name),
                                       description="被闸门拦截（暂缓入库）的批次：合格率低于阈值，待整改重报或人工放行"))

    @dg.multi_asset_check(specs=specs, name="quality_gate", can_subset=False,
                          description="质控闸门：采集后对新批次逐机构、逐批次评分，决定放行或拦截")
    def quality_gate(context: dg.AssetCheckExecutionContext):
        from healthlake.lake import connect, release
        from quality.gate import gate_pending

        s = settings()
        con = connect(s)  # one connection for the whole gate (each new one costs ~0.6 s of CPU)
        try:
            gate = gate_pending(s, con=con)
            try:  # the office report is a view of the stored results: never a reason to stop the gate
                from quality.office import write_office_report

                report = str(write_office_report(s, rectification=False, con=con).report)
            except Exception as e:  # noqa: BLE001
                context.log.warning(f"质控报告未能生成：{e}")
                report = "（未生成）"
            undecided = gate.undecided(con)
        finally:
            release(con)
        for d in gate.decisions:
            if d.decision == "held":
                context.log.warning(f"暂缓入库 {d.dataset} {d.institution_code} 批次 {d.batch_id}: {d.reason}")
        run_id = gate.run.run_id if gate.run is not None else None
        for name in names:
            current = [d for d in gate.current if d["dataset"] == name]
            held = [d for d in current if d["decision"] == "held"]
            this_run = [d for d in gate.decisions if d.dataset == name]
            missing = undecided.get(name, [])
            lists = {c: str(p) for c, p in gate.rectification.items() if c in {d["institution_code"] for d in held}}
            yield dg.AssetCheckResult(
                asset_key=bronze_key(name), check_name=GATE_CHECK, passed=not missing,
                severity=dg.AssetCheckSeverity.ERROR,
                description=("每个批次均已评分并作出放行/拦截决定" if not missing else
                             f"{len(missing)} 个批次无法作出决定，本次不更新四大数据库"),
                metadata={
                    "batches": len(current), "promoted": len(current) - len(held), "held": len(held),
                    "decided_this_run": len(this_run),
                    "held_this_run": sum(d.decision == "held" for d in this_run),
                    "undecided": dg.MetadataValue.json(missing[:100]),
                    "scoring_run_id": dg.MetadataValue.text(run_id or "（无待评分批次）"),
                    "report": dg.MetadataValue.path(report),
                })
            yield dg.AssetCheckResult(
                asset_key=bronze_key(name), check_name=HELD_CHECK, passed=not held,
                severity=dg.AssetCheckSeverity.ERROR,
                description=(f"{len(held)} 个批次暂缓入库（{len({d['institution_code'] for d in held})} 家机构）"
                             if held else "没有被拦截的批次"),
                metadata={
                    "held": len(held),
                    "institutions_held": dg.MetadataValue.json(sorted({d["institution_code"] for d in held})),
                    "lowest_batch_pass_rate": dg.MetadataValue.float(
                        min((d["pass_rate"] for d in current if d["pass_rate"] is not None), default=1.0)),
                    "held_batches": dg.MetadataValue.md(_held_markdown(held, lists) if held else "无"),
                    "batch_pass_rates": dg.MetadataValue.md(_rates_markdown(current)),
                    "report": dg.MetadataValue.path(report),
                    "release": dg.MetadataValue.text(
                        "整改后重新报送（新批次合格即放行），或 healthlake quality override --batch ID --by 姓名 --reason 原因"),
                })

    return quality_gate


def build_quality_checks() -> list[dg.AssetChecksDefinition]:
    # Mart rules run here as whole-table GX checks. The bronze rules (quality/rules/bronze.*.yaml)
    # are scored per institution and batch by quality.scoring, which the batch gate builds on.
    return [build_mart_checks([f for f in load_catalogue() if not f.table.startswith("bronze.")])]

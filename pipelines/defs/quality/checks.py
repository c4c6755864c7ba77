"""Quality rules (GX pushed down to DuckDB) as asset checks on the marts: one check per rules file.

A check fails when a critical rule is below its threshold or cannot be evaluated; major and
minor rules below threshold only warn. Results are appended to lake.quality.rule_result
under the Dagster run id, and the quality-office report is rewritten for that run.
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


def build_check(rule_file: RuleFile) -> dg.AssetChecksDefinition:
    key = dg.AssetKey(rule_file.table.split("."))

    @dg.asset_check(asset=key, name="gx_rules",
                    description=f"质控规则（{len(rule_file.rules)} 条，GX 下推 DuckDB）：{rule_file.table}")
    def gx_rules(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        s = settings()
        results = run_table_rules(rule_file.table, rule_file, settings=s)
        store_results(results, context.run.run_id, datetime.now(timezone.utc), settings=s)
        report = write_report(s, run_id=context.run.run_id)
        critical_bad = [r for r in results if r.severity == "critical" and r.status in (FAIL, ERROR)]
        other_bad = [r for r in results if r.severity != "critical" and r.status in (FAIL, ERROR)]
        checked = [r for r in results if r.pass_rate is not None]
        return dg.AssetCheckResult(
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
            },
        )

    return gx_rules


def build_quality_checks() -> list[dg.AssetChecksDefinition]:
    # Mart rules run here as whole-table GX checks. The bronze rules (quality/rules/bronze.*.yaml)
    # are scored per institution and batch by quality.scoring, which the batch gate builds on.
    return [build_check(f) for f in load_catalogue() if not f.table.startswith("bronze.")]

"""Data quality (质控): the rule catalogue, the GX runner pushed down to DuckDB, stored results, reports.

    from quality import run_all, run_table_rules, write_report
    run = run_all()                 # every rules file whose table exists; appended to lake.quality.rule_result
    write_report()                  # <reports_dir>/quality/index.html

    from quality import run_bronze_rules, write_rectification_lists, gate_run
    run = run_bronze_rules()        # bronze rules per institution × batch (SQL from the same rules)
    run.institutions, run.platform_pass_rate    # 合格率 per institution, share of institutions ≥ 95 %
    write_rectification_lists(run)  # <reports_dir>/quality/rectification/<institution>.xlsx (整改清单)
    gate_run(run)                   # promoted / held per batch (quality.batch_gate); record_override(...)

    from quality import gate_pending, write_office_report
    gate_pending()                  # after an ingest: score and decide every new (or held) batch
    write_office_report()           # <reports_dir>/quality/office.html: the quality office's report

Importing this package does not import Great Expectations (about 3 s); running rules does.
"""

from quality.catalogue import Rule, RuleFile, load_catalogue, load_rules_file
from quality.errors import QualityError
from quality.gate import GateDecision, GateRun, gate_pending, gate_run, record_override
from quality.office import write_office_report
from quality.rectification import write_rectification_lists
from quality.report import write_report
from quality.runner import (
    ERROR,
    FAIL,
    NOT_APPLICABLE,
    PASS,
    QualityRun,
    RuleResult,
    run_all,
    run_table_rules,
    store_results,
)
from quality.scoring import (
    BatchScore,
    BronzeRun,
    DatasetRun,
    GroupResult,
    InstitutionScore,
    platform_pass_rate,
    run_bronze_rules,
    run_dataset_rules,
    score_institutions,
)

__all__ = [
    "QualityError", "Rule", "RuleFile", "load_catalogue", "load_rules_file",
    "RuleResult", "QualityRun", "run_table_rules", "run_all", "store_results", "write_report",
    "PASS", "FAIL", "ERROR", "NOT_APPLICABLE",
    "run_dataset_rules", "run_bronze_rules", "score_institutions", "platform_pass_rate",
    "GroupResult", "BatchScore", "InstitutionScore", "DatasetRun", "BronzeRun",
    "write_rectification_lists", "gate_run", "record_override", "GateDecision", "GateRun", "gate_pending",
    "write_office_report",
]

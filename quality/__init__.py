"""Data quality (质控): the rule catalogue, the GX runner pushed down to DuckDB, stored results, reports.

    from quality import run_all, run_table_rules, write_report
    run = run_all()                 # every rules file whose table exists; appended to lake.quality.rule_result
    write_report()                  # <reports_dir>/quality/index.html

Importing this package does not import Great Expectations (about 3 s); running rules does.
"""

from quality.catalogue import Rule, RuleFile, load_catalogue, load_rules_file
from quality.errors import QualityError
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

__all__ = [
    "QualityError", "Rule", "RuleFile", "load_catalogue", "load_rules_file",
    "RuleResult", "QualityRun", "run_table_rules", "run_all", "store_results", "write_report",
    "PASS", "FAIL", "ERROR", "NOT_APPLICABLE",
]

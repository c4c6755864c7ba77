"""``python -m quality``: run every rules file whose table exists, store the results, write the report."""

from __future__ import annotations

import sys
from collections import Counter

from quality.report import write_report
from quality.runner import run_all


def main() -> int:
    run = run_all()
    path = write_report()
    counts = Counter(r.status for r in run.results)
    print(f"quality run {run.run_id}: {len(run.results)} rules on {len(run.tables_run)} tables "
          f"({', '.join(f'{k} {v}' for k, v in sorted(counts.items())) or 'no rules'})")
    if run.tables_skipped:
        print(f"not in the lake yet: {', '.join(run.tables_skipped)}")
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

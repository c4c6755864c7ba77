"""The mart rules of ``population.dim_person`` (GX expectations pushed down to DuckDB, scored per
rule) on a lake table of BENCH_RULES_ROWS persons (default 1,000,000) with known defects, against

* **the limit**: one bare DuckDB scan of the same table reading the columns the rules read
  (``count`` of each) — the I/O no rule engine can skip.

The defects are planted by row number, so every rule's failing-row count is known and checked
before any time is printed: 1 % bad sex codes, 1 % malformed and 1 % wrong-check-digit ID numbers,
2 % null ID numbers, 1 % null birth dates; every other ID number carries its GB 11643 check digit.

    python -m bench mart_rules        # BENCH_RULES_ROWS (1,000,000), BENCH_RULES_REPEAT (3)

(It was an opt-in timed test, tests/test_quality_perf.py, until 2026-12-06.)
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from pathlib import Path

ROWS = int(os.environ.get("BENCH_RULES_ROWS", "1000000"))
REPEAT = int(os.environ.get("BENCH_RULES_REPEAT", "3"))

# 1M persons with 1 % null birth dates, 1 % bad sex codes, 1 % malformed and 1 % wrong-check-digit
# ID numbers, 2 % null ID numbers; every other ID number carries its correct GB 11643 check digit.
CREATE = """
CREATE OR REPLACE TABLE population.dim_person AS
WITH base AS (
  SELECT i,
         '511002' || strftime(DATE '1940-01-01' + (i % 29000)::INTEGER, '%Y%m%d') || lpad((i % 1000)::VARCHAR, 3, '0') AS first17
  FROM range(1, {rows} + 1) t(i)
), ids AS (
  SELECT i, first17,
         substr('10X98765432', 1 + list_dot_product(list_transform(string_split(first17, ''), lambda c: ascii(c) - 48),
                [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2])::INTEGER % 11, 1) AS check_char
  FROM base
)
SELECT 'P' || lpad(i::VARCHAR, 10, '0') AS person_key,
       CASE WHEN i % 100 = 1 THEN 'M' ELSE (['0', '1', '2', '9'])[1 + i % 4] END AS sex_code,
       CASE WHEN i % 50 = 2 THEN NULL
            WHEN i % 100 = 3 THEN left(first17, 16)
            WHEN i % 100 = 4 THEN first17 || CASE WHEN check_char = '0' THEN '1' ELSE '0' END
            ELSE first17 || check_char END AS id_number,
       CASE WHEN i % 100 = 5 THEN NULL ELSE DATE '1940-01-01' + (i % 29000)::INTEGER END AS birth_date
FROM ids
"""


def expected(n: int) -> dict[str, int]:
    every = lambda k: sum(1 for i in range(1, n + 1) if i % 100 == k)  # noqa: E731
    return {"POP-003": every(1), "POP-004": every(3), "POP-005": every(4), "POP-006": every(5)}


def main() -> None:
    from healthlake.config import settings
    from healthlake.lake import connect
    from quality import FAIL, PASS, run_table_rules
    from quality.catalogue import RULES_DIR

    with tempfile.TemporaryDirectory(prefix="bench-rules-") as d:
        os.environ["HEALTHLAKE_ROOT"] = str(Path(d) / "root")
        for var in ("HEALTHLAKE_CATALOG", "HEALTHLAKE_DATA_PATH"):
            os.environ.pop(var, None)
        s = settings()
        with contextlib.closing(connect(s)) as con:
            con.execute("CREATE SCHEMA IF NOT EXISTS population")
            t = time.perf_counter()
            con.execute(CREATE.format(rows=ROWS))
            print(f"population.dim_person: {ROWS:,} rows built in {time.perf_counter() - t:.2f} s")
        import great_expectations  # noqa: F401  (import time is not the rules' time)

        ours, limits = [], []
        for _ in range(REPEAT):  # the two sides alternate, so both see the same machine load
            with contextlib.closing(connect(s, read_only=True)) as con:
                t = time.perf_counter()
                con.execute("SELECT count(*), count(person_key), count(sex_code), count(id_number), "
                            "count(birth_date) FROM population.dim_person").fetchall()
                limits.append(time.perf_counter() - t)
            t = time.perf_counter()
            results = run_table_rules("population.dim_person", RULES_DIR / "population.dim_person.yaml", settings=s)
            ours.append(time.perf_counter() - t)
        failing = {r.rule_id: r.rows_failed for r in results}
        want = expected(ROWS)
        wrong = {k: (failing.get(k), v) for k, v in want.items() if failing.get(k) != v}
        assert not wrong, f"rule counts differ from the planted defects (got, want): {wrong}"
        assert failing["POP-001"] == 0 and failing["POP-002"] == 0, failing
        assert all(r.status in (PASS, FAIL) for r in results), [(r.rule_id, r.status) for r in results]
        best, limit = min(ours), min(limits)
        print(f"{len(results)} dim_person rules, failing rows as planted ({want}); "
              f"ours " + ", ".join(f"{x:.2f}" for x in ours) + " s (best " + f"{best:.2f} s)")
        print(f"limit (one bare scan of the rules' columns): best {limit:.3f} s")
        print(f"ratio (ours / limit): {best / limit:.1f}×")


if __name__ == "__main__":
    main()

"""Compare scored pass rates with the synthetic city's injected defects (``truth/defects.csv``).

Each injected defect kind is caught by one rule per data set (``DEFECT_RULES``). For every
institution × data set × defect kind, the expected failure rate is the number of distinct defective
rows that reached bronze (malformed rows are rejected at ingest, so they are not counted) divided by
the institution's rows of that data set in bronze; the measured rate is the rule's rows_failed ÷
rows_checked summed over the institution's batches.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from healthlake.config import Settings, settings as load_settings
from healthlake.lake import LAKE, connect

__all__ = ["DEFECT_RULES", "RecoveryRow", "compare_with_truth"]

# defect kind → {data set: rule id}
DEFECT_RULES: dict[str, dict[str, str]] = {
    "invalid_checksum": {"person": "BPER-005", "encounter": "BENC-007", "health_record": "BHR-006",
                         "chronic_followup": "BCF-013", "immunization": "BIMM-008"},
    "missing_id_number": {"person": "BPER-003", "encounter": "BENC-005", "health_record": "BHR-004",
                          "chronic_followup": "BCF-012", "immunization": "BIMM-006"},
    "missing_diagnosis_code": {"diagnosis": "BDIA-003"},
    "future_date": {"encounter": "BENC-009", "diagnosis": "BDIA-007", "lab_result": "BLAB-010",
                    "prescription": "BRX-007", "chronic_followup": "BCF-007", "immunization": "BIMM-004"},
    "discharge_before_admission": {"encounter": "BENC-010"},
    "unknown_sex_code": {"person": "BPER-008", "health_record": "BHR-009", "practitioner": "BPRA-003"},
    "duplicate_row": {d: r for d, r in {
        "person": "BPER-016", "encounter": "BENC-017", "diagnosis": "BDIA-010", "lab_result": "BLAB-012",
        "prescription": "BRX-009", "health_record": "BHR-017", "chronic_followup": "BCF-017",
        "immunization": "BIMM-012", "department": "BDEP-006", "practitioner": "BPRA-007"}.items()},
}


@dataclass(frozen=True)
class RecoveryRow:
    institution_code: str
    dataset: str
    defect: str
    rule_id: str
    rows: int
    expected_failed: int
    measured_failed: int | None

    @property
    def expected_rate(self) -> float:
        return self.expected_failed / self.rows if self.rows else 0.0

    @property
    def measured_rate(self) -> float | None:
        return None if self.measured_failed is None or not self.rows else self.measured_failed / self.rows

    @property
    def error_pp(self) -> float | None:
        """|measured − expected| in percentage points."""
        m = self.measured_rate
        return None if m is None else abs(m - self.expected_rate) * 100


def compare_with_truth(run, defects_csv: str | Path | None = None, settings: Settings | None = None) -> list[RecoveryRow]:
    """One RecoveryRow per institution × data set (in the run) × defect kind with a rule for that data set."""
    s = settings or load_settings()
    defects_csv = Path(defects_csv) if defects_csv else s.city_dir / "truth" / "defects.csv"
    datasets = run.datasets if hasattr(run, "datasets") and isinstance(run.datasets, dict) else {run.dataset: run}
    out: list[RecoveryRow] = []
    with contextlib.closing(connect(s, read_only=True)) as con:
        for dataset, drun in datasets.items():
            measured = drun.by_institution()
            expected = dict(((i, d), n) for i, d, n in con.execute(
                f"""SELECT t.institution_code, t.defect, count(DISTINCT (t.file, t.source_row))
                    FROM read_csv(?, header = true, all_varchar = true) t
                    JOIN {LAKE}.bronze.{dataset} b
                      ON b._source_file = t.file AND b._source_row = t.source_row::BIGINT
                    WHERE t.dataset = ? GROUP BY ALL""", [str(defects_csv), dataset]).fetchall())
            for inst, rows in con.execute(f"SELECT _institution_code, count(*) FROM {LAKE}.bronze.{dataset} "
                                          f"GROUP BY 1 ORDER BY 1").fetchall():
                for defect, by_ds in DEFECT_RULES.items():
                    rule_id = by_ds.get(dataset)
                    if rule_id is None:
                        continue
                    checked, failed = measured.get((inst, rule_id), (0, None))
                    out.append(RecoveryRow(inst, dataset, defect, rule_id, rows,
                                           expected.get((inst, defect), 0), failed))
    return out

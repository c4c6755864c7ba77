"""Run every benchmark: ``python -m bench [name ...]`` (names: ingest_csv, demo, empi, quality, ingest_hl7, ingest_fhir, ingest_dicom, parallel_writers, marts, mart_rules)."""

from __future__ import annotations

import sys

from bench import (demo, empi_link, ingest_csv, ingest_dicom, ingest_messages, mart_rules, marts, parallel_writers,
                   quality)

BENCHMARKS = {"ingest_csv": ingest_csv.main, "demo": demo.main, "empi": empi_link.main, "quality": quality.main,
              "ingest_hl7": ingest_messages.ingest_hl7, "ingest_fhir": ingest_messages.ingest_fhir,
              "ingest_dicom": ingest_dicom.main, "parallel_writers": parallel_writers.main, "marts": marts.main,
              "mart_rules": mart_rules.main}


def main(argv: list[str]) -> int:
    names = argv or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; known: {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    for name in names:
        print(f"\n### {name}")
        BENCHMARKS[name]()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

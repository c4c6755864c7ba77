"""Ingest throughput with 1, 2 and 4 parallel writers on the production topology
(DuckLake on PostgreSQL, data and landing zone on S3 — SeaweedFS and PostgreSQL on loopback).

Each run: a fresh bucket and catalog database, the same synthetic city delivered to the S3 landing
zone, then every institution ingested by N writer processes (one institution partition at a time
per writer, as Dagster's multiprocess runs do). Printed: files, rows, seconds, rows/s, the
speed-up against the 1-writer run of the same benchmark (the limit: N×, or the machine's cores),
and the lake's Parquet bytes per bronze row (what the sizing in docs/deployment.md scales up).

    python -m bench parallel_writers      (BENCH_PW_RESIDENTS=3000, BENCH_PW_DAYS=2, BENCH_PW_WRITERS=1,2,4)
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

RESIDENTS = int(os.environ.get("BENCH_PW_RESIDENTS", "3000"))
DAYS = int(os.environ.get("BENCH_PW_DAYS", "2"))
WRITERS = [int(w) for w in os.environ.get("BENCH_PW_WRITERS", "1,2,4").split(",")]


def run_once(s3, pg, city: Path, workers: int, n: int) -> dict:
    from healthlake.config import settings
    from healthlake.servers import production_env
    from healthlake.storage import upload_tree
    from ingest_adapters.registry import load_registry
    from pipelines.defs.ingest.partitions import ingest_parallel

    env = production_env(s3, pg, bucket=f"bench{n}", database=f"bench{n}")
    s3.make_bucket(f"raw{n}")
    root = city.parent / f"run{n}"
    env.update({"HEALTHLAKE_ROOT": str(root), "HEALTHLAKE_LANDING": str(root / "work"),
                "HEALTHLAKE_REGISTRY": str(city / "registry.yaml"), "HEALTHLAKE_LANDING_URL": f"s3://raw{n}/landing/"})
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        files = upload_tree(settings(), city / "landing")
        # largest institutions first, so that no writer is left with the longest one at the end
        codes = [i.code for i in load_registry(city / "registry.yaml").institutions]
        sizes = {c: sum(f.stat().st_size for f in (city / "landing" / c).rglob("*") if f.is_file()) for c in codes}
        codes.sort(key=lambda c: -sizes[c])
        t0 = time.perf_counter()
        results = ingest_parallel(codes, workers=workers)
        seconds = time.perf_counter() - t0
        data_bytes = lake_bytes(settings())
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    batches = [b for r in results for b in r.batches]
    failed = [b for b in batches if b.status == "failed"]
    rows = sum(b.rows_read for b in batches if b.status == "loaded")
    loaded = sum(b.rows_loaded for b in batches if b.status == "loaded")
    return {"writers": workers, "files": files, "batches": len(batches), "failed": len(failed), "rows": rows,
            "seconds": seconds, "rows_per_s": rows / seconds, "files_per_s": len(batches) / seconds,
            "lake_bytes": data_bytes, "bytes_per_row": data_bytes / max(loaded, 1)}


def lake_bytes(s) -> int:
    """Bytes of every object under the lake's data path (bronze and ops Parquet files)."""
    from healthlake.storage import minio_client, split_url

    bucket, prefix = split_url(s.data_path)
    return sum(o.size or 0 for o in minio_client(s).list_objects(bucket, prefix=prefix, recursive=True))


def main() -> dict:
    from healthlake.servers import postgres, seaweedfs
    from synthetic import generate_city

    print(f"load average at the start: {os.getloadavg()[0]:.1f} ({os.cpu_count()} cores)", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-pw-") as tmp:
        city = Path(tmp) / "city"
        generate_city(city, residents=RESIDENTS, days=DAYS, seed=20261123)
        out = []
        with seaweedfs() as s3, postgres() as pg:
            for n, w in enumerate(WRITERS, start=1):
                r = run_once(s3, pg, city, w, n)
                out.append(r)
                base = out[0]
                print(f"writers={w}: {r['batches']} files, {r['rows']:,} rows in {r['seconds']:.1f} s = "
                      f"{r['rows_per_s']:,.0f} rows/s, {r['files_per_s']:.2f} files/s; failed {r['failed']}; "
                      f"speed-up {r['rows_per_s'] / base['rows_per_s']:.2f}x vs 1 writer "
                      f"(limit {min(w, os.cpu_count() or 1)}x on {os.cpu_count()} cores); "
                      f"lake {r['lake_bytes'] / 1e6:.1f} MB = {r['bytes_per_row']:.0f} bytes/row; "
                      f"load average {os.getloadavg()[0]:.1f}", flush=True)
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    return {"runs": out}


if __name__ == "__main__":
    main()

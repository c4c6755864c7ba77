"""Wall time of `healthlake demo` on the default city, in a fresh lake, and of its no-op rerun.

The limit is the first run itself: a rerun with nothing new must cost a fraction of it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_demo(env: dict) -> float:
    t0 = time.perf_counter()
    subprocess.run([str(Path(sys.executable).with_name("healthlake")), "demo"], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench_demo_") as d:
        env = {**os.environ, "HEALTHLAKE_ROOT": str(Path(d) / "root")}
        env.pop("HEALTHLAKE_LANDING", None)
        first = run_demo(env)
        rerun = run_demo(env)
        print(f"healthlake demo, fresh lake (generate + ingest + dbt + checks + catalog): {first:.1f} s")
        print(f"healthlake demo, rerun with nothing new:                                 {rerun:.1f} s")
        print(f"RATIO demo_rerun = {rerun / first:.2f}× of the first run; first run vs the 60 s goal: {first / 60:.2f}×")

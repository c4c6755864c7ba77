"""The pipeline steps run in their own processes, so that the fault tests can SIGKILL them anywhere.

    python tests/production/fault_worker.py ingest CODE [CODE …]   one step, then exit
    python tests/production/fault_worker.py publish
    python tests/production/fault_worker.py serve                   a fork server (below)

The fork server imports the pipeline (Dagster, DuckDB, dbt) and parses the dbt project once, then
reads one command a line from stdin — ``ingest CODE …``, ``dbt ARG …`` or ``publish`` — and runs
each in a forked child that does the whole step itself (its own lake connection, its own dbt
invocation on the pre-parsed manifest) and exits. Protocol on stdout:

    ready                       imports done (the dbt project is parsed while the first command runs)
    started PID                 a child runs the command (its output goes to the log folder)
    exit PID RC                 it ended: RC is its exit code, or -9 when it was SIGKILLed

Without it every kill point would pay 5–15 s of Python imports and dbt parsing before the step
even starts, and most random kill points would land there rather than in the step's work.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def ingest(codes: list[str]) -> int:
    from pipelines.defs.ingest.partitions import ingest_institution

    failed = 0
    for code in codes:
        r = ingest_institution(code)
        failed += r.count("failed")
    return 1 if failed else 0


def publish() -> int:
    from catalog.publish import publish_all

    publish_all(levels=(5,))
    return 0


def main(argv: list[str]) -> int:
    step = argv[0]
    if step == "ingest":
        return ingest(argv[1:])
    if step == "publish":
        return publish()
    if step == "serve":
        return serve(Path(argv[1]) if len(argv) > 1 else Path.cwd())
    raise SystemExit(f"unknown step {step!r}")


def serve(logs: Path) -> int:
    import catalog.publish  # noqa: F401 — imported once, before any fork
    import pipelines.defs.ingest.partitions  # noqa: F401
    from dbt.cli.main import dbtRunner

    from healthlake.dbt import DBT_PROJECT_DIR, apply_dbt_env

    apply_dbt_env()
    manifest, tried = None, False
    logs.mkdir(parents=True, exist_ok=True)
    print("ready", flush=True)
    n = 0
    for line in sys.stdin:
        args = line.split()
        if not args:
            continue
        n += 1
        if args[0] == "dbt" and manifest is None:
            manifest = parse(dbtRunner, DBT_PROJECT_DIR)
        pid = os.fork()
        if pid == 0:  # the child: the whole step, then exit without running the server's cleanup
            rc = 70
            try:
                fd = os.open(logs / f"{n:03d}-{args[0]}.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(fd, 1)
                os.dup2(fd, 2)
                sys.stdin.close()
                if args[0] == "dbt":
                    r = dbtRunner(manifest=manifest).invoke([*args[1:], "--project-dir", str(DBT_PROJECT_DIR)])
                    rc = 0 if r.success else 1
                else:
                    rc = main(args)
            except BaseException:  # noqa: BLE001 — reported by the exit code, traceback in the log
                import traceback

                traceback.print_exc()
                rc = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(rc)
        print(f"started {pid}", flush=True)
        if manifest is None and not tried:  # while the first step runs
            tried, manifest = True, parse(dbtRunner, DBT_PROJECT_DIR)
        _, status = os.waitpid(pid, 0)
        print(f"exit {pid} {os.waitstatus_to_exitcode(status)}", flush=True)
    return 0


def parse(runner, project_dir: Path):
    """The parsed dbt project, or None (reported; a dbt child then parses for itself)."""
    try:
        parsed = runner().invoke(["parse", "--project-dir", str(project_dir)])
    except Exception as e:  # noqa: BLE001 — e.g. a project file caught half-written
        print(f"dbt parse failed: {e}", flush=True)
        return None
    if not parsed.success:
        print(f"dbt parse failed: {parsed.exception}", flush=True)
        return None
    return parsed.result


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

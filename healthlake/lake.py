"""Connections to the lakehouse: DuckDB with the DuckLake catalog attached as ``lake``.

DuckDB extensions never come from the internet: they are installed from the
``duckdb-extension-*==1.5.5`` wheels into a project-local extension directory, and
autoinstall is off. parquet, json and icu are built into the duckdb wheel.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import logging
import os
import random
import threading
import time
import zlib
from pathlib import Path

import duckdb

from healthlake.config import Settings, settings as load_settings

LAKE = "lake"
# Schemas the pipeline owns in the lake; dbt creates its own mart schemas.
PIPELINE_SCHEMAS = ("bronze", "ops")
EXTENSIONS = ("ducklake", "sqlite_scanner", "postgres_scanner", "httpfs")

_install_lock = threading.Lock()
_extensions_ready: set[tuple[int, str]] = set()
log = logging.getLogger(__name__)

# DuckLake settles a lost commit race itself: when the other snapshot's changes do not conflict
# with ours (e.g. both insert into the same table) it re-commits against the new snapshot without
# rewriting files. Its defaults are 10 attempts, 100 ms apart, growing x1.5 (about 11 s in all); with
# several institution writers on one PostgreSQL catalog we allow more patience (up to ~60 s).
DUCKLAKE_RETRY = {"ducklake_max_retry_count": 20, "ducklake_retry_wait_ms": 100, "ducklake_retry_backoff": 1.3}


def packaged_extensions() -> dict[str, Path]:
    """Extension binaries shipped by the installed duckdb-extension-* wheels."""
    import duckdb as _duckdb

    site = Path(_duckdb.__file__).resolve().parents[1]
    found = {}
    for f in glob.glob(str(site / "duckdb_extension_*" / "extensions" / f"v{_duckdb.__version__}" / "*.duckdb_extension")):
        found[Path(f).name.split(".")[0]] = Path(f)
    return found


def quote_ident(name) -> str:
    """An SQL identifier (schema, table, column) quoted for DuckDB."""
    return '"' + str(name).replace('"', '""') + '"'


def duckdb_config(s: Settings) -> dict:
    config = {
        "extension_directory": str(s.extension_dir),
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": True,
    }
    if s.duckdb_threads:  # HEALTHLAKE_DUCKDB_THREADS (healthlake demo: 1, see cmd_demo)
        config["threads"] = s.duckdb_threads
    return config


def ensure_extensions(s: Settings | None = None) -> None:
    """Install the packaged extensions into the project-local directory (idempotent; checked once
    per process and directory: the check opens a DuckDB instance of its own).

    Processes that start together (parallel ingest writers, the multiprocess executor) take an
    exclusive file lock next to the directory: otherwise one lists the extensions while another is
    writing one, reads its half-written ``.tmp-*.info`` file and fails ("the file appears to be
    empty")."""
    s = s or load_settings()
    with _install_lock:
        key = (os.getpid(), str(s.extension_dir))
        if key in _extensions_ready and s.extension_dir.is_dir():
            return
        s.extension_dir.parent.mkdir(parents=True, exist_ok=True)
        with open(s.extension_dir.parent / f".{s.extension_dir.name}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                _install_extensions(s)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        _extensions_ready.add(key)


def _install_extensions(s: Settings) -> None:
    con = duckdb.connect(config=duckdb_config(s))
    try:
        installed = {r[0] for r in con.sql(
            "SELECT extension_name FROM duckdb_extensions() WHERE installed").fetchall()}
        shipped = packaged_extensions()
        for name in EXTENSIONS:
            if name in installed:
                continue
            if name not in shipped:
                raise RuntimeError(
                    f"DuckDB extension '{name}' is not installed and no duckdb-extension wheel ships it; "
                    f"run `make install` (pip install -r requirements.lock)")
            con.execute(f"INSTALL '{shipped[name]}'")
    finally:
        con.close()


def s3_secret_sql(s: Settings) -> str | None:
    if not s.s3_endpoint:
        return None
    def q(v):
        return "'" + str(v).replace("'", "''") + "'"
    return (f"CREATE OR REPLACE SECRET healthlake_s3 (TYPE s3, KEY_ID {q(s.s3_key_id or '')}, "
            f"SECRET {q(s.s3_secret or '')}, ENDPOINT {q(s.s3_endpoint)}, REGION {q(s.s3_region)}, "
            f"URL_STYLE 'path', USE_SSL {'true' if s.s3_use_ssl else 'false'})")


def attach_sql(s: Settings, read_only: bool = False, alias: str = LAKE) -> str:
    opts = [f"DATA_PATH '{s.data_path}'"]
    if read_only:
        opts.append("READ_ONLY")
    return f"ATTACH '{s.ducklake_uri}' AS {alias} ({', '.join(opts)})"


def connect(s: Settings | None = None, read_only: bool = False, database: str = ":memory:") -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the lake attached as ``lake`` and selected as default.

    ``read_only=True`` attaches the catalog read-only: analysts and `healthlake sql` use it.

    With the SQLite catalog (the embedded lake) the connection is a cursor of one DuckDB instance
    per process, lake and mode (``_shared_instance``): a new instance verifies the signatures of the
    ducklake and sqlite_scanner extensions as it loads them and attaches the catalog (~0.6 s of
    CPU), and the demo opened 20–30. A cursor is a connection of its own (transactions, temporary
    tables, ``USE``, session settings); closing it leaves the instance to the next ``connect()``.
    With a PostgreSQL catalog every call is a new instance: a retry after the catalog server
    restarted must not reuse the instance's broken server connections.
    """
    s = s or load_settings()
    ensure_extensions(s)
    if s.catalog_kind == "sqlite":
        Path(s.catalog).parent.mkdir(parents=True, exist_ok=True)
        if read_only and not Path(s.catalog).exists():
            raise FileNotFoundError(f"no lake at {s.catalog}: run `healthlake demo` (or `make demo`) first")
    if not s.data_is_s3:
        os.makedirs(s.data_path, exist_ok=True)
    if database != ":memory:" or s.catalog_kind != "sqlite":
        return _new_instance(s, read_only, database)
    con = _shared_instance(s, read_only).cursor()
    con.execute(f"USE {LAKE}")
    return con


def _new_instance(s: Settings, read_only: bool, database: str = ":memory:") -> duckdb.DuckDBPyConnection:
    """A new DuckDB instance: extensions' settings, the S3 secret, the lake attached and used."""
    con = duckdb.connect(database, config=duckdb_config(s))
    # GLOBAL: the settings hold for every cursor of the instance (connect() hands out cursors)
    for name, value in DUCKLAKE_RETRY.items():
        con.execute(f"SET GLOBAL {name} = {value}")
    secret = s3_secret_sql(s)
    if secret:
        con.execute(secret)
        # A restarted S3 server is back within seconds: retry refused/failed requests 8 times,
        # 200 ms growing x2 (about 50 s in all; httpfs's default is 3 tries, 100 ms x4).
        con.execute("SET GLOBAL http_retries = 8; SET GLOBAL http_retry_wait_ms = 200; "
                    "SET GLOBAL http_retry_backoff = 2")
    _attach(con, s, read_only)
    con.execute(f"USE {LAKE}")
    if not read_only:
        def schemas():
            for schema in PIPELINE_SCHEMAS:
                con.execute(f"CREATE SCHEMA IF NOT EXISTS {LAKE}.{schema}")
        with_retries(schemas, what="create schemas")  # two writers creating the same schema conflict
        _default_codec(con)
    return con


# The lake's Parquet codec unless the deployment chose one (set_option persists in the catalog). LZ4_RAW
# files are as small as DuckLake's default Snappy's (a COPY of 1M bronze-shaped rows: 34 MB either way) and
# cheaper to write (a 1M-row DuckLake insert on one thread, best of 5: 1.79 s of CPU against 1.96-2.06 s;
# the whole CSV ingest's gain was within the machine's noise); Arrow, Spark, Trino and DuckDB read them.
PARQUET_CODEC = "lz4_raw"


def _default_codec(con: duckdb.DuckDBPyConnection) -> None:
    # fetchall: a result not read to its end keeps its transaction (and the SQLite catalog's lock) open
    chosen = con.execute(f"SELECT value FROM {LAKE}.options() WHERE option_name = 'parquet_compression' "
                         "AND scope = 'GLOBAL'").fetchall()
    if not chosen:
        with contextlib.suppress(duckdb.TransactionException):  # another writer set it first
            con.execute(f"CALL {LAKE}.set_option('parquet_compression', '{PARQUET_CODEC}')")


# (pid, read_only, ATTACH string, data path, extension dir, S3 secret, catalog file identity) → the
# instance whose cursors connect() hands out. Most recent last; older ones are dropped from here (never
# closed: closing an instance closes its cursors, which may still be in use; the last cursor's close
# frees it). The catalog file's identity (device, inode) makes a replaced catalog (a restore, a
# test's fresh lake at the same path) a new instance rather than the old file's.
_instances: dict[tuple, duckdb.DuckDBPyConnection] = {}
_instances_lock = threading.Lock()
_KEEP_INSTANCES = 4


def _catalog_identity(s: Settings) -> tuple[int, int] | None:
    try:
        st = os.stat(s.catalog)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _instance_key(s: Settings, read_only: bool) -> tuple:
    return (os.getpid(), read_only, s.ducklake_uri, s.data_path, str(s.extension_dir), s3_secret_sql(s),
            _catalog_identity(s), s.duckdb_threads)


def _shared_instance(s: Settings, read_only: bool) -> duckdb.DuckDBPyConnection:
    """This process's instance for the lake and mode; a new one when there is none yet, or when
    DuckDB invalidated it (kept referenced, never destroyed: see ``_abandoned``)."""
    with _instances_lock:
        key = _instance_key(s, read_only)
        con = _instances.pop(key, None)
        if con is not None and not _usable(con):
            con = None
        if con is None:
            con = _new_instance(s, read_only)
            key = _instance_key(s, read_only)  # the ATTACH may have created the catalog file
        _instances[key] = con
        while len(_instances) > _KEEP_INSTANCES:
            _usable(_instances.pop(next(iter(_instances))))  # an invalidated one is kept, see _abandoned
        return con


def _usable(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether the instance still answers; one DuckDB invalidated is abandoned (never destroyed)."""
    try:
        con.execute("SELECT 1")
        return True
    except Exception as e:  # noqa: BLE001 — any error: a new instance; an invalidated one is also kept
        if is_invalidated(e):
            _abandon(con, quiet=True)
        return False


# Connections whose database DuckDB invalidated after an internal error (seen when the PostgreSQL
# catalog restarts in the middle of a DuckLake commit). Such a connection can never be closed: with
# a DuckLake transaction open, DuckDB's destructor rolls it back with a query, which throws inside
# the destructor and aborts the whole process (std::terminate, exit -6). They are kept referenced
# here, and the process ends through ``_exit_keeping_abandoned`` before Python would destroy them.
_abandoned: list[duckdb.DuckDBPyConnection] = []
INVALIDATED = "database has been invalidated"


def is_invalidated(error: BaseException) -> bool:
    """DuckDB's database instance is unusable after this error; a new connection (a new instance) is not."""
    return isinstance(error, duckdb.FatalException) or INVALIDATED in str(error)


def release(con: duckdb.DuckDBPyConnection | None) -> None:
    """Close a lake connection after use or after an error.

    A connection whose database DuckDB invalidated is abandoned instead of closed (see ``_abandoned``):
    the error was already reported by whoever hit it, and closing would abort the process."""
    if con is None:
        return
    try:
        con.execute("SELECT 1")
    except Exception as e:  # noqa: BLE001 — only an invalidated database changes what we do
        if is_invalidated(e):
            _abandon(con)
            return
    try:
        con.close()
    except Exception:  # noqa: BLE001 — a broken connection may fail to close; it is dropped anyway
        pass


def _abandon(con: duckdb.DuckDBPyConnection, quiet: bool = False) -> None:
    import atexit

    if not _abandoned:
        atexit.register(_exit_keeping_abandoned)
    _abandoned.append(con)
    if quiet:  # the shared instance of an abandoned cursor (connect()): already reported
        return
    log.error("the lake connection's database was invalidated by a DuckDB fatal error; the connection is "
              "abandoned and this process will exit with status 1 when it ends (a new connection is used meanwhile)")


def _exit_keeping_abandoned() -> None:
    """At exit, with abandoned connections: flush and leave without running their destructors."""
    import sys

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(1)


def _attach(con: duckdb.DuckDBPyConnection, s: Settings, read_only: bool) -> None:
    # Two writers attaching a fresh PostgreSQL catalog at once both try to create DuckLake's
    # metadata tables; the loser fails ("duplicate key value ... pg_type_typname_nsp_index") and
    # succeeds on a second attach, when the tables exist.
    for attempt in range(5):
        try:
            con.execute(attach_sql(s, read_only=read_only))
            return
        except duckdb.Error as e:
            if "Failed to initialize DuckLake" not in str(e) or attempt == 4:
                raise
            with contextlib.suppress(duckdb.Error):
                con.execute(f"DETACH {LAKE}")
            time.sleep(0.2 + random.random() * 0.5)


@contextlib.contextmanager
def one_transaction(con: duckdb.DuckDBPyConnection):
    """The block's statements in one DuckDB transaction: on a DuckLake catalog every statement in
    autocommit mode is a transaction of its own that reads the catalog's snapshot and table metadata
    again (measured on the demo lake: 129 row counts take 9.0 s of CPU one by one, 5.0 s in one
    transaction). For a connection in autocommit mode (DuckDB cannot nest transactions)."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield
    except BaseException:
        with contextlib.suppress(duckdb.Error):
            con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


def strict_in_one_transaction(con: duckdb.DuckDBPyConnection, run, what: str):
    """``run(strict=True)`` in one transaction (``one_transaction``: one DuckLake snapshot, temporary
    objects without a commit each). DuckDB aborts a transaction at its first error, so on any error
    it is rolled back and ``run()`` runs again in autocommit mode, where the caller's statement-by-
    statement fallbacks isolate the failing statement. ``what`` names the work in the log."""
    try:
        with one_transaction(con):
            return run(strict=True)
    except Exception as e:  # noqa: BLE001 - run again statement by statement
        log.info("%s in one transaction failed (%s): again statement by statement", what, str(e).splitlines()[0][:200])
    return run()


def table_exists(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    """Whether the lake has this table (by information_schema.tables, for the reason below)."""
    return bool(con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_type = 'BASE TABLE' AND table_catalog = ? "
        "AND table_schema = ? AND table_name = ?", [LAKE, schema, table]).fetchone()[0])


def lake_tables(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str]]:
    """(schema, table) of every table and view in the lake, sorted.

    By information_schema.tables: duckdb_tables() loads every DuckLake table's statistics
    (demo lake, 129 tables: 0.97 vs 0.05 s CPU, same list)."""
    rows = con.execute(
        "SELECT table_schema, table_name FROM information_schema.tables WHERE table_catalog = ? ORDER BY 1, 2",
        [LAKE]).fetchall()
    return [(r[0], r[1]) for r in rows]


# ---------------------------------------------------------------- writers
# Errors worth another attempt: a logical DuckLake conflict that its own retries could not settle,
# the catalog or object store briefly unreachable (restart, network). Everything else is a real error.
TRANSIENT_MARKERS = (
    "conflict", "Transaction conflict", "could not connect", "Connection refused", "connection to server",
    "server closed the connection", "terminating connection", "the database system is", "SSL SYSCALL",
    "HTTP", "Could not establish connection", "timed out", "Connection reset", "Broken pipe",
    "database is locked", "no connection to the server",
    # DuckDB invalidated its database instance (an internal error, e.g. the catalog server lost in
    # the middle of a commit): every later query on it fails, but a new connection is a new instance
    INVALIDATED,
)


def is_transient(error: BaseException) -> bool:
    text = f"{type(error).__name__}: {error}"
    return any(m.lower() in text.lower() for m in TRANSIENT_MARKERS)


def with_retries(fn, *, attempts: int = 6, first_wait: float = 0.2, backoff: float = 2.0, what: str = "lake write"):
    """Call ``fn()``; on a transient error wait (with jitter, growing by ``backoff``) and try again.

    ``fn`` must be idempotent (every ingest step is: a file already loaded is skipped).
    """
    wait = first_wait
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 — classified below
            if attempt == attempts or not is_transient(e):
                raise
            log.warning("%s: transient error (attempt %d/%d), retrying in %.1f s: %s", what, attempt, attempts, wait, e)
            time.sleep(wait * (0.5 + random.random()))
            wait *= backoff


@contextlib.contextmanager
def catalog_lock(name: str, s: Settings | None = None, timeout: float = 600.0):
    """A named mutex for all writers of this lake, released when the holder exits or dies.

    PostgreSQL catalog: a session advisory lock on the catalog database (several machines).
    SQLite catalog: an flock on a file next to the catalog (one machine). Used for steps that
    DuckLake cannot merge: creating the tables on a fresh lake, replacing ops.institution, and
    one institution's partition (so that the same file is never loaded by two runs at once).
    """
    s = s or load_settings()
    key = zlib.crc32(f"healthlake:{name}".encode()) - 2**31
    if s.catalog_kind == "postgres":
        import psycopg2

        from healthlake.config import postgres_url_to_libpq

        con = psycopg2.connect(postgres_url_to_libpq(s.catalog), connect_timeout=10)
        con.autocommit = True
        try:
            with con.cursor() as cur:
                cur.execute(f"SET lock_timeout = '{int(timeout * 1000)}ms'")
                cur.execute("SELECT pg_advisory_lock(%s)", (key,))
            yield
        finally:
            with contextlib.suppress(Exception):
                con.close()  # closing the session releases the lock
    else:
        path = Path(s.catalog).with_name(f".lock-{key & 0xffffffff:08x}")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

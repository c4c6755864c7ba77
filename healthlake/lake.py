"""Connections to the lakehouse: DuckDB with the DuckLake catalog attached as ``lake``.

DuckDB extensions never come from the internet: they are installed from the
``duckdb-extension-*==1.5.5`` wheels into a project-local extension directory, and
autoinstall is off. parquet, json and icu are built into the duckdb wheel.
"""

from __future__ import annotations

import glob
import os
import threading
from pathlib import Path

import duckdb

from healthlake.config import Settings, settings as load_settings

LAKE = "lake"
# Schemas the pipeline owns in the lake; dbt creates its own mart schemas.
PIPELINE_SCHEMAS = ("bronze", "ops")
EXTENSIONS = ("ducklake", "sqlite_scanner", "postgres_scanner", "httpfs")

_install_lock = threading.Lock()


def packaged_extensions() -> dict[str, Path]:
    """Extension binaries shipped by the installed duckdb-extension-* wheels."""
    import duckdb as _duckdb

    site = Path(_duckdb.__file__).resolve().parents[1]
    found = {}
    for f in glob.glob(str(site / "duckdb_extension_*" / "extensions" / f"v{_duckdb.__version__}" / "*.duckdb_extension")):
        found[Path(f).name.split(".")[0]] = Path(f)
    return found


def duckdb_config(s: Settings) -> dict:
    return {
        "extension_directory": str(s.extension_dir),
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": True,
    }


def ensure_extensions(s: Settings | None = None) -> None:
    """Install the packaged extensions into the project-local directory (idempotent)."""
    s = s or load_settings()
    with _install_lock:
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
    """
    s = s or load_settings()
    ensure_extensions(s)
    if s.catalog_kind == "sqlite":
        Path(s.catalog).parent.mkdir(parents=True, exist_ok=True)
        if read_only and not Path(s.catalog).exists():
            raise FileNotFoundError(f"no lake at {s.catalog}: run `healthlake demo` (or `make demo`) first")
    if not s.data_is_s3:
        os.makedirs(s.data_path, exist_ok=True)
    con = duckdb.connect(database, config=duckdb_config(s))
    secret = s3_secret_sql(s)
    if secret:
        con.execute(secret)
    con.execute(attach_sql(s, read_only=read_only))
    con.execute(f"USE {LAKE}")
    if not read_only:
        for schema in PIPELINE_SCHEMAS:
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {LAKE}.{schema}")
    return con


def lake_tables(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str]]:
    """(schema, table) of every table and view in the lake, sorted."""
    rows = con.execute(
        "SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = ? "
        "UNION SELECT schema_name, view_name FROM duckdb_views() WHERE database_name = ? AND NOT internal "
        "ORDER BY 1, 2", [LAKE, LAKE]).fetchall()
    return [(r[0], r[1]) for r in rows]

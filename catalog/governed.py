"""Governed queries: SQL an analyst may run within a role's clearance, checked, executed, audited.

    columns, rows = run_governed("SELECT visit_type_name, count(*) FROM emr.fct_encounter GROUP BY 1",
                                 role="researcher", user="li")

The path, each step refusing with ``AccessDenied(reason)``:

1. **Parse** with sqlglot (DuckDB dialect). Exactly one statement, and it must be a query: SELECT,
   ``WITH … SELECT``, or UNION/INTERSECT/EXCEPT of queries. Anything else anywhere in the tree —
   ATTACH/DETACH, COPY, EXPORT/IMPORT, INSTALL/LOAD, PRAGMA, SET/RESET, CALL, USE, DDL, DML,
   ``SELECT … INTO``, statements sqlglot only knows as opaque commands — is refused.
2. **Functions**: file and remote readers and table functions (``read_*``, ``*_scan``, ``glob``,
   ``query``, ``query_table``, ``sniff_csv``, ``parquet_*``, ``ducklake_*``, ``duckdb_*``,
   ``pragma_*``, ``iceberg_*``, ``delta_*``, ``getenv``, ``current_setting``, ``COLUMNS`` …) are
   refused wherever they appear.
3. **Tables**: an allow-list. Every table reference must be a published table (``schema.table`` of
   the four databases, or ``catalog.published_column``), or a CTE visible in its scope. System
   views (information_schema, pg_catalog, duckdb_*) and file paths used as tables are refused:
   what a role may know about the schema is in ``catalog.published_column``.
4. **Columns**: qualified with ``sqlglot.optimizer.qualify`` against the schema of the role's
   published database (stars expanded, through CTEs, subqueries, joins, WHERE, GROUP BY, ORDER BY,
   window clauses, LATERAL), so every column reference resolves to a base column. A reference is
   allowed when that column's published form is safe for the role: raw with level ≤ clearance, or
   masked / pseudonymised / generalised (see below). Unresolvable references are refused.
5. **Execute** the *regenerated* SQL (what was checked is what runs, not the original text, so
   comment or quoting tricks that parse differently cannot slip through) on the role's published
   database ``<root>/published/level_<clearance>.duckdb``, opened read-only with
   ``enable_external_access=false`` and ``lock_configuration=true``: even a query the parser let
   through cannot read files, attach databases or change settings (defence in depth).
6. **Audit**: every call, allowed, refused or failed, is appended to the hash-chained audit log
   (``catalog.audit``).

Decision — a masked or pseudonymised column *may* be referenced anywhere (select list, WHERE, JOIN,
string functions over it): the published database holds only its published form (``511011********
1234``, ``张*``, ``md5(secret || value)``, birth year), so no expression over it can recover the raw
value; joins on pseudonyms are the point of pseudonymising. Columns absent at a clearance are not in
the database and cannot be referenced at all. The column check therefore guards against a published
file that disagrees with the classification (a stale or wrongly built file): a raw column above the
clearance is refused even if it is in the file.
"""

from __future__ import annotations

import getpass
import hashlib
import re
import threading
import time
from dataclasses import dataclass, field

import duckdb
import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, SqlglotError
from sqlglot.optimizer.qualify import qualify
from sqlglot.optimizer.scope import traverse_scope
from sqlglot.schema import MappingSchema

from catalog.access import AccessError, Role, get_role
from catalog.audit import append_entry
from catalog.classification import PUBLISHED_SCHEMAS
from catalog.publish import MANIFEST_TABLE, published_path
from healthlake.config import Settings, settings as load_settings

__all__ = ["run_governed", "check_query", "AccessDenied", "CheckedQuery", "open_published", "MAX_SQL_CHARS"]

MAX_SQL_CHARS = 100_000
SAFE_TREATMENTS = ("masked", "pseudonymised", "generalised")
MANIFEST_SCHEMA, MANIFEST_NAME = MANIFEST_TABLE.split(".")

# Statement/expression types refused wherever they occur in the tree.
_FORBIDDEN_NODES = tuple(getattr(exp, n) for n in (
    "Command", "Create", "Insert", "Update", "Delete", "Drop", "Alter", "Copy", "Attach", "Detach", "Pragma",
    "Set", "SetItem", "Use", "Install", "Describe", "Show", "Summarize", "Transaction", "Commit", "Rollback",
    "Merge", "LoadData", "Cache", "Uncache", "Refresh", "Into", "Export", "Import", "Placeholder", "Parameter",
    "Analyze", "TruncateTable", "Grant", "Revoke", "Comment", "Kill", "Declare", "Execute", "Semicolon",
) if hasattr(exp, n))
_QUERY_ROOTS = (exp.Select, exp.Union, exp.Intersect, exp.Except)

# Function names refused (lower-case): readers, table functions, system/introspection, environment.
_FORBIDDEN_FUNCTIONS = {
    "glob", "query", "query_table", "sniff_csv", "read_csv", "read_csv_auto", "read_parquet", "parquet_scan",
    "read_json", "read_json_auto", "read_json_objects", "read_ndjson", "read_ndjson_auto", "read_ndjson_objects",
    "read_text", "read_blob", "read_xlsx", "getenv", "current_setting", "which_secret", "columns", "unnest",
    "range", "generate_series", "repeat_row", "load_aws_credentials", "icu_calendar_names", "test_all_types",
    "enable_logging", "disable_logging", "truncate_duckdb_logs", "checkpoint", "force_checkpoint", "summary",
    "current_database", "current_catalog", "current_schema", "current_schemas", "version", "import_database",
}
_FORBIDDEN_PREFIXES = ("read_", "parquet_", "ducklake_", "duckdb_", "pragma_", "iceberg_", "delta_", "postgres_",
                       "sqlite_", "mysql_", "http", "s3_", "json_execute", "arrow_", "excel_", "st_read", "load_",
                       "txt_", "csv_")
_FORBIDDEN_SUFFIXES = ("_scan", "_query", "_execute", "_attach", "_metadata", "_schema")
_FUNCTION_CLASSES = tuple(getattr(exp, n) for n in ("ReadCSV", "ReadParquet", "ReadJSON", "ExplodingGenerateSeries",
                                                    "GenerateSeries", "Unnest", "Explode") if hasattr(exp, n))


class AccessDenied(AccessError):
    """A governed query was refused; ``reason`` says why (and it is in the audit log)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class CheckedQuery:
    sql: str                       # regenerated, fully qualified SQL that is executed
    tables: list[str] = field(default_factory=list)   # schema.table read
    columns: list[str] = field(default_factory=list)  # schema.table.column read


@dataclass(frozen=True)
class _Published:
    path: str
    schema: dict                   # {schema: {table: {column: type}}}
    manifest: dict                 # (schema, table, column) → (level, treatment)
    absent: dict                   # (schema, table) → {lake column: level} of columns not published here


_CACHE: dict[tuple[str, float], _Published] = {}


def _engine_config() -> dict:
    return {"enable_external_access": False, "autoload_known_extensions": False,
            "autoinstall_known_extensions": False, "allow_community_extensions": False,
            "allow_unsigned_extensions": False, "lock_configuration": True}


def open_published(clearance: int, s: Settings | None = None) -> duckdb.DuckDBPyConnection:
    """The published database of one clearance, read-only, external access off, configuration locked."""
    path = published_path(clearance, s)
    if not path.exists():
        raise FileNotFoundError(f"no published database for level {clearance} at {path}: "
                                f"publish first (catalog.publish.publish_all)")
    return duckdb.connect(str(path), read_only=True, config=_engine_config())


def _published(clearance: int, s: Settings) -> _Published:
    path = published_path(clearance, s)
    if not path.exists():
        raise FileNotFoundError(f"no published database for level {clearance} at {path}: "
                                f"publish first (catalog.publish.publish_all)")
    key = (str(path), path.stat().st_mtime)
    if key not in _CACHE:
        con = open_published(clearance, s)
        try:
            schema: dict = {}
            for sch, tbl, col, typ in con.execute(
                    "SELECT schema_name, table_name, column_name, data_type FROM duckdb_columns() "
                    "WHERE database_name = current_database() ORDER BY schema_name, table_name, column_index").fetchall():
                schema.setdefault(sch, {}).setdefault(tbl, {})[col] = typ
            manifest = {(r[0], r[1], r[2]): (r[3], r[4]) for r in con.execute(
                f"SELECT schema_name, table_name, column_name, level, treatment FROM {MANIFEST_TABLE} "
                "WHERE column_name IS NOT NULL").fetchall()}
            absent: dict = {}
            for sch, tbl, col, level in con.execute(
                    f"SELECT schema_name, table_name, source_column, level FROM {MANIFEST_TABLE} "
                    "WHERE column_name IS NULL").fetchall():
                absent.setdefault((sch, tbl), {})[col] = level
        finally:
            con.close()
        for col in ("schema_name", "table_name", "column_name", "source_column", "category", "level", "kind",
                    "treatment", "clearance", "published_at"):  # the manifest itself is level-1 metadata
            manifest[(MANIFEST_SCHEMA, MANIFEST_NAME, col)] = (1, "raw")
        _CACHE.clear()
        _CACHE[key] = _Published(str(path), schema, manifest, absent)
    return _CACHE[key]


def _function_name(node: exp.Func) -> str:
    if isinstance(node, exp.Anonymous):
        return str(node.this).lower()
    return node.sql_name().lower()


def _forbidden_function(name: str) -> bool:
    return (name in _FORBIDDEN_FUNCTIONS or name.startswith(_FORBIDDEN_PREFIXES)
            or name.endswith(_FORBIDDEN_SUFFIXES))


def check_query(sql: str, role: Role, published: _Published) -> CheckedQuery:
    """Parse, check and qualify one query for a role; raises AccessDenied. Pure: no execution."""
    if len(sql) > MAX_SQL_CHARS:
        raise AccessDenied(f"query longer than {MAX_SQL_CHARS} characters")
    try:
        statements = [st for st in sqlglot.parse(sql, read="duckdb") if st is not None]
    except ParseError as e:
        # Only the description and position: the excerpt sqlglot adds quotes the query text, which
        # the audit log deliberately does not hold (it may contain the values being probed for).
        err = (e.errors or [{}])[0]
        raise AccessDenied(f"could not parse the query: {err.get('description', 'syntax error')} "
                           f"(line {err.get('line')}, column {err.get('col')})") from None
    except SqlglotError as e:
        raise AccessDenied(f"could not parse the query: {type(e).__name__}") from None
    if len(statements) != 1:
        raise AccessDenied(f"exactly one statement is allowed, got {len(statements)}")
    tree = statements[0]
    while isinstance(tree, (exp.Subquery, exp.Paren)) and isinstance(tree.this, _QUERY_ROOTS + (exp.Subquery,)):
        tree = tree.this
    if not isinstance(tree, _QUERY_ROOTS):
        raise AccessDenied(f"only queries (SELECT, WITH … SELECT, UNION) are allowed, not {tree.key.upper()}")
    for node in tree.walk():
        if isinstance(node, _FORBIDDEN_NODES):
            raise AccessDenied(f"{node.key.upper()} is not allowed in a governed query")
        if isinstance(node, _FUNCTION_CLASSES):
            raise AccessDenied(f"function {node.sql_name().lower()} is not allowed (file readers and table "
                               f"functions are refused)")
        if isinstance(node, exp.Func) and _forbidden_function(_function_name(node)):
            raise AccessDenied(f"function {_function_name(node)} is not allowed (file readers, table functions "
                               f"and system functions are refused)")
        if isinstance(node, exp.Table) and not isinstance(node.this, exp.Identifier):
            fn = node.this
            if isinstance(fn, exp.Func):
                raise AccessDenied(f"function {_function_name(fn)} is not allowed in FROM (file readers and table "
                                   f"functions are refused): only published tables")
            raise AccessDenied("table functions are not allowed in FROM: only published tables")
        if isinstance(node, exp.Table) and (node.args.get("version") or node.args.get("when")):
            raise AccessDenied("time travel (AT/VERSION) is not allowed: only the published state")
        if isinstance(node, exp.Lateral) and not isinstance(node.this, (exp.Subquery, exp.Select)):
            raise AccessDenied("LATERAL is only allowed over a subquery")

    try:
        qualified = qualify(tree, schema=MappingSchema(published.schema, dialect="duckdb"), dialect="duckdb",
                            validate_qualify_columns=True, quote_identifiers=True, expand_stars=True)
    except (SqlglotError, KeyError, ValueError) as e:
        message = str(e).splitlines()[0][:200]
        m = re.search(r"[Cc]olumn:? '?([^' ]+)'?", message)
        if m:
            for t in tree.find_all(exp.Table):
                level = published.absent.get((t.db, t.name), {}).get(m.group(1).strip('"').lower())
                if level is not None:
                    raise AccessDenied(f"column {t.db}.{t.name}.{m.group(1)} is level {level}, above the clearance "
                                       f"{role.clearance} of role {role.name} (not published at this level)") from None
        raise AccessDenied(f"could not resolve every column: {message}") from None

    for node in qualified.walk():
        if type(node).__name__ == "TableColumn":  # SELECT t FROM x t: the whole row as one value
            raise AccessDenied("a table used as a row value (SELECT t FROM x t) is not allowed: name the columns")

    # Tables: every exp.Table must be a CTE visible in its scope or a published table.
    base_aliases: dict[str, set[tuple[str, str]]] = {}
    derived_aliases: set[str] = set()
    seen_tables = set()
    tables_read = set()
    for scope in traverse_scope(qualified):
        for name, source in scope.sources.items():
            if not isinstance(source, exp.Table):
                derived_aliases.add(name)
        for table in scope.tables:
            seen_tables.add(id(table))
            source = scope.sources.get(table.alias_or_name)
            if not table.args.get("db") and not table.args.get("catalog") and table.name in scope.cte_sources:
                continue
            if source is not None and not isinstance(source, exp.Table):
                continue
            if table.args.get("catalog"):
                raise AccessDenied(f"database-qualified table {table.catalog}.{table.db}.{table.name} is not "
                                   f"allowed: use schema.table")
            db, name = table.db, table.name
            if db not in PUBLISHED_SCHEMAS + (MANIFEST_SCHEMA,) or name not in published.schema.get(db, {}):
                raise AccessDenied(f"table {db + '.' if db else ''}{name} is not a published table of this clearance "
                                   f"(only {', '.join(PUBLISHED_SCHEMAS)} tables and {MANIFEST_TABLE})")
            if db == MANIFEST_SCHEMA and name != MANIFEST_NAME:
                raise AccessDenied(f"table {db}.{name} is not published")
            base_aliases.setdefault(table.alias_or_name, set()).add((db, name))
            tables_read.add(f"{db}.{name}")
    for table in qualified.find_all(exp.Table):
        if id(table) not in seen_tables:
            raise AccessDenied(f"table reference {table.sql('duckdb')} outside any query scope")

    # Columns: every qualified reference resolves to a base column whose published form is safe.
    # An unqualified reference left after qualification must be a projection alias (ORDER BY x) or a
    # lambda parameter; anything else (a table alias used as a row value, ``SELECT d FROM t d``, or a
    # name sqlglot could not place in HAVING/QUALIFY) is refused rather than left to the engine.
    aliases = {a.alias.lower() for a in qualified.find_all(exp.Alias) if a.alias}
    lambda_params = {p.name.lower() for lam in qualified.find_all(exp.Lambda) for p in lam.expressions}
    columns_read = set()
    for col in qualified.find_all(exp.Column):
        if not col.table:
            name = col.name.lower()
            if name in lambda_params or (name in aliases and name not in base_aliases and name not in derived_aliases):
                continue
            raise AccessDenied(f"column reference {col.name} does not resolve to a column of a published table")
        candidates = base_aliases.get(col.table, set())
        if not candidates and col.table not in derived_aliases:
            raise AccessDenied(f"column {col.sql('duckdb')} does not resolve to a published table")
        for db, name in candidates:
            if col.name not in published.schema[db][name]:
                continue
            level, treatment = published.manifest.get((db, name, col.name), (None, None))
            if level is None:
                raise AccessDenied(f"column {db}.{name}.{col.name} is not classified")
            if not (treatment in SAFE_TREATMENTS or (treatment == "raw" and level <= role.clearance)):
                raise AccessDenied(f"column {db}.{name}.{col.name} is level {level}, above the clearance "
                                   f"{role.clearance} of role {role.name}")
            columns_read.add(f"{db}.{name}.{col.name}")
    # Comments are dropped from the executed SQL: sqlglot keeps them, and a comment the engine would
    # end at a different place (nested /* */) must not turn back into code.
    return CheckedQuery(sql=qualified.sql(dialect="duckdb", comments=False), tables=sorted(tables_read), columns=sorted(columns_read))


def _referenced(sql: str) -> tuple[list[str], list[str]]:
    """Best effort for the audit of a refused query: the tables and column names it mentions."""
    try:
        tables, columns = set(), set()
        for st in sqlglot.parse(sql[:MAX_SQL_CHARS], read="duckdb"):
            if st is None:
                continue
            tables |= {".".join(p for p in (t.catalog, t.db, t.name) if p) for t in st.find_all(exp.Table)
                       if isinstance(t.this, exp.Identifier)}
            columns |= {".".join(p for p in (c.table, c.name) if p) for c in st.find_all(exp.Column)}
        return sorted(tables), sorted(columns)
    except (SqlglotError, RecursionError, ValueError):
        return [], []


def _sha(sql: str) -> str:
    return hashlib.sha256(sql.encode("utf-8")).hexdigest()


def run_governed(sql: str, role: str, user: str | None = None, settings: Settings | None = None, *,
                 authorisation: str | None = None, max_rows: int = 100_000,
                 timeout_seconds: float = 120.0) -> tuple[list[str], list[tuple]]:
    """Check ``sql`` for ``role``, run it on the role's published database, audit it; (columns, rows).

    Raises ``AccessDenied`` when refused (the refusal is audited too). ``authorisation`` is the
    resident's authorisation reference, required by roles flagged ``requires_resident_authorisation``.
    At most ``max_rows`` rows are returned (the audit records the count returned).
    """
    s = settings or load_settings()
    user = user or getpass.getuser()
    entry = {"user": user, "role": role, "clearance": None, "sql_sha256": _sha(sql), "tables": [], "columns": [],
             "rows": 0, "outcome": None, "reason": None}
    t0 = time.perf_counter()

    def audit(outcome, reason=None, **extra):
        entry.update(outcome=outcome, reason=reason, ms=round((time.perf_counter() - t0) * 1000, 1), **extra)
        append_entry(entry, s)

    try:
        r = get_role(role)
        entry["clearance"] = r.clearance
        if r.requires_resident_authorisation:
            if not (authorisation or "").strip():
                raise AccessDenied(f"role {r.name} requires the resident's authorisation: pass authorisation=… "
                                   f"(--authorisation) with the reference of the resident's consent")
            entry["authorisation"] = authorisation.strip()
        published = _published(r.clearance, s)
        checked = check_query(sql, r, published)
    except AccessError as e:
        entry["tables"], entry["columns"] = _referenced(sql)  # as written (unresolved): what it tried to read
        audit("refused", getattr(e, "reason", str(e)))
        raise AccessDenied(getattr(e, "reason", str(e))) from None
    except FileNotFoundError as e:
        audit("error", str(e))
        raise
    entry.update(tables=checked.tables, columns=checked.columns)
    try:
        con = open_published(r.clearance, s)
    except Exception as e:
        audit("error", f"{type(e).__name__}: {e}")
        raise
    timer = threading.Timer(timeout_seconds, con.interrupt)
    timer.start()
    try:
        cur = con.execute(checked.sql)
        columns = [d[0] for d in cur.description] if cur.description else []
        rows = cur.fetchmany(max_rows)
    except duckdb.Error as e:
        message = str(e).splitlines()[0][:300]
        blocked = re.search(r"Permission Error|disabled|external access|lock_configuration|locked", message, re.I)
        if blocked:  # the engine refused what the parser let through: report as a refusal
            audit("refused", f"engine: {message}")
            raise AccessDenied(f"engine: {message}") from None
        audit("error", message)
        raise
    finally:
        timer.cancel()
        con.close()
    audit("allowed", rows=len(rows))
    return columns, rows

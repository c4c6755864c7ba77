"""Great Expectations 1.x on DuckDB (duckdb-engine), with the DuckLake catalog attached.

GX runs every expectation as SQL on DuckDB (no pandas): the metrics are pushed down as
aggregate queries, so a rule over a million rows costs one scan, not a DataFrame.

Out of the box GX 1.24.1 fails on duckdb-engine in two ways; ``apply_fixes()`` (called by every
factory below, idempotent) repairs both by patching two names, after checking the installed GX is
the version the fixes were written against (``PINNED_GX``). A third adjustment is not a patch but a
property of the connections we hand to GX (autocommit, see ``_AutocommitConnection``) so that one
failing rule cannot abort the others' transaction.

1. **Results read after the connection is closed.**
   ``SqlAlchemyExecutionEngine.execute_query`` (sqlalchemy_execution_engine.py line 1576 in
   1.24.1) runs ``with self.get_connection() as connection: result = connection.execute(q)`` and
   returns ``result``; callers (``resolve_metric_bundle``, the query metrics...) fetch from it
   *after* the ``with`` block. For dialects not in
   ``_PERSISTED_CONNECTION_DIALECTS`` (line 181) ``get_connection`` (line 1514) closes the
   connection at that point; the pool resets it with a ROLLBACK, and a DuckDB rollback discards
   the pending result set, so every metric comes back empty ("list index out of range", an empty
   ``table.row_count``...). GX already keeps one persistent connection for SQLite, SQL Server,
   BigQuery and Databricks for the same class of reason (temp tables, result lifetimes). Fix: add
   ``"duckdb"`` to ``_PERSISTED_CONNECTION_DIALECTS``. That one name drives both places GX reads
   it: ``get_connection`` keeps the connection open, and ``_dialect_requires_persisted_connection``
   (line 199, used by ``_setup_engine`` when GX builds the engine from our connection string) makes
   GX create the engine with ``StaticPool``, i.e. one DuckDB connection per execution engine, which
   is also what makes the runtime ATTACH below stick.

2. **Regex expectations.** ``get_dialect_regex_expression`` (expectations/metrics/util.py line
   121) picks the SQL regex operator by dialect class. duckdb-engine's ``Dialect`` derives from
   ``PGDialect_psycopg2``, but GX receives the dialect *instance* (``dialect_module`` is None for
   "duckdb"), whose ``.dialect`` attribute does not exist, so no branch matches, the function
   returns None and the metric raises "Regex is not supported for dialect duckdb". Even if the
   PostgreSQL branch did match it would be wrong: PostgreSQL's ``~`` is a *search* (like Python's
   ``re.search``) while DuckDB's ``~`` is a *full match* (``'abc' ~ '^a'`` is false in DuckDB 1.5).
   Fix: for DuckDB, return ``regexp_matches(column, regex)`` (search semantics, RE2 syntax), or
   its negation. The metric modules import the function by name, so the wrapper is installed in
   ``util`` and in each module that imported it (``_REGEX_CONSUMERS``), after checking each still
   holds the original.

The lake: our tables live in a DuckLake catalog ATTACHed at runtime (the DuckDB database itself
is in memory). GX's engine is created with ``creator=``, a callable that returns
``healthlake.lake.connect(read_only=True)`` wrapped in duckdb-engine's ``ConnectionWrapper`` (what
duckdb-engine's own ``Dialect.connect`` returns), followed by ``USE lake.<schema>``. The schema is
set on the connection, not on the table asset, because (a) GX 1.14+ deprecates
``TableAsset.schema_name`` in favour of the connection's schema, and (b) GX's column reflection
falls back to ``SELECT * FROM <table> LIMIT 1`` without the schema (duckdb-engine 0.17's
``get_columns`` fails on SQLAlchemy 2.1, which queries ``pg_catalog.pg_collation``).
"""

from __future__ import annotations

import contextlib
import functools
import re
import threading
from typing import Callable, Iterator

import great_expectations as gx
import sqlalchemy as sa
from duckdb_engine import ConnectionWrapper

from healthlake.config import Settings, settings as load_settings
from healthlake.lake import LAKE, connect
from quality.errors import QualityError

__all__ = ["PINNED_GX", "apply_fixes", "lake_connection_creator", "get_context", "lake_batch", "split_table"]


# The fixes below were written against, and verified on, this exact release.
PINNED_GX = "1.24.1"
DUCKDB_DIALECT = "duckdb"
# A connection string that only selects duckdb-engine's dialect: ``creator`` makes the connection.
_CONNECTION_STRING = "duckdb:///:memory:"

# Modules that did ``from great_expectations.expectations.metrics.util import get_dialect_regex_expression``.
_REGEX_CONSUMERS = (
    "great_expectations.expectations.metrics.util",
    "great_expectations.expectations.metrics.column_map_metrics.column_values_match_regex",
    "great_expectations.expectations.metrics.column_map_metrics.column_values_not_match_regex",
    "great_expectations.expectations.metrics.column_map_metrics.column_values_match_regex_list",
    "great_expectations.expectations.metrics.column_map_metrics.column_values_not_match_regex_list",
    "great_expectations.expectations.metrics.column_aggregate_metrics.column_values_match_regex_values",
    "great_expectations.expectations.metrics.column_aggregate_metrics.column_values_not_match_regex_values",
)

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_lock = threading.Lock()
_applied = False


class _DialectName(str):
    """A plain dialect name that quacks like a ``GXSqlDialect`` member.

    ``_PERSISTED_CONNECTION_DIALECTS`` is read two ways: ``dialect_name in ...`` (string equality;
    ``GXSqlDialect`` members compare equal to their value) and ``name.value`` (in
    ``_dialect_requires_persisted_connection``). ``GXSqlDialect`` is an Enum and cannot be
    extended, so the duckdb entry is a ``str`` that also has ``.value``.
    """

    @property
    def value(self) -> str:
        return str(self)


def _is_duckdb(dialect) -> bool:
    # GX passes either the execution engine's ``dialect_module`` (a module) or, as for duckdb,
    # the engine's Dialect instance.
    return getattr(dialect, "name", None) == DUCKDB_DIALECT


def _duckdb_regex_wrapper(original: Callable) -> Callable:
    @functools.wraps(original)
    def get_dialect_regex_expression(column, regex, dialect, positive: bool = True):
        if _is_duckdb(dialect):
            # regexp_matches: RE2, true when the pattern matches anywhere (anchors as written).
            match = sa.func.regexp_matches(column, sa.literal(regex))
            return match if positive else sa.not_(match)
        return original(column, regex, dialect, positive)

    get_dialect_regex_expression._healthlake_duckdb = True  # type: ignore[attr-defined]
    get_dialect_regex_expression._original = original  # type: ignore[attr-defined]
    return get_dialect_regex_expression


def apply_fixes() -> None:
    """Make GX 1.24.1 work on duckdb-engine (see the module docstring). Idempotent, thread-safe."""
    global _applied
    if _applied:
        return
    with _lock:
        if _applied:
            return
        if gx.__version__ != PINNED_GX:
            raise QualityError(
                f"quality/gx_duckdb.py patches great-expectations {PINNED_GX}, but {gx.__version__} is "
                f"installed. Re-check both fixes against the new release's sqlalchemy_execution_engine.py "
                f"(_PERSISTED_CONNECTION_DIALECTS, get_connection) and expectations/metrics/util.py "
                f"(get_dialect_regex_expression), run tests/test_quality.py, then update PINNED_GX.")

        import importlib

        from great_expectations.execution_engine import sqlalchemy_execution_engine as see
        from great_expectations.expectations.metrics import util as metrics_util

        # Fix 1: one persistent connection for duckdb, as for sqlite.
        persisted = see._PERSISTED_CONNECTION_DIALECTS
        if DUCKDB_DIALECT not in persisted:
            see._PERSISTED_CONNECTION_DIALECTS = (*persisted, _DialectName(DUCKDB_DIALECT))

        # Fix 2: DuckDB's regex function, in every module holding the function.
        original = metrics_util.get_dialect_regex_expression
        if not getattr(original, "_healthlake_duckdb", False):
            wrapper = _duckdb_regex_wrapper(original)
            for name in _REGEX_CONSUMERS:
                module = importlib.import_module(name)
                held = getattr(module, "get_dialect_regex_expression", None)
                if held is not original:
                    raise QualityError(
                        f"{name} no longer holds GX's get_dialect_regex_expression; "
                        f"update _REGEX_CONSUMERS in quality/gx_duckdb.py")
                module.get_dialect_regex_expression = wrapper
        _applied = True


def split_table(table: str) -> tuple[str, str]:
    """'population.dim_person' → ('population', 'dim_person'); names must be plain identifiers."""
    parts = table.split(".")
    if len(parts) != 2 or not all(_IDENT.match(p) for p in parts):
        raise QualityError(f"table must be '<schema>.<table>' of plain identifiers (e.g. population.dim_person), got {table!r}")
    return parts[0], parts[1]


def lake_connection_creator(settings: Settings | None = None, schema: str | None = None,
                            read_only: bool = True, lake_con=None, transaction: bool = False) -> Callable[[], object]:
    """A SQLAlchemy ``creator``: a DuckDB connection with the lake attached, in ``lake.<schema>``.

    Returns duckdb-engine's ``ConnectionWrapper`` (what its own ``Dialect.connect`` returns), so
    duckdb-engine's cursor handling is kept, in autocommit mode (see ``_AutocommitConnection``).
    ``lake_con``: an open lake connection to share: each GX connection is then a cursor of it (same
    DuckDB database, lake already attached) instead of a new database that loads the extensions and
    attaches the catalog again (about 0.6 s of CPU per connection, two per validated table).
    ``transaction``: the connection reads in one transaction, begun here and held until it is
    closed (see ``_AutocommitConnection``); a statement that fails in it aborts it.
    """
    s = settings or load_settings()
    if schema is not None and not _IDENT.match(schema):
        raise QualityError(f"schema must be a plain identifier, got {schema!r}")

    def create():
        con = lake_con.cursor() if lake_con is not None else connect(s, read_only=read_only)
        try:
            if schema is not None:
                con.execute(f'USE {LAKE}."{schema}"')
            if transaction:
                con.execute("BEGIN")
        except Exception:
            con.close()
            raise
        return _AutocommitConnection(con, held_transaction=transaction)

    return create


class _AutocommitConnection(ConnectionWrapper):
    """duckdb-engine's connection wrapper, left in DuckDB's autocommit mode.

    SQLAlchemy autobegins a transaction and duckdb-engine's ``do_begin`` turns that into a DuckDB
    ``BEGIN``. With GX's one persistent connection (fix 1) the whole validation would then run in
    one DuckDB transaction, and DuckDB aborts a transaction at its first error: one rule with a bad
    cast would make every later query fail with "Current transaction is aborted", because GX never
    rolls back after a database error (seen: a lone in-set rule with integer values on a VARCHAR
    column reported that instead of the conversion error). In autocommit mode every statement is
    its own read transaction, so an erroring rule stays alone. Rollbacks then find no transaction,
    which duckdb-engine's ``do_rollback`` already ignores; DuckDB's ``commit`` is a no-op without one.
    """

    def __init__(self, c, held_transaction: bool = False) -> None:
        super().__init__(c)
        self.held_transaction = held_transaction

    def begin(self) -> None:  # called by duckdb-engine's Dialect.do_begin
        pass

    def rollback(self) -> None:
        """SQLAlchemy rolls back each time GX hands the connection back (reset on return): in
        autocommit mode there is nothing to roll back; a held read transaction
        (``lake_connection_creator(transaction=True)``) is kept for the next statement: every
        statement of a validation then reads one DuckLake snapshot, without a transaction and
        catalog read of its own (~3-5 ms each, ~20 per table)."""
        if not self.held_transaction:
            ConnectionWrapper.__getattr__(self, "rollback")()


def get_context():
    """An ephemeral GX context (nothing written to disk) with progress bars off.

    An ephemeral context keeps its project configuration in memory and has no file to save it to,
    yet GX "saves" it after every change to its data sources (``_save_project_config``: the whole
    configuration rendered to YAML by ruamel into an in-memory store nothing reads back): four times
    per validated table (data source and asset added, batch definition, data source deleted),
    ~25 ms each. That save is skipped; the configuration itself (``context.config``, the data
    sources) is kept as GX keeps it.
    """
    apply_fixes()
    from great_expectations.data_context import EphemeralDataContext
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    if isinstance(context, EphemeralDataContext):
        context._save_project_config = lambda: None
    return context


@contextlib.contextmanager
def lake_batch(table: str, settings: Settings | None = None, context=None,
               lake_con=None, transaction: bool = False) -> Iterator[gx.datasource.fluent.Batch]:
    """A GX Batch of a whole lake table (``'<schema>.<table>'``), evaluated in DuckDB.

    One read-only DuckDB connection (lake attached, ``USE lake.<schema>``) serves every
    expectation validated on the batch; it is closed when the ``with`` block ends. With ``lake_con``
    (an open lake connection) that connection is a cursor of it (see ``lake_connection_creator``).
    ``transaction``: it reads in one transaction (``lake_connection_creator``): the first failing
    statement aborts it, so the caller must check the results and validate again without.

        with lake_batch("population.dim_person") as batch:
            result = batch.validate(gx.expectations.ExpectColumnValuesToNotBeNull(column="person_key"))
    """
    apply_fixes()
    schema, name = split_table(table)
    context = context or get_context()
    ds_name = f"lake__{schema}__{name}"
    if ds_name in context.data_sources.all():
        context.data_sources.delete(ds_name)
    datasource = context.data_sources.add_sql(
        name=ds_name,
        connection_string=_CONNECTION_STRING,
        kwargs={"creator": lake_connection_creator(settings, schema, lake_con=lake_con, transaction=transaction)},
    )
    try:
        asset = datasource.add_table_asset(name=name, table_name=name)
        batch = asset.add_batch_definition_whole_table("whole_table").get_batch()
        yield batch
    finally:
        _close_datasource(datasource)
        with contextlib.suppress(Exception):
            context.data_sources.delete(ds_name)


def _close_datasource(datasource) -> None:
    """Close the DuckDB connections GX opened for this data source (execution engine and probe engine)."""
    engine = datasource.execution_engine
    if engine is not None:
        with contextlib.suppress(Exception):
            if engine._connection is not None:  # the persisted connection of fix 1
                engine._connection.close()
        with contextlib.suppress(Exception):
            engine.close()
    probe = getattr(datasource, "_engine", None)  # built by test_connection() when adding the asset
    if probe is not None:
        with contextlib.suppress(Exception):
            probe.dispose()

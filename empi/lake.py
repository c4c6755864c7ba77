"""The EMPI run against the lake: state tables in schema ``empi``, results for dbt.

State (DuckLake tables, kept across runs):

* ``empi.identity_person``: the crosswalk identity_key → person_key (with when it was given, and
  the identity's match method and probability), the memory that keeps keys stable;
* ``empi.person_key_merge``: keys retired when a run (or a steward) merged two persons;
* ``empi.steward_decision``: a data steward's decision on a pair (``match`` / ``non_match``);
  decisions win over both passes on every later run;
* ``empi.review_queue``: this run's pairs awaiting a steward (replaced on every run);
* ``empi.run_log``: one row per run: counts, thresholds, seconds (with the mode: full or
  incremental, and how many identities were dirty);
* ``empi.identity_std``: every identity standardised as the last run saw it (input and model hashes);
* ``empi.link_edge``: the scored pairs (p ≥ the lower threshold, after the vetoes) of the last run;
* ``empi.model``: the Splink model (settings with m/u values) of each full run.

A run is incremental (``empi.link.Previous``) when the state holds a model and the identities of
an earlier run: only new or changed identities are standardised and scored, and only the clusters
they touch are read, linked again and written back (``_incremental``); ``full=True`` (dbt
``--full-refresh``) re-links and retrains everything.
A run is full anyway on the first run, under the Spark backend, after a change of the state's
columns, and when a model trained on too few identities (below ``empi.model.MIN_TRAIN``) meets
enough identities to train one.

The linkage itself runs in a private in-memory DuckDB (Splink's work tables never touch the lake).
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import duckdb
import pyarrow as pa

from empi.keys import assign_keys, secret as load_secret
from empi.link import LOWER, UPPER, LinkResult, Previous, _standardise_incremental, link

__all__ = ["ensure_state", "run_in_lake", "STATE_DDL"]

STATE_DDL = (
    "CREATE SCHEMA IF NOT EXISTS {db}.empi",
    "CREATE TABLE IF NOT EXISTS {db}.empi.identity_person (identity_key VARCHAR, person_key VARCHAR, "
    "assigned_at TIMESTAMPTZ, match_method VARCHAR, match_probability DOUBLE)",
    "CREATE TABLE IF NOT EXISTS {db}.empi.person_key_merge (retired_key VARCHAR, person_key VARCHAR, "
    "merged_at TIMESTAMPTZ)",
    "CREATE TABLE IF NOT EXISTS {db}.empi.steward_decision (identity_key_l VARCHAR, identity_key_r VARCHAR, "
    "decision VARCHAR, steward VARCHAR, decided_at TIMESTAMPTZ, note VARCHAR)",
    "CREATE TABLE IF NOT EXISTS {db}.empi.review_queue (identity_key_l VARCHAR, identity_key_r VARCHAR, "
    "match_probability DOUBLE, reason VARCHAR, person_key_l VARCHAR, person_key_r VARCHAR, "
    "name_l VARCHAR, name_r VARCHAR, birth_date_l DATE, birth_date_r DATE, sex_l VARCHAR, sex_r VARCHAR, "
    "id_number_l VARCHAR, id_number_r VARCHAR, phone_l VARCHAR, phone_r VARCHAR, "
    "division_l VARCHAR, division_r VARCHAR, queued_at TIMESTAMPTZ)",
    "CREATE TABLE IF NOT EXISTS {db}.empi.run_log (run_at TIMESTAMPTZ, identities BIGINT, persons BIGINT, "
    "by_method VARCHAR, review_pairs BIGINT, new_keys BIGINT, merged_keys BIGINT, upper_threshold DOUBLE, "
    "lower_threshold DOUBLE, seconds VARCHAR)",
    "CREATE TABLE IF NOT EXISTS {db}.empi.link_edge (identity_key_l VARCHAR, identity_key_r VARCHAR, "
    "match_probability DOUBLE)",
    "CREATE TABLE IF NOT EXISTS {db}.empi.model (saved_at TIMESTAMPTZ, trained BOOLEAN, backend VARCHAR, "
    "identities BIGINT, settings VARCHAR)",
)
_INPUT = ("identity_key", "id_type_code", "id_number", "name", "sex_code", "birth_date", "phone",
          "address_division_code", "address_text", "mother_id_number")


def ensure_state(con: duckdb.DuckDBPyConnection, db: str) -> None:
    for ddl in STATE_DDL:
        con.execute(ddl.format(db=db))


class _StateMismatch(Exception):
    """The state's columns are not this code's (an upgrade): the run must be full."""


def _saved_model(con: duckdb.DuckDBPyConnection, db: str, n: int) -> dict | None:
    """The model an incremental run scores with, or None when this run must be full."""
    from empi.model import MIN_TRAIN, backend_from_env

    if backend_from_env() != "duckdb":
        return None
    try:
        if not con.execute(f"SELECT count(*) FROM (SELECT 1 FROM {db}.empi.identity_std LIMIT 1)").fetchone()[0]:
            return None
    except duckdb.CatalogException:
        return None
    xw = {r[0] for r in con.execute(f"DESCRIBE {db}.empi.identity_person").fetchall()}
    if not {"match_method", "match_probability"} <= xw:   # a crosswalk from before they were kept
        return None
    row = con.execute(f"SELECT trained, backend, identities, settings FROM {db}.empi.model "
                      f"ORDER BY saved_at DESC LIMIT 1").fetchone()
    if row is None or row[1] != "duckdb" or (not row[0] and n >= MIN_TRAIN):
        return None
    return {"trained": row[0], "backend": row[1], "identities": row[2], "settings": json.loads(row[3])}


def run_in_lake(con: duckdb.DuckDBPyConnection, source: str, db: str, *, upper: float = UPPER,
                lower: float = LOWER, key_secret: str | None = None, full: bool = False,
                changed: str | None = None, touched_only: bool = False) -> tuple[pa.Table, LinkResult]:
    """Link the identities of ``source`` (a relation readable through ``con``), update the state in
    ``db``.empi and return (identity_key, person_key, match_method, match_probability, id_number_std).

    Incremental when the state allows it (see the module docstring); ``full`` re-links everything.
    An incremental run reads and writes only what the delivery touched (``_incremental``):
    ``changed`` — a relation with the rows of ``source`` that may be new or changed (say, the rows
    of the new batches; default: all of ``source``, each compared with the state by its input hash);
    ``touched_only`` — return the rows of the touched identities only (every other identity's
    person, method and probability are those of the previous run)."""
    key_secret = key_secret or load_secret()
    # the run's time (run_log.run_at, the crosswalk's assigned_at) is taken before the steward
    # decisions are read: a decision made while this run links is newer than it, and the next
    # incremental run takes it up
    now = datetime.now(timezone.utc)
    ensure_state(con, db)
    n = con.execute(f"SELECT count(*) FROM {source}").fetchone()[0]
    decisions = con.execute(f"""SELECT identity_key_l, identity_key_r, arg_max(decision, decided_at) AS decision
                                FROM {db}.empi.steward_decision GROUP BY ALL""").fetch_arrow_table()
    model = None if full else _saved_model(con, db, n)
    if model is not None:
        try:
            return _incremental(con, source, db, model, decisions, upper=upper, lower=lower, key_secret=key_secret,
                                changed=changed, touched_only=touched_only, n=n, now=now)
        except _StateMismatch:
            pass   # the state's columns are not this code's (an upgrade): re-link everything
    return _full(con, source, db, decisions, upper=upper, lower=lower, key_secret=key_secret, now=now)


def _add_crosswalk_columns(con: duckdb.DuckDBPyConnection, db: str) -> None:
    have = {r[0] for r in con.execute(f"DESCRIBE {db}.empi.identity_person").fetchall()}
    for col, typ in (("match_method", "VARCHAR"), ("match_probability", "DOUBLE")):
        if col not in have:
            con.execute(f"ALTER TABLE {db}.empi.identity_person ADD COLUMN {col} {typ}")


def _write_crosswalk(con: duckdb.DuckDBPyConnection, db: str, out: str, now: datetime) -> None:
    """The crosswalk rows of ``out`` (identity_key, person_key, match_method, match_probability):
    a row whose key changed (a re-link or a split) is replaced, a new one added, one whose method or
    probability changed updated in place (it keeps when its key was given)."""
    con.execute(f"""DELETE FROM {db}.empi.identity_person
                    WHERE identity_key IN (SELECT o.identity_key FROM {out} o
                                           JOIN {db}.empi.identity_person p USING (identity_key)
                                           WHERE p.person_key <> o.person_key)""")
    con.execute(f"""INSERT INTO {db}.empi.identity_person
                        (identity_key, person_key, assigned_at, match_method, match_probability)
                    SELECT o.identity_key, o.person_key, ?::TIMESTAMPTZ, o.match_method, o.match_probability
                    FROM {out} o
                    WHERE NOT EXISTS (SELECT 1 FROM {db}.empi.identity_person p
                                      WHERE p.identity_key = o.identity_key)""", [now])
    changed = con.execute(f"""SELECT count(*) FROM {out} o JOIN {db}.empi.identity_person p USING (identity_key)
                              WHERE p.match_method IS DISTINCT FROM o.match_method
                                 OR p.match_probability IS DISTINCT FROM o.match_probability""").fetchone()[0]
    if changed:
        con.execute(f"""UPDATE {db}.empi.identity_person p
                        SET match_method = o.match_method, match_probability = o.match_probability
                        FROM {out} o
                        WHERE p.identity_key = o.identity_key
                          AND (p.match_method IS DISTINCT FROM o.match_method
                               OR p.match_probability IS DISTINCT FROM o.match_probability)""")


_OUT_SQL = """
    SELECT l.identity_key, k.person_key, l.match_method, l.match_probability,
           CASE WHEN s.det_key LIKE 'id:%' THEN s.id18 END AS id_number_std, k.is_new
    FROM empi_links l JOIN keys_arrow k USING (identity_key) JOIN empi_std s USING (identity_key)
"""
_REVIEW_SQL = """
    SELECT r.identity_key_l, r.identity_key_r, r.match_probability, r.reason,
           kl.person_key AS person_key_l, coalesce(kr.person_key, kc.person_key) AS person_key_r,
           sl.name_hz AS name_l, sr.name_hz AS name_r, sl.birth_date AS birth_date_l,
           sr.birth_date AS birth_date_r, sl.sex AS sex_l, sr.sex AS sex_r,
           sl.id18 AS id_number_l, sr.id18 AS id_number_r, sl.phone AS phone_l, sr.phone AS phone_r,
           sl.division AS division_l, sr.division AS division_r
    FROM empi_review r
    JOIN keys_arrow kl ON kl.identity_key = r.identity_key_l
    JOIN empi_std sl ON sl.identity_key = r.identity_key_l
    LEFT JOIN keys_arrow kr ON kr.identity_key = r.identity_key_r
    LEFT JOIN empi_std sr ON sr.identity_key = r.identity_key_r
    LEFT JOIN (SELECT l.cluster_id, any_value(k.person_key) AS person_key
               FROM empi_links l JOIN keys_arrow k USING (identity_key) GROUP BY 1) kc
           ON kc.cluster_id = r.cluster_r
"""


def _full(con: duckdb.DuckDBPyConnection, source: str, db: str, decisions: pa.Table, *, upper: float,
          lower: float, key_secret: str, now: datetime) -> tuple[pa.Table, LinkResult]:
    """Every identity standardised and scored, the model retrained; keys from the crosswalk."""
    have = {r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}
    cols = ", ".join(c if c in have else f"NULL::VARCHAR AS {c}" for c in _INPUT)
    t0 = time.perf_counter()
    identities = con.execute(f"SELECT {cols} FROM {source}").fetch_arrow_table()
    t_read = time.perf_counter() - t0
    previous = con.execute(f"SELECT identity_key, person_key FROM {db}.empi.identity_person "
                           f"ORDER BY assigned_at, person_key").fetch_arrow_table()
    local = duckdb.connect()
    try:
        local.register("identities_arrow", identities)
        local.execute("CREATE TEMP TABLE identities AS SELECT * FROM identities_arrow")
        result = link(local, "identities", upper=upper, lower=lower, decisions=decisions)
        std_new = local.execute("SELECT * FROM empi_std").fetch_arrow_table()
        edges_new = local.execute("SELECT * FROM empi_edges").fetch_arrow_table()
        t0 = time.perf_counter()
        keys, merges = assign_keys(local, key_secret, previous)
        t_keys = time.perf_counter() - t0
        local.register("keys_arrow", keys)
        out = local.execute(_OUT_SQL).fetch_arrow_table()
        review = local.execute(_REVIEW_SQL).fetch_arrow_table()
    finally:
        local.close()
    t0 = time.perf_counter()
    _add_crosswalk_columns(con, db)
    con.register("__empi_out", out)
    _write_crosswalk(con, db, "__empi_out", now)
    if merges:
        con.executemany(f"INSERT INTO {db}.empi.person_key_merge VALUES (?, ?, ?)", [(a, b, now) for a, b in merges])
    con.register("__empi_std_new", std_new)
    con.register("__empi_edges_new", edges_new)
    con.execute(f"DROP TABLE IF EXISTS {db}.empi.identity_std")
    con.execute(f"CREATE TABLE {db}.empi.identity_std AS SELECT * FROM __empi_std_new")
    con.execute(f"DELETE FROM {db}.empi.link_edge")
    con.execute(f"INSERT INTO {db}.empi.link_edge SELECT * FROM __empi_edges_new")
    model = result.model
    con.execute(f"INSERT INTO {db}.empi.model VALUES (?, ?, ?, ?, ?)",
                [now, model["trained"], model["backend"], model["identities"],
                 json.dumps(model["settings"], ensure_ascii=False)])
    con.unregister("__empi_std_new")
    con.unregister("__empi_edges_new")
    con.register("__empi_review", review)
    con.execute(f"DELETE FROM {db}.empi.review_queue")
    con.execute(f"INSERT INTO {db}.empi.review_queue SELECT *, ?::TIMESTAMPTZ FROM __empi_review", [now])
    con.unregister("__empi_review")
    new_keys = len({pk for pk, new in zip(out.column("person_key").to_pylist(), out.column("is_new").to_pylist())
                    if new} - set(previous.column("person_key").to_pylist()))
    _log(con, db, now, result.identities, result.persons, result.by_method, result.review_pairs, new_keys,
         len(merges), upper, lower, {"mode": "full", "dirty": result.model.get("dirty", result.identities),
                                     **{k: round(v, 3) for k, v in result.seconds.items()},
                                     "read_identities": round(t_read, 3), "keys": round(t_keys, 3),
                                     "write_state": round(time.perf_counter() - t0, 3)})
    con.unregister("__empi_out")
    return out.drop_columns(["is_new"]), result


def _log(con, db, now, identities, persons, by_method, review_pairs, new_keys, merged, upper, lower, seconds):
    con.execute(f"INSERT INTO {db}.empi.run_log VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [now, identities, persons, json.dumps(by_method, sort_keys=True), review_pairs, new_keys, merged,
                 upper, lower, json.dumps(seconds)])


def _pull(con: duckdb.DuckDBPyConnection, local: duckdb.DuckDBPyConnection, sql: str, name: str,
          params: list | None = None) -> None:
    """A query on the lake into a table of the linking connection."""
    local.register(name, con.execute(sql, params or []).fetch_arrow_table())


def _incremental(con: duckdb.DuckDBPyConnection, source: str, db: str, model: dict, decisions: pa.Table, *,
                 upper: float, lower: float, key_secret: str, changed: str | None, touched_only: bool, n: int,
                 now: datetime) -> tuple[pa.Table, LinkResult]:
    """Link what a delivery touched, read and write only that.

    1. The new or changed identities (input hash unlike the state's) and the withdrawn ones, the
       identities sharing an ID number with them (the placeholder count and the surname group that
       keeps the deterministic link are per number), the identities they block with (any of the
       model's blocking keys, old or new values), their previous pairs' other sides and the sides
       of steward decisions made since the last run: the seed.
    2. Closed over what decides a cluster: the previous person (crosswalk key), the deterministic
       key, every pair at or above the upper threshold, every steward match. Every cluster of the
       full re-link that holds one of these identities holds only such identities, and each of them
       lies entirely within one such cluster: linking them alone — with their pairs to the
       identities outside (which are only review-queue pairs: the context) — gives the full
       re-link's clusters, methods, probabilities, keys and review rows for them. Term frequencies
       are counted over everyone (``tf_rest``); a new key is checked against the whole crosswalk.
    3. Written back: their crosswalk rows, standardised rows and pairs that changed, and the review
       rows touching them. Everyone else's rows in the lake are not rewritten."""
    from empi.model import BLOCKING_KEYS, _tf_columns
    from empi.standardise import INPUT_COLUMNS, drop_work_tables, input_hash_sql, rows as standardise_rows

    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    tf_cols = _tf_columns(model["settings"])
    block_cols = sorted({c for keys in BLOCKING_KEYS for c in keys})
    st_cols = list(dict.fromkeys(["identity_key", "input_hash", "id18", "det_key", *block_cols, *tf_cols]))
    have = {r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}
    sel = ", ".join(c if c in have else f"NULL::VARCHAR AS {c}" for c in INPUT_COLUMNS)
    local = duckdb.connect()
    try:
        try:
            _pull(con, local, f"SELECT {', '.join(st_cols)} FROM {db}.empi.identity_std", "st")
        except (duckdb.BinderException, duckdb.CatalogException) as e:
            raise _StateMismatch from e
        _pull(con, local, f"SELECT identity_key, person_key, assigned_at, match_method, match_probability "
                          f"FROM {db}.empi.identity_person", "xw")
        _pull(con, local, f"SELECT * FROM {db}.empi.link_edge", "edges_all")
        _pull(con, local, f"SELECT {sel} FROM {changed or source}", "cand")
        _pull(con, local, f"SELECT identity_key FROM {source}", "present")
        last_run = con.execute(f"SELECT max(run_at) FROM {db}.empi.run_log").fetchone()[0]
        _pull(con, local, f"SELECT identity_key_l, identity_key_r FROM {db}.empi.steward_decision "
                          f"WHERE ?::TIMESTAMPTZ IS NULL OR decided_at > ?::TIMESTAMPTZ", "new_decisions",
              [last_run, last_run])
        prev_log = con.execute(f"SELECT persons, by_method FROM {db}.empi.run_log ORDER BY run_at DESC LIMIT 1"
                               ).fetchone()
        local.register("decisions_arrow", decisions)
        local.execute("CREATE TEMP TABLE matches AS SELECT identity_key_l, identity_key_r FROM decisions_arrow "
                      "WHERE decision = 'match'")
        seconds["read_state"] = time.perf_counter() - t0

        # 1. the seed
        t1 = time.perf_counter()
        local.execute(f"""CREATE TEMP TABLE __empi_in AS
                          SELECT c.*, {input_hash_sql('c')} AS input_hash FROM cand c
                          ANTI JOIN st s ON s.identity_key = c.identity_key AND s.input_hash = {input_hash_sql('c')}""")
        local.execute("""CREATE TEMP TABLE withdrawn AS SELECT identity_key FROM st ANTI JOIN present USING (identity_key)""")
        standardise_rows(local)   # the new values of the changed identities (__empi_base)
        local.execute("""CREATE TEMP TABLE touched AS
                         SELECT identity_key FROM __empi_in UNION SELECT identity_key FROM withdrawn""")
        local.execute("""CREATE TEMP TABLE touched_ids AS
                         SELECT id18 FROM __empi_base WHERE id18 IS NOT NULL
                         UNION SELECT id18 FROM st SEMI JOIN touched USING (identity_key) WHERE id18 IS NOT NULL""")
        local.execute("""CREATE TEMP TABLE maybe_dirty AS
                         SELECT identity_key FROM touched
                         UNION SELECT identity_key FROM st SEMI JOIN touched_ids USING (id18)""")
        drop_work_tables(local)
        # standardised as link() will (every identity of a touched ID number is here): which are dirty
        md_keys = local.execute("SELECT identity_key FROM maybe_dirty").fetch_arrow_table()
        con.register("__empi_md_keys", md_keys)
        try:
            _pull(con, local, f"SELECT {sel} FROM {source} SEMI JOIN __empi_md_keys USING (identity_key)", "md_in")
            _pull(con, local, f"SELECT * FROM {db}.empi.identity_std SEMI JOIN __empi_md_keys USING (identity_key)",
                  "md_prev")
        finally:
            con.unregister("__empi_md_keys")
        try:
            _standardise_incremental(local, "md_in", "md_prev")
        except (duckdb.BinderException, duckdb.CatalogException) as e:
            raise _StateMismatch from e
        local.execute("ALTER TABLE empi_std RENAME TO md_std")
        local.execute("""CREATE TEMP TABLE dirty AS SELECT identity_key FROM md_std s
                         ANTI JOIN md_prev p ON p.identity_key = s.identity_key AND p.std_hash = s.std_hash""")
        # the seed: the identities that may be dirty, the other sides of the dirty and withdrawn
        # ones' previous pairs, the identities the dirty ones block with (under the blocking rules'
        # restriction: two identities with a deterministic key are never a candidate pair), the
        # deterministic clusters they join, the sides of new steward decisions
        gone = "SELECT identity_key FROM dirty UNION SELECT identity_key FROM withdrawn"
        parts = ["SELECT identity_key FROM maybe_dirty",
                 f"SELECT identity_key_r FROM edges_all WHERE identity_key_l IN ({gone})",
                 f"SELECT identity_key_l FROM edges_all WHERE identity_key_r IN ({gone})",
                 "SELECT identity_key_l FROM new_decisions", "SELECT identity_key_r FROM new_decisions",
                 "SELECT identity_key FROM st WHERE det_key IN (SELECT det_key FROM md_std SEMI JOIN dirty USING (identity_key))"]
        for keys in BLOCKING_KEYS:
            on = " AND ".join(f"s.{k} = d.{k}" for k in keys)
            parts.append(f"""SELECT s.identity_key FROM st s
                             JOIN (SELECT * FROM md_std SEMI JOIN dirty USING (identity_key)) d
                               ON {on} AND (s.det_key IS NULL OR d.det_key IS NULL)""")
        local.execute(f"CREATE TEMP TABLE scope AS SELECT DISTINCT identity_key FROM ({' UNION '.join(parts)})")
        # 2. closed over previous persons, deterministic keys, strong pairs and steward matches
        for _ in range(1000):
            grown = local.execute(f"""
                INSERT INTO scope
                SELECT DISTINCT k FROM (
                    SELECT x.identity_key AS k FROM xw x
                    WHERE x.person_key IN (SELECT person_key FROM xw SEMI JOIN scope USING (identity_key))
                    UNION ALL SELECT s.identity_key FROM st s
                    WHERE s.det_key IN (SELECT det_key FROM st SEMI JOIN scope USING (identity_key))
                    UNION ALL SELECT identity_key_r FROM edges_all SEMI JOIN scope ON identity_key = identity_key_l
                    WHERE match_probability >= {upper}
                    UNION ALL SELECT identity_key_l FROM edges_all SEMI JOIN scope ON identity_key = identity_key_r
                    WHERE match_probability >= {upper}
                    UNION ALL SELECT identity_key_r FROM matches SEMI JOIN scope ON identity_key = identity_key_l
                    UNION ALL SELECT identity_key_l FROM matches SEMI JOIN scope ON identity_key = identity_key_r
                ) ANTI JOIN scope ON scope.identity_key = k""").fetchone()[0]
            if not grown:
                break
        # the context: the other sides of the scope's remaining (review-only) pairs
        local.execute("""CREATE TEMP TABLE context AS
                         SELECT identity_key_r AS identity_key FROM edges_all SEMI JOIN scope ON identity_key = identity_key_l
                         UNION SELECT identity_key_l FROM edges_all SEMI JOIN scope ON identity_key = identity_key_r
                         EXCEPT SELECT identity_key FROM scope""")
        local.execute("CREATE TEMP TABLE scope_ctx AS SELECT identity_key FROM scope UNION SELECT identity_key FROM context")
        n_scope, n_ctx = local.execute("SELECT (SELECT count(*) FROM scope), (SELECT count(*) FROM context)").fetchone()
        scope_keys = local.execute("SELECT identity_key FROM scope").fetch_arrow_table()
        seconds["find_scope"] = time.perf_counter() - t1

        # their rows: inputs now, previous standardised rows, pairs touching the scope, everyone
        # else's term-frequency columns
        t1 = time.perf_counter()
        keys_arrow = local.execute("SELECT identity_key FROM scope_ctx").fetch_arrow_table()
        con.register("__empi_scope_keys", keys_arrow)
        try:
            _pull(con, local, f"SELECT {sel} FROM {source} SEMI JOIN __empi_scope_keys USING (identity_key)",
                  "identities")
            _pull(con, local, f"SELECT * FROM {db}.empi.identity_std SEMI JOIN __empi_scope_keys USING (identity_key)",
                  "prev_std")
        finally:
            con.unregister("__empi_scope_keys")
        local.execute("""CREATE TEMP TABLE prev_edges AS
                         SELECT * FROM edges_all WHERE identity_key_l IN (SELECT identity_key FROM scope)
                                                    OR identity_key_r IN (SELECT identity_key FROM scope)""")
        tf_select = ", ".join(tf_cols) or "NULL AS none"
        local.execute(f"CREATE TEMP TABLE tf_rest AS SELECT {tf_select} FROM st ANTI JOIN scope_ctx USING (identity_key)")
        seconds["read_scope"] = time.perf_counter() - t1
        try:
            result = link(local, "identities", upper=upper, lower=lower, decisions=decisions,
                          previous=Previous("prev_std", "prev_edges", model), tf_rest="tf_rest")
        except (duckdb.BinderException, duckdb.CatalogException) as e:
            raise _StateMismatch from e
        std_new = local.execute("""SELECT s.* FROM empi_std s ANTI JOIN prev_std p
                                   ON p.identity_key = s.identity_key AND p.input_hash = s.input_hash
                                      AND p.std_hash = s.std_hash""").fetch_arrow_table()
        std_gone = local.execute("""SELECT identity_key FROM prev_std EXCEPT
                                    SELECT s.identity_key FROM empi_std s SEMI JOIN prev_std p
                                    ON p.identity_key = s.identity_key AND p.input_hash = s.input_hash
                                       AND p.std_hash = s.std_hash""").fetch_arrow_table()
        edges_new = local.execute("""SELECT * FROM empi_edges WHERE identity_key_l IN (SELECT identity_key FROM empi_dirty)
                                     OR identity_key_r IN (SELECT identity_key FROM empi_dirty)""").fetch_arrow_table()
        edges_gone = local.execute("""SELECT identity_key FROM empi_dirty UNION
                                      SELECT identity_key FROM prev_std ANTI JOIN empi_std USING (identity_key)
                                   """).fetch_arrow_table()
        t1 = time.perf_counter()
        local.execute("""CREATE TEMP TABLE xw_prev AS
                         SELECT identity_key, person_key FROM xw SEMI JOIN scope_ctx USING (identity_key)
                         ORDER BY assigned_at, person_key""")
        previous = local.execute("SELECT * FROM xw_prev").fetch_arrow_table()
        keys, merges = assign_keys(local, key_secret, previous, used="SELECT person_key FROM xw")
        seconds["keys"] = time.perf_counter() - t1
        local.register("keys_arrow", keys)
        local.execute(f"CREATE TEMP TABLE out_scope AS {_OUT_SQL} SEMI JOIN scope USING (identity_key)")
        out = local.execute("SELECT * FROM out_scope").fetch_arrow_table()
        review = local.execute(f"""SELECT * FROM ({_REVIEW_SQL})
                                   WHERE identity_key_l IN (SELECT identity_key FROM scope)
                                      OR identity_key_r IN (SELECT identity_key FROM scope)""").fetch_arrow_table()
        # the whole population's figures: the previous run's, the scope's old persons and methods out, new in
        old_persons, new_persons = local.execute("""
            SELECT (SELECT count(DISTINCT person_key) FROM xw SEMI JOIN scope USING (identity_key)
                    SEMI JOIN st USING (identity_key)),
                   (SELECT count(DISTINCT person_key) FROM out_scope)""").fetchone()
        by_method = json.loads(prev_log[1]) if prev_log and prev_log[1] else {}
        for m, c in local.execute("""SELECT match_method, count(*) FROM xw SEMI JOIN scope USING (identity_key)
                                     SEMI JOIN st USING (identity_key) GROUP BY 1""").fetchall():
            by_method[m] = by_method.get(m, 0) - c
        for m, c in local.execute("SELECT match_method, count(*) FROM out_scope GROUP BY 1").fetchall():
            by_method[m] = by_method.get(m, 0) + c
        by_method = {m: c for m, c in by_method.items() if c}
        persons = (prev_log[0] if prev_log else 0) - old_persons + new_persons
        if not touched_only:   # everyone else as the previous run left them
            rest = local.execute("""
                SELECT x.identity_key, x.person_key, x.match_method, x.match_probability,
                       CASE WHEN s.det_key LIKE 'id:%' THEN s.id18 END AS id_number_std, false AS is_new
                FROM present p JOIN xw x USING (identity_key) JOIN st s USING (identity_key)
                ANTI JOIN scope USING (identity_key)""").fetch_arrow_table()
            out = pa.concat_tables([out, rest.cast(out.schema)])
    finally:
        local.close()

    t0 = time.perf_counter()
    con.register("__empi_out", out)
    con.register("__empi_std_new", std_new)
    con.register("__empi_std_gone", std_gone)
    con.register("__empi_edges_new", edges_new)
    con.register("__empi_edges_gone", edges_gone)
    con.register("__empi_review", review)
    con.register("__empi_scope", scope_keys)
    try:
        _write_crosswalk(con, db, "__empi_out", now)
        if merges:
            con.executemany(f"INSERT INTO {db}.empi.person_key_merge VALUES (?, ?, ?)",
                            [(a, b, now) for a, b in merges])
        if std_gone.num_rows:
            con.execute(f"DELETE FROM {db}.empi.identity_std WHERE identity_key IN (SELECT identity_key FROM __empi_std_gone)")
        if std_new.num_rows:
            con.execute(f"INSERT INTO {db}.empi.identity_std SELECT * FROM __empi_std_new")
        if edges_gone.num_rows:
            con.execute(f"""DELETE FROM {db}.empi.link_edge
                            WHERE identity_key_l IN (SELECT identity_key FROM __empi_edges_gone)
                               OR identity_key_r IN (SELECT identity_key FROM __empi_edges_gone)""")
        if edges_new.num_rows:
            con.execute(f"INSERT INTO {db}.empi.link_edge SELECT * FROM __empi_edges_new")
        con.execute(f"""DELETE FROM {db}.empi.review_queue
                        WHERE identity_key_l IN (SELECT identity_key FROM __empi_scope)
                           OR identity_key_r IN (SELECT identity_key FROM __empi_scope)""")
        if review.num_rows:
            con.execute(f"INSERT INTO {db}.empi.review_queue SELECT *, ?::TIMESTAMPTZ FROM __empi_review", [now])
        review_pairs = con.execute(f"SELECT count(*) FROM {db}.empi.review_queue").fetchone()[0]
        new_keys = len({pk for pk, new in zip(out.column("person_key").to_pylist(), out.column("is_new").to_pylist())
                        if new} - set(previous.column("person_key").to_pylist()))
        seconds = {"mode": "incremental", "dirty": result.model.get("dirty", 0), "scope": n_scope, "context": n_ctx,
                   **{k: round(v, 3) for k, v in seconds.items()},
                   **{k: round(v, 3) for k, v in result.seconds.items()},
                   "write_state": round(time.perf_counter() - t0, 3)}
        _log(con, db, now, n, persons, by_method, review_pairs, new_keys, len(merges), upper, lower, seconds)
    finally:
        for t in ("__empi_out", "__empi_std_new", "__empi_std_gone", "__empi_edges_new", "__empi_edges_gone",
                  "__empi_review", "__empi_scope"):
            con.unregister(t)
    result.identities, result.persons, result.by_method, result.review_pairs = n, persons, by_method, review_pairs
    return out.drop_columns(["is_new"]), result

"""The EMPI run against the lake: state tables in schema ``empi``, results for dbt.

State (DuckLake tables, kept across runs):

* ``empi.identity_person``: the crosswalk identity_key → person_key (with when it was given), the
  memory that keeps keys stable;
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
an earlier run: only new or changed identities are standardised and scored (against everything),
the other pairs are kept; ``full=True`` (dbt ``--full-refresh``) re-links and retrains everything.
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
from empi.link import LOWER, UPPER, LinkResult, Previous, link

__all__ = ["ensure_state", "run_in_lake", "STATE_DDL"]

STATE_DDL = (
    "CREATE SCHEMA IF NOT EXISTS {db}.empi",
    "CREATE TABLE IF NOT EXISTS {db}.empi.identity_person (identity_key VARCHAR, person_key VARCHAR, "
    "assigned_at TIMESTAMPTZ)",
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


def _has_table(con: duckdb.DuckDBPyConnection, db: str, name: str) -> bool:
    return bool(con.execute("SELECT count(*) FROM duckdb_tables() WHERE database_name = ? AND schema_name = 'empi' "
                            "AND table_name = ?", [db, name]).fetchone()[0])


def _previous(con: duckdb.DuckDBPyConnection, db: str, n: int) -> tuple[dict, pa.Table, pa.Table] | None:
    """The state an incremental run starts from, or None when this run must be full."""
    from empi.model import MIN_TRAIN, backend_from_env

    if backend_from_env() != "duckdb" or not _has_table(con, db, "identity_std"):
        return None
    row = con.execute(f"SELECT trained, backend, identities, settings FROM {db}.empi.model "
                      f"ORDER BY saved_at DESC LIMIT 1").fetchone()
    if row is None or row[1] != "duckdb" or (not row[0] and n >= MIN_TRAIN):
        return None
    std = con.execute(f"SELECT * FROM {db}.empi.identity_std").fetch_arrow_table()
    if std.num_rows == 0:
        return None
    edges = con.execute(f"SELECT * FROM {db}.empi.link_edge").fetch_arrow_table()
    return {"trained": row[0], "backend": row[1], "identities": row[2], "settings": json.loads(row[3])}, std, edges


def run_in_lake(con: duckdb.DuckDBPyConnection, source: str, db: str, *, upper: float = UPPER,
                lower: float = LOWER, key_secret: str | None = None, full: bool = False
                ) -> tuple[pa.Table, LinkResult]:
    """Link the identities of ``source`` (a relation readable through ``con``), update the state in
    ``db``.empi and return (identity_key, person_key, match_method, match_probability, id_number_std).
    Incremental when the state allows it (see the module docstring); ``full`` re-links everything."""
    key_secret = key_secret or load_secret()
    ensure_state(con, db)
    have = {r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}
    cols = ", ".join(c if c in have else f"NULL::VARCHAR AS {c}" for c in _INPUT)
    t0 = time.perf_counter()
    identities = con.execute(f"SELECT {cols} FROM {source}").fetch_arrow_table()
    t_read = time.perf_counter() - t0
    decisions = con.execute(f"""SELECT identity_key_l, identity_key_r, arg_max(decision, decided_at) AS decision
                                FROM {db}.empi.steward_decision GROUP BY ALL""").fetch_arrow_table()
    previous = con.execute(f"SELECT identity_key, person_key FROM {db}.empi.identity_person "
                           f"ORDER BY assigned_at, person_key").fetch_arrow_table()
    t0 = time.perf_counter()
    prev = None if full else _previous(con, db, identities.num_rows)
    t_state = time.perf_counter() - t0
    local = duckdb.connect()
    try:
        local.register("identities_arrow", identities)
        local.execute("CREATE TEMP TABLE identities AS SELECT * FROM identities_arrow")
        state = None
        if prev is not None:
            for name, t in (("prev_std", prev[1]), ("prev_edges", prev[2])):
                local.register("__arrow", t)
                local.execute(f"CREATE TEMP TABLE {name} AS SELECT * FROM __arrow")
                local.unregister("__arrow")
            state = Previous("prev_std", "prev_edges", prev[0])
        try:
            result = link(local, "identities", upper=upper, lower=lower, decisions=decisions, previous=state)
        except (duckdb.BinderException, duckdb.CatalogException):
            if state is None:
                raise
            # the state's columns are not this code's (an upgrade): re-link everything
            state = None
            result = link(local, "identities", upper=upper, lower=lower, decisions=decisions)
        incremental = state is not None
        if incremental:   # only what changed goes back to the lake
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
        else:
            std_new = local.execute("SELECT * FROM empi_std").fetch_arrow_table()
            edges_new = local.execute("SELECT * FROM empi_edges").fetch_arrow_table()
        t0 = time.perf_counter()
        keys, merges = assign_keys(local, key_secret, previous)
        t_keys = time.perf_counter() - t0
        local.register("keys_arrow", keys)
        out = local.execute("""
            SELECT l.identity_key, k.person_key, l.match_method, l.match_probability,
                   CASE WHEN s.det_key LIKE 'id:%' THEN s.id18 END AS id_number_std, k.is_new
            FROM empi_links l JOIN keys_arrow k USING (identity_key) JOIN empi_std s USING (identity_key)
        """).fetch_arrow_table()
        review = local.execute("""
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
        """).fetch_arrow_table()
    finally:
        local.close()
    now = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    con.register("__empi_out", out)
    con.register("__empi_review", review)
    # the crosswalk: rows whose key changed (a re-link or a split) are replaced; new rows added
    con.execute(f"""DELETE FROM {db}.empi.identity_person
                    WHERE identity_key IN (SELECT o.identity_key FROM __empi_out o
                                           JOIN {db}.empi.identity_person p USING (identity_key)
                                           WHERE p.person_key <> o.person_key)""")
    con.execute(f"""INSERT INTO {db}.empi.identity_person
                    SELECT o.identity_key, o.person_key, ?::TIMESTAMPTZ FROM __empi_out o
                    WHERE NOT EXISTS (SELECT 1 FROM {db}.empi.identity_person p
                                      WHERE p.identity_key = o.identity_key)""", [now])
    if merges:
        con.executemany(f"INSERT INTO {db}.empi.person_key_merge VALUES (?, ?, ?)", [(a, b, now) for a, b in merges])
    con.register("__empi_std_new", std_new)
    con.register("__empi_edges_new", edges_new)
    if incremental:
        con.register("__empi_std_gone", std_gone)
        con.register("__empi_edges_gone", edges_gone)
        con.execute(f"DELETE FROM {db}.empi.identity_std WHERE identity_key IN (SELECT identity_key FROM __empi_std_gone)")
        con.execute(f"INSERT INTO {db}.empi.identity_std SELECT * FROM __empi_std_new")
        con.execute(f"""DELETE FROM {db}.empi.link_edge
                        WHERE identity_key_l IN (SELECT identity_key FROM __empi_edges_gone)
                           OR identity_key_r IN (SELECT identity_key FROM __empi_edges_gone)""")
        con.execute(f"INSERT INTO {db}.empi.link_edge SELECT * FROM __empi_edges_new")
        con.unregister("__empi_std_gone")
        con.unregister("__empi_edges_gone")
    else:
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
    con.execute(f"DELETE FROM {db}.empi.review_queue")
    con.execute(f"INSERT INTO {db}.empi.review_queue SELECT *, ?::TIMESTAMPTZ FROM __empi_review", [now])
    new_keys = len({pk for pk, new in zip(out.column("person_key").to_pylist(), out.column("is_new").to_pylist())
                    if new} - set(previous.column("person_key").to_pylist()))
    con.execute(f"INSERT INTO {db}.empi.run_log VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [now, result.identities, result.persons, json.dumps(result.by_method, sort_keys=True),
                 result.review_pairs, new_keys, len(merges), upper, lower,
                 json.dumps({"mode": "incremental" if incremental else "full",
                             "dirty": result.model.get("dirty", result.identities),
                             **{k: round(v, 3) for k, v in result.seconds.items()},
                             "read_identities": round(t_read, 3), "read_state": round(t_state, 3),
                             "keys": round(t_keys, 3), "write_state": round(time.perf_counter() - t0, 3)})])
    con.unregister("__empi_out")
    con.unregister("__empi_review")
    return out.drop_columns(["is_new"]), result

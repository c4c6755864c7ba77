"""The EMPI run against the lake: state tables in schema ``empi``, results for dbt.

State (DuckLake tables, kept across runs):

* ``empi.identity_person``: the crosswalk identity_key → person_key (with when it was given), the
  memory that keeps keys stable;
* ``empi.person_key_merge``: keys retired when a run (or a steward) merged two persons;
* ``empi.steward_decision``: a data steward's decision on a pair (``match`` / ``non_match``);
  decisions win over both passes on every later run;
* ``empi.review_queue``: this run's pairs awaiting a steward (replaced on every run);
* ``empi.run_log``: one row per run: counts, thresholds, seconds.

The linkage itself runs in a private in-memory DuckDB (Splink's work tables never touch the lake).
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import duckdb
import pyarrow as pa

from empi.keys import assign_keys, secret as load_secret
from empi.link import LOWER, UPPER, LinkResult, link

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
)
_INPUT = ("identity_key", "id_type_code", "id_number", "name", "sex_code", "birth_date", "phone",
          "address_division_code", "address_text")


def ensure_state(con: duckdb.DuckDBPyConnection, db: str) -> None:
    for ddl in STATE_DDL:
        con.execute(ddl.format(db=db))


def run_in_lake(con: duckdb.DuckDBPyConnection, source: str, db: str, *, upper: float = UPPER,
                lower: float = LOWER, key_secret: str | None = None) -> tuple[pa.Table, LinkResult]:
    """Link the identities of ``source`` (a relation readable through ``con``), update the state in
    ``db``.empi and return (identity_key, person_key, match_method, match_probability, id_number_std)."""
    key_secret = key_secret or load_secret()
    ensure_state(con, db)
    have = {r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}
    cols = ", ".join(c if c in have else f"NULL::VARCHAR AS {c}" for c in _INPUT)
    identities = con.execute(f"SELECT {cols} FROM {source}").fetch_arrow_table()
    decisions = con.execute(f"""SELECT identity_key_l, identity_key_r, arg_max(decision, decided_at) AS decision
                                FROM {db}.empi.steward_decision GROUP BY ALL""").fetch_arrow_table()
    previous = con.execute(f"SELECT identity_key, person_key FROM {db}.empi.identity_person "
                           f"ORDER BY assigned_at, person_key").fetch_arrow_table()
    local = duckdb.connect()
    try:
        local.register("identities_arrow", identities)
        local.execute("CREATE TEMP TABLE identities AS SELECT * FROM identities_arrow")
        result = link(local, "identities", upper=upper, lower=lower, decisions=decisions)
        keys, merges = assign_keys(local, key_secret, previous)
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
    con.execute(f"DELETE FROM {db}.empi.review_queue")
    con.execute(f"INSERT INTO {db}.empi.review_queue SELECT *, ?::TIMESTAMPTZ FROM __empi_review", [now])
    new_keys = len({pk for pk, new in zip(out.column("person_key").to_pylist(), out.column("is_new").to_pylist())
                    if new} - set(previous.column("person_key").to_pylist()))
    con.execute(f"INSERT INTO {db}.empi.run_log VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [now, result.identities, result.persons, json.dumps(result.by_method, sort_keys=True),
                 result.review_pairs, new_keys, len(merges), upper, lower,
                 json.dumps({k: round(v, 3) for k, v in result.seconds.items()})])
    con.unregister("__empi_out")
    con.unregister("__empi_review")
    return out.drop_columns(["is_new"]), result

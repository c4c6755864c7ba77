"""Stable pseudonymous person keys.

``person_key = HMAC-SHA256(secret, anchor)`` in hex, where the anchor of a new person is its
smallest agreeing valid ID number (``id:<number>``) or, without one, its smallest identity key
(``identity:<key>``). The secret is the deployment's ``HEALTHLAKE_PERSON_KEY_SECRET``: without it
a key cannot be recomputed from an ID number, and the key reveals nothing about it.

Keys never change once given. The crosswalk (identity_key → person_key) of earlier runs is the
memory: a cluster whose identities already hold a key keeps it (new identities joining it take
it); when a run merges clusters holding several keys, the key given first survives and the others
are recorded as retired (``merged``); when a cluster splits, the part holding most of the old
identities keeps the key and the others get new ones.
"""

from __future__ import annotations

import hashlib
import hmac
import os

import pyarrow as pa

__all__ = ["person_key", "secret", "assign_keys", "MIN_SECRET_LENGTH"]

MIN_SECRET_LENGTH = 8


def secret() -> str:
    from healthlake.dbt import DEFAULT_PERSON_KEY_SECRET

    value = os.environ.get("HEALTHLAKE_PERSON_KEY_SECRET") or DEFAULT_PERSON_KEY_SECRET
    if len(value) < MIN_SECRET_LENGTH:
        raise ValueError(f"HEALTHLAKE_PERSON_KEY_SECRET must be at least {MIN_SECRET_LENGTH} characters")
    return value


def person_key(anchor: str, key_secret: str) -> str:
    return hmac.new(key_secret.encode("utf-8"), anchor.encode("utf-8"), hashlib.sha256).hexdigest()


def assign_keys(con, key_secret: str, previous: pa.Table | None,
                used: str | None = None) -> tuple[pa.Table, list[tuple[str, str]]]:
    """person_key for every identity of ``empi_links`` (in ``con``), honouring ``previous``
    (identity_key, person_key, assigned_at order). Returns (identity_key, person_key, is_new) and the
    (retired_key, surviving_key) merges of this run.

    In SQL over all identities (a 100k city has ~225k, every run): which clusters hold identities
    with an old key and how many, the owner of each old key (the cluster holding most of its
    identities, then the smallest cluster id), each owning cluster's key (the old key given first;
    its other old keys are merged into it). Only the clusters owning no old key — all of them on the
    first run, the new persons on a later one — get a new key in Python (HMAC, and a key already
    used is never given twice). ``used``: a relation in ``con`` (column person_key) of every key the
    crosswalk holds, when ``previous`` is only part of it (the identities a delivery touched)."""
    n = previous.num_rows if previous is not None else 0
    con.register("__keys_previous", pa.table({
        "identity_key": previous.column("identity_key") if n else pa.array([], pa.string()),
        "person_key": previous.column("person_key") if n else pa.array([], pa.string()),
        "pos": pa.array(range(n), pa.int64())}))
    try:
        con.execute("""
            CREATE OR REPLACE TEMP TABLE __keys_members AS
            WITH prev AS (   -- an identity listed twice: its last key (the crosswalk in order)
                SELECT identity_key, arg_max(person_key, pos) AS prev_key FROM __keys_previous GROUP BY 1)
            SELECT l.identity_key, l.cluster_id,
                   CASE WHEN s.det_key LIKE 'id:%' THEN substr(s.det_key, 4) END AS id18,
                   p.prev_key, p.identity_key IS NOT NULL AS had_key
            FROM empi_links l JOIN empi_std s USING (identity_key) LEFT JOIN prev p USING (identity_key)""")
        con.execute("""
            CREATE OR REPLACE TEMP TABLE __keys_owned AS
            WITH claims AS (
                SELECT prev_key, cluster_id, count(*) AS n FROM __keys_members
                WHERE prev_key IS NOT NULL GROUP BY ALL),
            owner AS (
                SELECT prev_key, cluster_id FROM claims
                QUALIFY row_number() OVER (PARTITION BY prev_key ORDER BY n DESC, cluster_id) = 1),
            key_rank AS (SELECT person_key, min(pos) AS key_rank FROM __keys_previous GROUP BY 1)
            SELECT o.cluster_id, list(o.prev_key ORDER BY r.key_rank) AS owned
            FROM owner o JOIN key_rank r ON r.person_key = o.prev_key
            GROUP BY o.cluster_id""")
        merges = [(old, owned[0]) for owned in (r[0] for r in con.execute(
            "SELECT owned FROM __keys_owned WHERE len(owned) > 1 ORDER BY cluster_id").fetchall()) for old in owned[1:]]
        fresh = con.execute("""
            SELECT cluster_id, min(id18) FILTER (WHERE id18 <> '') AS id18, min(identity_key) AS identity_key
            FROM __keys_members
            WHERE cluster_id NOT IN (SELECT cluster_id FROM __keys_owned)
            GROUP BY cluster_id ORDER BY cluster_id""").fetchall()
        candidates = [[person_key(a, key_secret) for a in ([f"id:{id18}"] if id18 else []) + [f"identity:{first}"]]
                      for _, id18, first in fresh]
        con.register("__keys_candidates", pa.table({"person_key": pa.array(
            sorted({k for ks in candidates for k in ks}), pa.string())}))
        used_sql = used or "SELECT arg_max(person_key, pos) AS person_key FROM __keys_previous GROUP BY identity_key"
        used_keys = {r[0] for r in con.execute(   # the candidates the crosswalk holds (an identity's last key)
            f"SELECT person_key FROM __keys_candidates SEMI JOIN ({used_sql}) u USING (person_key)").fetchall()}
        con.unregister("__keys_candidates")
        new_c, new_k = [], []
        for (c, _, _), anchors in zip(fresh, candidates):
            key = next((k for k in anchors if k not in used_keys), person_key(f"cluster:{c}", key_secret))
            used_keys.add(key)
            new_c.append(c)
            new_k.append(key)
        con.register("__keys_fresh", pa.table({"cluster_id": pa.array(new_c, pa.string()),
                                               "person_key": pa.array(new_k, pa.string())}))
        keys = con.execute("""
            SELECT m.identity_key, coalesce(o.owned[1], f.person_key) AS person_key, NOT m.had_key AS is_new
            FROM __keys_members m
            LEFT JOIN __keys_owned o USING (cluster_id)
            LEFT JOIN __keys_fresh f USING (cluster_id)
            ORDER BY m.cluster_id, m.identity_key""").fetch_arrow_table()
        con.unregister("__keys_fresh")
    finally:
        con.unregister("__keys_previous")
        con.execute("DROP TABLE IF EXISTS __keys_members")
        con.execute("DROP TABLE IF EXISTS __keys_owned")
    return keys, merges

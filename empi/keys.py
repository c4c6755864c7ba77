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


def assign_keys(con, key_secret: str, previous: pa.Table | None) -> tuple[pa.Table, list[tuple[str, str]]]:
    """person_key for every identity of ``empi_links`` (in ``con``), honouring ``previous``
    (identity_key, person_key, assigned_at order). Returns (identity_key, person_key, is_new) and the
    (retired_key, surviving_key) merges of this run."""
    rows = con.execute("""
        SELECT l.identity_key, l.cluster_id, CASE WHEN s.det_key LIKE 'id:%' THEN substr(s.det_key, 4) END AS id18
        FROM empi_links l JOIN empi_std s USING (identity_key)
        ORDER BY l.cluster_id, l.identity_key""").fetchall()
    prev: dict[str, str] = {}
    rank: dict[str, int] = {}
    if previous is not None and previous.num_rows:
        for i, (k, pk) in enumerate(zip(previous.column("identity_key").to_pylist(),
                                        previous.column("person_key").to_pylist())):
            prev[k] = pk
            rank.setdefault(pk, i)
    clusters: dict[str, list[tuple[str, str | None]]] = {}
    for k, c, id18 in rows:
        clusters.setdefault(c, []).append((k, id18))
    # claims: which clusters hold identities with an old key, and how many
    claims: dict[str, list[tuple[int, str]]] = {}
    for c, members in clusters.items():
        counts: dict[str, int] = {}
        for k, _ in members:
            if k in prev:
                counts[prev[k]] = counts.get(prev[k], 0) + 1
        for pk, n in counts.items():
            claims.setdefault(pk, []).append((n, c))
    owner = {pk: min(cs, key=lambda t: (-t[0], t[1]))[1] for pk, cs in claims.items()}
    owned_by: dict[str, list[str]] = {}      # cluster → the old keys it owns (one pass: not per cluster)
    for pk, oc in owner.items():
        owned_by.setdefault(oc, []).append(pk)
    used = set(prev.values())
    out_k, out_p, out_new, merges = [], [], [], []
    for c, members in clusters.items():
        owned = sorted(owned_by.get(c, ()), key=lambda pk: rank[pk])
        if owned:
            key = owned[0]
            merges.extend((old, key) for old in owned[1:])
        else:
            ids = sorted(i for _, i in members if i)
            anchors = ([f"id:{ids[0]}"] if ids else []) + [f"identity:{min(k for k, _ in members)}"]
            key = next((person_key(a, key_secret) for a in anchors if person_key(a, key_secret) not in used),
                       person_key(f"cluster:{c}", key_secret))
            used.add(key)
        for k, _ in members:
            out_k.append(k)
            out_p.append(key)
            out_new.append(k not in prev)
    return pa.table({"identity_key": pa.array(out_k, pa.string()), "person_key": pa.array(out_p, pa.string()),
                     "is_new": pa.array(out_new, pa.bool_())}), merges

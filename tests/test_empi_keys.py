"""empi.keys.assign_keys (in SQL) gives every identity the key the earlier per-cluster Python
loop gave, on random crosswalks with merges, splits, new persons and duplicated crosswalk rows."""

from __future__ import annotations

import random

import duckdb
import pyarrow as pa

from empi.keys import assign_keys, person_key


def _reference(rows: list[tuple[str, str, str | None]], key_secret: str, previous: pa.Table | None):
    """The loop assign_keys replaced (295e63d), over (identity_key, cluster_id, id18) sorted."""
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
    claims: dict[str, list[tuple[int, str]]] = {}
    for c, members in clusters.items():
        counts: dict[str, int] = {}
        for k, _ in members:
            if k in prev:
                counts[prev[k]] = counts.get(prev[k], 0) + 1
        for pk, n in counts.items():
            claims.setdefault(pk, []).append((n, c))
    owner = {pk: min(cs, key=lambda t: (-t[0], t[1]))[1] for pk, cs in claims.items()}
    owned_by: dict[str, list[str]] = {}
    for pk, oc in owner.items():
        owned_by.setdefault(oc, []).append(pk)
    used = set(prev.values())
    out, merges = {}, []
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
            out[k] = (key, k not in prev)
    return out, merges


def test_assign_keys_in_sql_equals_the_per_cluster_loop():
    secret = "test-secret-123"
    for seed in range(25):
        rnd = random.Random(seed)
        n = rnd.randint(1, 300)
        identities = [f"i{j:04d}" for j in range(n)]
        id18 = {k: (rnd.choice([None, "", f"5101{rnd.randint(0, 40):014d}"])) for k in identities}
        clusters = {k: f"c{rnd.randint(0, n // 2):03d}" for k in identities}
        previous = None
        if seed % 5:
            # an earlier run: most identities had keys, some shared, some duplicated rows, some
            # keys colliding with the anchor a new cluster would take
            old_keys = [person_key(f"id:{id18[k]}", secret) if id18[k] and rnd.random() < 0.3 else f"pk{rnd.randint(0, n // 3)}"
                        for k in identities]
            prev_rows = [(k, pk) for k, pk in zip(identities, old_keys) if rnd.random() < 0.8]
            prev_rows += [(k, f"pk{rnd.randint(0, n)}") for k, _ in rnd.sample(prev_rows, len(prev_rows) // 10)]
            rnd.shuffle(prev_rows)
            previous = pa.table({"identity_key": [k for k, _ in prev_rows], "person_key": [p for _, p in prev_rows]})
        con = duckdb.connect()
        con.register("links", pa.table({"identity_key": identities, "cluster_id": [clusters[k] for k in identities]}))
        con.register("std", pa.table({"identity_key": identities,
                                      "det_key": [f"id:{id18[k]}" if id18[k] is not None else None for k in identities]}))
        con.execute("CREATE TEMP TABLE empi_links AS SELECT * FROM links")
        con.execute("CREATE TEMP TABLE empi_std AS SELECT * FROM std")
        keys, merges = assign_keys(con, secret, previous)
        rows = sorted((k, clusters[k], id18[k]) for k in identities)
        rows.sort(key=lambda r: (r[1], r[0]))
        expected, expected_merges = _reference(rows, secret, previous)
        got = {k: (p, new) for k, p, new in zip(*(keys.column(c).to_pylist() for c in ("identity_key", "person_key", "is_new")))}
        assert got == expected, seed
        assert merges == expected_merges, seed

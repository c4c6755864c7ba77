"""Deterministic pass, probabilistic pass, clustering under constraints, review queue.

``link(con, source, ...)`` works on any DuckDB connection (an in-memory one in the pipeline, the
benchmark and the tests) and leaves three tables in it:

* ``empi_std``: the standardised identities (``empi.standardise``) with ``det_key``;
* ``empi_links``: identity_key → cluster_id, match_method, match_probability;
* ``empi_review``: candidate pairs between the two thresholds (or ambiguous: strong links to two
  different persons) that did not end up in one cluster, for a data steward.

Outcomes: a pair with p ≥ ``upper`` is linked automatically; ``lower`` ≤ p < ``upper`` goes to the
review queue (the identity stays its own person until a steward decides); below ``lower`` it is a
new person. A steward's decision (``match`` / ``non_match``) on a pair always wins.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import duckdb
import pyarrow as pa

from empi.standardise import standardise

__all__ = ["LinkResult", "Previous", "link", "UPPER", "LOWER"]

# The columns of empi_std that decide an identity's candidate pairs and their scores.
_MODEL_COLUMNS = ("name_hz", "name_py", "surname_py", "given_py", "sex", "birth_str", "phone", "division", "address",
                  "id_cmp", "det_key", "passport", "mother_id18")
UPPER = 0.99    # auto-link at or above
LOWER = 0.50    # review queue at or above (below: a new person)
# Two given names (toneless pinyin) that are another name, not a variant: different readings and
# Jaro-Winkler below 0.92 (子佳 zijia / 希琪 xiqi; 子轩 zixuan / 子涵 zihan is 0.86).
NAMES_DIFFER = ("coalesce(name_py_l <> name_py_r AND given_py_l <> given_py_r "
                "AND jaro_winkler_similarity(given_py_l, given_py_r) < 0.92, false)")


@dataclass
class LinkResult:
    identities: int
    persons: int
    by_method: dict[str, int]
    review_pairs: int
    seconds: dict[str, float] = field(default_factory=dict)
    model: dict = field(default_factory=dict)


class _UF:
    def __init__(self):
        self.p: dict = {}

    def find(self, x):
        p = self.p
        root = x
        while p.get(root, root) != root:
            root = p[root]
        while p.get(x, x) != root:
            p[x], x = root, p[x]
        return root

    def union(self, a, b):
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            if rb < ra:
                ra, rb = rb, ra
            self.p[rb] = ra


def _prepare(con: duckdb.DuckDBPyConnection) -> None:
    # A valid ID agreeing with birth date and sex links on the number AND the surname: identities
    # sending one number with another surname are conflicts, left to the probabilistic pass (the
    # surname group holding most identities of the number keeps the deterministic link).
    # std_hash: everything the model, the blocking rules and the clustering read of an identity; an
    # identity whose hash is unchanged since the last run keeps the scored pairs it had with
    # unchanged ones.
    std_hash = ("md5(concat_ws(chr(31), " + ", ".join(f"coalesce(CAST({c} AS VARCHAR), chr(30))"
                                                      for c in _MODEL_COLUMNS) + "))")
    con.execute(f"""
    CREATE OR REPLACE TEMP TABLE empi_std AS
    WITH based AS (
        SELECT *,
               CASE WHEN id_agrees AND surname_py IS NOT NULL THEN 'id:' || id18
                    WHEN passport IS NOT NULL AND birth_date IS NOT NULL AND sex IS NOT NULL
                        THEN 'pp:' || passport || ':' || CAST(birth_date AS VARCHAR) || ':' || sex
               END AS det_key_base,
               CAST(birth_date AS VARCHAR) AS birth_str,
               CASE WHEN id_valid AND NOT id_placeholder THEN id18
                    WHEN NOT id_placeholder AND regexp_full_match(id18, '[0-9]{{17}}[0-9X]') THEN id18 END AS id_cmp
        FROM std
    ), groups AS (
        SELECT det_key_base, surname_py, count(*) AS n FROM based
        WHERE det_key_base LIKE 'id:%' GROUP BY ALL
    ), winners AS (
        SELECT det_key_base, arg_max(surname_py, n * 1000000 - hash(surname_py) % 1000000) AS surname_py
        FROM groups GROUP BY det_key_base
    ), keyed AS (
        SELECT s.* EXCLUDE (det_key_base),
               CASE WHEN s.det_key_base LIKE 'pp:%' THEN s.det_key_base
                    WHEN w.surname_py IS NOT NULL THEN s.det_key_base END AS det_key,
               s.det_key_base IS NOT NULL AND s.det_key_base LIKE 'id:%' AND w.surname_py IS NULL AS is_conflict
        FROM based s
        LEFT JOIN winners w ON w.det_key_base = s.det_key_base AND w.surname_py = s.surname_py
    )
    SELECT *, {std_hash} AS std_hash FROM keyed
    """)


def _standardise_incremental(con: duckdb.DuckDBPyConnection, source: str, prev: str) -> int:
    """``empi_std`` from ``source`` and the previous run's ``empi_std`` (``prev``): an identity sent
    unchanged whose ID number no new, changed or withdrawn identity carries keeps its previous
    row as it is; the others (and every identity sharing a number with them: the placeholder count
    and the surname group deciding the deterministic link are per number) are standardised again."""
    from empi.standardise import ROW_COLUMNS, drop_work_tables, finish, load_input, rows

    load_input(con, source)
    con.execute(f"""CREATE OR REPLACE TEMP TABLE __empi_in AS SELECT a.* FROM __empi_all a
                    ANTI JOIN {prev} p ON p.identity_key = a.identity_key AND p.input_hash = a.input_hash""")
    rows(con)
    con.execute(f"""CREATE OR REPLACE TEMP TABLE __empi_touched AS
                    SELECT identity_key FROM __empi_in
                    UNION SELECT identity_key FROM {prev} ANTI JOIN __empi_all USING (identity_key)""")
    con.execute(f"""CREATE OR REPLACE TEMP TABLE __empi_touched_ids AS
                    SELECT id18 FROM __empi_base WHERE id18 IS NOT NULL
                    UNION SELECT id18 FROM {prev} SEMI JOIN __empi_touched USING (identity_key) WHERE id18 IS NOT NULL""")
    con.execute(f"""INSERT INTO __empi_base SELECT {', '.join('p.' + c for c in ROW_COLUMNS)} FROM {prev} p
                    SEMI JOIN __empi_touched_ids USING (id18)
                    ANTI JOIN __empi_touched t ON t.identity_key = p.identity_key""")
    finish(con, "__empi_base", "std")
    _prepare(con)
    con.execute(f"""INSERT INTO empi_std BY NAME SELECT p.* FROM {prev} p
                    ANTI JOIN __empi_touched t ON t.identity_key = p.identity_key
                    ANTI JOIN __empi_touched_ids i ON i.id18 = p.id18""")
    drop_work_tables(con)
    for t in ("__empi_touched", "__empi_touched_ids", "std"):
        con.execute(f"DROP TABLE IF EXISTS {t}")
    return con.execute("SELECT count(*) FROM empi_std").fetchone()[0]


def _decisions(con, decisions: pa.Table | None) -> tuple[set, set]:
    if decisions is None or decisions.num_rows == 0:
        return set(), set()
    match, non = set(), set()
    for a, b, d in zip(*(decisions.column(c).to_pylist() for c in ("identity_key_l", "identity_key_r", "decision"))):
        pair = (a, b) if a < b else (b, a)
        (match if d == "match" else non).add(pair)
    return match, non


@dataclass
class Previous:
    """An earlier run's state, as tables in the linking connection: incremental linkage.

    ``std``: that run's ``empi_std`` (with ``input_hash`` and ``std_hash``); ``edges``: its scored
    pairs (identity_key_l < identity_key_r, match_probability after the vetoes, p ≥ lower);
    ``model``: the Splink model those pairs were scored with (``LinkResult.model["settings"]``)."""
    std: str
    edges: str
    model: dict


def link(con: duckdb.DuckDBPyConnection, source: str, *, upper: float = UPPER, lower: float = LOWER,
         decisions: pa.Table | None = None, seed: int = 42, previous: Previous | None = None,
         model: dict | None = None, tf_rest: str | None = None) -> LinkResult:
    """Link the identities of relation ``source`` (see ``empi.standardise`` for its columns).

    Full linkage (``previous`` None): every identity standardised, the model trained (or ``model``,
    a saved one, used as it is), every blocked pair scored. Incremental (``previous`` given): only
    new or changed identities are standardised; the identities whose model columns changed (new
    ones, changed ones, and those a new identity changed: a number now shared by three people, a
    surname group that lost the number) are "dirty"; Splink scores their pairs — with each other
    (``predict_within``) and with every other identity (``predict_between``) — with the previous
    model; the previous run's pairs between two clean identities are kept as they were. Clustering
    then runs on all pairs, exactly as in a full linkage, so the result is the full linkage's with
    the same model (term frequencies aside: they are counted over all identities, and kept pairs
    keep the weights of their run). ``tf_rest`` (incremental only): the term-frequency columns of
    identities outside ``source``, counted too (``empi.lake`` links only the identities a delivery
    touched, with their neighbours)."""
    if not 0 < lower <= upper < 1:
        raise ValueError(f"thresholds must satisfy 0 < lower ≤ upper < 1, got lower={lower}, upper={upper}")
    from empi.model import predict_incremental, train_and_predict

    t0 = time.perf_counter()
    seconds: dict[str, float] = {}
    if previous is not None:
        n = _standardise_incremental(con, source, previous.std)
    else:
        n = standardise(con, source, "std")
        _prepare(con)
    seconds["standardise"] = time.perf_counter() - t0
    match_pairs, non_pairs = _decisions(con, decisions)

    t1 = time.perf_counter()
    info: dict = {}
    pairs = None
    if previous is not None:
        con.execute(f"""CREATE OR REPLACE TEMP TABLE empi_dirty AS
                        SELECT identity_key FROM empi_std s
                        ANTI JOIN {previous.std} p ON p.identity_key = s.identity_key AND p.std_hash = s.std_hash""")
        dirty = con.execute("SELECT count(*) FROM empi_dirty").fetchone()[0]
        info = {**previous.model, "incremental": True, "dirty": dirty}
        if dirty and n > 1:
            pairs = predict_incremental(con, "empi_std", "empi_dirty", previous.model["settings"], lower,
                                        tf_rest=tf_rest)
    else:
        residue = con.execute("SELECT count(*) FROM empi_std WHERE det_key IS NULL").fetchone()[0]
        if residue and n > 1:
            pairs, info = train_and_predict(con, "empi_std", lower, seed=seed, model=model)
        elif model is not None:
            info = model
        else:
            from empi.model import untrained_model

            info = untrained_model(n)
    # Vetoes: a birth date differing by more than one typed character, or a different sex, means
    # two people (a father and a son with one name and one phone, say), whatever the other
    # fields say; so do two given names that are neither the same reading nor one slip apart
    # (twins: one birth date, home and phone, another name). Such a pair is never linked
    # automatically; it may go to review.
    scored = (f"""SELECT least(identity_key_l, identity_key_r) AS identity_key_l,
                         greatest(identity_key_l, identity_key_r) AS identity_key_r,
                         CASE WHEN gamma_birth_date = 0 OR gamma_sex = 0 OR ({NAMES_DIFFER})
                              THEN least(match_probability, {upper} - 1e-9)
                              ELSE match_probability END AS match_probability
                  FROM {pairs}""" if pairs else
              "SELECT NULL::VARCHAR AS identity_key_l, NULL::VARCHAR AS identity_key_r, "
              "NULL::DOUBLE AS match_probability WHERE false")
    if previous is not None:   # the previous pairs between two clean identities still here, and the new ones
        scored = f"""SELECT e.identity_key_l, e.identity_key_r, e.match_probability FROM {previous.edges} e
                     SEMI JOIN empi_std sl ON sl.identity_key = e.identity_key_l
                     SEMI JOIN empi_std sr ON sr.identity_key = e.identity_key_r
                     WHERE e.identity_key_l NOT IN (SELECT identity_key FROM empi_dirty)
                       AND e.identity_key_r NOT IN (SELECT identity_key FROM empi_dirty)
                     UNION ALL {scored}"""
    con.execute(f"CREATE OR REPLACE TEMP TABLE empi_edges AS {scored}")
    edges = con.execute("""SELECT e.identity_key_l, e.identity_key_r, e.match_probability, sl.det_key, sr.det_key
                           FROM empi_edges e JOIN empi_std sl ON sl.identity_key = e.identity_key_l
                           JOIN empi_std sr ON sr.identity_key = e.identity_key_r
                           ORDER BY e.identity_key_l, e.identity_key_r""").fetchall()
    seconds["probabilistic"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    best: dict[str, dict[str, float]] = {}        # residue identity → {det cluster: best p}
    uf = _UF()
    review: list[tuple[str, str, float, str]] = []
    node_p: dict[str, float] = {}
    for a, b, p, da, db in edges:
        key = (a, b) if a < b else (b, a)
        if key in non_pairs:
            continue
        if p < upper:
            review.append((a, b, p, "between_thresholds"))
            continue
        if da is None and db is None:
            uf.union(a, b)
            node_p[a] = max(node_p.get(a, 0.0), p)
            node_p[b] = max(node_p.get(b, 0.0), p)
        else:
            r, d = (a, db) if da is None else (b, da)
            m = best.setdefault(r, {})
            m[d] = max(m.get(d, 0.0), p)
    attach: dict[str, tuple[str, float]] = {}
    ambiguous: set[str] = set()
    for r, m in best.items():
        ranked = sorted(m.items(), key=lambda kv: -kv[1])
        if len(ranked) > 1:   # strong links to two persons with different ID numbers: a steward decides
            ambiguous.add(r)
            for d, p in ranked:
                review.append((r, d, p, "ambiguous"))
            continue
        attach[r] = ranked[0]

    residue_keys = [k for (k,) in con.execute("SELECT identity_key FROM empi_std WHERE det_key IS NULL "
                                              "ORDER BY identity_key").fetchall()]
    comps: dict[str, list[str]] = {}
    for k in residue_keys:
        comps.setdefault(uf.find(k), []).append(k)
    cluster: dict[str, str] = {}
    method: dict[str, str] = {}
    prob: dict[str, float | None] = {}
    for members in comps.values():
        targets = {attach[m][0] for m in members if m in attach}
        if len(targets) == 1 and not ambiguous.intersection(members):
            (d,) = targets
            for m in members:
                cluster[m], method[m] = d, "probabilistic"
                prob[m] = attach[m][1] if m in attach else node_p.get(m)
            continue
        rest = []
        for m in members:
            if m in attach:
                cluster[m], method[m], prob[m] = attach[m][0], "probabilistic", attach[m][1]
            elif m in ambiguous:   # never carried into a person by a neighbour: its own until decided
                cluster[m], method[m], prob[m] = "r:" + m, "new_person", None
            else:
                rest.append(m)
        if rest:
            cid = "r:" + min(rest)
            for m in rest:
                cluster[m] = cid
                method[m] = "probabilistic" if len(rest) > 1 else "new_person"
                prob[m] = node_p.get(m) if len(rest) > 1 else None
    # steward matches merge whole clusters (they win over both passes); only the identities of the
    # residue, of a steward's decision and of the merged clusters are handled here, the rest (the
    # deterministic clusters, most identities) in SQL below
    remap: dict[str, str] = {}
    stewarded: set[str] = set()
    if match_pairs:
        keys = sorted({k for pair in match_pairs for k in pair})
        det_of = dict(con.execute("SELECT identity_key, det_key FROM empi_std WHERE det_key IS NOT NULL "
                                  "AND identity_key IN (SELECT unnest(?))", [keys]).fetchall())
        cf = _UF()
        for a, b in match_pairs:
            ca, cb = cluster.get(a) or det_of.get(a), cluster.get(b) or det_of.get(b)
            if ca and cb:
                cf.union(ca, cb)
        remap = {c: cf.find(c) for c in list(cf.p) if cf.find(c) != c}
        for k in list(cluster):
            cluster[k] = remap.get(cluster[k], cluster[k])
        for a, b in match_pairs:
            for k in (a, b):
                if k in cluster or k in det_of:
                    stewarded.add(k)
    res = sorted(cluster)
    con.register("__empi_residue_arrow", pa.table({
        "identity_key": pa.array(res, pa.string()), "cluster_id": pa.array([cluster[k] for k in res], pa.string()),
        "match_method": pa.array([method[k] for k in res], pa.string()),
        "match_probability": pa.array([prob.get(k) for k in res], pa.float64())}))
    con.register("__empi_remap_arrow", pa.table({"cluster_id": pa.array(list(remap), pa.string()),
                                                 "merged_into": pa.array(list(remap.values()), pa.string())}))
    con.register("__empi_steward_arrow", pa.table({"identity_key": pa.array(sorted(stewarded), pa.string())}))
    con.execute("""
        CREATE OR REPLACE TEMP TABLE empi_links AS
        SELECT s.identity_key,
               CASE WHEN s.det_key IS NULL THEN r.cluster_id ELSE coalesce(m.merged_into, s.det_key) END AS cluster_id,
               CASE WHEN st.identity_key IS NOT NULL THEN 'steward'
                    WHEN s.det_key IS NULL THEN r.match_method
                    WHEN s.det_key LIKE 'pp:%' THEN 'passport' ELSE 'id_number' END AS match_method,
               CASE WHEN st.identity_key IS NOT NULL OR s.det_key IS NOT NULL THEN 1.0
                    ELSE r.match_probability END::DOUBLE AS match_probability
        FROM empi_std s
        LEFT JOIN __empi_residue_arrow r USING (identity_key)
        LEFT JOIN __empi_remap_arrow m ON m.cluster_id = s.det_key
        LEFT JOIN __empi_steward_arrow st USING (identity_key)
    """)
    for t in ("__empi_residue_arrow", "__empi_remap_arrow", "__empi_steward_arrow"):
        con.unregister(t)
    review_keys = sorted({k for a, b, _, _ in review for k in (a, b)})
    final = dict(con.execute("SELECT identity_key, cluster_id FROM empi_links WHERE identity_key IN (SELECT unnest(?))",
                             [review_keys]).fetchall()) if review_keys else {}
    decided = match_pairs | non_pairs
    queue = {}
    for a, b, p, why in review:
        if why == "ambiguous":
            continue
        key = (a, b) if a < b else (b, a)
        if key in decided or final.get(a) == final.get(b):
            continue
        queue[key] = max(queue.get(key, (0.0, why)), (p, why))
    amb = [(r, d, p) for r, d, p, why in review if why == "ambiguous" and final.get(r) != d]
    con.register("__empi_review_arrow", pa.table({
        "identity_key_l": pa.array([k[0] for k in queue] + [r for r, _, _ in amb], pa.string()),
        "identity_key_r": pa.array([k[1] for k in queue] + [None for _ in amb], pa.string()),
        "candidate_cluster": pa.array([None for _ in queue] + [d for _, d, _ in amb], pa.string()),
        "match_probability": pa.array([v[0] for v in queue.values()] + [p for _, _, p in amb], pa.float64()),
        "reason": pa.array([v[1] for v in queue.values()] + ["ambiguous" for _ in amb], pa.string())}))
    con.execute("""CREATE OR REPLACE TEMP TABLE empi_review AS
                   SELECT r.*, l.cluster_id AS cluster_l, coalesce(r.candidate_cluster, rr.cluster_id) AS cluster_r
                   FROM __empi_review_arrow r
                   JOIN empi_links l ON l.identity_key = r.identity_key_l
                   LEFT JOIN empi_links rr ON rr.identity_key = r.identity_key_r""")
    con.unregister("__empi_review_arrow")
    seconds["cluster"] = time.perf_counter() - t2
    by_method = dict(con.execute("SELECT match_method, count(*) FROM empi_links GROUP BY 1").fetchall())
    persons = con.execute("SELECT count(DISTINCT cluster_id) FROM empi_links").fetchone()[0]
    review_pairs = con.execute("SELECT count(*) FROM empi_review").fetchone()[0]
    seconds["total"] = time.perf_counter() - t0
    return LinkResult(n, persons, by_method, review_pairs, seconds, info)

"""Linkage quality against the synthetic city's truth (``truth/identities.csv``: each source
identity's true person).

Pairwise: a pair of identities is predicted linked when they share a person_key and truly linked
when they share a person_uid; precision = true links found / links made, recall = true links
found / true links. Reported overall, for the ID-bearing tier (both identities carry a usable ID
number) and for the no-ID residue (at least one does not). Cluster metrics: persons made vs true
persons, persons found exactly (same set of identities), true persons split over several keys,
keys holding several true persons.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb

__all__ = ["Metrics", "evaluate", "format_report"]


@dataclass
class Metrics:
    tier: str
    true_pairs: int
    predicted_pairs: int
    correct_pairs: int

    @property
    def precision(self) -> float:
        return self.correct_pairs / self.predicted_pairs if self.predicted_pairs else 1.0

    @property
    def recall(self) -> float:
        return self.correct_pairs / self.true_pairs if self.true_pairs else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def evaluate(con: duckdb.DuckDBPyConnection, links: str, truth_csv: str | Path) -> dict:
    """``links``: relation with institution_code, source_dataset, source_id, person_key and
    id_number (usable standardised ID or null). Returns {"pairwise": [Metrics...], "clusters": {...}}."""
    con.execute(f"""
    CREATE OR REPLACE TEMP TABLE __eval AS
    SELECT l.person_key AS k, t.person_uid AS u, l.id_number IS NOT NULL AS has_id
    FROM {links} l
    JOIN read_csv(?, header = true, all_varchar = true) t
      ON t.institution_code = l.institution_code AND t.dataset = l.source_dataset AND t.source_id = l.source_id
    """, [str(truth_csv)])
    unmatched = con.execute(f"SELECT count(*) FROM {links}").fetchone()[0] - \
        con.execute("SELECT count(*) FROM __eval").fetchone()[0]

    def pairs(group: str) -> tuple[int, int]:
        return con.execute(f"""
            SELECT coalesce(sum(n * (n - 1) / 2), 0)::BIGINT, coalesce(sum(i * (i - 1) / 2), 0)::BIGINT
            FROM (SELECT count(*) AS n, count(*) FILTER (WHERE has_id) AS i FROM __eval GROUP BY {group})
        """).fetchone()

    t_all, t_id = pairs("u")
    p_all, p_id = pairs("k")
    c_all, c_id = pairs("k, u")
    pairwise = [Metrics("overall", t_all, p_all, c_all), Metrics("id_bearing", t_id, p_id, c_id),
                Metrics("no_id_residue", t_all - t_id, p_all - p_id, c_all - c_id)]
    clusters = dict(zip(
        ("identities", "true_persons", "persons", "exact", "split_persons", "merged_keys"),
        con.execute("""
            WITH tk AS (SELECT u, list_sort(list(DISTINCT k)) AS ks, count(*) AS n FROM __eval GROUP BY u),
                 kt AS (SELECT k, count(DISTINCT u) AS us, count(*) AS n FROM __eval GROUP BY k)
            SELECT (SELECT count(*) FROM __eval), (SELECT count(*) FROM tk), (SELECT count(*) FROM kt),
                   (SELECT count(*) FROM tk JOIN kt ON tk.ks = [kt.k] AND tk.n = kt.n),
                   (SELECT count(*) FROM tk WHERE len(ks) > 1), (SELECT count(*) FROM kt WHERE us > 1)
        """).fetchone()))
    clusters["identities_without_truth"] = unmatched
    con.execute("DROP TABLE __eval")
    return {"pairwise": pairwise, "clusters": clusters}


def format_report(result: dict) -> str:
    lines = ["主索引质量评估（与合成城市真值对比）",
             f"{'tier':<15}{'true pairs':>12}{'linked':>12}{'correct':>12}{'precision':>11}{'recall':>9}{'F1':>9}"]
    for m in result["pairwise"]:
        lines.append(f"{m.tier:<15}{m.true_pairs:>12}{m.predicted_pairs:>12}{m.correct_pairs:>12}"
                     f"{m.precision:>11.5f}{m.recall:>9.5f}{m.f1:>9.5f}")
    c = result["clusters"]
    lines.append(f"clusters: identities {c['identities']}, true persons {c['true_persons']}, persons {c['persons']}, "
                 f"exact {c['exact']} ({c['exact'] / max(c['true_persons'], 1):.4f}), split persons "
                 f"{c['split_persons']}, keys with >1 true person {c['merged_keys']}, identities without truth "
                 f"{c['identities_without_truth']}")
    return "\n".join(lines)

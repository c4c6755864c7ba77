"""The bypass corpus (bypass_attempts.yaml) against the governed query path: 0 leaks, all audited."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import pytest
import yaml

from catalog.audit import read_entries, verify_audit_log
from catalog.governed import MAX_SQL_CHARS, AccessDenied, run_governed
from catalog.publish import published_path

CORPUS = Path(__file__).with_name("bypass_attempts.yaml")
ROLES = ("researcher", "analyst")


def load_corpus() -> list[dict]:
    return yaml.safe_load(CORPUS.read_text(encoding="utf-8"))["attempts"]


@pytest.fixture(scope="module")
def city():
    from security.tiny_city import tiny_city

    return tiny_city()


def _sql(attempt, s) -> str:
    return (attempt["sql"]
            .replace("{lake_data}", s.data_path).replace("{catalog}", s.catalog)
            .replace("{landing}", str(s.landing)).replace("{published}", str(published_path(5, s).parent))
            .replace("{root}", str(s.root)).replace("{long_padding}", "-- " + "x" * MAX_SQL_CHARS))


def _expected(attempt, role) -> str:
    e = attempt["expect"]
    return e[role] if isinstance(e, dict) else e


def test_the_corpus_is_large_and_well_formed():
    corpus = load_corpus()
    ids = [a["id"] for a in corpus]
    assert len(corpus) >= 100
    assert len(set(ids)) == len(ids), [i for i, n in Counter(ids).items() if n > 1]
    for a in corpus:
        for role in ROLES:
            assert _expected(a, role) in ("refused", "allowed", "error"), a["id"]


def test_no_attempt_leaks_and_every_attempt_is_audited_with_its_outcome(city):
    from security.tiny_city import leaks

    s = city.settings
    results = []  # (id, role, user, sql, outcome, detail)
    for attempt in load_corpus():
        sql = _sql(attempt, s)
        for role in ROLES:
            user = f"corpus:{attempt['id']}:{role}"
            try:
                _, rows = run_governed(sql, role, user=user, settings=s)
                outcome, detail = "allowed", rows
            except AccessDenied as e:
                outcome, detail = "refused", [(e.reason,)]
            except Exception as e:  # the engine failed after the checks passed
                outcome, detail = "error", [(str(e),)]
            results.append((attempt, role, user, sql, outcome, detail))

    leaked = {(a["id"], role): leaks(detail, city.secrets)[:3] for a, role, _, _, _, detail in results
              if leaks(detail, city.secrets)}
    assert leaked == {}

    wrong = {(a["id"], role): (outcome, detail[0][0] if detail and outcome != "allowed" else None)
             for a, role, _, _, outcome, detail in results if outcome != _expected(a, role)}
    assert wrong == {}

    audited = {e["user"]: e for e in read_entries(s) if e["user"].startswith("corpus:")}
    for attempt, role, user, sql, outcome, detail in results:
        entry = audited.get(user)
        assert entry is not None, f"{attempt['id']} as {role} is not in the audit log"
        assert entry["outcome"] == outcome and entry["role"] == role
        assert entry["sql_sha256"] == hashlib.sha256(sql.encode("utf-8")).hexdigest()
        if outcome == "allowed":
            assert entry["rows"] == len(detail)
        else:
            assert entry["reason"]
    assert verify_audit_log(s).ok
    counts = Counter(outcome for *_, outcome, _ in results)
    assert counts["refused"] >= 100 and counts["allowed"] >= 40

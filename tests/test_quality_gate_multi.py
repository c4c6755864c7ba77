"""A file of a multi-data-set feed (an HL7 v2 or FHIR file fills several bronze tables) is gated per data
set and promoted only when every part is: the gate's current decisions, the pending batches, an
override of the held part, and the dbt staging filter (the macro's SQL, run as dbt renders it)."""

from __future__ import annotations

import contextlib
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from healthlake.config import settings as load_settings
from healthlake.lake import LAKE, connect
from quality.gate import (GATE_COLUMNS, HELD, PROMOTED, current_decisions, current_decisions_sql, pending_batches,
                          record_override)

MACRO = Path(__file__).resolve().parents[1] / "dbt_project" / "macros" / "quality_gate.sql"
T0 = datetime(2026, 10, 2, 8, tzinfo=timezone.utc)


def gate_row(batch, dataset, decision, minutes=0, rate=0.99):
    row = {"run_id": "r1", "decided_at": T0 + timedelta(minutes=minutes), "dataset": dataset,
           "institution_code": "H001", "feed": "hl7_adt", "batch_id": batch, "rows_checked": 100,
           "pass_rate": rate, "threshold": 0.95, "score_status": "PASS" if decision == PROMOTED else "FAIL",
           "decision": decision, "reason": f"{dataset} {decision}", "override_by": None}
    return [row[n] for n, _ in GATE_COLUMNS]


def files(con) -> dict[str, dict]:
    """batch_id → the file's current decision (every data set of it)."""
    cur = con.execute(current_decisions_sql())
    names = [c[0] for c in cur.description]
    return {r[0]: dict(zip(names, r)) for r in cur.fetchall()}


def staging_filter_sql() -> str:
    """The macro's predicate as dbt renders it (target.database = lake), as a query of promoted batch ids."""
    text = MACRO.read_text(encoding="utf-8")
    body = re.search(r"\{\{ batch_column \}\} in \((.*?)\n        \)\n", text, re.S).group(1)
    return body.replace("{{ target.database }}", LAKE)


@pytest.fixture()
def con(tmp_path, monkeypatch):
    monkeypatch.setenv("HEALTHLAKE_ROOT", str(tmp_path / "root"))
    for var in ("HEALTHLAKE_CATALOG", "HEALTHLAKE_DATA_PATH", "HEALTHLAKE_REGISTRY", "HEALTHLAKE_LANDING"):
        monkeypatch.delenv(var, raising=False)
    from ingest_adapters.bookkeeping import ensure_ops_tables

    with contextlib.closing(connect(load_settings())) as c:
        c.execute("CREATE SCHEMA IF NOT EXISTS ops")
        ensure_ops_tables(c)
        for batch, datasets in (("B1", "encounter,diagnosis"), ("B2", "person"), ("B3", "encounter,diagnosis")):
            c.execute(f"INSERT INTO {LAKE}.ops.ingest_batch (batch_id, institution_code, feed, dataset, status) "
                      f"VALUES (?, 'H001', 'hl7_adt', ?, 'loaded')", [batch, datasets])
        c.execute(f"CREATE SCHEMA IF NOT EXISTS {LAKE}.quality")
        c.execute(f"CREATE TABLE {LAKE}.quality.batch_gate ({', '.join(f'{n} {t}' for n, t in GATE_COLUMNS)})")
        for row in (gate_row("B1", "encounter", PROMOTED), gate_row("B1", "diagnosis", HELD, rate=0.80),
                    gate_row("B2", "person", HELD, rate=0.5), gate_row("B2", "person", PROMOTED, minutes=5)):
            c.execute(f"INSERT INTO {LAKE}.quality.batch_gate VALUES ({', '.join('?' * len(GATE_COLUMNS))})", row)
        yield c


def test_one_held_part_holds_the_whole_file(con):
    parts = {(d["batch_id"], d["dataset"]): d["decision"] for d in current_decisions(con)}
    assert parts == {("B1", "diagnosis"): HELD, ("B1", "encounter"): PROMOTED, ("B2", "person"): PROMOTED}
    current = files(con)
    assert current["B1"]["decision"] == HELD
    assert current["B1"]["dataset"] == "diagnosis,encounter"
    assert current["B1"]["reason"] == "diagnosis held"            # the held part says why
    assert current["B2"]["decision"] == PROMOTED                  # its latest row wins
    assert "B3" not in current                                    # not decided yet
    promoted = {b for (b,) in con.execute(staging_filter_sql()).fetchall()}
    assert promoted == {"B2"}                                     # dbt reads B2 only


def test_pending_is_per_data_set(con):
    # B1: only its held part is decided again (the promoted part is stable); B3: every part
    assert pending_batches(con) == {"diagnosis": ["B1", "B3"], "encounter": ["B3"]}


def test_override_releases_every_held_part_and_the_file(con):
    record_override("B1", "质控科 李四", "诊断编码已人工核对", con=con)
    assert files(con)["B1"]["decision"] == PROMOTED
    rows = con.execute(f"SELECT dataset, decision, override_by FROM {LAKE}.quality.batch_gate "
                       f"WHERE batch_id = 'B1' AND run_id = 'override'").fetchall()
    assert rows == [("diagnosis", PROMOTED, "质控科 李四")]        # the promoted part is not rewritten
    assert {b for (b,) in con.execute(staging_filter_sql()).fetchall()} == {"B1", "B2"}
    assert pending_batches(con) == {"diagnosis": ["B3"], "encounter": ["B3"]}
    from quality import QualityError

    with pytest.raises(QualityError, match="not held"):
        record_override("B1", "质控科 李四", "再次放行", con=con)


def test_a_file_without_rows_in_some_of_its_feeds_data_sets_is_decided(lake_env):
    """An HL7 file of ADT messages only, on a feed that also maps ORU lab results and VXU immunisations:
    the parts without rows are not applicable (promoted, said so), so the gate decides every part
    and the blocking check has nothing undecided to fail on."""
    from quality.gate import gate_pending
    from tests.lake_reader import ingest_landing, q
    from tests.test_reader_hl7v2 import ADT, put, write_registry

    s = lake_env
    write_registry(s)
    put(s, "adt_only.hl7", ADT)
    [result] = ingest_landing(s)
    assert result.status == "loaded", result.error
    datasets = set(q(s, "SELECT dataset FROM ops.ingest_batch")[0][0].split(","))
    assert {"lab_result", "immunization"} <= datasets           # the feed's data sets, not the file's
    assert q(s, "SELECT count(*) FROM bronze.lab_result") == [(0,)]

    from tests.lake_reader import close_reader

    close_reader()
    gate = gate_pending(s, rectification=False)
    by_dataset = {d.dataset: d for d in gate.decisions}
    assert set(by_dataset) == datasets
    for empty in ("lab_result", "immunization"):
        assert by_dataset[empty].decision == PROMOTED and "不适用" in by_dataset[empty].reason
    with contextlib.closing(connect(s)) as c:
        assert gate.undecided(c) == {}
        assert set(files(c)) == {result.batch_id}

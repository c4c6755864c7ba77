"""The quality gate (质控闸门): per batch, promote to the marts or hold back.

A batch (one delivered file of one feed) is **promoted** when its record-level 合格率 on the
critical rules (``scoring.BatchScore``) is ≥ its threshold: the feed's ``quality_threshold`` in the
registry, else 95 %. Otherwise it is **held**: dbt staging must not read it, and its institution gets
a rectification list. A held batch is released

* by a corrected re-delivery: the new file is a new batch (its own id, from its content hash),
  scored and gated on its own; or
* by an explicit override recorded with who and why (``record_override``), kept in
  ``quality.batch_override`` (batch_id, decided_by, reason, decided_at).

An empty batch (header-only file) has nothing to promote: NOT_APPLICABLE, decision ``promoted``
(it holds nothing back). A batch whose critical rules could not run (ERROR) is held: a broken rule
never lets data through.

Decisions are appended to ``quality.batch_gate`` with the run id; the current decision of a batch is
its latest row (``current_decisions_sql``), which is what the Dagster asset check and the dbt
staging filter read.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Iterable, Mapping

from healthlake.config import Settings, settings as load_settings
from healthlake.lake import LAKE, connect
from quality.errors import QualityError
from quality.runner import FAIL, NOT_APPLICABLE, PASS

__all__ = ["GateDecision", "decide", "gate_run", "record_override", "load_overrides", "current_decisions_sql",
           "PROMOTED", "HELD", "OVERRIDE_TABLE", "GATE_TABLE"]

PROMOTED, HELD = "promoted", "held"
OVERRIDE_TABLE = "quality.batch_override"
GATE_TABLE = "quality.batch_gate"
OVERRIDE_COLUMNS = (("batch_id", "VARCHAR"), ("decided_by", "VARCHAR"), ("reason", "VARCHAR"),
                    ("decided_at", "TIMESTAMP WITH TIME ZONE"))
GATE_COLUMNS = (("run_id", "VARCHAR"), ("decided_at", "TIMESTAMP WITH TIME ZONE"), ("dataset", "VARCHAR"),
                ("institution_code", "VARCHAR"), ("feed", "VARCHAR"), ("batch_id", "VARCHAR"), ("rows_checked", "BIGINT"),
                ("pass_rate", "DOUBLE"), ("threshold", "DOUBLE"), ("score_status", "VARCHAR"), ("decision", "VARCHAR"),
                ("reason", "VARCHAR"), ("override_by", "VARCHAR"))


@dataclass(frozen=True)
class GateDecision:
    dataset: str
    institution_code: str
    feed: str | None
    batch_id: str
    rows_checked: int
    pass_rate: float | None
    threshold: float
    score_status: str           # the BatchScore status: PASS | FAIL | ERROR | NOT_APPLICABLE
    decision: str               # promoted | held
    reason: str
    override_by: str | None = None


def decide(batches: Iterable, overrides: Mapping[str, tuple[str, str]] | None = None) -> list[GateDecision]:
    """Pure decision per ``BatchScore``; ``overrides`` maps batch_id → (decided_by, reason)."""
    overrides = overrides or {}
    out = []
    for b in batches:
        base = dict(dataset=b.dataset, institution_code=b.institution_code, feed=b.feed, batch_id=b.batch_id,
                    rows_checked=b.rows_checked, pass_rate=b.pass_rate, threshold=b.threshold, score_status=b.status)
        rate = "—" if b.pass_rate is None else f"{b.pass_rate * 100:.2f}%"
        if b.status == PASS:
            out.append(GateDecision(**base, decision=PROMOTED, reason=f"合格率 {rate} ≥ 阈值 {b.threshold * 100:.2f}%"))
        elif b.status == NOT_APPLICABLE:
            out.append(GateDecision(**base, decision=PROMOTED, reason="批次无数据（不适用）"))
        elif b.batch_id in overrides:
            who, why = overrides[b.batch_id]
            out.append(GateDecision(**base, decision=PROMOTED, override_by=who,
                                    reason=f"人工放行（{who}）：{why}；合格率 {rate}"))
        elif b.status == FAIL:
            failed = "、".join(b.critical_rules_failed) or "—"
            out.append(GateDecision(**base, decision=HELD,
                                    reason=f"合格率 {rate} 低于阈值 {b.threshold * 100:.2f}%（未通过的严重规则：{failed}）"))
        else:  # ERROR
            out.append(GateDecision(**base, decision=HELD,
                                    reason=f"严重规则无法执行（{'、'.join(b.critical_rules_failed)}），暂缓入库"))
    return out


def _ensure(con, table: str, columns) -> None:
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {LAKE}.quality")
    con.execute(f"CREATE TABLE IF NOT EXISTS {LAKE}.{table} ({', '.join(f'{n} {t}' for n, t in columns)})")


def record_override(batch_id: str, decided_by: str, reason: str, settings: Settings | None = None,
                    con=None) -> datetime:
    """Record that ``decided_by`` releases held batch ``batch_id`` because ``reason``; both required."""
    if not (batch_id and str(batch_id).strip()):
        raise QualityError("an override needs the batch_id it releases")
    if not (decided_by and str(decided_by).strip()) or not (reason and str(reason).strip()):
        raise QualityError("an override must say who decided (decided_by) and why (reason)")
    at = datetime.now(timezone.utc)
    own = con is None
    con = con or connect(settings or load_settings())
    try:
        _ensure(con, OVERRIDE_TABLE, OVERRIDE_COLUMNS)
        con.execute(f"INSERT INTO {LAKE}.{OVERRIDE_TABLE} VALUES (?, ?, ?, ?)",
                    [str(batch_id), str(decided_by).strip(), str(reason).strip(), at])
    finally:
        if own:
            con.close()
    return at


def load_overrides(con) -> dict[str, tuple[str, str]]:
    """batch_id → (decided_by, reason) of its latest override."""
    _ensure(con, OVERRIDE_TABLE, OVERRIDE_COLUMNS)
    return {b: (who, why) for b, who, why in con.execute(
        f"SELECT batch_id, arg_max(decided_by, decided_at), arg_max(reason, decided_at) "
        f"FROM {LAKE}.{OVERRIDE_TABLE} GROUP BY 1").fetchall()}


def gate_run(run, settings: Settings | None = None, *, store: bool = True) -> list[GateDecision]:
    """Decide every batch of a ``scoring.BronzeRun`` / ``DatasetRun``; append to ``quality.batch_gate``."""
    from quality.scoring import _store

    s = settings or load_settings()
    with contextlib.closing(connect(s)) as con:
        decisions = decide(run.batches, load_overrides(con))
        if store:
            _ensure(con, GATE_TABLE, GATE_COLUMNS)
            at = datetime.now(timezone.utc)
            _store(con, GATE_TABLE, GATE_COLUMNS,
                   [{"run_id": run.run_id, "decided_at": at, **asdict(d)} for d in decisions])
    return decisions


def current_decisions_sql() -> str:
    """SQL: the latest decision per batch (batch_id, institution_code, feed, dataset, decision, reason)."""
    return (f"SELECT batch_id, arg_max(institution_code, decided_at) AS institution_code, "
            f"arg_max(feed, decided_at) AS feed, arg_max(dataset, decided_at) AS dataset, "
            f"arg_max(decision, decided_at) AS decision, arg_max(reason, decided_at) AS reason "
            f"FROM {LAKE}.{GATE_TABLE} GROUP BY batch_id")

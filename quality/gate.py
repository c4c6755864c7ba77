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

Every batch scored gets a GX Data Docs page (``data_docs.write_bronze_data_docs``) with the counts the
decision was taken on. Decisions are appended to ``quality.batch_gate`` with the run id; the current decision of a batch is
its latest row per data set (``current_decisions_sql``; a file of a multi-data-set feed is promoted
only when every data set of it is), which is what the Dagster asset check and the dbt staging filter
(``dbt_project/macros/quality_gate.sql``) read. After each ingest ``gate_pending`` scores and decides
every batch not decided yet and every batch still held (``pending_batches``).

The threshold default is ``HEALTHLAKE_QUALITY_THRESHOLD`` (``catalogue.gate_threshold``, 0.95).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Iterable, Mapping

from healthlake.config import Settings, settings as load_settings
from healthlake.lake import LAKE, connect, release, table_exists
from quality.errors import QualityError
from quality.runner import FAIL, NOT_APPLICABLE, PASS

__all__ = ["GateDecision", "GateRun", "decide", "gate_run", "gate_pending", "pending_batches", "record_override",
           "load_overrides", "current_decisions", "current_decisions_sql", "PROMOTED", "HELD", "OVERRIDE_TABLE",
           "GATE_TABLE"]

log = logging.getLogger(__name__)

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
    """Record that ``decided_by`` releases held batch ``batch_id`` because ``reason``; both required.

    The override is kept in ``quality.batch_override`` and takes effect at once: a ``promoted`` row
    (reason 人工放行, ``override_by``) is appended to ``quality.batch_gate``, so the next dbt run reads
    the batch. Only a batch whose current decision is ``held`` can be released.
    """
    if not (batch_id and str(batch_id).strip()):
        raise QualityError("an override needs the batch_id it releases")
    if not (decided_by and str(decided_by).strip()) or not (reason and str(reason).strip()):
        raise QualityError("an override must say who decided (decided_by) and why (reason)")
    batch_id, decided_by, reason = str(batch_id).strip(), str(decided_by).strip(), str(reason).strip()
    at = datetime.now(timezone.utc)
    own = con is None
    con = con or connect(settings or load_settings())
    try:
        _ensure(con, GATE_TABLE, GATE_COLUMNS)
        current = con.execute(f"SELECT * FROM ({current_decisions_sql(full=True)}) WHERE batch_id = ?",
                              [batch_id]).fetchall()
        if not current:
            held = [b for (b,) in con.execute(
                f"SELECT batch_id FROM ({current_decisions_sql()}) WHERE decision = '{HELD}' ORDER BY 1").fetchall()]
            import difflib

            close = difflib.get_close_matches(batch_id, held, n=1, cutoff=0.5)
            raise QualityError(f"batch {batch_id} has no gate decision"
                               + (f" (did you mean {close[0]}?)" if close else "")
                               + f"; held batches: {', '.join(held[:10]) or 'none'}"
                               + (" …" if len(held) > 10 else ""))
        names = [n for n, _ in GATE_COLUMNS]
        parts = [dict(zip(names, r)) for r in current]
        held_parts = [p for p in parts if p["decision"] == HELD]
        if not held_parts:
            raise QualityError(f"batch {batch_id} is not held (current decision: {parts[0]['decision']}, "
                               f"{parts[0]['reason']}); there is nothing to release")
        _ensure(con, OVERRIDE_TABLE, OVERRIDE_COLUMNS)
        con.execute("BEGIN")
        try:
            con.execute(f"INSERT INTO {LAKE}.{OVERRIDE_TABLE} VALUES (?, ?, ?, ?)", [batch_id, decided_by, reason, at])
            for row in held_parts:      # every held data set of the batch (one file, several tables)
                rate = "—" if row["pass_rate"] is None else f"{row['pass_rate'] * 100:.2f}%"
                con.execute(f"INSERT INTO {LAKE}.{GATE_TABLE} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
                            [{**row, "run_id": "override", "decided_at": at, "decision": PROMOTED,
                              "reason": f"人工放行（{decided_by}）：{reason}；合格率 {rate}",
                              "override_by": decided_by}[n] for n in names])
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
    finally:
        if own:
            release(con)
    return at


def load_overrides(con) -> dict[str, tuple[str, str]]:
    """batch_id → (decided_by, reason) of its latest override."""
    _ensure(con, OVERRIDE_TABLE, OVERRIDE_COLUMNS)
    return {b: (who, why) for b, who, why in con.execute(
        f"SELECT batch_id, arg_max(decided_by, decided_at), arg_max(reason, decided_at) "
        f"FROM {LAKE}.{OVERRIDE_TABLE} GROUP BY 1").fetchall()}


def gate_run(run, settings: Settings | None = None, *, store: bool = True, con=None) -> list[GateDecision]:
    """Decide every batch of a ``scoring.BronzeRun`` / ``DatasetRun``; append to ``quality.batch_gate``.
    ``con``: an open lake connection (read-write) to use instead of a new one."""
    from quality.scoring import _store

    s = settings or load_settings()
    with _connection(s, con) as con:
        decisions = decide(run.batches, load_overrides(con))
        if store:
            _ensure(con, GATE_TABLE, GATE_COLUMNS)
            at = datetime.now(timezone.utc)
            _store(con, GATE_TABLE, GATE_COLUMNS,
                   [{"run_id": run.run_id, "decided_at": at, **asdict(d)} for d in decisions])
    return decisions


def current_decisions_sql(full: bool = False) -> str:
    """SQL: the current decision of every batch.

    A batch of a multi-data-set feed (an HL7 or FHIR file spans several bronze tables) is decided per
    data set; the batch is promoted only when every part of it is (one delivered file goes in whole
    or waits whole). ``full``: instead, the latest row of ``quality.batch_gate`` per batch and data
    set, every column.
    """
    parts = (f"SELECT * FROM {LAKE}.{GATE_TABLE} "
             f"QUALIFY row_number() OVER (PARTITION BY batch_id, dataset ORDER BY decided_at DESC) = 1")
    if full:
        return parts
    return (f"SELECT batch_id, any_value(institution_code) AS institution_code, any_value(feed) AS feed, "
            f"string_agg(dataset, ',' ORDER BY dataset) AS dataset, "
            f"CASE WHEN bool_and(decision = '{PROMOTED}') THEN '{PROMOTED}' ELSE '{HELD}' END AS decision, "
            f"string_agg(reason, '；' ORDER BY dataset) FILTER (decision = '{HELD}') AS reason "
            f"FROM ({parts}) GROUP BY batch_id")


def current_decisions(con) -> list[dict]:
    """The current decision of every gated batch, as dicts of ``GATE_COLUMNS`` (none before the gate ran)."""
    if not table_exists(con, "quality", "batch_gate"):
        return []
    names = [n for n, _ in GATE_COLUMNS]
    return [dict(zip(names, r)) for r in con.execute(
        f"SELECT {', '.join(names)} FROM ({current_decisions_sql(full=True)}) ORDER BY dataset, institution_code, batch_id"
    ).fetchall()]


def pending_batches(con) -> dict[str, list[str]]:
    """dataset → batch ids to gate now: loaded batches never decided, and batches currently held.

    Promoted batches are not re-decided (the marts stay stable); held ones are, so that a changed
    rule, threshold or override is applied on the next run. A multi-data-set batch (its
    ``ops.ingest_batch.dataset`` lists several) is pending in each of its data sets.
    """
    _ensure(con, GATE_TABLE, GATE_COLUMNS)
    rows = con.execute(
        f"SELECT p.dataset, p.batch_id FROM (SELECT batch_id, unnest(string_split(dataset, ',')) AS dataset "
        f"FROM {LAKE}.ops.ingest_batch WHERE status = 'loaded') p "
        f"LEFT JOIN ({current_decisions_sql(full=True)}) g ON g.batch_id = p.batch_id AND g.dataset = p.dataset "
        f"WHERE g.decision IS NULL OR g.decision = '{HELD}' ORDER BY 1, 2").fetchall()
    out: dict[str, list[str]] = {}
    for dataset, batch in rows:
        out.setdefault(dataset, []).append(batch)
    return out


@dataclass
class GateRun:
    """One gate pass: the scoring run of the pending batches and the decisions taken."""
    run: object | None                       # scoring.BronzeRun of the pending batches (None: nothing pending)
    decisions: list[GateDecision]
    current: list[dict]                      # every batch's current decision after this pass
    rectification: dict[str, object]         # institution_code → xlsx path (institutions with held batches)

    @property
    def held(self) -> list[dict]:
        return [d for d in self.current if d["decision"] == HELD]

    def undecided(self, con) -> dict[str, list[str]]:
        """dataset → loaded batches without any decision (the gate could not decide them)."""
        present = {t for (t,) in con.execute(
            "SELECT table_schema || '.' || table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE' AND table_catalog = ?", [LAKE]).fetchall()}
        if not {"ops.ingest_batch", GATE_TABLE} <= present:
            return {}
        rows = con.execute(
            f"SELECT p.dataset, p.batch_id FROM (SELECT batch_id, unnest(string_split(dataset, ',')) AS dataset "
            f"FROM {LAKE}.ops.ingest_batch WHERE status = 'loaded') p "
            f"LEFT JOIN ({current_decisions_sql(full=True)}) g ON g.batch_id = p.batch_id AND g.dataset = p.dataset "
            f"WHERE g.decision IS NULL").fetchall()
        out: dict[str, list[str]] = {}
        for dataset, batch in rows:
            out.setdefault(dataset, []).append(batch)
        return out


def _promote_without_score(con, pending: Mapping[str, list[str]], reason: str, run_id: str) -> list[GateDecision]:
    """Promote batches that have nothing to score in a data set (NOT APPLICABLE), recorded with why."""
    from quality.scoring import _store

    ids = [b for bs in pending.values() for b in bs]
    if not ids:
        return []
    info = {b: (i, f, n) for b, i, f, n in con.execute(
        f"SELECT batch_id, institution_code, feed, rows_loaded FROM {LAKE}.ops.ingest_batch "
        f"WHERE batch_id IN (SELECT unnest(?::VARCHAR[]))", [ids]).fetchall()}
    decisions = [GateDecision(d, info[b][0], info[b][1], b, info[b][2] or 0, None, 0.0, NOT_APPLICABLE, PROMOTED,
                              reason.format(dataset=d))
                 for d, bs in pending.items() for b in bs if b in info]
    _ensure(con, GATE_TABLE, GATE_COLUMNS)
    at = datetime.now(timezone.utc)
    _store(con, GATE_TABLE, GATE_COLUMNS, [{"run_id": run_id, "decided_at": at, **asdict(d)} for d in decisions])
    return decisions


def _without_rows(con, pending: Mapping[str, list[str]]) -> dict[str, list[str]]:
    """The pending (data set, batch) pairs with no row in that data set's bronze table: a file of a
    multi-data-set feed (HL7, FHIR) need not carry every data set of its feed."""
    out: dict[str, list[str]] = {}
    for dataset, batches in pending.items():
        present = {b for (b,) in con.execute(
            f"SELECT DISTINCT _batch_id FROM {LAKE}.bronze.{dataset} WHERE _batch_id IN (SELECT unnest(?::VARCHAR[]))",
            [batches]).fetchall()}
        missing = [b for b in batches if b not in present]
        if missing:
            out[dataset] = missing
    return out


@contextlib.contextmanager
def _connection(s: Settings, con=None, read_only: bool = False):
    """``con`` when given (left open), else a new lake connection closed after the block."""
    if con is not None:
        yield con
        return
    own = connect(s, read_only=read_only)
    try:
        yield own
    finally:
        release(own)


def gate_pending(settings: Settings | None = None, *, registry=None, rectification: bool = True,
                 con=None) -> GateRun:
    """Score and decide every pending batch (``pending_batches``): what runs after each ingest.

    Held batches' institutions get their rectification lists (整改清单) rewritten. Everything runs
    on one lake connection (``con``, read-write, when given): each new connection loads the DuckDB
    extensions and attaches the catalog again (~0.6 s of CPU; the gate opened five to seven).
    """
    with _connection(settings or load_settings(), con) as con:
        return _gate_pending(settings or load_settings(), registry, rectification, con)


def _gate_pending(s: Settings, registry, rectification: bool, con) -> GateRun:
    from quality.scoring import bronze_datasets, run_bronze_rules

    has_ops = table_exists(con, "ops", "ingest_batch")
    pending = pending_batches(con) if has_ops else {}
    with_rules = set(bronze_datasets())
    no_rules = {d: b for d, b in pending.items() if d not in with_rules}
    pending = {d: b for d, b in pending.items() if d in with_rules}
    run, decisions, lists = None, [], {}
    if no_rules:
        # A data set without a rules file has nothing to hold its batches on: promoted, and said so.
        decisions += _promote_without_score(con, no_rules, "数据集 {dataset} 暂无质控规则，直接放行", "no-rules")
    if pending:
        run = run_bronze_rules(sorted(pending), [b for bs in pending.values() for b in bs], s, registry=registry,
                               con=con)
        gate_decisions = gate_run(run, s, con=con)
        decisions += gate_decisions
        # A batch with no row in one of its feed's data sets has no score there: that part is not
        # applicable (the batch's other parts decide it). A part with rows but no score stays
        # undecided, and the blocking gate check fails closed on it.
        decided = {(d.dataset, d.batch_id) for d in gate_decisions}
        unscored = {d: [b for b in bs if (d, b) not in decided] for d, bs in pending.items()}
        unscored = {d: bs for d, bs in unscored.items() if bs}
        if unscored:  # the common run scores every part
            decisions += _promote_without_score(con, _without_rows(con, unscored),
                                                "该批次没有数据集 {dataset} 的记录（不适用），此部分放行", "no-rows")
        try:  # the Data Docs are a view of the decisions, never their cause
            from quality.data_docs import write_bronze_data_docs

            write_bronze_data_docs(run, s, decisions=gate_decisions)
        except Exception as e:  # noqa: BLE001
            log.warning("quality: could not write the gate's Data Docs: %s", e)
        held_codes = sorted({d.institution_code for d in decisions if d.decision == HELD})
        if rectification and held_codes:
            from quality.rectification import write_rectification_lists

            lists = write_rectification_lists(run, s, institution_codes=held_codes,
                                              batch_ids=[b.batch_id for b in run.batches], con=con)
    current = current_decisions(con)
    return GateRun(run, decisions, current, lists)

"""``healthlake empi …``: the master patient index from the command line.

    healthlake empi evaluate [--truth truth/identities.csv]   precision/recall/F1 and cluster metrics
    healthlake empi review [--limit N]                        the steward's review queue
    healthlake empi decide KEY_L KEY_R match|non_match --steward 姓名 [--note …]
    healthlake empi status                                    the last runs (counts, seconds)

A decision is stored in ``empi.steward_decision`` and wins from the next EMPI run on (the
``int_identities_linked`` dbt model, also materialised by Dagster).
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from pathlib import Path

__all__ = ["add_empi_parser"]

_LINKS = ("(SELECT institution_code, source_dataset, source_id, person_key, id_number_standardised AS id_number "
          "FROM {lake}.population.person_identifier)")


def cmd_evaluate(args) -> int:
    from empi.evaluate import evaluate, format_report
    from healthlake.config import settings
    from healthlake.lake import LAKE, connect

    s = settings()
    truth = Path(args.truth) if args.truth else s.city_dir / "truth" / "identities.csv"
    if not truth.exists():
        print(f"error: no truth file {truth} (a synthetic city writes truth/identities.csv; pass --truth)",
              file=sys.stderr)
        return 2
    con = connect(s, read_only=True)
    try:
        result = evaluate(con, _LINKS.format(lake=LAKE), truth)
    finally:
        con.close()
    if args.format == "json":
        print(json.dumps({"pairwise": [{"tier": m.tier, "true_pairs": m.true_pairs,
                                        "predicted_pairs": m.predicted_pairs, "correct_pairs": m.correct_pairs,
                                        "precision": m.precision, "recall": m.recall, "f1": m.f1}
                                       for m in result["pairwise"]], "clusters": result["clusters"]},
                         ensure_ascii=False, indent=2))
    else:
        print(format_report(result))
    return 0


def cmd_review(args) -> int:
    from healthlake.cli import format_table, run_sql
    from healthlake.lake import LAKE

    cols, rows = run_sql(f"SELECT identity_key_l, identity_key_r, round(match_probability, 4) AS p, reason, "
                         f"name_l, name_r, birth_date_l, birth_date_r, id_number_l, id_number_r, phone_l, phone_r "
                         f"FROM {LAKE}.empi.review_queue ORDER BY match_probability DESC LIMIT {int(args.limit)}")
    print(format_table(cols, rows))
    return 0


def cmd_decide(args) -> int:
    from healthlake.lake import LAKE, connect
    from empi.lake import ensure_state

    if args.decision not in ("match", "non_match"):
        print("error: decision is match or non_match", file=sys.stderr)
        return 2
    if not args.steward.strip():
        print("error: --steward (who decided) is required", file=sys.stderr)
        return 2
    con = connect()
    try:
        ensure_state(con, LAKE)
        known = con.execute(f"SELECT count(*) FROM {LAKE}.empi.identity_person WHERE identity_key IN (?, ?)",
                            [args.identity_key_l, args.identity_key_r]).fetchone()[0]
        if known != 2:
            print("error: both identity keys must be known to the EMPI (see population.person_identifier)",
                  file=sys.stderr)
            return 2
        l, r = sorted((args.identity_key_l, args.identity_key_r))
        con.execute(f"INSERT INTO {LAKE}.empi.steward_decision VALUES (?, ?, ?, ?, ?, ?)",
                    [l, r, args.decision, args.steward.strip(), datetime.now(timezone.utc), args.note])
    finally:
        con.close()
    print(f"recorded: {l} {r} {args.decision} ({args.steward}); applied on the next EMPI run")
    return 0


def cmd_status(args) -> int:
    from healthlake.cli import format_table, run_sql
    from healthlake.lake import LAKE

    cols, rows = run_sql(f"SELECT run_at, identities, persons, by_method, review_pairs, new_keys, merged_keys, "
                         f"seconds FROM {LAKE}.empi.run_log ORDER BY run_at DESC LIMIT 10")
    print(format_table(cols, rows))
    return 0


def add_empi_parser(sub) -> None:
    e = sub.add_parser("empi", help="master patient index: evaluate against truth, review queue, decisions")
    es = e.add_subparsers(dest="empi_command", required=True)
    ev = es.add_parser("evaluate", help="pairwise precision/recall/F1 and cluster metrics against the truth")
    ev.add_argument("--truth", default=None, help="truth/identities.csv (default: the configured city's)")
    ev.add_argument("--format", choices=("table", "json"), default="table")
    ev.set_defaults(func=cmd_evaluate)
    rv = es.add_parser("review", help="pairs waiting for a data steward")
    rv.add_argument("--limit", type=int, default=50)
    rv.set_defaults(func=cmd_review)
    d = es.add_parser("decide", help="record a steward's decision on a pair (wins on later runs)")
    d.add_argument("identity_key_l")
    d.add_argument("identity_key_r")
    d.add_argument("decision", choices=("match", "non_match"))
    d.add_argument("--steward", required=True)
    d.add_argument("--note", default=None)
    d.set_defaults(func=cmd_decide)
    es.add_parser("status", help="the last EMPI runs").set_defaults(func=cmd_status)

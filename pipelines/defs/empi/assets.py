"""EMPI: the linkage run's figures (the linkage itself is the dbt model int_identities_linked,
so it runs wherever dbt runs) and, when the city has a truth file, its quality against the truth."""

import json

import dagster as dg

from healthlake.config import settings
from healthlake.lake import LAKE, connect, release

LINKED = dg.AssetKey(["intermediate", "int_identities_linked"])
EMPI_REPORT = dg.AssetKey(["empi", "linkage_report"])


@dg.asset(key=EMPI_REPORT, group_name="population", kinds={"duckdb"}, deps=[LINKED],
          description="个人主索引（EMPI）本次运行：关联方法分布、待复核对数、新建与合并的主索引键；有真值时附准确率与召回率")
def empi_linkage_report(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    from empi.cli import _LINKS
    from empi.evaluate import evaluate

    s = settings()
    con = connect(s, read_only=True)
    try:
        run = con.execute(f"SELECT identities, persons, by_method, review_pairs, new_keys, merged_keys, seconds "
                          f"FROM {LAKE}.empi.run_log ORDER BY run_at DESC LIMIT 1").fetchone()
        if run is None:
            raise dg.Failure("the EMPI has not run: materialise intermediate/int_identities_linked first")
        meta: dict = {"identities": run[0], "persons": run[1], "review_pairs": run[3], "new_keys": run[4],
                      "merged_keys": run[5], "by_method": dg.MetadataValue.json(json.loads(run[2])),
                      "seconds": dg.MetadataValue.json(json.loads(run[6]))}
        truth = s.city_dir / "truth" / "identities.csv"
        if truth.exists():
            result = evaluate(con, _LINKS.format(lake=LAKE), truth)
            for m in result["pairwise"]:
                meta[f"{m.tier}_precision"] = round(m.precision, 6)
                meta[f"{m.tier}_recall"] = round(m.recall, 6)
            meta["clusters"] = dg.MetadataValue.json(result["clusters"])
    finally:
        release(con)
    return dg.MaterializeResult(metadata=meta)

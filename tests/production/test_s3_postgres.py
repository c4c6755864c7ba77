"""Same code, production storage: landing zone and lake data on S3 (SeaweedFS), DuckLake catalog
on PostgreSQL, several institutions ingested at once — and the same results as the embedded lake."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from healthlake.config import REPO_ROOT, settings
from healthlake.lake import connect

from .conftest import use_production_lake

WRITERS = 4


def pick_institutions(registry_path: Path, n: int = WRITERS) -> list[str]:
    """One institution of each kind first (hospital, township centre, CDC, …), then the rest."""
    from ingest_adapters.registry import load_registry

    insts = load_registry(registry_path).institutions
    chosen, kinds = [], set()
    for i in insts:
        if i.kind not in kinds:
            chosen.append(i.code)
            kinds.add(i.kind)
    chosen += [i.code for i in insts if i.code not in chosen]
    return chosen[:n]


def copy_landing(city: Path, codes: list[str], dest: Path) -> None:
    import shutil

    for c in codes:
        shutil.copytree(city / "landing" / c, dest / c)


def run_dbt(*args: str) -> subprocess.CompletedProcess:
    from healthlake.dbt import DBT_PROJECT_DIR, apply_dbt_env

    env = {**os.environ, **apply_dbt_env(), "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
    return subprocess.run([str(Path(sys.executable).with_name("dbt")), *args, "--project-dir", str(DBT_PROJECT_DIR)],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)


def rows(sql: str) -> list[tuple]:
    con = connect(read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


# Every bronze row's identity and content, independent of when it was ingested.
BRONZE_FINGERPRINT = ("SELECT _institution_code, _feed, _source_file, _source_row, _row_hash FROM bronze.{t} "
                      "ORDER BY ALL")
DIM_INSTITUTION = ("SELECT * EXCLUDE (registered_at, first_data_received_at, last_data_received_at) "
                   "FROM resource.dim_institution ORDER BY ALL")


@pytest.fixture(scope="module")
def lakes(servers, tiny_city, tmp_path_factory):
    """The same institutions ingested twice: embedded (SQLite + local files) and production
    (4 parallel writers, PostgreSQL + S3, landing on S3, then dbt: only once, dbt is the slow part)."""
    from healthlake.storage import upload_tree
    from ingest_adapters import ingest_landing
    from pipelines.defs.ingest.partitions import ingest_parallel

    codes = pick_institutions(tiny_city / "registry.yaml")
    out = {"codes": codes}
    with pytest.MonkeyPatch.context() as mp:
        # embedded
        root = tmp_path_factory.mktemp("embedded")
        for k in ("HEALTHLAKE_CATALOG", "HEALTHLAKE_DATA_PATH", "HEALTHLAKE_S3_ENDPOINT", "HEALTHLAKE_LANDING_URL"):
            mp.delenv(k, raising=False)
        mp.setenv("HEALTHLAKE_ROOT", str(root))
        mp.setenv("HEALTHLAKE_LANDING", str(root / "landing"))
        mp.setenv("HEALTHLAKE_REGISTRY", str(tiny_city / "registry.yaml"))
        copy_landing(tiny_city, codes, root / "landing")
        ingest_landing()
        out["embedded"] = snapshot_results()

        # production
        root = tmp_path_factory.mktemp("production")
        out["env"] = use_production_lake(servers, root, tiny_city / "registry.yaml", mp)
        staged = root / "to_send"
        copy_landing(tiny_city, codes, staged)
        out["files"] = upload_tree(settings(), staged)
        out["results"] = ingest_parallel(codes, workers=WRITERS)
        out["production"] = snapshot_results()
        prod_dbt = run_dbt("build", "--select", "+dim_institution", "--indirect-selection", "cautious")
        assert prod_dbt.returncode == 0, prod_dbt.stdout[-3000:]
        out["dim_institution"] = rows(DIM_INSTITUTION)
        out["settings"] = settings()
        yield out


def snapshot_results() -> dict:
    tables = [t for (t,) in rows("SELECT table_name FROM duckdb_tables() WHERE database_name = 'lake' "
                                 "AND schema_name = 'bronze' AND table_name NOT LIKE '\\_%' ESCAPE '\\' ORDER BY 1")]
    bronze = {t: rows(BRONZE_FINGERPRINT.format(t=t)) for t in tables}
    return {
        "bronze": {t: r for t, r in bronze.items() if r},  # tables with rows (the standard may grow meanwhile)
        "rejects": rows("SELECT source_file, source_row, error_type FROM bronze._rejects ORDER BY ALL"),
        "batches": rows("SELECT batch_id, source_file, sha256, rows_read, rows_loaded, rows_rejected, status "
                        "FROM ops.ingest_batch ORDER BY ALL"),
    }


def test_production_is_configuration_only(lakes):
    s = lakes["settings"]
    assert s.catalog_kind == "postgres" and s.ducklake_uri.startswith("ducklake:postgres:dbname=ducklake")
    assert s.data_is_s3 and s.data_path.startswith("s3://lake") and s.landing_is_s3
    # the lake's data files are objects in the bucket, the catalog is in PostgreSQL
    con = connect(read_only=True)
    try:
        files = con.execute(f"SELECT count(*) FROM glob('{s.data_path}**/*.parquet')").fetchone()[0]
    finally:
        con.close()
    assert files > 0
    assert not (s.root / "lake" / "catalog.sqlite").exists()


def test_parallel_writers_load_every_row_exactly_once(lakes, tiny_city):
    truth = json.loads((tiny_city / "truth" / "summary.json").read_text(encoding="utf-8"))["institutions"]
    results = lakes["results"]
    assert [r.institution for r in results] == lakes["codes"]
    assert sum(len(r.batches) for r in results) == lakes["files"]
    assert all(b.status == "loaded" for r in results for b in r.batches), [b.error for r in results for b in r.batches]
    got = {(i, d): (n, rj) for i, d, n, rj in rows(
        "SELECT institution_code, dataset, sum(rows_read), sum(rows_rejected) FROM ops.ingest_batch GROUP BY ALL")}
    for code in lakes["codes"]:
        for dataset, t in truth[code]["datasets"].items():
            assert got.get((code, dataset), (0, 0)) == (t["rows_written"], t["malformed_rows"]), (code, dataset)
    assert rows("SELECT count(*) FROM ops.ingest_batch WHERE rows_read <> rows_loaded + rows_rejected") == [(0,)]
    # no commit lost, none doubled: every bronze row once, and the bronze totals equal the ledger
    for table, fingerprint in lakes["production"]["bronze"].items():
        assert len(fingerprint) == len(set(fingerprint)), table
    loaded = rows("SELECT sum(rows_loaded) FROM ops.ingest_batch")[0][0]
    assert sum(len(f) for f in lakes["production"]["bronze"].values()) == loaded
    # ops.institution written once despite four writers preparing the lake at the same time
    assert rows("SELECT count(*), count(DISTINCT institution_code) FROM ops.institution")[0] == (len(truth), len(truth))


def test_same_results_as_the_embedded_lake(lakes):
    emb, prod = lakes["embedded"], lakes["production"]
    assert prod["bronze"].keys() == emb["bronze"].keys()
    for table in emb["bronze"]:
        assert prod["bronze"][table] == emb["bronze"][table], table
    assert prod["rejects"] == emb["rejects"]
    assert prod["batches"] == emb["batches"]


def test_dbt_on_the_production_lake(lakes):
    # dbt-duckdb reads the same configuration: the mart agrees with the ingest ledger
    ledger = dict(rows("SELECT institution_code, sum(rows_loaded) FROM ops.ingest_batch GROUP BY 1"))
    marts = dict(rows("SELECT institution_code, rows_loaded FROM resource.dim_institution"))
    assert {c: marts[c] for c in ledger} == ledger
    assert sum(1 for v in marts.values() if v == 0) == len(marts) - len(lakes["codes"])
    # the mart's files are on S3 too
    assert rows(f"SELECT count(*) FROM glob('{lakes['settings'].data_path}resource/**/*.parquet')")[0][0] >= 1


def test_landing_zone_on_s3_lists_archives_and_retrieves(lakes, tmp_path):
    from healthlake.storage import S3Landing

    s = lakes["settings"]
    store = S3Landing(s)
    assert store.list() == []  # everything ingested has left the landing zone …
    archived = [a for r in lakes["results"] for a in r.archived]
    assert len(archived) == lakes["files"]  # … for the hot archive
    assert not any(s.landing.rglob("*.csv"))  # work copies released
    key = lakes["results"][0].batches[0].source_file
    original = Path(lakes["env"]["HEALTHLAKE_ROOT"]) / "to_send" / key
    # an institution uploads with a presigned link, without credentials
    url = store.presigned_put("511002H001/his_patient/补传_20261002.csv")
    req = urllib.request.Request(url, data=original.read_bytes(), method="PUT")
    assert urllib.request.urlopen(req, timeout=10).status == 200
    assert [o.key for o in store.list()] == ["511002H001/his_patient/补传_20261002.csv"]
    # a raw extract stays retrievable after it is archived and after it went cold
    assert store.retrieve(key, tmp_path / "hot").read_bytes() == original.read_bytes()
    moved = store.move_cold(older_than_days=0, today=__import__("datetime").date(2099, 1, 1))
    assert len(moved) == lakes["files"]
    bucket, name = store.locate_raw(key)
    assert name.startswith("cold/")
    with urllib.request.urlopen(store.presigned_get(key), timeout=10) as f:
        assert f.read() == original.read_bytes()
    with pytest.raises(Exception, match="neither"):
        store.locate_raw("511002H001/his_patient/never_sent.csv")
    with pytest.raises(Exception, match="unsafe"):
        store.fetch("../etc/passwd")


def test_landing_sensor_requests_a_run_per_institution_and_the_partition_ingests(lakes):
    import dagster as dg

    from healthlake.storage import S3Landing
    from pipelines.defs.ingest.assets import INSTITUTION_DELIVERY_KEY, institution_delivery
    from pipelines.defs.ingest.sensors import build_landing_sensor, ingest_institution_job

    s = lakes["settings"]
    store = S3Landing(s)
    code = lakes["codes"][1]
    first = next(b for b in next(r for r in lakes["results"] if r.institution == code).batches if b.rows_read > 2)
    original = (Path(lakes["env"]["HEALTHLAKE_ROOT"]) / "to_send" / first.source_file).read_bytes()
    corrected = b"\n".join(original.rstrip(b"\n").split(b"\n")[:-1]) + b"\n"  # a re-sent file, one row less
    feed_dir = first.source_file.rsplit("/", 1)[0]
    (s.root / "resend.csv").write_bytes(corrected)
    store.put(f"{feed_dir}/resend.csv", s.root / "resend.csv")
    store.put("9999999X01/unknown_feed/x.csv", s.root / "resend.csv")  # not in the registry: reported, not run

    sensor = build_landing_sensor(ingest_institution_job(INSTITUTION_DELIVERY_KEY))
    with dg.instance_for_test() as instance:
        result = sensor(dg.build_sensor_context(instance=instance))
        assert code in {r.partition_key for r in result.run_requests}
        assert "9999999X01" not in {r.partition_key for r in result.run_requests}
        added = result.dynamic_partitions_requests[0].partition_keys
        assert code in added and "9999999X01" not in added
        instance.add_dynamic_partitions("institution", list(added))
        again = sensor(dg.build_sensor_context(instance=instance, cursor=result.cursor))
        assert again.run_requests == []  # nothing new since the last tick

        run = dg.materialize([institution_delivery], partition_key=code, instance=instance)
        assert run.success
        meta = run.get_asset_materialization_events()[0].step_materialization_data.materialization.metadata
        assert meta["batches_loaded"].value == 1 and meta["rows_read"].value == first.rows_read - 1
    assert f"{feed_dir}/resend.csv" not in {o.key for o in store.list()}
    assert rows(f"SELECT count(*) FROM ops.ingest_batch WHERE source_file = '{feed_dir}/resend.csv'")[0][0] == 1


def test_production_dagster_instance_keeps_runs_in_postgres(servers, tmp_path, monkeypatch):
    import shutil

    import dagster as dg
    import psycopg2

    pg = servers[1]
    monkeypatch.setenv("DAGSTER_PG_URL", pg.create_database("dagster").replace("postgresql://", "postgresql+psycopg2://"))
    shutil.copyfile(REPO_ROOT / "dagster.production.yaml", tmp_path / "dagster.yaml")

    @dg.asset
    def probe() -> int:
        return 1

    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert dg.materialize([probe], instance=instance).success
    con = psycopg2.connect(pg.url("dagster"))
    try:
        with con.cursor() as cur:
            cur.execute("SELECT count(*) FROM runs")
            assert cur.fetchone()[0] == 1
    finally:
        con.close()

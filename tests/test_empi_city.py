"""EMPI on a small synthetic city, end to end: extracts → ingest → dbt (the population models, with
the EMPI as the Python model int_identities_linked) → measured against the generator's truth.

One module-scoped lake; a second dbt run checks that keys do not move."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from healthlake.config import REPO_ROOT, settings
from healthlake.dbt import DBT_PROJECT_DIR, dbt_env
from healthlake.lake import connect

RESIDENTS, DAYS, SEED = 700, 2, 23
ENV = ("HEALTHLAKE_ROOT", "HEALTHLAKE_CATALOG", "HEALTHLAKE_DATA_PATH", "HEALTHLAKE_REGISTRY", "HEALTHLAKE_LANDING",
       "HEALTHLAKE_PERSON_KEY_SECRET")
IDENTITY_DATASETS = {"person", "health_record", "immunization"}
SELECT = ["--select", "+dim_person +person_identifier", "--resource-type", "model", "--resource-type", "seed"]


def dbt_build(select=SELECT) -> None:
    env = {**os.environ, **dbt_env(), "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
    dbt = Path(sys.executable).with_name("dbt")
    r = subprocess.run([str(dbt), "build", *select, "--project-dir", str(DBT_PROJECT_DIR)], cwd=REPO_ROOT, env=env,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-5000:] + r.stderr[-2000:]


def q(sql, params=None):
    con = connect(settings(), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def ingest_identity_feeds(s, day: str | None = None) -> None:
    """Only the feeds that carry identities (person, health record, immunisation): the rest of the
    city's extracts do not reach the EMPI's models and would only make the test slower. ``day``:
    only the files of that day (YYYYMMDD in the file name), else every file not yet ingested."""
    from ingest_adapters.ingest import ensure_bronze_tables, ingest_file, landing_files, sync_institutions
    from ingest_adapters.registry import load_registry

    registry = load_registry(s.registry)
    con = connect(s)
    try:
        ensure_bronze_tables(con)
        sync_institutions(con, registry)
        for path in landing_files(s.landing):
            inst, feed_id = path.relative_to(s.landing).parts[:2]
            if day is not None and day not in path.name:
                continue
            if set(registry.institution(inst).feed(feed_id).datasets) & IDENTITY_DATASETS:
                ingest_file(con, registry, path, s)
    finally:
        con.close()


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    from synthetic import generate_city

    root = tmp_path_factory.mktemp("empi_city") / "root"
    with pytest.MonkeyPatch.context() as mp:
        for var in ENV:
            mp.delenv(var, raising=False)
        mp.setenv("HEALTHLAKE_ROOT", str(root))
        mp.setenv("HEALTHLAKE_PERSON_KEY_SECRET", "city-test-secret")
        s = settings()
        generate_city(s.city_dir, residents=RESIDENTS, days=DAYS, seed=SEED)
        # two deliveries: the first day's files, a full EMPI run; then the rest, linked incrementally
        ingest_identity_feeds(s, day="20261001")
        dbt_build(["--select", "+int_identities_linked", "--resource-type", "model", "--resource-type", "seed"])
        ingest_identity_feeds(s)
        dbt_build()
        yield s


def cli(*args) -> str:
    from healthlake.cli import main

    out = io.StringIO()
    with redirect_stdout(out):
        assert main(list(args)) == 0
    return out.getvalue()


def test_linkage_meets_the_goals_against_truth(city):
    report = json.loads(cli("empi", "evaluate", "--format", "json"))
    overall, id_tier, residue = report["pairwise"]
    assert overall["precision"] >= 0.999 and overall["recall"] >= 0.995, report
    assert id_tier["precision"] == 1.0 and id_tier["recall"] == 1.0
    assert residue["true_pairs"] > 20            # the city has a no-ID residue worth measuring
    assert report["clusters"]["identities_without_truth"] == 0
    text = cli("empi", "evaluate")
    assert "precision" in text and "no_id_residue" in text


def test_every_identity_has_a_person_and_methods_are_mixed(city):
    assert q("SELECT count(*) FROM lake.population.person_identifier WHERE person_key IS NULL") == [(0,)]
    methods = dict(q("SELECT match_method, count(*) FROM lake.population.person_identifier GROUP BY 1"))
    assert methods["id_number"] > methods.get("probabilistic", 0) > 0 and methods.get("new_person", 0) > 0
    assert q("SELECT count(*) FROM lake.population.dim_person") == \
        q("SELECT count(DISTINCT person_key) FROM lake.population.person_identifier")


def test_twins_and_newborns(city):
    truth = city.city_dir / "truth"
    persons = {p["person_uid"]: p for p in csv.DictReader(open(truth / "persons.csv", encoding="utf-8"))}
    twins = [(persons[p["twin_of"]], p) for p in persons.values() if p["twin_of"]]
    assert twins
    for a, b in twins:
        assert a["birth_date"] == b["birth_date"] and a["household_id"] == b["household_id"]
        assert a["name"] != b["name"] and a["id_number"] != b["id_number"]
    key_of = {(i, d, s): k for i, d, s, k in q("SELECT institution_code, source_dataset, source_id, person_key "
                                                "FROM lake.population.person_identifier")}
    keys: dict[str, set] = {}
    kinds, variants, phone_changed, moved = set(), set(), 0, 0
    for i in csv.DictReader(open(truth / "identities.csv", encoding="utf-8")):
        kinds.add(i["id_defect"])
        variants.add(i["name_variant"])
        phone_changed += i["phone_changed"] == "1"
        moved += i["address_moved"] == "1"
        k = key_of.get((i["institution_code"], i["dataset"], i["source_id"]))
        if k:
            keys.setdefault(i["person_uid"], set()).add(k)
    assert {"newborn_missing", "placeholder", "transposition", "invalid_checksum", "missing"} <= kinds
    assert {"traditional", "homophone", "pinyin", "spaced"} <= variants and phone_changed and moved
    for a, b in twins:   # twins are never one person
        assert not keys.get(a["person_uid"], set()) & keys.get(b["person_uid"], set())


def _newborn_pairs(links: dict, truth: dict) -> tuple[int, int, int]:
    """(true, linked, correct) identity pairs with at least one newborn sent without an ID number."""
    by_person: dict[str, list] = {}
    by_key: dict[str, list] = {}
    for k, (uid, defect) in truth.items():
        by_person.setdefault(uid, []).append(k)
        by_key.setdefault(links[k], []).append(k)

    def pairs(groups):
        return {(a, b) for g in groups.values() for a in g for b in g
                if a < b and "newborn_missing" in (truth[a][1], truth[b][1])}

    true, linked = pairs(by_person), pairs(by_key)
    return len(true), len(linked), len(true & linked)


def test_newborns_without_id_are_linked_through_the_mothers_id(city):
    """Newborns are sent without an ID number; their records carry the mother's. The city's
    identities linked again in memory, with and without the 母亲身份证件号码 element."""
    import duckdb

    from empi.link import link

    truth = {(i["institution_code"], i["dataset"], i["source_id"]): (i["person_uid"], i["id_defect"])
             for i in csv.DictReader(open(city.city_dir / "truth" / "identities.csv", encoding="utf-8"))}
    newborn_with_mother = sum(1 for i in csv.DictReader(open(city.city_dir / "truth" / "identities.csv",
                                                             encoding="utf-8"))
                              if i["id_defect"] == "newborn_missing" and i["mother_id_sent"])
    assert newborn_with_mother >= 10
    assert q("SELECT count(mother_id18) FROM lake.empi.identity_std")[0][0] >= newborn_with_mother / 2
    con = connect(settings(), read_only=True)
    try:
        rows = con.execute("SELECT identity_key, institution_code, source_dataset, source_id, id_type_code, id_number, "
                           "name, sex_code, birth_date, phone, address_division_code, address_text, mother_id_number "
                           "FROM lake.intermediate.int_identities_unioned").fetch_arrow_table()
    finally:
        con.close()
    where = {k: (i, d, s) for k, i, d, s in zip(*(rows.column(c).to_pylist() for c in
                                                 ("identity_key", "institution_code", "source_dataset", "source_id")))}
    results = {}
    for variant in ("with", "without"):
        local = duckdb.connect()
        local.register("ids", rows if variant == "with" else rows.drop_columns(["mother_id_number"]))
        link(local, "ids")
        links = dict(local.execute("SELECT identity_key, cluster_id FROM empi_links").fetchall())
        local.close()
        results[variant] = _newborn_pairs(links, {k: truth[where[k]] for k in links})
    (t, p, c), (t0, p0, c0) = results["with"], results["without"]
    print(f"newborn pairs: with the mother's ID {results['with']}, without {results['without']} (true, linked, correct)")
    assert t == t0 > 10
    assert c == p and c == t             # every newborn pair found, none wrong
    assert c >= c0 and p - c <= p0 - c0


def test_the_second_delivery_is_linked_incrementally_like_a_full_relink(city):
    runs = q("SELECT identities, new_keys, persons, seconds FROM lake.empi.run_log ORDER BY run_at")
    assert [json.loads(r[3])["mode"] for r in runs] == ["full", "incremental"]
    assert runs[1][0] > runs[0][0] and runs[0][1] == runs[0][2]
    assert json.loads(runs[1][3])["dirty"] < runs[1][0] - runs[0][0] + runs[1][0] / 10   # the new ones, about
    before = q("SELECT identity_key, person_key, match_method, round(match_probability, 9) "
               "FROM lake.population.person_identifier ORDER BY ALL")
    dbt_build(["--select", "int_identities_linked dim_person person_identifier", "--resource-type", "model",
               "--full-refresh"])
    after = q("SELECT identity_key, person_key, match_method, round(match_probability, 9) "
              "FROM lake.population.person_identifier ORDER BY ALL")
    assert after == before                       # same persons, same keys, same methods
    last = q("SELECT new_keys, merged_keys, seconds FROM lake.empi.run_log ORDER BY run_at DESC LIMIT 1")[0]
    assert last[:2] == (0, 0) and json.loads(last[2])["mode"] == "full"


def test_a_second_run_renumbers_no_one(city):
    before = dict(q("SELECT identity_key, person_key FROM lake.population.person_identifier"))
    dbt_build(["--select", "int_identities_linked dim_person person_identifier", "--resource-type", "model"])
    after = dict(q("SELECT identity_key, person_key FROM lake.population.person_identifier"))
    assert after == before
    runs = q("SELECT new_keys, persons, seconds FROM lake.empi.run_log ORDER BY run_at")
    assert runs[-1][0] == 0 and json.loads(runs[-1][2]) == {**json.loads(runs[-1][2]), "mode": "incremental",
                                                             "dirty": 0}


def test_review_and_decide_commands(city):
    assert "identity_key_l" in cli("empi", "review")
    assert "identities" in cli("empi", "status")
    from healthlake.cli import main

    assert main(["empi", "decide", "nope", "nada", "match", "--steward", "张三"]) == 2   # unknown identities

"""EMPI units: standardisation, deterministic and probabilistic linkage, stable keys, steward
decisions. In-memory DuckDB; the state tables live in an attached in-memory database standing in
for the lake (run_in_lake takes any attached catalog)."""

from __future__ import annotations

import hashlib
import json
import hmac

import duckdb
import pyarrow as pa
import pytest

from empi.keys import person_key
from empi.lake import run_in_lake
from empi.link import link
from empi.names import normalise_name
from empi.standardise import standardise
from synthetic.gb11643 import make_id

SECRET = "unit-test-secret"
COLS = ("identity_key", "id_type_code", "id_number", "name", "sex_code", "birth_date", "phone",
        "address_division_code", "address_text", "mother_id_number")


def table(con, rows, name="identities"):
    con.register("__rows", pa.table({c: pa.array([r.get(c) for r in rows], pa.string()) for c in COLS}))
    con.execute(f"CREATE OR REPLACE TABLE {name} AS SELECT * FROM __rows")
    con.unregister("__rows")
    return name


def ident(key, name, birth, sex, id_number=None, phone=None, division="511002", address="市中区玉溪街道1号",
          id_type="01", mother=None):
    return {"identity_key": key, "id_type_code": id_type, "id_number": id_number, "name": name, "sex_code": sex,
            "birth_date": birth, "phone": phone, "address_division_code": division, "address_text": address,
            "mother_id_number": mother}


def test_names_simplified_toneless_pinyin_and_pinyin_only():
    assert normalise_name("陳 國華") == ("陈国华", "chenguohua", "chen", "guohua")
    assert normalise_name("ZHANG  Wei") == (None, "zhangwei", "zhang", "wei")
    assert normalise_name("Ｚｈａｎｇ Ｗｅｉ") == (None, "zhangwei", "zhang", "wei")
    assert normalise_name("曾伟")[2] == "zeng"                  # the surname reading, not ceng
    assert normalise_name("欧阳明")[2:] == ("ouyang", "ming")   # compound surname
    assert normalise_name("张伟")[1] == normalise_name("章玮")[1] == "zhangwei"   # homophones
    assert normalise_name("  ") == (None, None, None, None)


def test_identity_numbers_standardised_checked_and_placeholders_found():
    id_a = make_id("510104", __import__("datetime").date(1980, 1, 1), 9)
    full = id_a.translate(str.maketrans("0123456789X", "０１２３４５６７８９ｘ"))
    old15 = id_a[:6] + id_a[8:17]                               # first-generation 15-digit number
    shared = make_id("511002", __import__("datetime").date(1990, 1, 1), 12)
    con = duckdb.connect()
    rows = [ident("a", "陈国华", "1980-01-01", "1", id_a, "+86 138-0000-0001"),
            ident("b", "陈国华", "1980-01-01", "1", full, "008613800000001"),
            ident("c", "陈国华", "1980-01-01", "1", old15, "13800000001"),
            ident("d", "陈国华", "1980-01-02", "1", id_a[:-1] + ("0" if id_a[-1] != "0" else "1")),
            ident("e", "王五", "1990-01-01", "2", "111111111111111111"),
            ident("p", "Smith John", "1970-01-01", "1", " e1234567 ", id_type="03")]
    rows += [ident(f"s{i}", n, b, "1", shared) for i, (n, b) in
             enumerate([("李明", "1990-01-01"), ("赵强", "1985-03-02"), ("孙丽", "1972-07-07")])]
    standardise(con, table(con, rows))
    got = {r[0]: r[1:] for r in con.execute(
        "SELECT identity_key, id18, id_valid, id_usable, id_agrees, phone, passport FROM std").fetchall()}
    assert got["a"] == (id_a, True, True, True, "13800000001", None)
    assert got["b"] == got["a"] and got["c"][:5] == got["a"][:5]          # full-width and 15-digit forms
    assert got["d"][1:3] == (False, False)                                 # check character wrong
    assert got["e"][1:3] == (False, False)                                 # all one digit: placeholder
    assert {got[f"s{i}"][1:3] for i in range(3)} == {(True, False)}        # valid, but three people share it
    assert got["p"][5] == "E1234567" and got["p"][0] is None              # a passport is not an ID number


def test_deterministic_and_probabilistic_passes():
    from datetime import date

    id_a = make_id("511002", date(1958, 3, 4), 11)
    id_b = make_id("511002", date(1960, 5, 6), 22)
    typo = id_a[:3] + str((int(id_a[3]) + 1) % 10) + id_a[4:]
    con = duckdb.connect()
    rows = [
        ident("a1", "王建国", "1958-03-04", "1", id_a, "13900000001"),
        ident("a2", "王建國", "1958-03-04", "1", id_a, "13900000001", division="511011", address="东兴区1号"),
        ident("a3", "王建国", "1958-03-04", "1", typo, "13900000001"),                  # mistyped ID
        ident("a4", "WANG Jianguo", "1958-03-04", "1", None, "13900000001"),             # pinyin only, no ID
        ident("b1", "李秀英", "1960-05-06", "2", id_b, "13900000002"),
        ident("b2", "李秀英", "1960-05-06", "2", None, "13900000002", division="511024", address="威远县2号"),
        # newborn twins without IDs: same birth date, address and phone, different names
        ident("t1", "张子轩", "2026-05-01", "1", None, "13900000003"),
        ident("t2", "张子轩", "2026-05-01", "1", None, "13900000003", address="市中区玉溪街道1号"),
        ident("t3", "张梓涵", "2026-05-01", "2", None, "13900000003"),
        # a father and a son with one name and one phone: different birth dates, never linked
        ident("f1", "刘宇泽", "1975-02-02", "1", None, "13900000004"),
        ident("s1", "刘宇泽", "2001-11-21", "1", None, "13900000004"),
        # passports link on number + birth date + sex
        ident("p1", "SMITH JOHN", "1970-01-01", "1", "E1234567", id_type="03"),
        ident("p2", "Smith John", "1970-01-01", "1", "e1234567", id_type="03"),
    ]
    result = link(con, table(con, rows))
    cluster = dict(con.execute("SELECT identity_key, cluster_id FROM empi_links").fetchall())
    method = dict(con.execute("SELECT identity_key, match_method FROM empi_links").fetchall())
    assert cluster["a1"] == cluster["a2"] == cluster["a3"] == cluster["a4"]
    assert method["a1"] == method["a2"] == "id_number" and method["a3"] == method["a4"] == "probabilistic"
    assert cluster["b1"] == cluster["b2"]
    assert cluster["t1"] == cluster["t2"] != cluster["t3"]
    assert cluster["f1"] != cluster["s1"]
    assert cluster["p1"] == cluster["p2"] and method["p1"] == "passport"
    assert len({cluster[k] for k in ("a1", "b1", "t1", "t3", "f1", "s1", "p1")}) == 7
    assert result.persons == 7 and result.identities == len(rows)


def _lake():
    con = duckdb.connect()
    con.execute("ATTACH ':memory:' AS lake")
    return con


def _run(con, rows):
    table(con, rows, "memory.main.src")
    out, _ = run_in_lake(con, "memory.main.src", "lake", key_secret=SECRET)
    return dict(zip(out.column("identity_key").to_pylist(), out.column("person_key").to_pylist()))


def test_person_keys_are_keyed_hashes_stable_across_runs_and_merges_recorded():
    from datetime import date

    id_a = make_id("511025", date(1988, 8, 8), 31)
    con = _lake()
    first = _run(con, [ident("a1", "周杰", "1988-08-08", "1", id_a), ident("n1", "吴敏", "1999-09-09", "2")])
    assert first["a1"] == hmac.new(SECRET.encode(), f"id:{id_a}".encode(), hashlib.sha256).hexdigest()
    assert first["a1"] == person_key(f"id:{id_a}", SECRET)
    assert first["n1"] == person_key("identity:n1", SECRET)            # no ID: anchored on the identity
    # a new batch: a new identity of a known person takes its key; nothing is renumbered
    second = _run(con, [ident("a1", "周杰", "1988-08-08", "1", id_a), ident("n1", "吴敏", "1999-09-09", "2"),
                        ident("a2", "周杰", "1988-08-08", "1", id_a, division="511083"),
                        ident("x1", "郑爽", "2001-01-01", "2")])
    assert second["a1"] == second["a2"] == first["a1"] and second["n1"] == first["n1"]
    assert con.execute("SELECT count(*) FROM lake.empi.identity_person").fetchone()[0] == 4
    # n1 turns out to be x1's... no: a steward merges n1 and x1; the older key survives, the other is retired
    con.execute("INSERT INTO lake.empi.steward_decision VALUES ('n1', 'x1', 'match', '主索引管理员', now(), NULL)")
    third = _run(con, [ident("a1", "周杰", "1988-08-08", "1", id_a), ident("n1", "吴敏", "1999-09-09", "2"),
                       ident("x1", "郑爽", "2001-01-01", "2")])
    assert third["n1"] == third["x1"] == first["n1"]
    assert con.execute("SELECT retired_key, person_key FROM lake.empi.person_key_merge").fetchall() == \
        [(second["x1"], first["n1"])]


def test_review_queue_and_steward_decisions_win():
    con = _lake()
    # same pinyin name, birth date and sex, no ID, nothing else in common: not enough to link automatically
    rows = [ident("r1", "陈静", "1990-02-02", "2", None, "13700000001", division="511002", address="甲"),
            ident("r2", "CHEN Jing", "1990-02-02", "2", None, "13800000002", division="511083", address="乙")]
    keys = _run(con, rows)
    queue = con.execute("SELECT identity_key_l, identity_key_r, reason FROM lake.empi.review_queue").fetchall()
    assert keys["r1"] != keys["r2"] and queue == [("r1", "r2", "between_thresholds")]
    con.execute("INSERT INTO lake.empi.steward_decision VALUES ('r1', 'r2', 'match', '主索引管理员', now(), '电话核实')")
    keys = _run(con, rows)
    assert keys["r1"] == keys["r2"]
    assert con.execute("SELECT count(*) FROM lake.empi.review_queue").fetchone()[0] == 0
    # a later non_match decision on the pair wins again
    con.execute("INSERT INTO lake.empi.steward_decision VALUES ('r1', 'r2', 'non_match', '主索引管理员', "
                "now() + INTERVAL 1 MINUTE, '复核：两人')")
    keys = _run(con, rows)
    assert keys["r1"] != keys["r2"]


def test_thresholds_are_checked():
    con = duckdb.connect()
    with pytest.raises(ValueError, match="thresholds"):
        link(con, table(con, [ident("a", "张三", "1990-01-01", "1")]), upper=0.5, lower=0.9)


def test_backend_is_selectable_and_spark_says_what_it_needs(monkeypatch):
    from empi.model import backend_from_env

    monkeypatch.setenv("HEALTHLAKE_EMPI_BACKEND", "oracle")
    with pytest.raises(ValueError, match="duckdb, spark"):
        backend_from_env()
    monkeypatch.setenv("HEALTHLAKE_EMPI_BACKEND", "spark")
    try:
        import pyspark  # noqa: F401
    except ImportError:
        con = duckdb.connect()
        rows = [ident(f"k{i}", "张三", "1990-01-01", "1") for i in range(2)]
        with pytest.raises(RuntimeError, match="pyspark"):
            link(con, table(con, rows))


def test_same_sex_twins_stay_apart_and_an_address_without_division_still_counts():
    from datetime import date

    id_a = make_id("511011", date(2025, 11, 11), 358)
    con = duckdb.connect()
    home = "内江市东兴区田家镇观音村4组59号"
    rows = [
        # twin sisters: one birth date, home and phone; the elder has an ID, the younger not yet
        ident("w1", "王子佳", "2025-11-11", "2", id_a, "19902811187", division="511011", address=home),
        ident("w2", "王子佳", "2025-11-11", "2", None, "19902811187", division=None, address=home),
        ident("w3", "王希琪", "2025-11-11", "2", None, "19902811187", division="511011", address=home),
        ident("w4", "王希琪", "2025-11-11", "2", None, "19902811187", division="511011", address=home),
        # a homophone surname, no ID, no division code, another phone: the address text still matches
        ident("h1", "刘佳语", "2011-08-16", "2", make_id("511083", date(2011, 8, 16), 422), "18059290921",
              division="511083", address="内江市隆昌市响石镇永安村12组71号"),
        ident("h2", "柳佳语", "2011-08-16", "2", None, "18021947209", division=None,
              address="内江市隆昌市响石镇永安村12组71号"),
    ]
    link(con, table(con, rows))
    cluster = dict(con.execute("SELECT identity_key, cluster_id FROM empi_links").fetchall())
    assert cluster["w1"] == cluster["w2"] and cluster["w3"] == cluster["w4"] and cluster["w1"] != cluster["w3"]
    assert cluster["h1"] == cluster["h2"]


def test_mothers_id_standardised_like_an_id_number():
    from datetime import date

    mother = make_id("511011", date(1949, 12, 31), 2)   # born in the 1900s: a 15-digit form exists
    con = duckdb.connect()
    rows = [ident("a", "李四", "2026-05-01", "1", mother=mother),
            ident("b", "李四", "2026-05-01", "1", mother=mother[:6] + mother[8:17]),           # 15 digits
            ident("c", "李四", "2026-05-01", "1", mother=" " + mother[:6] + "-" + mother[6:].translate(
                str.maketrans("0123456789X", "０１２３４５６７８９ｘ"))),                         # full-width, spaced
            ident("d", "李四", "2026-05-01", "1", mother="111111111111111111"),                 # placeholder
            ident("e", "李四", "2026-05-01", "1", mother=mother[:16] + str((int(mother[16]) + 1) % 10) + mother[17]),
            ident("f", "李四", "1940-05-01", "1", mother=mother),   # "mother" younger than the child: not a mother
            ident("g", "李四", None, "1", mother=mother, id_number=mother)]   # own number sent as the mother's
    standardise(con, table(con, rows))
    got = dict(con.execute("SELECT identity_key, mother_id18 FROM std").fetchall())
    assert got == {"a": mother, "b": mother, "c": mother, "d": None, "e": None, "f": None, "g": None}


def test_newborns_without_id_link_on_the_mothers_id():
    """One newborn, no ID number anywhere: the 妇幼保健院's patient record, the health archive (name
    in pinyin only, the family's new phone and home) and the immunisation register (a mistyped
    birth date, no sex, phone or address; the mother's number in its 15-digit form). Without the
    mother's number none of the three pairs is sure enough to link. Her twin brother and an
    unrelated girl of the same name and birth date (another mother) stay other persons."""
    from datetime import date

    mother = make_id("511011", date(1996, 3, 5), 124)
    other_mother = make_id("511024", date(1994, 7, 9), 88)
    home, phone = "内江市东兴区田家镇观音村4组59号", "13981234567"
    rows = [
        ident("b1", "李梓涵", "2026-08-20", "2", None, phone, division="511011", address=home, mother=mother),
        ident("b2", "LI Zihan", "2026-08-20", "2", None, "18090001111", division="511002",
              address="内江市市中区玉溪街道新华路8号", mother=mother),
        ident("b3", "李梓涵", "2026-08-26", None, None, None, division=None, address=None,
              mother=mother[:6] + mother[8:17]),
        ident("t1", "李梓轩", "2026-08-20", "1", None, phone, division="511011", address=home, mother=mother),
        ident("o1", "李梓涵", "2026-08-20", "2", None, "13700001111", division="511024",
              address="内江市威远县新场镇1号", mother=other_mother),
        # the mother herself
        ident("m1", "张丽", "1996-03-05", "2", mother, phone, division="511011", address=home),
    ]
    con = duckdb.connect()
    link(con, table(con, rows))
    cluster = dict(con.execute("SELECT identity_key, cluster_id FROM empi_links").fetchall())
    assert cluster["b1"] == cluster["b2"] == cluster["b3"]
    assert len({cluster["b1"], cluster["t1"], cluster["o1"], cluster["m1"]}) == 4
    # the same records without the mother's ID element: the baby's records are not linked
    con = duckdb.connect()
    link(con, table(con, [{**r, "mother_id_number": None} for r in rows]))
    without = dict(con.execute("SELECT identity_key, cluster_id FROM empi_links").fetchall())
    assert len({without["b1"], without["b2"], without["b3"]}) == 3


def _delivery(con, n, share=100):
    """The benchmark's generator (persons with 1-3 identities, the default defect mix) at n
    identities; about 1/share of them (by identity key) arrive in a second delivery."""
    from bench.empi_link import make_identities

    make_identities(con, n)
    con.execute(f"CREATE OR REPLACE TABLE first AS SELECT * FROM identities WHERE hash(identity_key) % {share} <> 0")


def _pairwise(con) -> tuple[float, float]:
    tp, pred, true = con.execute("""
        WITH j AS (SELECT l.identity_key, l.cluster_id, i.person_uid FROM empi_links l JOIN identities i USING (identity_key))
        SELECT count(*) FILTER (WHERE a.cluster_id = b.cluster_id AND a.person_uid = b.person_uid),
               count(*) FILTER (WHERE a.cluster_id = b.cluster_id), count(*) FILTER (WHERE a.person_uid = b.person_uid)
        FROM j a JOIN j b ON a.identity_key < b.identity_key
         AND (a.cluster_id = b.cluster_id OR a.person_uid = b.person_uid)""").fetchone()
    return tp / pred, tp / true


def test_incremental_linkage_equals_a_full_relink_with_the_same_model():
    from empi.link import Previous

    con = duckdb.connect()
    _delivery(con, 20000)                       # trained: prior, u sampling, EM, term frequencies
    first = link(con, "first")
    assert first.model["trained"] and first.model["settings"]["comparisons"]
    con.execute("CREATE TABLE prev_std AS SELECT * FROM empi_std")
    con.execute("CREATE TABLE prev_edges AS SELECT * FROM empi_edges")
    # a corrected re-send: an identity of the first delivery now with another phone
    con.execute("UPDATE identities SET phone = '13000000000' WHERE identity_key = "
                "(SELECT min(identity_key) FROM first)")
    inc = link(con, "identities", previous=Previous("prev_std", "prev_edges", first.model))
    new = con.execute("SELECT count(*) FROM identities ANTI JOIN first USING (identity_key)").fetchone()[0]
    assert inc.model["incremental"] and new + 1 <= inc.model["dirty"] < new * 1.2 + 5   # the new ones, the re-sent one
    con.execute("CREATE TABLE inc_links AS SELECT * FROM empi_links")
    precision, recall = _pairwise(con)
    assert precision >= 0.999 and recall >= 0.995
    full = link(con, "identities", model=first.model)
    assert (inc.persons, inc.by_method, inc.review_pairs) == (full.persons, full.by_method, full.review_pairs)
    assert con.execute("SELECT count(*) FROM inc_links i FULL JOIN empi_links f USING (identity_key) "
                       "WHERE i.cluster_id IS DISTINCT FROM f.cluster_id "
                       "OR i.match_method IS DISTINCT FROM f.match_method").fetchone()[0] == 0


# a delivery's identities as the EMPI reads them ({} = the table holding them)
SOURCE_IDENTITIES = ("SELECT identity_key, id_type_code, id_number, name, sex_code, birth_date, phone, "
                     "address_division_code, address_text FROM {}")


def test_incremental_runs_in_the_lake_give_the_keys_of_a_full_relink():
    con, full = _lake(), _lake()                # 1,500 identities: untrained (the prior model), so a
                                                # full re-link scores with the same model
    for c in (con, full):
        _delivery(c, 1500, share=10)
        c.execute(f"CREATE TABLE memory.main.src AS {SOURCE_IDENTITIES.format('first')}")
        run_in_lake(c, "memory.main.src", "lake", key_secret=SECRET)
        # second delivery: the new identities, one identity re-sent with its ID corrected, one withdrawn
        c.execute(f"CREATE OR REPLACE TABLE memory.main.src AS {SOURCE_IDENTITIES.format('identities')}")
        c.execute("UPDATE memory.main.src SET id_number = NULL WHERE identity_key = (SELECT min(identity_key) FROM first)")
        c.execute("DELETE FROM memory.main.src WHERE identity_key = (SELECT max(identity_key) FROM first)")
    inc_out, inc = run_in_lake(con, "memory.main.src", "lake", key_secret=SECRET)
    full_out, fr = run_in_lake(full, "memory.main.src", "lake", key_secret=SECRET, full=True)
    assert inc.model["incremental"] and "incremental" not in fr.model
    assert inc.model["dirty"] < inc.identities / 5
    assert sorted(zip(*inc_out.to_pydict().values())) == sorted(zip(*full_out.to_pydict().values()))
    modes = [json.loads(s)["mode"] for (s,) in con.execute("SELECT seconds FROM lake.empi.run_log ORDER BY run_at").fetchall()]
    assert modes == ["full", "incremental"]
    # the state left behind is the full re-link's: identities, pairs, crosswalk
    for t, cols in (("identity_std", "identity_key, input_hash, std_hash"),
                    ("link_edge", "identity_key_l, identity_key_r, round(match_probability, 9)"),
                    ("identity_person", "identity_key, person_key")):
        a = con.execute(f"SELECT {cols} FROM lake.empi.{t} ORDER BY ALL").fetchall()
        assert a == full.execute(f"SELECT {cols} FROM lake.empi.{t} ORDER BY ALL").fetchall(), t
    assert con.execute("SELECT count(*) FROM lake.empi.identity_std").fetchone()[0] == inc.identities


def test_a_state_from_before_the_mothers_id_is_relinked_in_full_and_keys_stay():
    """An upgrade: the lake's empi.identity_std has no mother_id18 yet. The next run cannot be
    incremental (the state's columns are not the code's): it re-links in full, keeps every key and
    writes the new state; the run after it is incremental again."""
    con = _lake()
    _delivery(con, 1500, share=10)
    con.execute(f"CREATE TABLE memory.main.src AS {SOURCE_IDENTITIES.format('first')}")
    run_in_lake(con, "memory.main.src", "lake", key_secret=SECRET)
    before = dict(con.execute("SELECT identity_key, person_key FROM lake.empi.identity_person").fetchall())
    con.execute("ALTER TABLE lake.empi.identity_std DROP COLUMN mother_id18")
    con.execute(f"CREATE OR REPLACE TABLE memory.main.src AS {SOURCE_IDENTITIES.format('identities')}")
    run_in_lake(con, "memory.main.src", "lake", key_secret=SECRET)
    run_in_lake(con, "memory.main.src", "lake", key_secret=SECRET)
    modes = [json.loads(s)["mode"] for (s,) in con.execute("SELECT seconds FROM lake.empi.run_log ORDER BY run_at").fetchall()]
    assert modes == ["full", "full", "incremental"]
    assert "mother_id18" in {r[0] for r in con.execute("DESCRIBE lake.empi.identity_std").fetchall()}
    after = dict(con.execute("SELECT identity_key, person_key FROM lake.empi.identity_person").fetchall())
    assert all(after[k] == v for k, v in before.items())


def test_an_incremental_run_reads_and_rewrites_only_the_clusters_it_touches():
    """A delivery of 2 %: the run links the new identities, those they block with and the clusters
    they touch (the scope), and leaves every other row of the state where it was (same row ids);
    its crosswalk, methods, probabilities, pairs and review queue are the full re-link's."""
    con, full = _lake(), _lake()
    for c in (con, full):
        _delivery(c, 1500, share=50)
        c.execute(f"CREATE TABLE memory.main.src AS {SOURCE_IDENTITIES.format('first')}")
        run_in_lake(c, "memory.main.src", "lake", key_secret=SECRET)
        c.execute(f"CREATE OR REPLACE TABLE memory.main.src AS {SOURCE_IDENTITIES.format('identities')}")
        c.execute("UPDATE memory.main.src SET phone = '13000000000' WHERE identity_key = (SELECT min(identity_key) FROM first)")
        c.execute("DELETE FROM memory.main.src WHERE identity_key = (SELECT max(identity_key) FROM first)")
    tables = {"identity_person": "identity_key", "identity_std": "identity_key",
              "link_edge": "identity_key_l || identity_key_r", "review_queue": "identity_key_l || coalesce(identity_key_r, '')"}

    def rowids():
        return {t: dict(con.execute(f"SELECT {k}, rowid FROM lake.empi.{t}").fetchall()) for t, k in tables.items()}

    before = rowids()
    touched, inc = run_in_lake(con, "memory.main.src", "lake", key_secret=SECRET, touched_only=True)
    full_out, _ = run_in_lake(full, "memory.main.src", "lake", key_secret=SECRET, full=True)
    after = rowids()
    log = json.loads(con.execute("SELECT seconds FROM lake.empi.run_log ORDER BY run_at DESC LIMIT 1").fetchone()[0])
    new = con.execute("SELECT count(*) FROM identities ANTI JOIN first USING (identity_key)").fetchone()[0]
    assert log["mode"] == "incremental" and new < log["scope"] < inc.identities / 5, (new, log)
    assert touched.num_rows == log["scope"] - 1      # the withdrawn identity is in the scope, not in the result
    scope = set(touched.column("identity_key").to_pylist())
    for t in ("identity_person", "identity_std"):    # outside the scope every row is where it was
        kept = {k for k, r in after[t].items() if before[t].get(k) == r}
        assert set(after[t]) - kept <= scope, t
        assert len(kept) >= len(after[t]) - len(scope)
    for t in ("link_edge", "review_queue"):
        rewritten = [k for k, r in after[t].items() if before[t].get(k) != r]
        assert all(k[:32] in scope or k[32:] in scope for k in rewritten), t
        assert len(rewritten) <= len(after[t]) / 4, t
    full_rows = {r[0]: r for r in zip(*full_out.to_pydict().values())}
    assert all(full_rows[r[0]] == r for r in zip(*touched.to_pydict().values()))
    for t, cols in (("identity_std", "identity_key, input_hash, std_hash"),
                    ("link_edge", "identity_key_l, identity_key_r, round(match_probability, 9)"),
                    ("identity_person", "identity_key, person_key, match_method, round(match_probability, 9)"),
                    ("review_queue", "identity_key_l, identity_key_r, round(match_probability, 9), reason, "
                                     "person_key_l, person_key_r")):
        a = con.execute(f"SELECT {cols} FROM lake.empi.{t} ORDER BY ALL").fetchall()
        assert a == full.execute(f"SELECT {cols} FROM lake.empi.{t} ORDER BY ALL").fetchall(), t
    runs = [con.execute("SELECT identities, persons, by_method, review_pairs FROM lake.empi.run_log "
                        "ORDER BY run_at DESC LIMIT 1").fetchone(),
            full.execute("SELECT identities, persons, by_method, review_pairs FROM lake.empi.run_log "
                         "ORDER BY run_at DESC LIMIT 1").fetchone()]
    assert runs[0] == runs[1]                       # the whole population's figures, as a full run counts them


def test_a_crosswalk_from_before_methods_were_kept_is_relinked_in_full_and_keys_stay():
    """An upgrade: empi.identity_person without match_method / match_probability. The next run is
    full (it adds and fills them, every key kept); the run after it is incremental."""
    con = _lake()
    _delivery(con, 1500, share=10)
    con.execute(f"CREATE TABLE memory.main.src AS {SOURCE_IDENTITIES.format('first')}")
    run_in_lake(con, "memory.main.src", "lake", key_secret=SECRET)
    before = dict(con.execute("SELECT identity_key, person_key FROM lake.empi.identity_person").fetchall())
    for col in ("match_method", "match_probability"):
        con.execute(f"ALTER TABLE lake.empi.identity_person DROP COLUMN {col}")
    con.execute(f"CREATE OR REPLACE TABLE memory.main.src AS {SOURCE_IDENTITIES.format('identities')}")
    run_in_lake(con, "memory.main.src", "lake", key_secret=SECRET)
    run_in_lake(con, "memory.main.src", "lake", key_secret=SECRET)
    modes = [json.loads(s)["mode"] for (s,) in con.execute("SELECT seconds FROM lake.empi.run_log ORDER BY run_at").fetchall()]
    assert modes == ["full", "full", "incremental"]
    after = dict(con.execute("SELECT identity_key, person_key FROM lake.empi.identity_person").fetchall())
    assert all(after[k] == v for k, v in before.items())
    assert con.execute("SELECT count(*) FROM lake.empi.identity_person WHERE match_method IS NULL").fetchone()[0] == 0


def test_a_steward_decision_made_after_the_last_run_is_taken_up_incrementally():
    """A steward splits two identities the last run linked: the next incremental run (nothing new
    delivered) takes the decision up, like a full re-link."""
    con, full = _lake(), _lake()
    for c in (con, full):
        _delivery(c, 1500, share=10)
        c.execute(f"CREATE TABLE memory.main.src AS {SOURCE_IDENTITIES.format('identities')}")
        run_in_lake(c, "memory.main.src", "lake", key_secret=SECRET)
    pair = con.execute("""WITH two AS (SELECT person_key FROM lake.empi.identity_person GROUP BY 1
                                       HAVING count(*) = 2 AND bool_or(match_method = 'probabilistic'))
                          SELECT min(identity_key), max(identity_key) FROM lake.empi.identity_person
                          SEMI JOIN two USING (person_key) GROUP BY person_key ORDER BY 1 LIMIT 1""").fetchone()
    assert pair
    for c in (con, full):
        c.execute("INSERT INTO lake.empi.steward_decision VALUES (?, ?, 'non_match', '张三', now(), NULL)", list(pair))
    inc_out, inc = run_in_lake(con, "memory.main.src", "lake", key_secret=SECRET)
    full_out, _ = run_in_lake(full, "memory.main.src", "lake", key_secret=SECRET, full=True)
    assert inc.model["incremental"]
    keys = dict(zip(inc_out.column("identity_key").to_pylist(), inc_out.column("person_key").to_pylist()))
    assert keys[pair[0]] != keys[pair[1]]
    assert sorted(zip(*inc_out.to_pydict().values())) == sorted(zip(*full_out.to_pydict().values()))

"""Access: roles, per-clearance publication (byte scan of the files), governed queries, audit log."""

from __future__ import annotations

import hashlib
import json
import re

import duckdb
import pytest

from catalog.access import AccessError, get_role, roles
from catalog.audit import append_entry, audit_head, read_entries, verify_audit_log
from catalog.governed import AccessDenied, open_published, run_governed
from catalog.publish import PublishError, publish_all, published_path


@pytest.fixture(scope="module")
def city():
    from security.tiny_city import tiny_city

    return tiny_city()


# ------------------------------------------------------------------ roles
def test_roles_and_clearances():
    assert {n: r.clearance for n, r in roles().items()} == {
        "public": 1, "researcher": 2, "analyst": 3, "quality_officer": 4, "clinician": 4, "admin": 5}
    assert get_role("clinician").requires_resident_authorisation
    assert not get_role("quality_officer").requires_resident_authorisation
    with pytest.raises(AccessError, match="did you mean 'analyst'"):
        get_role("analist")


# ------------------------------------------------------------------ publication
def test_one_database_per_level_with_the_four_databases(city):
    assert [r["level"] for r in city.publish_summary] == [1, 2, 3, 4, 5]
    for level in range(1, 6):
        con = duckdb.connect(str(published_path(level, city.settings)), read_only=True)
        try:
            schemas = {r[0] for r in con.execute("SELECT DISTINCT schema_name FROM duckdb_tables()").fetchall()}
        finally:
            con.close()
        assert schemas == {"population", "emr", "health_record", "resource", "catalog"}


def test_lower_levels_read_from_the_top_level_file_equal_levels_read_from_the_lake(city, tmp_path, monkeypatch):
    """publish_all reads the lake once (level 5: every column raw) and levels 1-4 from that file:
    each of them holds the same tables, rows (in the same order) and manifest as one read from the lake."""
    import catalog.publish as publish
    from healthlake.lake import connect
    from security.tiny_city import env_of

    def into(folder):
        monkeypatch.setattr(publish, "published_path", lambda level, s=None: tmp_path / folder / f"level_{int(level)}.duckdb")

    with env_of(city.settings.root):  # the classification reads the configured lake's dbt manifest
        into("all")
        publish.publish_all(city.settings)
        into("lake")
        con = connect(city.settings, read_only=True)
        try:
            classes = publish.classified_tables(con)
            for level in (1, 3):
                publish.publish_level(con, level, city.settings, classes=classes)
        finally:
            con.close()
    _assert_same_files(tmp_path / "all", tmp_path / "lake", (1, 3))


def _assert_same_files(one, other, levels):
    """The same tables, rows (in the same order) and manifest in both folders' level files."""
    for level in levels:
        a = duckdb.connect(str(one / f"level_{level}.duckdb"), read_only=True)
        b = duckdb.connect(str(other / f"level_{level}.duckdb"), read_only=True)
        try:
            tables = a.execute("SELECT schema_name, table_name FROM duckdb_tables() ORDER BY 1, 2").fetchall()
            assert len(tables) > 5
            assert tables == b.execute("SELECT schema_name, table_name FROM duckdb_tables() ORDER BY 1, 2").fetchall()
            for schema, table in tables:
                cols = "* EXCLUDE (published_at)" if table == "published_column" else "*"
                sql = f'SELECT {cols} FROM "{schema}"."{table}"'
                assert a.execute(sql).fetchall() == b.execute(sql).fetchall(), f"{level}: {schema}.{table}"
        finally:
            a.close()
            b.close()


def test_levels_published_side_by_side_from_the_callers_connection_equal_a_plain_publication(city, tmp_path,
                                                                                             monkeypatch):
    """The pipeline's catalog step publishes from its own lake connection's DuckDB instance, the
    lower levels two at a time (threads): the same files as publish_all on a connection of its own,
    and the instance's compression setting left as it was."""
    import catalog.publish as publish
    from healthlake.lake import connect
    from security.tiny_city import env_of

    def into(folder):
        monkeypatch.setattr(publish, "published_path", lambda level, s=None: tmp_path / folder / f"level_{int(level)}.duckdb")

    setting = "SELECT current_setting('disabled_compression_methods')"
    with env_of(city.settings.root):
        into("plain")
        publish.publish_all(city.settings)
        into("threads")
        con = connect(city.settings)
        try:
            before = con.execute(setting).fetchone()[0]
            summary = publish.publish_all(city.settings, con=con, workers=2)
            assert con.execute(setting).fetchone()[0] == before
        finally:
            con.close()
    assert [r["level"] for r in summary] == list(publish.LEVELS)
    _assert_same_files(tmp_path / "plain", tmp_path / "threads", publish.LEVELS)


def _file_hits(path, secrets):
    data = path.read_bytes()
    return {sec for sec in secrets if sec.encode("utf-8") in data}


def test_raw_ids_names_and_phones_are_not_in_the_bytes_of_the_level_3_file(city):
    ids = {p["id_number"] for p in city.persons}
    names = {s for s in city.secrets if not s.isdigit()}
    phones = {p["phone"] for p in city.persons if p["phone"]}
    for level in (1, 2, 3):
        path = published_path(level, city.settings)
        assert _file_hits(path, ids) == set(), level
        assert _file_hits(path, names) == set(), level
        assert _file_hits(path, phones) == set(), level
    # the same scan finds them where they are published: the test can fail
    l5 = published_path(5, city.settings)
    assert len(_file_hits(l5, ids)) > 0.8 * len(ids)
    assert len(_file_hits(l5, names)) > 0.5 * len(names)
    assert len(_file_hits(l5, phones)) > 0.8 * len(phones)


def _q(city, level, sql):
    con = duckdb.connect(str(published_path(level, city.settings)), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_columns_above_the_clearance_are_masked_pseudonymised_generalised_or_absent(city):
    name, id_number, phone, birth_date = _q(city, 5, "SELECT name, id_number, phone, birth_date FROM population.dim_person "
                                                     "WHERE phone IS NOT NULL ORDER BY person_key LIMIT 1")[0]
    # level 3: masked
    key5 = _q(city, 5, "SELECT person_key FROM population.dim_person ORDER BY person_key LIMIT 1")[0][0]
    row3 = _q(city, 3, f"SELECT name, id_number, phone, birth_date FROM population.dim_person WHERE person_key = '{key5}'")[0]
    assert row3[1] == id_number[:6] + "********" + id_number[-4:]
    assert row3[0] == name[0] + "*" and row3[2] == phone[:3] + "****" + phone[-4:]
    assert row3[3] == birth_date  # birth date is level 3: as-is at 3
    # level 2: birth date generalised to the year, 3-level columns absent
    cols2 = {r[0] for r in _q(city, 2, "SELECT column_name FROM duckdb_columns() WHERE table_name = 'dim_person'")}
    assert "birth_year" in cols2 and "birth_date" not in cols2
    diag2 = {r[0] for r in _q(city, 2, "SELECT column_name FROM duckdb_columns() WHERE table_name = 'fct_diagnosis'")}
    assert "diagnosis_code" not in diag2 and "diagnosis_key" in diag2
    assert "patient_id" in diag2  # identifier (level 3) pseudonymised at 2
    # level 1: keys pseudonymised, joins still work
    assert _q(city, 1, f"SELECT count(*) FROM population.dim_person WHERE person_key = '{key5}'") == [(0,)]
    join = ("SELECT count(*) FROM emr.fct_encounter e JOIN population.dim_person p ON e.person_key = p.person_key")
    assert _q(city, 1, join) == _q(city, 5, join)
    assert _q(city, 1, join)[0][0] > 0
    manifest = dict(((t, c), tr) for t, c, tr in _q(city, 1, "SELECT table_name, source_column, treatment FROM "
                                                             "catalog.published_column WHERE schema_name = 'population'"))
    assert manifest[("dim_person", "person_key")] == "pseudonymised"
    assert manifest[("dim_person", "name")] == "masked"
    assert manifest[("dim_person", "birth_date")] == "generalised"
    assert manifest[("dim_person", "current_division_name")] == "absent"


def test_publication_refuses_an_unclassified_column(lake_env):
    from healthlake.lake import connect

    con = connect(lake_env)
    con.execute("CREATE SCHEMA IF NOT EXISTS population")
    con.execute("CREATE TABLE population.dim_person (person_key VARCHAR, shoe_size INTEGER)")
    con.close()
    with pytest.raises(PublishError, match="population.dim_person.shoe_size"):
        publish_all(lake_env)
    assert not published_path(1, lake_env).exists()


# ------------------------------------------------------------------ governed queries
def test_governed_query_returns_the_published_form(city):
    cols, rows = run_governed("SELECT name, id_number FROM population.dim_person ORDER BY person_key LIMIT 5",
                              "analyst", user="t_access", settings=city.settings)
    assert cols == ["name", "id_number"] and len(rows) == 5
    assert all(re.fullmatch(r"\d{6}\*{8}[\dX]{4}", r[1]) and r[0].endswith("*") for r in rows)
    # public (level 1): institution codes are public, counts over them too; the visit type (level 2) is not
    cols, rows = run_governed("SELECT institution_code, count(*) AS n FROM emr.fct_encounter GROUP BY ALL ORDER BY 1",
                              "public", settings=city.settings)
    assert cols == ["institution_code", "n"] and rows and sum(r[1] for r in rows) > 0
    with pytest.raises(AccessDenied, match="visit_type_name is level 2, above the clearance 1"):
        run_governed("SELECT visit_type_name, count(*) FROM emr.fct_encounter GROUP BY 1", "public", settings=city.settings)


def test_governed_query_refuses_columns_above_clearance_and_non_queries(city):
    with pytest.raises(AccessDenied, match="level 3, above the clearance 2"):
        run_governed("SELECT diagnosis_code FROM emr.fct_diagnosis", "researcher", settings=city.settings)
    with pytest.raises(AccessDenied, match="ATTACH"):
        run_governed("ATTACH 'x.duckdb' AS x", "admin", settings=city.settings)
    with pytest.raises(AccessDenied, match="read_csv"):
        run_governed("SELECT * FROM population.dim_person WHERE name IN (SELECT * FROM read_csv('/etc/passwd'))",
                     "admin", settings=city.settings)
    with pytest.raises(AccessDenied, match="authorisation"):
        run_governed("SELECT name FROM population.dim_person", "clinician", settings=city.settings)
    cols, rows = run_governed("SELECT name FROM population.dim_person LIMIT 1", "clinician",
                              settings=city.settings, authorisation="授权书 2026-0001")
    assert not rows[0][0].endswith("*")  # level 4: the real name


def test_the_engine_itself_blocks_files_attach_and_settings(city):
    con = open_published(3, city.settings)
    try:
        for sql in ("SELECT * FROM read_csv('/etc/passwd')", f"ATTACH '{published_path(5, city.settings)}' AS l5",
                    "COPY (SELECT 1) TO '/tmp/healthlake_leak.csv'", "SELECT * FROM glob('/tmp/*')", "LOAD httpfs"):
            with pytest.raises(duckdb.Error, match="disabled"):
                con.execute(sql)
        with pytest.raises(duckdb.Error, match="locked"):
            con.execute("SET enable_external_access = true")
        with pytest.raises(duckdb.Error):
            con.execute("CREATE TABLE population.x AS SELECT 1")  # read-only
    finally:
        con.close()


def test_cli_query(city, capsys):
    from healthlake.cli import main
    from security.tiny_city import env_of

    with env_of(city.settings.root):
        assert main(["query", "--role", "researcher", "--user", "cli_user", "--format", "json",
                     "SELECT id_number FROM population.dim_person WHERE id_number IS NOT NULL LIMIT 2"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert len(out) == 2 and all("********" in r["id_number"] for r in out)
        assert main(["query", "--role", "researcher", "SELECT diagnosis_code FROM emr.fct_diagnosis"]) == 3
        assert "refused" in capsys.readouterr().err
    entries = [e for e in read_entries(city.settings) if e["user"] == "cli_user"]
    assert entries and entries[-1]["outcome"] == "allowed" and entries[-1]["rows"] == 2


# ------------------------------------------------------------------ audit
def test_every_governed_query_is_audited_with_its_outcome(city):
    sql_ok = "SELECT sex_code, count(*) FROM population.dim_person GROUP BY 1 -- audit test"
    sql_no = "SELECT diagnosis_code FROM emr.fct_diagnosis -- audit test"  # level 3, researcher has 2
    run_governed(sql_ok, "researcher", user="auditor_test", settings=city.settings)
    with pytest.raises(AccessDenied):
        run_governed(sql_no, "researcher", user="auditor_test", settings=city.settings)
    mine = [e for e in read_entries(city.settings) if e["user"] == "auditor_test"][-2:]
    assert [e["outcome"] for e in mine] == ["allowed", "refused"]
    ok = mine[0]
    assert ok["sql_sha256"] == hashlib.sha256(sql_ok.encode()).hexdigest()
    assert ok["tables"] == ["population.dim_person"] and ok["columns"] == ["population.dim_person.sex_code"]
    assert ok["rows"] >= 2 and ok["role"] == "researcher" and ok["at"].endswith("+00:00")
    assert mine[1]["reason"] and mine[1]["tables"] == ["emr.fct_diagnosis"] and mine[1]["columns"] == ["diagnosis_code"]
    assert verify_audit_log(city.settings).ok


def test_audit_chain_detects_edits_and_deletions(tmp_path):
    log = tmp_path / "a.jsonl"
    for i in range(5):
        append_entry({"user": "u", "role": "analyst", "rows": i, "outcome": "allowed"}, path=log)
    check = verify_audit_log(path=log)
    assert check.ok and check.entries == 5
    lines = log.read_text(encoding="utf-8").splitlines()
    edited = lines[:]
    edited[2] = edited[2].replace('"rows": 2', '"rows": 0')
    log.write_text("\n".join(edited) + "\n", encoding="utf-8")
    bad = verify_audit_log(path=log)
    assert not bad.ok and bad.bad_line == 4  # the line after the edited one no longer chains
    log.write_text("\n".join(lines[:1] + lines[2:]) + "\n", encoding="utf-8")  # a line deleted
    bad = verify_audit_log(path=log)
    assert not bad.ok and bad.bad_line == 2
    log.write_text("\n".join(lines) + "\n", encoding="utf-8")
    head = audit_head(path=log)
    assert head[0] == 5 and verify_audit_log(path=log, anchor=head).ok
    log.write_text("\n".join(lines[:-1]) + "\n", encoding="utf-8")  # truncation of the tail stays a valid chain…
    assert verify_audit_log(path=log).entries == 4
    bad = verify_audit_log(path=log, anchor=head)  # …but not against an anchor recorded before
    assert not bad.ok and "truncated" in bad.reason


def test_published_forms_of_each_kind_without_a_lake():
    from catalog.classification import ColumnClass
    from catalog.publish import column_expression

    con = duckdb.connect()
    con.execute("CREATE TABLE t (name VARCHAR, id_number VARCHAR, phone VARCHAR, person_key VARCHAR, "
                "birth_date VARCHAR, address_text VARCHAR, diagnosis_code VARCHAR)")
    con.execute("INSERT INTO t VALUES ('欧阳娜娜', '511011198001011234', '13912345678', 'k1', '1980-01-01', "
                "'内江市隆昌市古湖街道沱江路12号', 'I10'), ('张伟', NULL, NULL, 'k1', NULL, '沱江路12号', NULL)")
    kinds = {"name": ("person_name", 4), "id_number": ("id_number", 4), "phone": ("phone", 4), "person_key": ("key", 2),
             "birth_date": ("birth_date", 3), "address_text": ("address", 4), "diagnosis_code": ("value", 3)}
    pcs = [column_expression(ColumnClass("population.t", c, "个人属性", lv, kind, "test", "test"), 1, "secret")
           for c, (kind, lv) in kinds.items()]
    assert {pc.column: pc.treatment for pc in pcs} == {
        "name": "masked", "id_number": "masked", "phone": "masked", "person_key": "pseudonymised",
        "birth_year": "generalised", "address_county": "generalised", "diagnosis_code": "absent"}
    present = [pc for pc in pcs if pc.expression]
    rows = con.execute(f"SELECT {', '.join(pc.expression for pc in present)} FROM t").fetchall()
    assert rows[0] == ("欧阳*", "511011********1234", "139****5678", rows[1][3], 1980, "内江市隆昌市")
    assert rows[1] == ("张*", None, None, rows[0][3], None, None)  # same key → same pseudonym (joins work)
    assert rows[0][3] != "k1" and len(rows[0][3]) == 32
    # at or below the clearance a column is published as it is
    assert column_expression(ColumnClass("population.t", "name", "个人属性", 4, "person_name", "t", "t"), 4, "s").treatment == "raw"

"""The healthlake console script: generate, and read-only sql in three formats."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from healthlake.cli import format_table, main
from healthlake.lake import connect

HEALTHLAKE = str(Path(sys.executable).with_name("healthlake"))


@pytest.fixture
def small_lake(lake_env):
    con = connect(lake_env)
    con.execute("CREATE SCHEMA IF NOT EXISTS population")
    con.execute("CREATE TABLE population.dim_person AS SELECT * FROM (VALUES ('k1', '张伟', DATE '1980-01-02'), "
                "('k2', '李娜', NULL)) t(person_key, name, birth_date)")
    con.close()
    return lake_env


def test_sql_prints_a_table_with_chinese_aligned(small_lake, capsys):
    assert main(["sql", "SELECT person_key, name FROM population.dim_person ORDER BY 1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split("|")[1].strip() == "name"
    assert out[2].startswith("k1") and "张伟" in out[2]
    assert len({line.index("|") for line in out[:4] if "|" in line}) == 1  # columns line up
    assert out[-1] == "(2 rows)"


def test_sql_csv_and_json(small_lake, capsys):
    assert main(["sql", "SELECT * FROM population.dim_person ORDER BY 1", "--format", "csv"]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows == [["person_key", "name", "birth_date"], ["k1", "张伟", "1980-01-02"], ["k2", "李娜", ""]]
    assert main(["sql", "SELECT * FROM population.dim_person ORDER BY 1", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == [
        {"person_key": "k1", "name": "张伟", "birth_date": "1980-01-02"},
        {"person_key": "k2", "name": "李娜", "birth_date": None}]


def test_sql_is_read_only(small_lake, capsys):
    assert main(["sql", "DELETE FROM population.dim_person"]) == 2
    assert "read-only" in capsys.readouterr().err.lower()
    assert main(["sql", "SELECT count(*) AS n FROM population.dim_person", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"n": 2}]


def test_sql_without_a_lake_says_what_to_do(lake_env, capsys):
    assert main(["sql", "SELECT 1"]) == 2
    assert "healthlake demo" in capsys.readouterr().err


def test_format_table_handles_nulls_and_empty_results():
    assert format_table(["a"], []) == "a\n-\n(0 rows)"
    assert "NULL" in format_table(["a"], [(None,)])


def test_generate_command_writes_a_city(tmp_path):
    out = subprocess.run([HEALTHLAKE, "generate", "--residents", "300", "--days", "1", "--seed", "3",
                          "--out", str(tmp_path / "city")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["institutions"] == 15
    assert (tmp_path / "city" / "registry.yaml").exists()
    assert any((tmp_path / "city" / "landing").rglob("*.csv"))
    assert (tmp_path / "city" / "truth" / "summary.json").exists()
    # every format by default: the PACS's DICOM zips and the CDC's front-end database too
    assert any((tmp_path / "city" / "landing").rglob("*.zip"))
    assert "database: frontend/" in (tmp_path / "city" / "registry.yaml").read_text(encoding="utf-8")
    out = subprocess.run([HEALTHLAKE, "generate", "--residents", "300", "--days", "1", "--seed", "3", "--no-pacs",
                          "--no-frontend-db", "--out", str(tmp_path / "plain")], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert not any((tmp_path / "plain" / "landing").rglob("*.zip"))
    assert "database: frontend/" not in (tmp_path / "plain" / "registry.yaml").read_text(encoding="utf-8")

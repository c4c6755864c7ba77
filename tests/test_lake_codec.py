"""The lake's Parquet codec: LZ4_RAW unless the deployment chose one (healthlake.lake.PARQUET_CODEC)."""

from healthlake import lake


def _codecs(con, table: str) -> set[str]:
    files = [r[0] for r in con.execute(f"SELECT data_file FROM ducklake_list_files('{lake.LAKE}', '{table}', "
                                       "schema => 'bronze')").fetchall()]
    assert files
    return {r[0] for r in con.execute(f"SELECT DISTINCT compression FROM parquet_metadata({files!r})").fetchall()}


def test_a_new_lake_writes_lz4_raw_and_a_deployments_own_choice_is_kept(lake_env):
    con = lake.connect(lake_env)
    assert con.execute("SELECT value FROM lake.options() WHERE option_name = 'parquet_compression'").fetchall() \
        == [(lake.PARQUET_CODEC,)]
    con.execute("CREATE TABLE bronze.a AS SELECT range AS i, 'x' || range AS s FROM range(20000)")
    assert _codecs(con, "a") == {"LZ4_RAW"}

    # an operator's choice (persisted in the catalog) survives the next process's connect
    con.execute("CALL lake.set_option('parquet_compression', 'zstd')")
    lake.release(con)
    lake._default_codec(lake.connect(lake_env))
    con = lake.connect(lake_env)
    con.execute("CREATE TABLE bronze.b AS SELECT range AS i FROM range(20000)")
    assert _codecs(con, "b") == {"ZSTD"}

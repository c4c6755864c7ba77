"""The probabilistic model (Splink 5 on DuckDB): comparisons, blocking rules, unsupervised training.

Comparisons (Fellegi-Sunter, one m/u pair per level):

* name: Hanzi exact with term-frequency adjustment (Chinese names are concentrated: 王伟 is
  common, so agreeing on it is weaker evidence), else pinyin exact (homophone and variant
  characters, pinyin-only names), else pinyin Jaro-Winkler ≥ 0.92 / ≥ 0.80;
* birth date: exact, else one character differs (Hamming; DuckDB's damerau_levenshtein costs
  ~23 µs a pair, 50x Hamming: it made u estimation on 2M pairs take 45 s);
* sex; phone (exact, term-frequency adjusted: children share a guardian's phone);
* address: text exact (and division equal or not stated), else division exact;
* ID number: exact, else Hamming ≤ 2 (one mistyped digit, or two adjacent digits swapped: the
  ID-typo residue), compared only when the number is not a placeholder;
* mother's ID number (a child's record, ``mother_id18``: usable numbers only): same mother and
  birth date, same mother and another birth date (a sibling), different; compared only when at
  least one side has no ID number of its own (a newborn sent without one) — two records that both
  carry their own number are decided by it. Its m/u are fixed (not trained): few pairs carry it,
  and EM on them would be noise.

Blocking rules are AND-equalities only (OR-blocking exhausts memory at scale), each restricted
to pairs where at least one side has no deterministic key: two identities that both carry an
agreeing valid ID number are linked (same number) or kept apart (different numbers) by the
deterministic pass, never here.
"""

from __future__ import annotations

import logging
import os
import tempfile

import duckdb

__all__ = ["BLOCKING_KEYS", "settings", "train_and_predict", "predict_incremental", "untrained_model"]

BLOCKING_KEYS = (("birth_str", "surname_py"), ("birth_str", "given_py"), ("phone", "surname_py"),
                 ("surname_py", "given_py", "division"), ("mother_id18", "birth_str"), ("mother_id18", "surname_py"))
_RESIDUE_ONLY = "(l.det_key IS NULL OR r.det_key IS NULL)"


def blocking_sql(keys: tuple[str, ...]) -> str:
    return " AND ".join(f"l.{k} = r.{k}" for k in keys) + " AND " + _RESIDUE_ONLY


BACKENDS = ("duckdb", "spark")


def _at_most_k_differ(col: str, k: int, backend: str) -> str:
    # DuckDB: hamming (same-length strings; ~50x cheaper than its damerau_levenshtein). Spark has
    # no hamming: levenshtein, which counts a transposition as 2 — the same threshold k holds.
    fn = "hamming" if backend == "duckdb" else "levenshtein"
    return f"{fn}({col}_l, {col}_r) <= {k}"


def settings(prior: float = 1e-4, term_frequencies: bool = True, backend: str = "duckdb") -> dict:
    """The model, with prior m/u values (used as they are when there is too little data to train;
    starting values for EM otherwise). Term-frequency adjustment needs a population to count
    names in: on a few identities one name is a large share of them and would count for nothing."""
    import splink.comparison_level_library as cll
    import splink.comparison_library as cl
    from splink import SettingsCreator

    def lv(level, m, u):
        return level.configure(m_probability=m, u_probability=u)

    name = cl.CustomComparison(
        output_column_name="name",
        comparison_levels=[
            cll.NullLevel("name_py"),
            lv(cll.ExactMatchLevel("name_hz", term_frequency_adjustments=term_frequencies), 0.80, 0.0005),
            lv(cll.ExactMatchLevel("name_py"), 0.10, 0.0008),
            lv(cll.JaroWinklerLevel("name_py", 0.92), 0.04, 0.002),
            lv(cll.JaroWinklerLevel("name_py", 0.80), 0.03, 0.02),
            lv(cll.ElseLevel(), 0.03, 0.9767),
        ])
    birth = cl.CustomComparison(
        output_column_name="birth_date",
        comparison_levels=[cll.NullLevel("birth_str"), lv(cll.ExactMatchLevel("birth_str"), 0.97, 0.0001),
                           lv(cll.CustomLevel(_at_most_k_differ("birth_str", 1, backend), "one digit differs"),
                              0.02, 0.003),
                           lv(cll.ElseLevel(), 0.01, 0.9969)])
    sex = cl.CustomComparison(
        output_column_name="sex",
        comparison_levels=[cll.NullLevel("sex"), lv(cll.ExactMatchLevel("sex"), 0.98, 0.5),
                           lv(cll.ElseLevel(), 0.02, 0.5)])
    phone = cl.CustomComparison(
        output_column_name="phone",
        comparison_levels=[cll.NullLevel("phone"),
                           lv(cll.ExactMatchLevel("phone", term_frequency_adjustments=term_frequencies), 0.75, 0.0001),
                           lv(cll.ElseLevel(), 0.25, 0.9999)])
    address = cl.CustomComparison(
        output_column_name="address",
        comparison_levels=[
            cll.CustomLevel("(division_l IS NULL OR division_r IS NULL) AND NOT coalesce(address_l = address_r, false)",
                            "no division to compare").configure(is_null_level=True),
            # the text names city, county and street: equal text is the same home even when one
            # side left the division code empty
            lv(cll.CustomLevel("address_l = address_r AND (division_l = division_r OR division_l IS NULL "
                               "OR division_r IS NULL)", "same address"), 0.70, 0.001),
            lv(cll.ExactMatchLevel("division"), 0.20, 0.25),
            lv(cll.ElseLevel(), 0.10, 0.749),
        ])
    id_number = cl.CustomComparison(
        output_column_name="id_number",
        comparison_levels=[cll.NullLevel("id_cmp"), lv(cll.ExactMatchLevel("id_cmp"), 0.95, 1e-7),
                           lv(cll.CustomLevel(_at_most_k_differ("id_cmp", 2, backend), "one typo or transposition"),
                              0.04, 1e-5),
                           lv(cll.ElseLevel(), 0.01, 0.99998)])
    # One mother, one birth date (or one typed character apart): the same child (or a twin: the
    # given-name veto keeps twins apart). One mother, another birth date: another child of hers —
    # the comparisons are not independent (siblings share a mother), so this level carries the
    # evidence of the combination, against a match, instead of the mother's agreement alone. A
    # different usable mother's number on two records of one child is rare (m of the else level).
    # Fixed m/u: few pairs carry a mother's number, EM on them would be noise.
    def fixed(level, m, u):
        return level.configure(m_probability=m, u_probability=u, fix_m_probability=True, fix_u_probability=True)

    same_birth = f"(birth_str_l IS NULL OR birth_str_r IS NULL OR {_at_most_k_differ('birth_str', 1, backend)})"
    mother_id = cl.CustomComparison(
        output_column_name="mother_id",
        comparison_levels=[
            cll.CustomLevel("mother_id18_l IS NULL OR mother_id18_r IS NULL "
                            "OR (id_cmp_l IS NOT NULL AND id_cmp_r IS NOT NULL)",
                            "no mother's ID, or both have their own ID").configure(is_null_level=True),
            fixed(cll.CustomLevel(f"mother_id18_l = mother_id18_r AND {same_birth}",
                                  "same mother, same birth date"), 0.97, 5e-6),
            fixed(cll.CustomLevel("mother_id18_l = mother_id18_r", "same mother, another child"), 0.002, 0.2),
            fixed(cll.ElseLevel(), 0.028, 0.8),
        ])
    return SettingsCreator(
        link_type="dedupe_only",
        unique_id_column_name="identity_key",
        comparisons=[name, birth, sex, phone, address, id_number, mother_id],
        blocking_rules_to_generate_predictions=[blocking_sql(k) for k in BLOCKING_KEYS],
        probability_two_random_records_match=prior,
        retain_matching_columns=True,
        retain_intermediate_calculation_columns=False,
        additional_columns_to_retain=["det_key", "surname_py", "given_py"],
        max_iterations=20,
    )


# Below this many identities the prior parameters are used as they are: EM on a few hundred
# records has too few matches per level to move them reliably.
MIN_TRAIN = 2000


def backend_from_env() -> str:
    value = os.environ.get("HEALTHLAKE_EMPI_BACKEND", "duckdb").strip().lower()
    if value not in BACKENDS:
        raise ValueError(f"HEALTHLAKE_EMPI_BACKEND={value!r}: expected one of {', '.join(BACKENDS)}")
    return value


def _spark_api(con: duckdb.DuckDBPyConnection, table: str):
    """Province scale: the same model on Spark (local mode here, a cluster in production). The
    standardised table goes over as Arrow; the scored pairs come back to DuckDB for clustering."""
    try:
        from pyspark.sql import SparkSession
    except ImportError as e:   # pyspark is not a dependency of the default (DuckDB) deployment
        raise RuntimeError("HEALTHLAKE_EMPI_BACKEND=spark needs pyspark (pip install pyspark==3.5.*, Java 17): "
                           "see empi/README.md") from e
    import sqlglot
    from splink.backends.spark import SparkAPI, similarity_jar_location
    from splink.internals.spark.spark_helpers.custom_spark_dialect import CustomSpark  # noqa: F401 (registers it)

    try:   # Splink's Spark dialect subclasses sqlglot's Generator: impossible under sqlglotc (mypyc)
        sqlglot.transpile("SELECT 1", write="customspark")
    except TypeError as e:
        raise RuntimeError("HEALTHLAKE_EMPI_BACKEND=spark needs the pure-Python sqlglot (sqlglotc, the compiled "
                           "build, refuses Splink's Spark dialect): see empi/README.md") from e

    # Splink's Scala UDFs (jaro_winkler …) must be on the session's class path when it starts
    spark = (SparkSession.builder.master(os.environ.get("HEALTHLAKE_SPARK_MASTER", "local[*]"))
             .appName("healthlake-empi").config("spark.jars", similarity_jar_location())
             .config("spark.sql.execution.arrow.pyspark.enabled", "true")
             .config("spark.sql.session.timeZone", "UTC")
             .config("spark.sql.shuffle.partitions", os.environ.get("HEALTHLAKE_SPARK_SHUFFLE_PARTITIONS", "8"))
             .getOrCreate())
    # Splink breaks lineage with checkpoints
    spark.sparkContext.setCheckpointDir(os.environ.get("HEALTHLAKE_SPARK_CHECKPOINT_DIR")
                                        or tempfile.mkdtemp(prefix="empi_spark_"))
    frame = spark.createDataFrame(con.execute(f"SELECT * FROM {table}").fetch_arrow_table().to_pandas())
    db = SparkAPI(spark_session=spark)
    return db, db.register(frame)


def train_and_predict(con: duckdb.DuckDBPyConnection, table: str, lower: float, *, seed: int = 42,
                      u_pairs: float = 2e6, em_pairs: float = 2e6, backend: str | None = None,
                      model: dict | None = None) -> tuple[str, dict]:
    """Train on ``table`` without labels and score the blocked pairs with p ≥ ``lower``.

    Returns the name of a table in ``con`` with (identity_key_l, identity_key_r, match_probability,
    match_weight, det_key_l, det_key_r, …) and the model: {"trained", "backend", "identities",
    "settings"} (Splink's settings with the m/u values, kept for incremental runs).
    ``backend``: duckdb (default) or spark (HEALTHLAKE_EMPI_BACKEND). ``model``: a saved model
    (same backend) used as it is, without training."""
    from splink import DuckDBAPI, Linker

    backend = backend or backend_from_env()
    for name in ("splink", "splink.internals"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # "probe returned zero blocked pairs" (a small city: EM then takes every pair, as it should)
    logging.getLogger("splink.internals.em_sampling").setLevel(logging.ERROR)
    if backend == "spark":
        db, sdf = _spark_api(con, table)
    else:
        db = DuckDBAPI(connection=con)
        sdf = db.register(table)
    n = con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    if model is not None and model.get("backend", "duckdb") == backend:
        linker = Linker(sdf, model["settings"], log_level=logging.WARNING)
        trained, n_model = model["trained"], model["identities"]
    else:
        linker = Linker(sdf, settings(term_frequencies=n >= MIN_TRAIN, backend=backend), log_level=logging.WARNING)
        trained, n_model = n >= MIN_TRAIN, n
    if model is None and n >= MIN_TRAIN:
        # the prior from a deterministic rule that admits (almost) no false positives: same valid number
        linker.training.estimate_probability_two_random_records_match(["l.id_cmp = r.id_cmp"], recall=0.8)
        linker.training.estimate_u_using_random_sampling(max_pairs=u_pairs, seed=seed, num_chunks=1,
                                                          min_count_per_level=None)
        # EM twice, each with a blocking rule that leaves the comparisons it trains free to vary
        linker.training.estimate_parameters_using_expectation_maximisation(
            "l.birth_str = r.birth_str AND l.sex = r.sex", estimate_without_term_frequencies=True,
            max_pairs=em_pairs)
        linker.training.estimate_parameters_using_expectation_maximisation(
            "l.name_py = r.name_py", estimate_without_term_frequencies=True, max_pairs=em_pairs)
    pred = linker.inference.predict(threshold_match_probability=lower, warning_mode="never")
    if backend == "spark":
        con.register("__empi_pairs_arrow", pred.as_pandas_dataframe())
        con.execute("CREATE OR REPLACE TEMP TABLE __empi_pairs AS SELECT * FROM __empi_pairs_arrow")
        con.unregister("__empi_pairs_arrow")
    else:
        con.execute(f"CREATE OR REPLACE TEMP TABLE __empi_pairs AS SELECT * FROM {pred.physical_name}")
    return "__empi_pairs", {"trained": trained, "backend": backend, "identities": n_model,
                            "settings": linker.misc.save_model_to_json()}


def untrained_model(n: int, backend: str = "duckdb") -> dict:
    """The prior model (what a run with too few identities to train, or nothing to score, uses)."""
    from splink import DuckDBAPI, Linker

    con = duckdb.connect()
    try:
        con.execute("CREATE TABLE t (identity_key VARCHAR)")
        linker = Linker(DuckDBAPI(connection=con).register("t"),
                        settings(term_frequencies=False, backend=backend), log_level=logging.WARNING)
        return {"trained": False, "backend": backend, "identities": n, "settings": linker.misc.save_model_to_json()}
    finally:
        con.close()


def _tf_columns(model_settings: dict) -> list[str]:
    return sorted({lv["tf_adjustment_column"] for c in model_settings.get("comparisons", [])
                   for lv in c.get("comparison_levels", []) if lv.get("tf_adjustment_column")})


def predict_incremental(con: duckdb.DuckDBPyConnection, table: str, dirty: str, model_settings: dict,
                        lower: float, tf_rest: str | None = None) -> str:
    """Score the blocked pairs of ``table`` that involve an identity of ``dirty`` (identity_key),
    with a saved model, on DuckDB: Splink's ``predict_within`` (dirty × dirty) and
    ``predict_between`` (dirty × the rest), the same AND-equality blocking rules. Term
    frequencies are counted over the whole ``table``, as a full prediction counts them, and over
    ``tf_rest`` too when given (the term-frequency columns of the identities not in ``table``: a run
    over the identities a delivery touched counts names and phones over everyone, as Splink's
    ``compute_tf_table`` would on all of them). Returns the name of the pairs table (as
    ``train_and_predict``)."""
    from splink import DuckDBAPI, Linker

    for name in ("splink", "splink.internals"):
        logging.getLogger(name).setLevel(logging.WARNING)
    con.execute(f"CREATE OR REPLACE TEMP TABLE __empi_dirty_rows AS SELECT * FROM {table} "
                f"SEMI JOIN {dirty} USING (identity_key)")
    con.execute(f"CREATE OR REPLACE TEMP VIEW __empi_clean_rows AS SELECT * FROM {table} "
                f"ANTI JOIN {dirty} USING (identity_key)")
    db = DuckDBAPI(connection=con)
    linker = Linker(db.register(table), model_settings, log_level=logging.WARNING)
    for col in _tf_columns(model_settings):
        if tf_rest is None:
            linker.table_management.compute_tf_table(col)
            continue
        # Splink's own SQL (term_frequencies_for_single_column_sql) over table ∪ tf_rest
        con.execute(f"""CREATE OR REPLACE TEMP TABLE __empi_tf_{col} AS
                        WITH v AS (SELECT {col} FROM {table} UNION ALL SELECT {col} FROM {tf_rest})
                        SELECT {col}, cast(count(*) as float8) / (select count({col}) as total from v) AS tf_{col}
                        FROM v WHERE {col} IS NOT NULL GROUP BY {col}""")
        linker.table_management.register_term_frequency_lookup(db.register(f"__empi_tf_{col}"), col)
    new = db.register("__empi_dirty_rows")
    within = linker.inference.predict_within(new, threshold_match_probability=lower, warning_mode="never")
    parts = [f"SELECT * FROM {within.physical_name}"]
    if con.execute(f"SELECT count(*) FROM {table}").fetchone()[0] > con.execute("SELECT count(*) FROM __empi_dirty_rows").fetchone()[0]:
        between = linker.inference.predict_between(new, db.register("__empi_clean_rows"),
                                                   threshold_match_probability=lower, warning_mode="never")
        parts.append(f"SELECT * FROM {between.physical_name}")
    con.execute(f"CREATE OR REPLACE TEMP TABLE __empi_pairs AS {' UNION ALL BY NAME '.join(parts)}")
    return "__empi_pairs"

"""Identity standardisation, in DuckDB SQL (names through Python, once per distinct name).

Input: a relation with ``identity_key`` and any of ``id_type_code, id_number, name, sex_code,
birth_date, phone, address_division_code, address_text`` (missing columns are treated as null).
Output table ``std``: one row per identity with

* ``id18``: the resident ID number standardised (full-width → half-width, spaces and hyphens
  removed, check character upper-case, a 15-digit first-generation number upgraded to 18 digits
  with its check character computed); ``id_valid``: GB 11643 MOD 11-2 check and a real birth date;
  ``id_birth_date``/``id_sex`` read from it; ``id_placeholder``: all digits the same, a run like
  ``123456789…``, a birth year before 1900, or one number sent for 3+ different people (distinct
  surname × birth date); ``id_usable``: valid and not a placeholder (placeholders count as missing);
  ``id_agrees``: usable, and the stated birth date and sex (when stated) equal the ID's;
* ``passport``: the number of a passport (id type 03 of CV02.01.101), upper-case, no spaces;
* ``name_hz``, ``name_py``, ``surname_py``, ``given_py`` (see ``empi.names``);
* ``sex`` ('1'/'2' only; unknown codes are null), ``birth_date``;
* ``phone``: digits only, the country code 86 / +86 / 0086 removed;
* ``division``, ``address``: the address text NFKC-normalised without spaces;
* ``mother_id18``: the mother's ID number on a child's record (母亲身份证件号码), standardised as
  ``id18`` and kept only when usable: valid (MOD 11-2, real birth date), not a placeholder pattern,
  not the identity's own number, and the mother born at least 12 years before the child (when the
  child's birth date is stated); otherwise null (a typo or placeholder counts as missing).
"""

from __future__ import annotations

import unicodedata

import duckdb
import pyarrow as pa

from empi.names import normalise_name

__all__ = ["standardise", "INPUT_COLUMNS", "PLACEHOLDER_MIN_PEOPLE"]

INPUT_COLUMNS = ("identity_key", "id_type_code", "id_number", "name", "sex_code", "birth_date", "phone",
                 "address_division_code", "address_text", "mother_id_number")
# One ID number sent for at least this many different people (surname × birth date) is a placeholder.
PLACEHOLDER_MIN_PEOPLE = 3
PASSPORT_TYPES = ("03",)

_FULL = "０１２３４５６７８９ＸｘxＡＢＣＤＥＦＧＨＩＪＫＬＭＮＯＰＱＲＳＴＵＶＷＹＺ"
_HALF = "0123456789XXXABCDEFGHIJKLMNOPQRSTUVWYZ"
_WEIGHTS = "[7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]"


def _check_char_sql(first17: str) -> str:
    return (f"substr('10X98765432', 1 + (list_dot_product(list_transform(string_split({first17}, ''), "
            f"c -> (ascii(c) - 48)::INTEGER), {_WEIGHTS}) % 11)::INTEGER, 1)")


def _clean_sql(col: str) -> str:
    """An ID number as sent → upper-case, half-width, without spaces or hyphens (null when empty)."""
    # translate() costs ~3 µs a value: only numbers that are not already clean go through it
    return (f"CASE WHEN regexp_full_match(CAST({col} AS VARCHAR), '[0-9]{{17}}[0-9X]|[0-9]{{15}}') "
            f"THEN CAST({col} AS VARCHAR) "
            f"ELSE NULLIF(regexp_replace(translate(upper(CAST({col} AS VARCHAR)), '{_FULL}', '{_HALF}'), "
            f"'[\\s\\-\\x{{3000}}]', '', 'g'), '') END")


def _to18_sql(raw: str) -> str:
    """18 characters as they are; a 15-digit first-generation number upgraded (19 + check character)."""
    up = f"substr({raw}, 1, 6) || '19' || substr({raw}, 7, 9)"
    return (f"CASE WHEN regexp_full_match({raw}, '[0-9]{{17}}[0-9X]') THEN {raw} "
            f"WHEN regexp_full_match({raw}, '[0-9]{{15}}') THEN {up} || {_check_char_sql(up)} END")


def _valid_sql(id18: str) -> str:
    return (f"coalesce({id18} IS NOT NULL AND {_check_char_sql(f'substr({id18}, 1, 17)')} = substr({id18}, 18, 1) "
            f"AND try_strptime(substr({id18}, 7, 8), '%Y%m%d') IS NOT NULL, false)")


def _pattern_placeholder_sql(id18: str) -> str:
    return (f"coalesce(length(replace(substr({id18}, 1, 17), substr({id18}, 1, 1), '')) = 0 "
            f"OR contains('01234567890123456789', substr({id18}, 1, 10)) "
            f"OR contains('98765432109876543210', substr({id18}, 1, 10)) "
            f"OR substr({id18}, 7, 4) < '1900', false)")


def _name_table(con: duckdb.DuckDBPyConnection, src: str) -> None:
    names = [r[0] for r in con.execute(f"SELECT DISTINCT name FROM {src} WHERE name IS NOT NULL").fetchall()]
    cols = list(zip(*[(n, *normalise_name(n)) for n in names])) if names else [[], [], [], [], []]
    t = pa.table({"name": pa.array(cols[0], pa.string()), "name_hz": pa.array(cols[1], pa.string()),
                  "name_py": pa.array(cols[2], pa.string()), "surname_py": pa.array(cols[3], pa.string()),
                  "given_py": pa.array(cols[4], pa.string())})
    con.register("__empi_names_arrow", t)
    con.execute("CREATE OR REPLACE TEMP TABLE __empi_names AS SELECT * FROM __empi_names_arrow")
    con.unregister("__empi_names_arrow")


def _address_table(con: duckdb.DuckDBPyConnection, src: str) -> None:
    values = [r[0] for r in con.execute(f"SELECT DISTINCT address_text FROM {src} "
                                        f"WHERE address_text IS NOT NULL").fetchall()]
    norm = ["".join(unicodedata.normalize("NFKC", v).split()) or None for v in values]
    con.register("__empi_addr_arrow", pa.table({"address_text": pa.array(values, pa.string()),
                                                "address": pa.array(norm, pa.string())}))
    con.execute("CREATE OR REPLACE TEMP TABLE __empi_addr AS SELECT * FROM __empi_addr_arrow")
    con.unregister("__empi_addr_arrow")


# The per-identity columns (everything but the population-wide placeholder count): kept in the
# lake's empi.identity_std and reused on a later run for an identity whose input is unchanged.
ROW_COLUMNS = ("identity_key", "input_hash", "id18", "passport", "id_valid", "id_birth_date", "id_sex",
               "id_pattern_placeholder", "name_hz", "name_py", "surname_py", "given_py", "sex", "birth_date",
               "phone", "division", "address", "mother_id18")


def input_hash_sql(alias: str = "") -> str:
    """md5 of the input columns as sent: an identity whose hash is unchanged needs no re-standardising."""
    a = f"{alias}." if alias else ""
    return ("md5(concat_ws(chr(31), " + ", ".join(f"coalesce(CAST({a}{c} AS VARCHAR), chr(30))"
                                                  for c in INPUT_COLUMNS[1:]) + "))")


def standardise(con: duckdb.DuckDBPyConnection, source: str, out: str = "std", previous: str | None = None) -> int:
    """Create table ``out`` from relation ``source`` (see the module docstring); return its row count.

    ``previous``: a table with ``ROW_COLUMNS`` from an earlier run; identities whose input hash is
    unchanged take their per-identity columns from there (only new or changed ones are
    standardised again); the placeholder count over all identities is always recomputed."""
    load_input(con, source)
    same = ("" if not previous else
            f"{previous} p ON p.identity_key = a.identity_key AND p.input_hash = a.input_hash")
    if previous:
        con.execute(f"CREATE OR REPLACE TEMP TABLE __empi_in AS SELECT a.* FROM __empi_all a ANTI JOIN {same}")
    else:
        con.execute("CREATE OR REPLACE TEMP TABLE __empi_in AS SELECT * FROM __empi_all")
    rows(con)
    if previous:
        con.execute(f"INSERT INTO __empi_base SELECT {', '.join('p.' + c for c in ROW_COLUMNS)} "
                    f"FROM __empi_all a JOIN {same}")
    finish(con, "__empi_base", out)
    drop_work_tables(con)
    return con.execute(f"SELECT count(*) FROM {out}").fetchone()[0]


def load_input(con: duckdb.DuckDBPyConnection, source: str) -> None:
    """``__empi_all``: the input columns of ``source`` (missing ones null) and ``input_hash``."""
    have = {r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}
    if "identity_key" not in have:
        raise ValueError(f"{source} has no identity_key column")
    select = ", ".join(c if c in have else f"NULL::VARCHAR AS {c}" for c in INPUT_COLUMNS)
    con.execute(f"CREATE OR REPLACE TEMP TABLE __empi_all AS SELECT *, {input_hash_sql()} AS input_hash "
                f"FROM (SELECT {select} FROM {source})")


def drop_work_tables(con: duckdb.DuckDBPyConnection) -> None:
    for t in ("__empi_all", "__empi_in", "__empi_ids", "__empi_names", "__empi_addr", "__empi_base"):
        con.execute(f"DROP TABLE IF EXISTS {t}")


def finish(con: duckdb.DuckDBPyConnection, base: str, out: str) -> None:
    """The population-wide step: ``base`` (ROW_COLUMNS) → ``out`` with the placeholder flag (one
    number sent for several people) and ``id_usable``, ``id_agrees``. Every identity carrying a
    number must be in ``base`` together with all others carrying that number."""
    con.execute(f"""
    CREATE OR REPLACE TEMP TABLE {out} AS
    WITH shared AS (
        SELECT id18, count(DISTINCT coalesce(surname_py, '?') || coalesce(CAST(birth_date AS VARCHAR), '?')) AS people
        FROM {base} WHERE id_valid GROUP BY id18
    ), flagged AS (
        SELECT b.*,
               id_pattern_placeholder OR coalesce(shared.people >= {PLACEHOLDER_MIN_PEOPLE}, false) AS id_placeholder
        FROM {base} b LEFT JOIN shared USING (id18)
    )
    SELECT *, id_valid AND NOT id_placeholder AS id_usable,
           id_valid AND NOT id_placeholder AND (birth_date IS NULL OR birth_date = id_birth_date)
               AND (sex IS NULL OR sex = id_sex) AS id_agrees
    FROM flagged
    """)


def rows(con: duckdb.DuckDBPyConnection) -> None:
    """The per-identity columns of ``__empi_in`` into ``__empi_base`` (ROW_COLUMNS)."""
    _name_table(con, "__empi_in")
    _address_table(con, "__empi_in")
    con.execute(f"""
    CREATE OR REPLACE TEMP TABLE __empi_ids AS
    WITH cleaned AS (
        SELECT identity_key, {_clean_sql('id_number')} AS raw_id, {_clean_sql('mother_id_number')} AS raw_mother,
               NULLIF(regexp_replace(CAST(id_type_code AS VARCHAR), '\\s', '', 'g'), '') AS id_type
        FROM __empi_in
    ), shaped AS (
        SELECT *,
               CASE WHEN id_type IS NOT NULL AND lpad(id_type, 2, '0') IN {PASSPORT_TYPES + ('',)} THEN NULL
                    ELSE {_to18_sql('raw_id')} END AS id18,
               CASE WHEN lpad(id_type, 2, '0') IN {PASSPORT_TYPES + ('',)} THEN raw_id END AS passport,
               {_to18_sql('raw_mother')} AS mother18
        FROM cleaned
    )
    SELECT identity_key, id18, passport, {_valid_sql('id18')} AS id_valid,
           CAST(try_strptime(substr(id18, 7, 8), '%Y%m%d') AS DATE) AS id_birth_date,
           CASE WHEN id18 IS NULL THEN NULL WHEN (ascii(substr(id18, 17, 1)) - 48) % 2 = 1 THEN '1' ELSE '2' END
               AS id_sex,
           {_pattern_placeholder_sql('id18')} AS id_pattern_placeholder,
           CASE WHEN {_valid_sql('mother18')} AND NOT {_pattern_placeholder_sql('mother18')}
                     AND mother18 IS DISTINCT FROM id18 THEN mother18 END AS mother18
    FROM shaped
    """)
    con.execute(f"""
    CREATE OR REPLACE TEMP TABLE __empi_base AS
    SELECT i.identity_key, i.input_hash, ids.id18, ids.passport, ids.id_valid, ids.id_birth_date, ids.id_sex,
           ids.id_pattern_placeholder,
           n.name_hz, n.name_py, n.surname_py, n.given_py,
           CASE WHEN CAST(i.sex_code AS VARCHAR) IN ('1', '2') THEN CAST(i.sex_code AS VARCHAR) END AS sex,
           TRY_CAST(i.birth_date AS DATE) AS birth_date,
           CASE WHEN length(p.digits) = 13 AND p.digits LIKE '86%' THEN substr(p.digits, 3)
                WHEN length(p.digits) = 15 AND p.digits LIKE '0086%' THEN substr(p.digits, 5)
                WHEN length(p.digits) >= 7 THEN p.digits END AS phone,
           NULLIF(trim(CAST(i.address_division_code AS VARCHAR)), '') AS division,
           a.address,
           -- a mother is at least 12 years older than her child (when the child's birth date is stated)
           CASE WHEN TRY_CAST(i.birth_date AS DATE) IS NULL
                     OR CAST(strptime(substr(ids.mother18, 7, 8), '%Y%m%d') AS DATE)
                        <= TRY_CAST(i.birth_date AS DATE) - INTERVAL 12 YEAR
                THEN ids.mother18 END AS mother_id18
    FROM __empi_in i
    JOIN __empi_ids ids USING (identity_key)
    LEFT JOIN __empi_names n ON n.name = i.name
    LEFT JOIN __empi_addr a ON a.address_text = i.address_text
    CROSS JOIN LATERAL (SELECT CASE WHEN regexp_full_match(CAST(i.phone AS VARCHAR), '[0-9]+')
                                        THEN CAST(i.phone AS VARCHAR)
                                    ELSE NULLIF(regexp_replace(translate(CAST(i.phone AS VARCHAR), '{_FULL[:10]}',
                                                '0123456789'), '[^0-9]', '', 'g'), '') END AS digits) p
    """)

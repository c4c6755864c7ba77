"""EMPI at scale: link N source identities (BENCH_EMPI_IDENTITIES, default 1,000,000) vs the limit:
a bare DuckDB self-join producing the candidate pairs of the same AND-equality blocking keys (with
the same residue restriction) on the same standardised table — the join work no linker can skip.

Identities are made in DuckDB (persons with valid GB 11643 numbers, 1-3 identities each, the
synthetic city's default mix of defects: missing, mistyped and placeholder numbers, traditional
and homophone name variants, changed phones, moved addresses), so quality is measured at scale too.
Goals (issue 5): ≤ 60 s and peak RSS ≤ 4 GB for 1M identities; precision ≥ 0.999, recall ≥ 0.995.

Then the daily case: 1 % new identities (BENCH_EMPI_NEW_PERCENT, default 1) arrive and are linked
incrementally against the index of the first N (``empi.link.Previous``: only they are
standardised and scored, with the first run's model; the earlier pairs are kept), measured
against truth again. BENCH_EMPI_COMPARE=1 also re-links everything with the same model and counts
the identities whose person differs (0 expected).
"""

from __future__ import annotations

import os
import resource
import tempfile
import time
from pathlib import Path

import duckdb

from synthetic.names import SURNAMES

N = int(os.environ.get("BENCH_EMPI_IDENTITIES", "1000000"))
NEW_PERCENT = float(os.environ.get("BENCH_EMPI_NEW_PERCENT", "1"))
COMPARE = os.environ.get("BENCH_EMPI_COMPARE", "0") == "1"
_GIVEN = "伟芳娜敏静磊强军洋勇艳杰娟涛明超秀兰霞平刚桂英华建国玉梅丽红云飞鹏辉波宇浩然子轩欣怡涵萱晨博文俊睿泽"
_TRAD_FROM, _TRAD_TO = "陈张刘杨黄赵吴孙马国华伟丽军红兰东涛强飞鹏辉杰静", "陳張劉楊黃趙吳孫馬國華偉麗軍紅蘭東濤強飛鵬輝傑靜"
_HOMO_FROM, _HOMO_TO = "伟丽静敏芳军华明杰平红英涛辉鹏飞波峰林云浩宇轩晨欣怡涵", "玮莉靖闵方均桦铭洁萍虹瑛滔晖朋菲博锋琳芸昊雨萱辰馨仪晗"
_WEIGHTS = "[7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]"


def _check(first17: str) -> str:
    return (f"substr('10X98765432', 1 + (list_dot_product(list_transform(string_split({first17}, ''), "
            f"c -> (ascii(c) - 48)::INTEGER), {_WEIGHTS}) % 11)::INTEGER, 1)")


def make_identities(con: duckdb.DuckDBPyConnection, n: int) -> None:
    # surnames repeated by their per-mille share: a weighted draw by one uniform index
    weights = [SURNAMES.cum[0]] + [b - a for a, b in zip(SURNAMES.cum, SURNAMES.cum[1:])]
    surnames = [s for s, w in zip(SURNAMES.items, weights) for _ in range(max(1, round(w)))]
    sur_list = "[" + ", ".join(f"'{s}'" for s in surnames) + "]"
    given_list = "[" + ", ".join(f"'{c}'" for c in _GIVEN) + "]"
    persons = n // 2
    con.execute(f"""
    CREATE OR REPLACE TABLE persons AS
    WITH p AS (
        SELECT i AS pid,
               {sur_list}[1 + (hash(i, 1) % {len(surnames)})::INTEGER] AS surname,
               {given_list}[1 + (hash(i, 2) % {len(_GIVEN)})::INTEGER]
                 || CASE WHEN hash(i, 3) % 10 < 6 THEN {given_list}[1 + (hash(i, 4) % {len(_GIVEN)})::INTEGER] ELSE '' END
                 AS given,
               (1 + hash(i, 5) % 2)::VARCHAR AS sex,
               DATE '1930-01-01' + (hash(i, 6) % 34000)::INTEGER AS birth,
               ['511002','511011','511024','511025','511083'][1 + (hash(i, 7) % 5)::INTEGER] AS division,
               '某镇' || (hash(i, 8) % 40)::VARCHAR || '村' || (hash(i, 9) % 12)::VARCHAR || '组' || (hash(i, 10) % 90)::VARCHAR || '号'
                 AS address,
               '1' || ['3','5','8','9'][1 + (hash(i, 11) % 4)::INTEGER] || lpad((hash(i, 12) % 1000000000)::VARCHAR, 9, '0')
                 AS phone
        FROM range({persons}) t(i)
    ), ided AS (
        -- the sequence code is the person's rank among those of one division, birth date and sex,
        -- made odd/even by sex: unique (fewer than 500 people a cell here), as GB 11643 requires
        SELECT *, division || strftime(birth, '%Y%m%d')
                  || lpad(((row_number() OVER (PARTITION BY division, birth, sex ORDER BY pid) - 1) * 2
                           + CASE WHEN sex = '1' THEN 1 ELSE 0 END)::VARCHAR, 3, '0') AS first17
        FROM p
    )
    SELECT * EXCLUDE (first17), first17 || {_check('first17')} AS id18 FROM ided
    """)
    con.execute(f"""
    CREATE OR REPLACE TABLE identities AS
    WITH copies AS (
        SELECT p.*, c AS copy FROM persons p, range(3) r(c)
        WHERE c < 1 + (hash(pid, 20) % 3)   -- 1, 2 or 3 identities per person
    ), noisy AS (
        SELECT pid, copy, md5(pid::VARCHAR || ':' || copy::VARCHAR) AS identity_key,
               hash(pid, copy, 30) % 10000 AS u_id, hash(pid, copy, 31) % 10000 AS u_name,
               hash(pid, copy, 32) % 100 AS u_phone, hash(pid, copy, 33) % 100 AS u_addr,
               hash(pid, copy, 34) % 17 AS pos, hash(pid, copy, 35) % 9 AS step,
               surname || given AS name, sex, birth, division, address, phone, id18
        FROM copies
    )
    SELECT identity_key, pid AS person_uid, '01' AS id_type_code,
           CASE WHEN u_id < 400 THEN NULL                                      -- missing
                WHEN u_id < 550 THEN substr(id18, 1, pos::INTEGER)                 -- one digit mistyped
                     || ((ascii(substr(id18, pos::INTEGER + 1, 1)) - 48 + 1 + step) % 10)::VARCHAR
                     || substr(id18, pos::INTEGER + 2)
                WHEN u_id < 580 THEN '000000000000000000'                          -- placeholder
                ELSE id18 END AS id_number,
           CASE WHEN u_name < 100 THEN translate(name, '{_TRAD_FROM}', '{_TRAD_TO}')
                WHEN u_name < 200 THEN translate(name, '{_HOMO_FROM}', '{_HOMO_TO}')
                ELSE name END AS name,
           sex AS sex_code, birth AS birth_date,
           CASE WHEN u_phone < 4 THEN substr(phone, 1, 3) || lpad((hash(pid, copy, 36) % 100000000)::VARCHAR, 8, '0')
                ELSE phone END AS phone,
           CASE WHEN u_addr < 4 THEN ['511002','511011','511024','511025','511083'][1 + (hash(pid, copy, 37) % 5)::INTEGER]
                ELSE division END AS address_division_code,
           CASE WHEN u_addr < 4 THEN '新区' || (hash(pid, copy, 38) % 500)::VARCHAR || '号' ELSE address END AS address_text,
           'B' || (copy + 1)::VARCHAR AS institution_code, 'person' AS source_dataset, identity_key AS source_id
    FROM noisy
    LIMIT {n}
    """)


def bare_join(con: duckdb.DuckDBPyConnection) -> tuple[float, int]:
    """The limit: the candidate pairs of the same blocking rules, deduplicated across rules."""
    from empi.model import BLOCKING_KEYS

    t0 = time.perf_counter()
    parts = []
    for keys in BLOCKING_KEYS:
        cond = " AND ".join(f"l.{k} = r.{k}" for k in keys)
        parts.append(f"SELECT l.identity_key AS a, r.identity_key AS b FROM empi_std l JOIN empi_std r ON {cond} "
                     f"AND l.identity_key < r.identity_key WHERE l.det_key IS NULL OR r.det_key IS NULL")
    pairs = con.execute(f"SELECT count(*) FROM (SELECT DISTINCT a, b FROM ({' UNION ALL '.join(parts)}))").fetchone()[0]
    return time.perf_counter() - t0, pairs


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _report(con, tmp: Path, table: str) -> str:
    from empi.evaluate import evaluate, format_report

    truth = tmp / f"{table}.csv"
    con.execute(f"""COPY (SELECT institution_code, 'person' AS dataset, source_id, person_uid::VARCHAR AS person_uid
                          FROM {table}) TO '{truth}' (HEADER)""")
    con.execute(f"""CREATE OR REPLACE TEMP VIEW bench_links AS
                    SELECT i.institution_code, i.source_dataset, i.source_id, l.cluster_id AS person_key,
                           CASE WHEN s.det_key LIKE 'id:%' THEN s.id18 END AS id_number
                    FROM {table} i JOIN empi_links l USING (identity_key) JOIN empi_std s USING (identity_key)""")
    return format_report(evaluate(con, "bench_links", truth))


def main() -> None:
    from empi.link import Previous, link

    with tempfile.TemporaryDirectory() as tmp:
        con = duckdb.connect()
        t0 = time.perf_counter()
        # N identities linked in full, then NEW_PERCENT % more arrive (a random share by identity key)
        total = round(N * (1 + NEW_PERCENT / 100))
        make_identities(con, total)
        con.execute(f"""CREATE TABLE first AS SELECT * FROM identities
                        WHERE hash(identity_key, 'new') % 100000 >= {round(100000 * NEW_PERCENT / (100 + NEW_PERCENT))}""")
        n = con.execute("SELECT count(*) FROM first").fetchone()[0]
        print(f"{n:,} source identities of {con.execute('SELECT count(DISTINCT person_uid) FROM first').fetchone()[0]:,} "
              f"persons made in {time.perf_counter() - t0:.1f} s")
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        cpu0 = _cpu()
        t1 = time.perf_counter()
        result = link(con, "first")
        ours = time.perf_counter() - t1
        cpu = _cpu() - cpu0
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        limit, pairs = bare_join(con)
        print(f"EMPI: {ours:.1f} s ({', '.join(f'{k} {v:.1f} s' for k, v in result.seconds.items())}); "
              f"peak RSS {rss:,.0f} MB (before linking {rss0:,.0f} MB)")
        print(f"CPU time of the linkage {cpu:.1f} s (user + system, all threads): {cpu / ours:.2f} cores on average "
              f"(load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
        print(f"persons {result.persons:,}; by method {result.by_method}; review pairs {result.review_pairs:,}")
        print(f"limit (bare self-join, {pairs:,} candidate pairs): {limit:.2f} s; ratio limit/ours = {limit / ours:.3f}")
        print(f"goal: ≤ 60 s → {'met' if ours <= 60 else 'NOT met'}; peak RSS ≤ 4096 MB → "
              f"{'met' if rss <= 4096 else 'NOT met'}")
        print(_report(con, Path(tmp), "first"))

        # the daily delivery: the new identities linked against the index of the first run
        con.execute("ALTER TABLE empi_std RENAME TO prev_std")
        con.execute("ALTER TABLE empi_edges RENAME TO prev_edges")
        new = con.execute("SELECT count(*) FROM identities").fetchone()[0] - n
        cpu0 = _cpu()
        t2 = time.perf_counter()
        inc = link(con, "identities", previous=Previous("prev_std", "prev_edges", result.model))
        inc_s = time.perf_counter() - t2
        inc_cpu = _cpu() - cpu0
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"\nincremental: {new:,} new identities ({NEW_PERCENT:g} %) linked against the {n:,}: {inc_s:.1f} s "
              f"({', '.join(f'{k} {v:.1f} s' for k, v in inc.seconds.items())}), CPU {inc_cpu:.1f} s; "
              f"{inc.model['dirty']:,} identities scored; peak RSS {rss:,.0f} MB")
        print(f"RATIO incremental / full = {inc_s / ours:.3f} (CPU {inc_cpu / cpu:.3f}); persons {inc.persons:,}; "
              f"by method {inc.by_method}")
        print(_report(con, Path(tmp), "identities"))
        if COMPARE:
            con.execute("CREATE TABLE inc_links AS SELECT * FROM empi_links")
            t3 = time.perf_counter()
            full = link(con, "identities", model=result.model)
            diff = con.execute("SELECT count(*) FROM inc_links i FULL JOIN empi_links f USING (identity_key) "
                               "WHERE i.cluster_id IS DISTINCT FROM f.cluster_id").fetchone()[0]
            print(f"full re-link of all {n + new:,} with the same model: {time.perf_counter() - t3:.1f} s, persons "
                  f"{full.persons:,}; identities whose person differs from the incremental run: {diff:,}")
        con.close()


if __name__ == "__main__":
    main()

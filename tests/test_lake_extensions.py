"""The packaged DuckDB extensions installed into a fresh project-local directory by several processes
at once (parallel ingest writers, the multiprocess executor): each waits for the others, none reads a
half-written extension file."""

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

from healthlake.config import settings
from healthlake.lake import EXTENSIONS, ensure_extensions


def _install_and_list(barrier) -> list[str]:
    import duckdb

    from healthlake.lake import duckdb_config

    barrier.wait(timeout=60)          # every process starts installing at the same moment
    s = settings()
    ensure_extensions(s)
    con = duckdb.connect(config=duckdb_config(s))
    try:
        return sorted(r[0] for r in con.sql(
            "SELECT extension_name FROM duckdb_extensions() WHERE installed").fetchall())
    finally:
        con.close()


def test_processes_starting_together_install_the_extensions_once_each_without_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HEALTHLAKE_ROOT", str(tmp_path / "root"))
    ctx = multiprocessing.get_context("spawn")
    workers = 4
    with ctx.Manager() as manager:
        barrier = manager.Barrier(workers)
        with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            listed = list(pool.map(_install_and_list, [barrier] * workers))
    for names in listed:
        assert set(EXTENSIONS) <= set(names)
    ext_dir = settings().extension_dir
    leftovers = [p.name for p in ext_dir.rglob("*") if ".tmp-" in p.name]
    assert leftovers == []
    for name in EXTENSIONS:
        assert len(list(ext_dir.rglob(f"{name}.duckdb_extension"))) == 1

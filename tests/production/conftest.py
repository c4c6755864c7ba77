"""Production topology fixtures: one SeaweedFS and one PostgreSQL per test module (≈ 3 s to start),
a fresh bucket and catalog database per lake, and a tiny synthetic city."""

from __future__ import annotations

import itertools
import os
import shutil

import pytest

from healthlake.servers import postgres, production_env, seaweedfs

ENV = ("HEALTHLAKE_ROOT", "HEALTHLAKE_LANDING", "HEALTHLAKE_CATALOG", "HEALTHLAKE_DATA_PATH", "HEALTHLAKE_REGISTRY",
       "HEALTHLAKE_S3_ENDPOINT", "HEALTHLAKE_S3_KEY_ID", "HEALTHLAKE_S3_SECRET", "HEALTHLAKE_S3_USE_SSL",
       "HEALTHLAKE_LANDING_URL", "HEALTHLAKE_ARCHIVE_URL", "HEALTHLAKE_COLD_URL", "DAGSTER_HOME")
RESIDENTS, DAYS, SEED = 200, 1, 11
_lake_ids = itertools.count(1)


@pytest.fixture(scope="module")
def servers():
    if not shutil.which("runuser") and os.geteuid() == 0:
        pytest.fail("runuser is needed to run PostgreSQL as the postgres user")
    with seaweedfs() as s3, postgres() as pg:
        yield s3, pg


@pytest.fixture(scope="module")
def tiny_city(tmp_path_factory):
    from synthetic import generate_city

    out = tmp_path_factory.mktemp("city")
    generate_city(out, residents=RESIDENTS, days=DAYS, seed=SEED)
    return out


def use_production_lake(servers, root, registry, monkeypatch, landing_on_s3: bool = True) -> dict:
    """Point HEALTHLAKE_* at a fresh lake (new bucket + catalog database) on the module's servers."""
    s3, pg = servers
    n = next(_lake_ids)
    env = production_env(s3, pg, bucket=f"lake{n}", database=f"ducklake{n}")
    for k in ENV:
        monkeypatch.delenv(k, raising=False)
    env.update({"HEALTHLAKE_ROOT": str(root), "HEALTHLAKE_LANDING": str(root / "work" / "landing"),
                "HEALTHLAKE_REGISTRY": str(registry)})
    if landing_on_s3:
        s3.make_bucket(f"raw{n}")
        env["HEALTHLAKE_LANDING_URL"] = f"s3://raw{n}/landing/"
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env

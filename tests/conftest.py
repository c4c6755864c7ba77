"""Shared fixtures: every test gets a private lake under tmp_path (HEALTHLAKE_ROOT)."""

from __future__ import annotations

import pytest


@pytest.fixture
def lake_env(tmp_path, monkeypatch):
    root = tmp_path / "root"
    landing = tmp_path / "city" / "landing"
    landing.mkdir(parents=True)
    monkeypatch.setenv("HEALTHLAKE_ROOT", str(root))
    monkeypatch.setenv("HEALTHLAKE_LANDING", str(landing))
    for var in ("HEALTHLAKE_CATALOG", "HEALTHLAKE_DATA_PATH", "HEALTHLAKE_REGISTRY"):
        monkeypatch.delenv(var, raising=False)
    from healthlake.config import settings

    return settings()


@pytest.fixture(autouse=True)
def _lake_reader_closed():
    yield
    from tests.lake_reader import close_reader

    close_reader()

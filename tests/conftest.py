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


@pytest.fixture
def table_readers(monkeypatch):
    """The threads that read a lake table's sample or counts (catalog.scan's workers are named
    ``lake-scan-N``): a list of thread names, one per read."""
    import threading

    from catalog import classification, scan

    names: list[str] = []

    def spied(real):
        def read(*args, **kwargs):
            names.append(threading.current_thread().name)
            return real(*args, **kwargs)
        return read

    monkeypatch.setattr(classification, "sample_rows", spied(classification.sample_rows))
    monkeypatch.setattr(scan, "count_rows", spied(scan.count_rows))
    return names

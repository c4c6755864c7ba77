"""Configuration in one place.

Every setting is an environment variable with a documented default, read when
``settings()`` is called (never at import), so tests can set variables freely.

| variable                  | default                                   | meaning                                  |
|---------------------------|-------------------------------------------|------------------------------------------|
| HEALTHLAKE_ROOT           | <repo>/.healthlake                        | project-local state root (git-ignored)   |
| HEALTHLAKE_CATALOG        | <root>/lake/catalog.sqlite                | DuckLake catalog: a SQLite file path, or |
|                           |                                           | postgresql://user:pw@host:port/db        |
| HEALTHLAKE_DATA_PATH      | <root>/lake/data/                         | Parquet data: local folder or s3://b/p/  |
| HEALTHLAKE_LANDING        | <root>/city/landing                       | landing zone (institution extracts)      |
| HEALTHLAKE_REGISTRY       | <landing>/../registry.yaml                | feed registry (institutions and feeds)   |
| HEALTHLAKE_S3_ENDPOINT    | (none)                                    | host:port of an S3-compatible server     |
| HEALTHLAKE_S3_KEY_ID      | (none)                                    | S3 access key                            |
| HEALTHLAKE_S3_SECRET      | (none)                                    | S3 secret key                            |
| HEALTHLAKE_S3_REGION      | us-east-1                                 | S3 region                                |
| HEALTHLAKE_S3_USE_SSL     | false                                     | https to the S3 endpoint                 |
| HEALTHLAKE_LANDING_URL    | (none)                                    | s3://b/landing/: the landing zone on S3; |
|                           |                                           | HEALTHLAKE_LANDING is then its work copy |
| HEALTHLAKE_ARCHIVE_URL    | s3://<landing bucket>/archive/            | ingested raw extracts (hot)              |
| HEALTHLAKE_COLD_URL       | s3://<landing bucket>/cold/               | raw extracts older than COLD_AFTER_DAYS  |
| HEALTHLAKE_COLD_AFTER_DAYS| 30                                        | days before raw extracts go cold         |
| HEALTHLAKE_SNAPSHOT_RETENTION_DAYS | 7                                | lake snapshots kept for time travel      |
| HEALTHLAKE_DATA_DOCS_KEEP | 10                                        | GX Data Docs pages kept per table / batch |
| HEALTHLAKE_DEMO_RESIDENTS | 3000                                      | residents of the demo city               |
| HEALTHLAKE_DEMO_DAYS      | 3                                         | days of deliveries in the demo city      |
| HEALTHLAKE_SEED           | 20261123                                  | seed of the demo city                    |
| HEALTHLAKE_DUCKDB_THREADS | (DuckDB's: one per core)                  | threads of this process's DuckDB         |
|                           |                                           | instances (`healthlake demo`: 1)         |
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_REFERENCE = REPO_ROOT.parent / "shared" / "reference"


@dataclass(frozen=True)
class Settings:
    root: Path
    catalog: str
    data_path: str
    landing: Path
    registry: Path
    s3_endpoint: str | None
    s3_key_id: str | None
    s3_secret: str | None
    s3_region: str
    s3_use_ssl: bool
    landing_url: str | None
    archive_url: str | None
    cold_url: str | None
    cold_after_days: int
    snapshot_retention_days: float
    data_docs_keep: int
    demo_residents: int
    demo_days: int
    seed: int
    duckdb_threads: int | None = None

    @property
    def extension_dir(self) -> Path:
        return self.root / "duckdb_extensions"

    @property
    def city_dir(self) -> Path:
        """Where the synthetic city is written: landing/, registry.yaml and truth/."""
        return self.landing.parent

    @property
    def reports_dir(self) -> Path:
        return self.root / "reports"

    @property
    def dagster_home(self) -> Path:
        return self.root / "dagster"

    @property
    def dbt_target_dir(self) -> Path:
        return self.root / "dbt_target"

    @property
    def catalog_kind(self) -> str:
        return "postgres" if self.catalog.startswith(("postgres://", "postgresql://")) else "sqlite"

    @property
    def ducklake_uri(self) -> str:
        """The ATTACH string for DuckLake: ``ducklake:sqlite:<file>`` or ``ducklake:postgres:<libpq>``."""
        if self.catalog_kind == "postgres":
            return "ducklake:postgres:" + postgres_url_to_libpq(self.catalog)
        return "ducklake:sqlite:" + self.catalog

    @property
    def data_is_s3(self) -> bool:
        return self.data_path.startswith("s3://")

    @property
    def landing_is_s3(self) -> bool:
        return bool(self.landing_url)


def postgres_url_to_libpq(url: str) -> str:
    """postgresql://user:pw@host:port/db → 'dbname=db host=host port=port user=user password=pw'."""
    u = urlparse(url)
    parts = {"dbname": (u.path or "/postgres").lstrip("/") or "postgres", "host": u.hostname,
             "port": u.port, "user": unquote(u.username) if u.username else None,
             "password": unquote(u.password) if u.password else None}
    return " ".join(f"{k}={v}" for k, v in parts.items() if v not in (None, ""))


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def settings() -> Settings:
    root = Path(_env("HEALTHLAKE_ROOT", str(REPO_ROOT / ".healthlake"))).resolve()
    landing = Path(_env("HEALTHLAKE_LANDING", str(root / "city" / "landing"))).resolve()
    data_path = _env("HEALTHLAKE_DATA_PATH", str(root / "lake" / "data"))
    if not data_path.startswith("s3://"):
        data_path = str(Path(data_path).resolve())
    data_path = data_path.rstrip("/") + "/"
    landing_url = _env("HEALTHLAKE_LANDING_URL")
    archive_url = cold_url = None
    if landing_url:
        if not landing_url.startswith("s3://"):
            raise ValueError(f"HEALTHLAKE_LANDING_URL must be s3://bucket/prefix/, not {landing_url!r}")
        landing_url = landing_url.rstrip("/") + "/"
        bucket = landing_url[len("s3://"):].split("/", 1)[0]
        archive_url = _env("HEALTHLAKE_ARCHIVE_URL", f"s3://{bucket}/archive/").rstrip("/") + "/"
        cold_url = _env("HEALTHLAKE_COLD_URL", f"s3://{bucket}/cold/").rstrip("/") + "/"
    return Settings(
        root=root,
        catalog=_env("HEALTHLAKE_CATALOG", str(root / "lake" / "catalog.sqlite")),
        data_path=data_path,
        landing=landing,
        registry=Path(_env("HEALTHLAKE_REGISTRY", str(landing.parent / "registry.yaml"))).resolve(),
        s3_endpoint=_env("HEALTHLAKE_S3_ENDPOINT"),
        s3_key_id=_env("HEALTHLAKE_S3_KEY_ID"),
        s3_secret=_env("HEALTHLAKE_S3_SECRET"),
        s3_region=_env("HEALTHLAKE_S3_REGION", "us-east-1"),
        s3_use_ssl=_env("HEALTHLAKE_S3_USE_SSL", "false").lower() in ("1", "true", "yes"),
        landing_url=landing_url,
        archive_url=archive_url,
        cold_url=cold_url,
        cold_after_days=int(_env("HEALTHLAKE_COLD_AFTER_DAYS", "30")),
        snapshot_retention_days=float(_env("HEALTHLAKE_SNAPSHOT_RETENTION_DAYS", "7")),
        data_docs_keep=max(1, int(_env("HEALTHLAKE_DATA_DOCS_KEEP", "10"))),
        demo_residents=int(_env("HEALTHLAKE_DEMO_RESIDENTS", "3000")),
        demo_days=int(_env("HEALTHLAKE_DEMO_DAYS", "3")),
        seed=int(_env("HEALTHLAKE_SEED", "20261123")),
        duckdb_threads=int(_env("HEALTHLAKE_DUCKDB_THREADS")) if _env("HEALTHLAKE_DUCKDB_THREADS") else None,
    )

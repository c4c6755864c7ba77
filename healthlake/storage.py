"""The landing zone and raw archive on object storage (any S3: MinIO, SeaweedFS, Ceph RGW, cloud).

Institutions deliver extracts to ``<landing>/<institution>/<feed>/<file>``. With
``HEALTHLAKE_LANDING_URL=s3://bucket/landing/`` the landing zone is an S3 prefix; this module
lists it, downloads a file into the local work copy (``HEALTHLAKE_LANDING``) for the readers,
and after the ingest moves the object to the raw archive (hot), from where the maintenance job
moves extracts older than ``HEALTHLAKE_COLD_AFTER_DAYS`` to the cold prefix. An extract stays
retrievable from any of the three places (``locate_raw``).

    landing/<inst>/<feed>/<file>                   delivered, not yet ingested
    archive/<YYYY-MM-DD>/<inst>/<feed>/<file>      ingested on that day (hot)
    cold/<YYYY-MM-DD>/<inst>/<feed>/<file>         older than N days (cold: a cheaper bucket/tier)

Institutions upload with presigned PUT links (no credentials handed out). Without
``HEALTHLAKE_LANDING_URL`` the landing zone is the local folder and nothing is moved (the
embedded default).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path, PurePosixPath

from healthlake.config import Settings, settings as load_settings


class StorageError(RuntimeError):
    """Object storage refused an operation; the message names the object."""


@dataclass(frozen=True)
class LandingObject:
    key: str  # <institution>/<feed>/<file>, relative to the landing zone
    size: int
    etag: str  # content identity as the store reports it (S3 ETag, or size+mtime locally)
    modified: datetime

    @property
    def institution(self) -> str:
        return self.key.split("/", 1)[0]


def split_url(url: str) -> tuple[str, str]:
    """s3://bucket/some/prefix/ → ('bucket', 'some/prefix/')."""
    if not url.startswith("s3://"):
        raise StorageError(f"not an s3:// URL: {url!r}")
    bucket, _, prefix = url[len("s3://"):].partition("/")
    return bucket, (prefix.rstrip("/") + "/") if prefix.strip("/") else ""


def safe_key(key: str) -> str:
    """A landing key with no way out of its prefix (no '..', no absolute path, no empty part)."""
    parts = PurePosixPath(key).parts
    if not parts or key.startswith("/") or any(p in ("..", ".", "") for p in parts):
        raise StorageError(f"unsafe object key {key!r}")
    return "/".join(parts)


def minio_client(s: Settings | None = None):
    """A minio client for the configured endpoint, retrying connection errors with backoff.

    A restarted S3 server is back within seconds: urllib3 retries refused connections and 5xx
    answers 8 times, 0.2 s growing x2 (about 50 s in all), before the error reaches the caller.
    """
    import urllib3
    from minio import Minio

    s = s or load_settings()
    if not s.s3_endpoint:
        raise StorageError("HEALTHLAKE_S3_ENDPOINT is not set")
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=5, read=60), maxsize=10,
        retries=urllib3.Retry(total=8, connect=8, read=3, backoff_factor=0.2, backoff_max=16,
                              status_forcelist=[500, 502, 503, 504], allowed_methods=None))
    return Minio(s.s3_endpoint, access_key=s.s3_key_id, secret_key=s.s3_secret, secure=s.s3_use_ssl,
                 region=s.s3_region, http_client=http)


class LocalLanding:
    """The embedded default: the landing zone is a folder; nothing is archived or moved."""

    def __init__(self, s: Settings):
        self.s = s
        self.root = s.landing

    def list(self, institution: str | None = None) -> list[LandingObject]:
        base = self.root / institution if institution else self.root
        if not base.exists():
            return []
        out = []
        for p in sorted(base.rglob("*")):
            rel = p.relative_to(self.root)
            if p.is_file() and not any(part.startswith(".") for part in rel.parts):
                st = p.stat()
                out.append(LandingObject(rel.as_posix(), st.st_size, f"{st.st_size}-{st.st_mtime_ns}",
                                         datetime.fromtimestamp(st.st_mtime, timezone.utc)))
        return out

    def fetch(self, key: str) -> Path:
        return self.root / safe_key(key)

    def archive(self, key: str, today: date | None = None) -> str | None:
        return None  # the embedded landing zone keeps its files (the sha256 makes a rerun a no-op)

    def release(self, key: str) -> None:
        return None


class S3Landing:
    """The landing zone on an S3 prefix; ``fetch`` downloads into the local work copy."""

    def __init__(self, s: Settings, client=None):
        self.s = s
        self.client = client or minio_client(s)
        self.bucket, self.prefix = split_url(s.landing_url)
        self.archive_bucket, self.archive_prefix = split_url(s.archive_url)
        self.cold_bucket, self.cold_prefix = split_url(s.cold_url)
        self.work = s.landing

    # -- institutions' side
    def put(self, key: str, path: Path) -> None:
        self.client.fput_object(self.bucket, self.prefix + safe_key(key), str(path))

    def presigned_put(self, key: str, expires: timedelta = timedelta(days=1)) -> str:
        """An upload link for an institution: PUT the file body to it, no credentials needed."""
        return self.client.presigned_put_object(self.bucket, self.prefix + safe_key(key), expires=expires)

    def presigned_get(self, key: str, expires: timedelta = timedelta(hours=1)) -> str:
        """A download link for a raw extract, wherever it is now (landing, archive or cold)."""
        bucket, name = self.locate_raw(key)
        return self.client.presigned_get_object(bucket, name, expires=expires)

    # -- the pipeline's side
    def list(self, institution: str | None = None) -> list[LandingObject]:
        prefix = self.prefix + (safe_key(institution) + "/" if institution else "")
        out = []
        for o in self.client.list_objects(self.bucket, prefix=prefix, recursive=True):
            if o.is_dir:
                continue
            key = o.object_name[len(self.prefix):]
            if any(part.startswith(".") for part in key.split("/")):
                continue
            out.append(LandingObject(key, o.size or 0, (o.etag or "").strip('"'), o.last_modified))
        return sorted(out, key=lambda o: o.key)

    def fetch(self, key: str) -> Path:
        """Download the object into the work copy (atomically: a killed download leaves no file)."""
        dest = self.work / safe_key(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(f".{dest.name}.part")
        self.client.fget_object(self.bucket, self.prefix + key, str(part))
        part.replace(dest)
        return dest

    def archive(self, key: str, today: date | None = None) -> str:
        """Move an ingested object to archive/<date>/<key> (copy, then delete: never lost)."""
        from minio.commonconfig import CopySource

        today = today or datetime.now(timezone.utc).date()
        target = f"{self.archive_prefix}{today.isoformat()}/{safe_key(key)}"
        self.client.copy_object(self.archive_bucket, target, CopySource(self.bucket, self.prefix + key))
        self.client.remove_object(self.bucket, self.prefix + key)
        return f"s3://{self.archive_bucket}/{target}"

    def release(self, key: str) -> None:
        """Drop the local work copy of an object once it is ingested and archived."""
        p = self.work / safe_key(key)
        p.unlink(missing_ok=True)

    # -- hot → cold
    def move_cold(self, older_than_days: int | None = None, today: date | None = None) -> list[str]:
        """Move archived extracts whose archive date is more than N days ago to the cold prefix."""
        from minio.commonconfig import CopySource

        days = self.s.cold_after_days if older_than_days is None else older_than_days
        cutoff = (today or datetime.now(timezone.utc).date()) - timedelta(days=days)
        moved = []
        for o in self.client.list_objects(self.archive_bucket, prefix=self.archive_prefix, recursive=True):
            rest = o.object_name[len(self.archive_prefix):]
            day = rest.split("/", 1)[0]
            try:
                archived_on = date.fromisoformat(day)
            except ValueError:
                continue
            if archived_on >= cutoff:
                continue
            target = self.cold_prefix + rest
            self.client.copy_object(self.cold_bucket, target, CopySource(self.archive_bucket, o.object_name))
            self.client.remove_object(self.archive_bucket, o.object_name)
            moved.append(f"s3://{self.cold_bucket}/{target}")
        return moved

    def locate_raw(self, key: str) -> tuple[str, str]:
        """(bucket, object) of a raw extract: in the landing zone, the hot archive or cold storage.

        The newest archived copy wins when the same name was delivered on several days.
        """
        from minio.error import S3Error

        key = safe_key(key)
        try:
            self.client.stat_object(self.bucket, self.prefix + key)
            return self.bucket, self.prefix + key
        except S3Error as e:
            if e.code not in ("NoSuchKey", "NoSuchObject", "ResourceNotFound"):
                raise
        for bucket, prefix in ((self.archive_bucket, self.archive_prefix), (self.cold_bucket, self.cold_prefix)):
            hits = [o.object_name for o in self.client.list_objects(bucket, prefix=prefix, recursive=True)
                    if o.object_name[len(prefix):].partition("/")[2] == key]  # <date>/<key>
            if hits:
                return bucket, sorted(hits)[-1]
        raise StorageError(f"raw extract {key!r} is in neither the landing zone, the archive nor cold storage")

    def retrieve(self, key: str, dest: Path) -> Path:
        bucket, name = self.locate_raw(key)
        self.client.fget_object(bucket, name, str(dest))
        return dest


def landing_store(s: Settings | None = None):
    """The landing zone of this deployment: S3 when HEALTHLAKE_LANDING_URL is set, else the local folder."""
    s = s or load_settings()
    return S3Landing(s) if s.landing_is_s3 else LocalLanding(s)


def upload_tree(s: Settings, local_landing: Path, subdir: str = "") -> int:
    """Put every file of a local landing folder (e.g. a generated city), or of one of its
    subfolders, into the S3 landing zone, under the same relative paths."""
    store = S3Landing(s)
    n = 0
    for p in sorted((Path(local_landing) / subdir).rglob("*")):
        if p.is_file():
            store.put(p.relative_to(local_landing).as_posix(), p)
            n += 1
    return n

"""The lake's raw area: original delivered files kept byte for byte, content-addressed.

One small S3-generic surface: ``put_raw(s, key, data)`` writes ``<raw root>/<key>`` and returns
its URI; ``get_raw(s, uri)`` reads it back. The raw root is a sibling of the DuckLake data path
(``<root>/lake/data/`` → ``<root>/lake/raw/``; ``s3://b/lake/data/`` → ``s3://b/lake/raw/``),
never inside it: DuckLake's orphan-file cleanup deletes files under its data path that no
snapshot references. ``HEALTHLAKE_RAW_PATH`` overrides it (needed when the data path is a
bucket root). S3 goes through the ``minio`` client, which speaks plain S3 (MinIO, SeaweedFS,
Ceph RGW, cloud S3) with the lake's HEALTHLAKE_S3_* settings.

Keys are content-addressed (the caller puts the sha256 in the key), so writing the same
content again is a no-op and a retried batch never duplicates an archive object.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

from healthlake.config import Settings

__all__ = ["get_raw", "put_raw", "raw_root"]


def raw_root(s: Settings) -> str:
    override = os.environ.get("HEALTHLAKE_RAW_PATH")
    if override:
        root = override if override.startswith("s3://") else str(Path(override).resolve())
        return root.rstrip("/") + "/"
    data = s.data_path.rstrip("/")
    if data.startswith("s3://"):
        bucket, _, prefix = data[len("s3://"):].partition("/")
        parent = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        return f"s3://{bucket}/{parent + '/' if parent else ''}raw/"
    return str(Path(data).parent / "raw") + "/"


def _s3_client(s: Settings):
    from minio import Minio

    if not s.s3_endpoint:
        raise RuntimeError("the raw area is on S3 but HEALTHLAKE_S3_ENDPOINT is not set")
    return Minio(s.s3_endpoint, access_key=s.s3_key_id, secret_key=s.s3_secret, secure=s.s3_use_ssl,
                 region=s.s3_region)


def _split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri[len("s3://"):].partition("/")
    return bucket, key


def put_raw(s: Settings, key: str, data: bytes) -> str:
    """Store ``data`` at ``<raw root>/<key>`` unless an object is already there; return its URI."""
    key = key.lstrip("/")
    if ".." in Path(key).parts:
        raise ValueError(f"raw key {key!r} must not climb out of the raw area")
    uri = raw_root(s) + key
    if uri.startswith("s3://"):
        from minio.error import S3Error

        client = _s3_client(s)
        bucket, obj = _split_s3(uri)
        try:
            client.stat_object(bucket, obj)
            return uri
        except S3Error as e:
            if e.code not in ("NoSuchKey", "NoSuchObject", "NotFound"):
                raise
        client.put_object(bucket, obj, io.BytesIO(data), len(data))
        return uri
    path = Path(uri)
    if path.exists():
        return uri
    path.parent.mkdir(parents=True, exist_ok=True)
    # write-then-rename: a reader never sees half an archive file
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return uri


def get_raw(s: Settings, uri: str) -> bytes:
    if uri.startswith("s3://"):
        bucket, obj = _split_s3(uri)
        resp = _s3_client(s).get_object(bucket, obj)
        try:
            return resp.read()
        finally:
            resp.close()
            resp.release_conn()
    return Path(uri).read_bytes()

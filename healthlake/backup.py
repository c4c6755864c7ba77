"""Backup and restore of the lake (容灾备份): the catalog and the data files, restorable elsewhere.

    backup_lake(dest)          dest/catalog.dump (pg_dump -Fc, or the SQLite file), dest/data/…,
                               dest/manifest.json
    restore_lake(dest, s)      into an empty catalog database and an empty data path of ``s``

Consistency: the catalog is dumped first, then the data files are copied. Every file the dumped
catalog references is still there while we copy, because the maintenance job (the only deleter)
is held off by its lock for the whole backup; files written after the dump are simply extra.
DuckLake stores data file paths relative to the lake's data path, so a restore to another bucket
or folder only has to record the new data path in the catalog.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path

from healthlake.config import Settings, postgres_url_to_libpq, settings as load_settings
from healthlake.lake import catalog_lock


class BackupError(RuntimeError):
    pass


def _pg_tool(name: str) -> str:
    from healthlake.servers import postgres_bin_dir

    return str(postgres_bin_dir() / name)


def _data_objects(s: Settings):
    """(relative key, size) of every file under the data path."""
    if s.data_is_s3:
        from healthlake.storage import minio_client, split_url

        client = minio_client(s)
        bucket, prefix = split_url(s.data_path)
        for o in client.list_objects(bucket, prefix=prefix, recursive=True):
            if not o.is_dir:
                yield o.object_name[len(prefix):], o.size
    else:
        root = Path(s.data_path)
        for p in sorted(root.rglob("*")):
            if p.is_file():
                yield p.relative_to(root).as_posix(), p.stat().st_size


def backup_lake(dest: Path, s: Settings | None = None) -> Path:
    s = s or load_settings()
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise BackupError(f"{dest} is not empty: back up into a new folder")
    (dest / "data").mkdir(parents=True, exist_ok=True)
    with catalog_lock("maintenance", s):
        taken = datetime.now(timezone.utc)
        if s.catalog_kind == "postgres":
            r = subprocess.run([_pg_tool("pg_dump"), "-Fc", "-f", str(dest / "catalog.dump"), "-d",
                                postgres_url_to_libpq(s.catalog)], capture_output=True, text=True)
            if r.returncode:
                raise BackupError(f"pg_dump failed: {r.stderr.strip()}")
        else:
            import sqlite3

            src = sqlite3.connect(s.catalog)
            out = sqlite3.connect(dest / "catalog.sqlite")
            with out:
                src.backup(out)  # a consistent copy even while a writer commits
            src.close()
            out.close()
        files = n_bytes = 0
        if s.data_is_s3:
            from healthlake.storage import minio_client, split_url

            client = minio_client(s)
            bucket, prefix = split_url(s.data_path)
            for key, size in list(_data_objects(s)):
                target = dest / "data" / key
                target.parent.mkdir(parents=True, exist_ok=True)
                client.fget_object(bucket, prefix + key, str(target))
                files, n_bytes = files + 1, n_bytes + size
        else:
            for key, size in list(_data_objects(s)):
                target = dest / "data" / key
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(Path(s.data_path) / key, target)
                files, n_bytes = files + 1, n_bytes + size
    manifest = {"taken_at": taken.isoformat(), "catalog_kind": s.catalog_kind, "data_path": s.data_path,
                "files": files, "bytes": n_bytes}
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return dest


def restore_lake(src: Path, s: Settings | None = None) -> dict:
    """Restore a backup into the catalog and data path of ``s`` (both must be empty)."""
    s = s or load_settings()
    src = Path(src)
    manifest = json.loads((src / "manifest.json").read_text(encoding="utf-8"))
    if manifest["catalog_kind"] != s.catalog_kind:
        raise BackupError(f"backup of a {manifest['catalog_kind']} catalog cannot go into a {s.catalog_kind} one")
    if any(True for _ in _data_objects(s)):
        raise BackupError(f"the data path {s.data_path} is not empty: restore into an empty one")
    if s.catalog_kind == "postgres":
        r = subprocess.run([_pg_tool("pg_restore"), "--no-owner", "--exit-on-error", "-d",
                            postgres_url_to_libpq(s.catalog), str(src / "catalog.dump")], capture_output=True, text=True)
        if r.returncode:
            raise BackupError(f"pg_restore failed: {r.stderr.strip()}")
        import psycopg2

        con = psycopg2.connect(postgres_url_to_libpq(s.catalog))
        try:
            with con, con.cursor() as cur:
                cur.execute("UPDATE ducklake_metadata SET value = %s WHERE key = 'data_path' AND scope IS NULL",
                            (s.data_path,))
        finally:
            con.close()
    else:
        import sqlite3

        if Path(s.catalog).exists():
            raise BackupError(f"{s.catalog} exists: restore into a new catalog file")
        Path(s.catalog).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / "catalog.sqlite", s.catalog)
        con = sqlite3.connect(s.catalog)
        with con:
            con.execute("UPDATE ducklake_metadata SET value = ? WHERE key = 'data_path' AND scope IS NULL",
                        (s.data_path,))
        con.close()
    data = src / "data"
    if s.data_is_s3:
        from healthlake.storage import minio_client, split_url

        client = minio_client(s)
        bucket, prefix = split_url(s.data_path)
        for p in sorted(data.rglob("*")):
            if p.is_file():
                client.fput_object(bucket, prefix + p.relative_to(data).as_posix(), str(p))
    else:
        shutil.copytree(data, s.data_path, dirs_exist_ok=True)
    return manifest


def main(argv: list[str] | None = None) -> int:
    """``python -m healthlake.backup backup DEST`` · ``python -m healthlake.backup restore SRC``

    The lake is the one configured by HEALTHLAKE_* (restore: an empty catalog and data path)."""
    import argparse
    import sys

    p = argparse.ArgumentParser(prog="python -m healthlake.backup",
                                description="湖仓备份与恢复（目录库 + 数据文件）")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("backup", help="备份到一个新的空目录").add_argument("dest", type=Path)
    sub.add_parser("restore", help="从备份恢复到空的目录库和数据路径").add_argument("src", type=Path)
    a = p.parse_args(argv)
    try:
        if a.cmd == "backup":
            dest = backup_lake(a.dest)
            m = json.loads((dest / "manifest.json").read_text(encoding="utf-8"))
            print(f"已备份：{m['files']} 个数据文件，{m['bytes']:,} 字节，目录库 → {dest}")
        else:
            m = restore_lake(a.src)
            print(f"已恢复：{m['files']} 个数据文件（备份时间 {m['taken_at']}）")
    except BackupError as e:
        print(f"失败：{e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

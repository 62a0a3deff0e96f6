"""Where raw videos land: a local folder or an ``s3://bucket/prefix``, and batch planning over it.

Exactly-once ingestion rests on *object versions*: an S3 object's ETag, or a local file's size and
modification time. A batch is the set of object versions not yet claimed by any earlier batch; its
manifest (``batches/<batch_id>.json`` in the lake) is written before a run is requested, and the
batch id is derived from the versions it holds, so two evaluations that see the same new objects
plan the same batch and Dagster's run key dedupes them. Files still being written (a temporary
suffix, a hidden name, or modified within ``settle_seconds``) are left for a later tick.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

from sav_assets.lib.store.lake import Lake, S3Settings, safe_relpath, split_s3_uri

PARTIAL_SUFFIXES = (".part", ".partial", ".tmp", ".crdownload", ".download", ".uploading", ".filepart", ".!sync")


@dataclass
class SourceObject:
    key: str                  # path relative to the source root, '/'-separated
    uri: str                  # full URI (absolute local path or s3://bucket/key)
    size: int
    version: str              # ETag on S3, "<size>:<mtime_ns>" locally
    mtime: float              # seconds since epoch
    metadata: dict = field(default_factory=dict)  # S3 user metadata (x-amz-meta-*)

    def to_json(self) -> dict:
        return asdict(self)


def is_partial_name(key: str) -> bool:
    name = key.rsplit("/", 1)[-1]
    return name.startswith(".") or name.startswith("~") or name.lower().endswith(PARTIAL_SUFFIXES)


class Source:
    """List and read objects under a source URI (local folder or S3 prefix)."""

    def __init__(self, uri: str, s3: S3Settings | None = None, s3_client=None):
        self.uri = str(uri)
        self.is_s3 = self.uri.startswith("s3://")
        if self.is_s3:
            self.bucket, self.prefix = split_s3_uri(self.uri)
            self.s3 = s3 or S3Settings.from_env()
            self._client = s3_client
        else:
            self.root = Path(self.uri).expanduser().resolve()

    @property
    def client(self):
        if self._client is None:
            self._client = self.s3.client()
        return self._client

    def list_objects(self, with_metadata: bool = False) -> list[SourceObject]:
        out: list[SourceObject] = []
        if self.is_s3:
            pfx = f"{self.prefix}/" if self.prefix else ""
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=pfx):
                for o in page.get("Contents", []):
                    key = o["Key"][len(pfx):]
                    if not key or key.endswith("/"):
                        continue
                    try:
                        key = safe_relpath(key)
                    except ValueError:
                        continue
                    meta = {}
                    if with_metadata:
                        meta = self.client.head_object(Bucket=self.bucket, Key=o["Key"]).get("Metadata", {})
                    out.append(SourceObject(key=key, uri=f"s3://{self.bucket}/{o['Key']}", size=int(o["Size"]),
                                            version=o["ETag"].strip('"'), mtime=o["LastModified"].timestamp(),
                                            metadata=meta))
        else:
            if not self.root.exists():
                raise FileNotFoundError(f"source folder does not exist: {self.root}")
            for dirpath, dirs, files in os.walk(self.root):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for f in sorted(files):
                    p = Path(dirpath) / f
                    try:
                        st = p.lstat()
                    except FileNotFoundError:
                        continue
                    if p.is_symlink():
                        continue  # never follow links out of the source root
                    key = p.relative_to(self.root).as_posix()
                    out.append(SourceObject(key=key, uri=str(p), size=int(st.st_size),
                                            version=f"{st.st_size}:{st.st_mtime_ns}", mtime=st.st_mtime))
        return sorted(out, key=lambda o: o.key)

    def object_uri(self, key: str) -> str:
        key = safe_relpath(key)
        if self.is_s3:
            return f"s3://{self.bucket}/{self.prefix + '/' if self.prefix else ''}{key}"
        return str(self.root / key)

    def read_bytes(self, key: str) -> bytes:
        key = safe_relpath(key)
        if self.is_s3:
            k = f"{self.prefix}/{key}" if self.prefix else key
            return self.client.get_object(Bucket=self.bucket, Key=k)["Body"].read()
        return (self.root / key).read_bytes()

    def head_metadata(self, key: str) -> dict:
        if not self.is_s3:
            return {}
        k = f"{self.prefix}/{safe_relpath(key)}" if self.prefix else safe_relpath(key)
        return self.client.head_object(Bucket=self.bucket, Key=k).get("Metadata", {})

    @contextlib.contextmanager
    def local_copy(self, key: str) -> Iterator[str]:
        """A local path for the object: the file itself locally, a temporary download from S3."""
        key = safe_relpath(key)
        if not self.is_s3:
            yield str(self.root / key)
            return
        tmpdir = tempfile.mkdtemp(prefix="sav-src-")
        try:
            dest = os.path.join(tmpdir, key.rsplit("/", 1)[-1])
            k = f"{self.prefix}/{key}" if self.prefix else key
            self.client.download_file(self.bucket, k, dest)
            yield dest
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)


@contextlib.contextmanager
def local_file(uri: str, s3: S3Settings | None = None, s3_client=None) -> Iterator[str]:
    """A local path for any local path or s3:// URI (downloaded to a temporary file)."""
    if not uri.startswith("s3://"):
        yield uri
        return
    bucket, key = split_s3_uri(uri)
    client = s3_client or (s3 or S3Settings.from_env()).client()
    tmpdir = tempfile.mkdtemp(prefix="sav-obj-")
    try:
        dest = os.path.join(tmpdir, key.rsplit("/", 1)[-1] or "object")
        client.download_file(bucket, key, dest)
        yield dest
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


# ---- batch planning ------------------------------------------------------------------------------

@dataclass
class BatchPlan:
    batch_id: str
    objects: list[SourceObject]
    pending: list[SourceObject]     # seen but not yet settled (still being written)
    source_uri: str

    def manifest(self) -> dict:
        return {"batch_id": self.batch_id, "source_uri": self.source_uri,
                "objects": [o.to_json() for o in self.objects]}


def version_token(o: SourceObject) -> str:
    return f"{o.key}\x00{o.version}"


def batch_id_for(objects: list[SourceObject], when: dt.datetime | None = None) -> str:
    h = hashlib.sha256("\n".join(sorted(version_token(o) for o in objects)).encode()).hexdigest()[:10]
    when = when or dt.datetime.now(dt.timezone.utc)
    return f"{when:%Y%m%d}-{h}"


def claimed_versions(lake: Lake) -> set[str]:
    """Object versions already claimed by a batch manifest in the lake."""
    seen: set[str] = set()
    for rel in lake.list("batches"):
        if not rel.endswith(".json"):
            continue
        try:
            doc = json.loads(lake.get_bytes(rel))
        except (ValueError, OSError):
            continue
        for o in doc.get("objects", []):
            seen.add(f"{o['key']}\x00{o['version']}")
    return seen


def plan_batch(source: Source, lake: Lake, settle_seconds: float = 30.0, now: float | None = None,
               when: dt.datetime | None = None) -> BatchPlan | None:
    """The next batch: settled object versions that no earlier batch claimed, or None."""
    import time

    now = time.time() if now is None else now
    claimed = claimed_versions(lake)
    ready, pending = [], []
    for o in source.list_objects():
        if version_token(o) in claimed or is_partial_name(o.key):
            continue
        if not source.is_s3 and now - o.mtime < settle_seconds:
            pending.append(o)  # may still be being copied; a later tick takes it
            continue
        ready.append(o)
    if not ready:
        return None
    return BatchPlan(batch_id=batch_id_for(ready, when), objects=ready, pending=pending, source_uri=source.uri)


def write_manifest(lake: Lake, plan: BatchPlan) -> str:
    rel = f"batches/{plan.batch_id}.json"
    if lake.exists(rel):
        return lake.uri(rel)
    return lake.put_bytes(rel, json.dumps(plan.manifest(), indent=1, sort_keys=True).encode(),
                          content_type="application/json")


def read_manifest(lake: Lake, batch_id: str) -> dict:
    rel = f"batches/{safe_relpath(batch_id)}.json"
    if not lake.exists(rel):
        raise FileNotFoundError(f"no manifest for batch {batch_id!r} at {lake.uri(rel)}")
    return json.loads(lake.get_bytes(rel))

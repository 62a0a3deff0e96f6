"""One object store, two backends: a local folder (:class:`LocalStore`) or an S3 prefix (:class:`S3Store`).

This module is the only place in sav-assets that knows S3 from local files, and the only place that
builds boto3 clients (:meth:`S3Settings.client`, honouring ``AWS_ENDPOINT_URL`` /
``AWS_ENDPOINT_URL_S3`` and the region variables). Everything above it (the lake's table layout, the
landing zone, compaction, the catalog, checkpoints) talks to an :class:`ObjectStore`.

Contract, the same for both backends (``tests/lib/store/test_objects.py`` runs one suite on each):

- Keys are relative, ``/``-separated and checked by :func:`safe_relpath`: an absolute key, a NUL or a
  ``..`` that would leave the root raises :class:`UnsafeKeyError`. A full URI is turned into a key by
  :meth:`key_for_uri`, which refuses a URI outside the store.
- Reading a missing object raises ``FileNotFoundError`` (a forbidden one ``PermissionError``) on both
  backends, so callers can tell "this object" from "the store is down" without knowing which it is.
- ``put``/``put_file`` are atomic: locally a temporary file beside the target is renamed over it (so a
  reader sees the old file or the new one), on S3 one PUT replaces the object.
- ``put_if_absent`` is a conditional create that only one writer can win (what batch claims rest on):
  locally a complete temporary file is hard-linked to the key (``link`` fails if the key exists, like
  ``O_EXCL``, and a reader never sees a half-written object), on S3 one PUT with ``If-None-Match: *``
  (HTTP 412 for every writer but the first). It returns whether this call created the object.
- Listings are sorted by key and skip our own temporary files (``.<name>.*.tmp``) and symbolic links
  (never followed out of the root). An object's *version* is ``<size>:<mtime_ns>`` locally and its
  ETag on S3; :meth:`signatures` gives ``<size>:<mtime_ns>`` / ``<size>:<ETag>``. Both change when an
  object is rewritten, even under the same name (they are stored in batch manifests and compaction
  pointers, so their spelling is part of the on-disk format).
- ``local_path`` is a context manager giving a file on this machine: the file itself locally, a
  temporary download on S3 (at ``<tmp>/<key>``, so its folder names are the key's) that is removed
  afterwards. ``write_tree`` is its counterpart for writing a
  folder: the target folder itself locally, a temporary folder uploaded on success on S3.
- ``staging_path`` + ``move_file`` publish a file written locally: locally the temporary file sits
  beside its target (hidden from listings) and publishing is a rename; on S3 it is one PUT.
- Capabilities instead of flags: ``local_root`` is the store's folder (``None`` on S3), used where a
  local file is a contract (the catalog's ``sav.duckdb``); ``partial_writes_visible`` says whether a
  listing may show an object that is still being written (a local copy in progress; never on S3).

Longer than ~400 lines on purpose: the two backends of one contract sit side by side, method for
method, so a change to one is seen next to the other.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from sav_assets.lib.util import atomic_copy, atomic_write_bytes

S3_SCHEME = "s3://"


class UnsafeKeyError(ValueError):
    """An object key or path tried to escape the lake or source root."""


def safe_relpath(rel: str) -> str:
    """Normalise a relative key and refuse anything that escapes its root."""
    if rel is None:
        raise UnsafeKeyError("empty key")
    rel = rel.replace("\\", "/")
    if rel.startswith("/") or "\x00" in rel:
        raise UnsafeKeyError(f"absolute or NUL-containing key refused: {rel!r}")
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise UnsafeKeyError(f"key escapes its root: {rel!r}")
    return "/".join(parts)


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix/`` -> ``("bucket", "some/prefix")``."""
    if not uri.startswith(S3_SCHEME):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, prefix = uri[len(S3_SCHEME):].partition("/")
    if not bucket:
        raise ValueError(f"S3 URI without a bucket: {uri!r}")
    return bucket, prefix.strip("/")


def _is_temp_name(name: str) -> bool:
    return name.startswith(".") and name.endswith(".tmp")


@dataclass
class S3Settings:
    """Endpoint and region of an S3-compatible store; credentials come from boto3's usual chain.

    ``client_factory`` lets an orchestrator supply its own client builder (the Dagster resources pass
    dagster-aws's ``S3Resource.get_client``); without it a plain boto3 session builds the client."""

    endpoint_url: str | None = None
    region_name: str | None = None
    client_factory: Callable[[], Any] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_env(cls) -> S3Settings:
        return cls(
            endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3") or None,
            region_name=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        )

    def client(self):
        """A new boto3 S3 client: the one place sav-assets builds one."""
        if self.client_factory is not None:
            return self.client_factory()
        import boto3

        return boto3.session.Session().client("s3", endpoint_url=self.endpoint_url, region_name=self.region_name)


@dataclass
class ObjectInfo:
    """One object of a listing (also a landing-zone object: ``SourceObject`` is this record)."""

    key: str                  # relative to the store's root, '/'-separated
    uri: str                  # full URI (absolute local path or s3://bucket/key)
    size: int
    version: str              # ETag on S3, "<size>:<mtime_ns>" locally
    mtime: float              # seconds since epoch
    metadata: dict = field(default_factory=dict)  # S3 user metadata (x-amz-meta-*); {} locally

    def to_json(self) -> dict:
        return asdict(self)


@runtime_checkable
class ObjectStore(Protocol):
    """What the lake, the landing zone and compaction need from a storage backend."""

    local_root: Path | None
    partial_writes_visible: bool

    def uri(self, key: str = "") -> str: ...
    def key_for_uri(self, uri: str) -> str: ...
    def list(self, prefix: str = "") -> list[str]: ...
    def list_objects(self, prefix: str = "", with_metadata: bool = False) -> list[ObjectInfo]: ...
    def signatures(self, prefix: str = "") -> dict[str, str]: ...
    def info(self, key: str) -> ObjectInfo: ...
    def head_metadata(self, key: str) -> dict: ...
    def put(self, key: str, data: bytes, content_type: str | None = None) -> str: ...
    def put_if_absent(self, key: str, data: bytes, content_type: str | None = None) -> bool: ...
    def put_file(self, key: str, local_path: str | os.PathLike) -> str: ...
    def staging_path(self, key: str, work_dir: str | os.PathLike) -> str: ...
    def move_file(self, key: str, local_path: str | os.PathLike) -> str: ...
    def put_tree(self, prefix: str, local_dir: str | os.PathLike) -> list[str]: ...
    def write_tree(self, prefix: str) -> contextlib.AbstractContextManager[str]: ...
    def get(self, key: str) -> bytes: ...
    def get_file(self, key: str, dest: str | os.PathLike) -> str: ...
    def exists(self, key: str) -> bool: ...
    def delete(self, key: str) -> None: ...
    def delete_prefix(self, prefix: str) -> None: ...
    def local_path(self, key_or_uri: str) -> contextlib.AbstractContextManager[str]: ...
    def arrow_filesystem(self) -> tuple[object, str]: ...


class _StoreBase:
    """What both backends share: key checks, listings built on ``list_objects``, put_tree."""

    local_root: Path | None = None
    partial_writes_visible = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri()!r})"

    def _rel(self, key_or_uri: str) -> str:
        """A key from a key or from a full URI under this store."""
        if key_or_uri.startswith((S3_SCHEME, "/")):
            return self.key_for_uri(key_or_uri)
        return safe_relpath(key_or_uri)

    def key_for_uri(self, uri: str) -> str:
        root = self.uri()
        if uri == root:
            return ""
        if not uri.startswith(root.rstrip("/") + "/"):
            raise UnsafeKeyError(f"{uri!r} is not under this store ({root})")
        return safe_relpath(uri[len(root.rstrip("/")) + 1:])

    def list(self, prefix: str = "") -> list[str]:
        """Relative keys of every object under ``prefix`` (recursive), sorted, temp files skipped."""
        return [o.key for o in self.list_objects(prefix)]

    def signatures(self, prefix: str = "") -> dict[str, str]:
        """``{key: signature}`` of every object under ``prefix`` (see the module docstring)."""
        return {o.key: self._signature(o) for o in self.list_objects(prefix)}

    def _signature(self, o: ObjectInfo) -> str:
        return o.version

    def head_metadata(self, key: str) -> dict:
        return self.info(key).metadata

    def put_tree(self, prefix: str, local_dir: str | os.PathLike) -> list[str]:
        """Put every file under ``local_dir`` at ``prefix/<its relative path>``; returns the keys."""
        prefix = safe_relpath(prefix)
        keys = []
        for dirpath, dirs, files in os.walk(local_dir):
            dirs.sort()
            for name in sorted(files):
                full = os.path.join(dirpath, name)
                key = f"{prefix}/{os.path.relpath(full, local_dir).replace(os.sep, '/')}".lstrip("/")
                self.put_file(key, full)
                keys.append(key)
        return keys


class LocalStore(_StoreBase):
    """Objects are files under ``root`` (created on the first write)."""

    partial_writes_visible = True    # a file being copied in is listed before it is complete

    def __init__(self, root: str | os.PathLike):
        self.local_root = Path(root).expanduser().resolve()

    def _path(self, key_or_uri: str) -> Path:
        rel = self._rel(key_or_uri)
        return self.local_root / rel if rel else self.local_root

    def uri(self, key: str = "") -> str:
        rel = safe_relpath(key) if key else ""
        return os.path.join(str(self.local_root), rel) if rel else str(self.local_root)

    def key_for_uri(self, uri: str) -> str:
        return super().key_for_uri(os.path.abspath(uri))

    def list_objects(self, prefix: str = "", with_metadata: bool = False) -> list[ObjectInfo]:
        base = str(self._path(prefix) if prefix else self.local_root)
        root = str(self.local_root).rstrip("/") + "/"
        out: list[ObjectInfo] = []
        stack = [base]
        while stack:        # os.scandir, not pathlib: a stat per entry and no path objects (100k parts)
            try:
                entries = list(os.scandir(stack.pop()))
            except (FileNotFoundError, NotADirectoryError):
                continue
            for e in entries:
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
                    continue
                if _is_temp_name(e.name) or e.is_symlink():
                    continue
                try:
                    st = e.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # removed while listing
                out.append(ObjectInfo(key=e.path[len(root):].replace(os.sep, "/"), uri=e.path,
                                      size=int(st.st_size), version=f"{st.st_size}:{st.st_mtime_ns}",
                                      mtime=st.st_mtime))
        return sorted(out, key=lambda o: o.key)

    def info(self, key: str) -> ObjectInfo:
        p = self._path(key)
        st = p.stat()
        return ObjectInfo(key=self._rel(key), uri=str(p), size=int(st.st_size),
                          version=f"{st.st_size}:{st.st_mtime_ns}", mtime=st.st_mtime)

    def put(self, key: str, data: bytes, content_type: str | None = None) -> str:
        return str(atomic_write_bytes(self._path(key), data))

    def put_if_absent(self, key: str, data: bytes, content_type: str | None = None) -> bool:
        """Create the object unless it exists: a finished temporary file hard-linked to the key."""
        target = self._path(key)
        tmp = target.parent / f".{target.name}.{uuid.uuid4().hex}.tmp"
        atomic_write_bytes(tmp, data)
        try:
            os.link(tmp, target)
            return True
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)

    def put_file(self, key: str, local_path: str | os.PathLike) -> str:
        return str(atomic_copy(local_path, self._path(key)))

    def staging_path(self, key: str, work_dir: str | os.PathLike) -> str:
        """A temporary file beside the target (hidden from listings), so ``move_file`` is a rename."""
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        return str(target.parent / f".{target.name}.{uuid.uuid4().hex}.tmp")

    def move_file(self, key: str, local_path: str | os.PathLike) -> str:
        """Make a finished local file the object (a rename when it sits beside the target)."""
        target = self._path(key)
        if os.path.dirname(os.path.abspath(local_path)) == str(target.parent):
            os.replace(local_path, target)
            return str(target)
        uri = self.put_file(key, local_path)
        os.unlink(local_path)
        return uri

    @contextlib.contextmanager
    def write_tree(self, prefix: str) -> Iterator[str]:
        """The target folder itself: files written there are the objects."""
        path = self._path(prefix)
        path.mkdir(parents=True, exist_ok=True)
        yield str(path)

    def get(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def get_file(self, key: str, dest: str | os.PathLike) -> str:
        shutil.copyfile(self._path(key), dest)
        return str(dest)

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> None:
        """Remove everything under ``prefix`` (its folder included)."""
        if not safe_relpath(prefix):
            raise UnsafeKeyError("delete_prefix needs a non-empty prefix")
        path = self._path(prefix)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)

    @contextlib.contextmanager
    def local_path(self, key_or_uri: str) -> Iterator[str]:
        yield str(self._path(key_or_uri))

    def arrow_filesystem(self):
        """A pyarrow filesystem plus the base path, for scanning tables without any DuckDB extension."""
        import pyarrow.fs as pafs

        return pafs.LocalFileSystem(), str(self.local_root)


class S3Store(_StoreBase):
    """Objects under ``s3://bucket/prefix``, through ``client`` (built from ``settings`` when not given)."""

    def __init__(self, bucket: str, prefix: str = "", client=None, settings: S3Settings | None = None):
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.settings = settings or S3Settings.from_env()
        self._client = client

    @property
    def client(self):
        if self._client is None:
            self._client = self.settings.client()
        return self._client

    def _key(self, key_or_uri: str) -> str:
        rel = self._rel(key_or_uri)
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def uri(self, key: str = "") -> str:
        root = f"{S3_SCHEME}{self.bucket}" + (f"/{self.prefix}" if self.prefix else "")
        rel = safe_relpath(key) if key else ""
        return f"{root}/{rel}" if rel else root

    def list_objects(self, prefix: str = "", with_metadata: bool = False) -> list[ObjectInfo]:
        full = self._key(prefix) if prefix else self.prefix
        if full:
            full += "/"
        strip = len(self.prefix) + 1 if self.prefix else 0
        out: list[ObjectInfo] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
            for o in page.get("Contents", []):
                raw = o["Key"]
                try:
                    key = safe_relpath(raw[strip:])
                except UnsafeKeyError:
                    continue
                if not key or raw.endswith("/") or _is_temp_name(key.rsplit("/", 1)[-1]):
                    continue
                meta = self.client.head_object(Bucket=self.bucket, Key=raw).get("Metadata", {}) if with_metadata else {}
                out.append(ObjectInfo(key=key, uri=f"{S3_SCHEME}{self.bucket}/{raw}", size=int(o["Size"]),
                                      version=o["ETag"].strip('"'), mtime=o["LastModified"].timestamp(),
                                      metadata=meta))
        return sorted(out, key=lambda o: o.key)

    def _signature(self, o: ObjectInfo) -> str:
        return f"{o.size}:{o.version}"

    def info(self, key: str) -> ObjectInfo:
        with _s3_reads(self, key):
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        return ObjectInfo(key=self._rel(key), uri=self.uri(self._rel(key)), size=int(head.get("ContentLength", 0)),
                          version=str(head.get("ETag", "")).strip('"'),
                          mtime=head["LastModified"].timestamp() if head.get("LastModified") else 0.0,
                          metadata=head.get("Metadata", {}))

    def put(self, key: str, data: bytes, content_type: str | None = None) -> str:
        extra = {"ContentType": content_type} if content_type else {}
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **extra)
        return self.uri(self._rel(key))

    def put_if_absent(self, key: str, data: bytes, content_type: str | None = None) -> bool:
        """Create the object unless it exists: one PUT with ``If-None-Match: *``. S3 answers 412 when
        the object exists, and 409 while a concurrent conditional write to the key is in flight (that
        one may still fail): then ask again."""
        extra = {"ContentType": content_type} if content_type else {}
        for attempt in range(8):
            try:
                self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, IfNoneMatch="*", **extra)
                return True
            except self.client.exceptions.ClientError as e:
                code = e.response.get("Error", {}).get("Code")
                if code == "PreconditionFailed":
                    return False
                if code != "ConditionalRequestConflict" or attempt == 7:
                    raise
                time.sleep(0.05 * 2 ** attempt)
        return False    # not reached

    def put_file(self, key: str, local_path: str | os.PathLike) -> str:
        self.client.upload_file(str(local_path), self.bucket, self._key(key))
        return self.uri(self._rel(key))

    def staging_path(self, key: str, work_dir: str | os.PathLike) -> str:
        """A file in ``work_dir`` named like the key, uploaded by ``move_file``."""
        return os.path.join(work_dir, self._rel(key).rsplit("/", 1)[-1])

    def move_file(self, key: str, local_path: str | os.PathLike) -> str:
        """Upload a finished local file as the object (one PUT), then remove the local file."""
        uri = self.put_file(key, local_path)
        os.unlink(local_path)
        return uri

    @contextlib.contextmanager
    def write_tree(self, prefix: str) -> Iterator[str]:
        """A temporary folder, uploaded under ``prefix`` when the block succeeds, removed in any case."""
        tmp = tempfile.mkdtemp(prefix="sav-tree-")
        try:
            yield tmp
            self.put_tree(prefix, tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def get(self, key: str) -> bytes:
        with _s3_reads(self, key):
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()

    def get_file(self, key: str, dest: str | os.PathLike) -> str:
        with _s3_reads(self, key):
            self.client.download_file(self.bucket, self._key(key), str(dest))
        return str(dest)

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except self.client.exceptions.ClientError:
            return False

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def delete_prefix(self, prefix: str) -> None:
        """Remove every object under ``prefix``."""
        if not safe_relpath(prefix):
            raise UnsafeKeyError("delete_prefix needs a non-empty prefix")
        for key in self.list(prefix):
            self.delete(key)

    @contextlib.contextmanager
    def local_path(self, key_or_uri: str) -> Iterator[str]:
        rel = self._rel(key_or_uri)
        tmpdir = tempfile.mkdtemp(prefix="sav-obj-")
        try:
            dest = os.path.join(tmpdir, rel or "object")    # the key's folders too: a part keeps its batch folder
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            self.get_file(rel, dest)
            yield dest
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)

    def arrow_filesystem(self):
        """``pyarrow.fs.S3FileSystem`` on the same endpoint and region, plus ``bucket/prefix``."""
        import pyarrow.fs as pafs

        ep = self.settings.endpoint_url
        kw = {}
        if ep:
            scheme, _, hostport = ep.partition("://")
            kw = {"endpoint_override": hostport or ep, "scheme": scheme if hostport else "https"}
        creds = {}
        if os.environ.get("AWS_ACCESS_KEY_ID"):
            creds = {"access_key": os.environ["AWS_ACCESS_KEY_ID"],
                     "secret_key": os.environ.get("AWS_SECRET_ACCESS_KEY", ""),
                     "session_token": os.environ.get("AWS_SESSION_TOKEN")}
        fs = pafs.S3FileSystem(region=self.settings.region_name or "us-east-1", **kw, **creds)
        return fs, f"{self.bucket}/{self.prefix}" if self.prefix else self.bucket


@contextlib.contextmanager
def _s3_reads(store: S3Store, key: str) -> Iterator[None]:
    """S3's answers about a missing or forbidden object as the OSErrors a local file gives
    (``FileNotFoundError``, ``PermissionError``): the same contract on both backends. Anything else (an
    unreachable endpoint, throttling) propagates unchanged: it is not about the object."""
    from botocore.exceptions import ClientError

    try:
        yield
    except ClientError as e:
        code = str(e.response.get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchKey", "NotFound"):
            raise FileNotFoundError(errno.ENOENT, "no such object", store.uri(key)) from e
        if code in ("403", "AccessDenied", "Forbidden"):
            raise PermissionError(errno.EACCES, "access denied", store.uri(key)) from e
        raise


def open_store(uri: str | os.PathLike, s3: S3Settings | None = None, client=None) -> ObjectStore:
    """The store for a root URI: ``s3://bucket/prefix`` (through ``client``, or one built from ``s3`` or
    the environment), anything else a local folder."""
    uri = str(uri)
    if uri.startswith(S3_SCHEME):
        bucket, prefix = split_s3_uri(uri)
        return S3Store(bucket, prefix, client=client, settings=s3)
    return LocalStore(uri)


def split_object_uri(uri: str) -> tuple[str, str]:
    """``(URI of the folder holding the object, the object's key in it)`` for one object's full URI."""
    uri = str(uri)
    if uri.startswith(S3_SCHEME) and not split_s3_uri(uri)[1]:
        raise ValueError(f"S3 URI without an object key: {uri!r}")
    parent, sep, name = uri.rstrip("/").rpartition("/")
    return ((parent or "/") if sep else "."), safe_relpath(name)


def store_for_object(uri: str, s3: S3Settings | None = None, client=None) -> tuple[ObjectStore, str]:
    """``(store of the folder holding the object, its key there)`` for one object's full URI."""
    folder, key = split_object_uri(uri)
    return open_store(folder, s3, client), key

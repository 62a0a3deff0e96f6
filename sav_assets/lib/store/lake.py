"""The lake: a local folder or an ``s3://bucket/prefix`` holding Parquet tables and files.

Every write is atomic: locally a temporary file is renamed over the target, on S3 a single PUT
replaces the object. Tables live under ``tables/<table>/<batch>/<part>.parquet``; replacing a batch
writes its new parts first and only then removes parts that the new version no longer has.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

SCHEMA_BATCH = "_schema"


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
    assert uri.startswith("s3://"), uri
    rest = uri[len("s3://"):]
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise ValueError(f"S3 URI without a bucket: {uri!r}")
    return bucket, prefix.strip("/")


@dataclass
class S3Settings:
    endpoint_url: str | None = None
    region_name: str | None = None

    @classmethod
    def from_env(cls) -> "S3Settings":
        return cls(
            endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3") or None,
            region_name=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        )

    def client(self):
        import boto3

        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint_url, region_name=self.region_name
        )


class Lake:
    """Read and write files and Parquet tables under one root URI."""

    def __init__(self, root: str | os.PathLike, s3: S3Settings | None = None, s3_client=None):
        root = str(root)
        self.is_s3 = root.startswith("s3://")
        if self.is_s3:
            self.bucket, self.prefix = split_s3_uri(root)
            self.root = f"s3://{self.bucket}" + (f"/{self.prefix}" if self.prefix else "")
            self.s3 = s3 or S3Settings.from_env()
            self._client = s3_client
        else:
            self.root = str(Path(root).expanduser().resolve())
            self.s3 = None
            self._client = None

    def __repr__(self) -> str:
        return f"Lake({self.root!r})"

    # ---- paths -------------------------------------------------------------------------------
    @property
    def client(self):
        if self._client is None:
            self._client = self.s3.client()
        return self._client

    def _key(self, rel: str) -> str:
        rel = safe_relpath(rel)
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def uri(self, rel: str = "") -> str:
        rel = safe_relpath(rel) if rel else ""
        if self.is_s3:
            return f"{self.root}/{rel}" if rel else self.root
        return os.path.join(self.root, rel) if rel else self.root

    def local_path(self, rel: str) -> Path:
        if self.is_s3:
            raise ValueError("local_path() is only for local lakes")
        return Path(self.uri(rel))

    def local_file(self, uri: str):
        """Context manager: a local path for a local path or ``s3://`` URI (downloaded to a temporary
        file, through this lake's S3 client when the lake itself is on S3)."""
        from sav_assets.lib.store.source import local_file

        return local_file(uri, self.s3, self.client if self.is_s3 else None)

    # ---- files -------------------------------------------------------------------------------
    def put_bytes(self, rel: str, data: bytes, content_type: str | None = None) -> str:
        if self.is_s3:
            extra = {"ContentType": content_type} if content_type else {}
            self.client.put_object(Bucket=self.bucket, Key=self._key(rel), Body=data, **extra)
            return self.uri(rel)
        path = self.local_path(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return str(path)

    def put_file(self, rel: str, local: str | os.PathLike) -> str:
        if self.is_s3:
            self.client.upload_file(str(local), self.bucket, self._key(rel))
            return self.uri(rel)
        path = self.local_path(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
        shutil.copyfile(local, tmp)
        os.replace(tmp, path)
        return str(path)

    def get_bytes(self, rel: str) -> bytes:
        if self.is_s3:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(rel))["Body"].read()
        return self.local_path(rel).read_bytes()

    def exists(self, rel: str) -> bool:
        if self.is_s3:
            try:
                self.client.head_object(Bucket=self.bucket, Key=self._key(rel))
                return True
            except self.client.exceptions.ClientError:
                return False
        return self.local_path(rel).exists()

    def delete(self, rel: str) -> None:
        if self.is_s3:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(rel))
        else:
            p = self.local_path(rel)
            if p.exists():
                p.unlink()

    def list(self, prefix: str = "") -> list[str]:
        """Relative keys of every file under ``prefix`` (recursive), sorted, temp files skipped."""
        prefix = safe_relpath(prefix) if prefix else ""
        out: list[str] = []
        if self.is_s3:
            out = [rel for rel, _obj in self._s3_objects(prefix)]
        else:
            base = Path(self.uri(prefix)) if prefix else Path(self.root)
            if not base.exists():
                return []
            for dirpath, _dirs, files in os.walk(base):
                for f in files:
                    if f.startswith(".") and f.endswith(".tmp"):
                        continue
                    out.append(os.path.relpath(os.path.join(dirpath, f), self.root).replace(os.sep, "/"))
        return sorted(out)

    def _s3_objects(self, prefix: str) -> Iterator[tuple[str, dict]]:
        """(key relative to the lake root, list_objects_v2 entry) for every object under ``prefix``."""
        full = self._key(prefix) if prefix else (self.prefix or "")
        if full and not full.endswith("/"):
            full += "/"
        strip = len(self.prefix) + 1 if self.prefix else 0
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
            for obj in page.get("Contents", []):
                yield obj["Key"][strip:], obj

    def signatures(self, prefix: str = "") -> dict[str, str]:
        """``{rel: version}`` of every file under ``prefix``: ``size:mtime_ns`` locally, the ETag on S3.

        A rewrite of a file (even under the same name) changes its version."""
        prefix = safe_relpath(prefix) if prefix else ""
        if self.is_s3:
            return {rel: f"{obj['Size']}:{obj['ETag'].strip(chr(34))}" for rel, obj in self._s3_objects(prefix)}
        out: dict[str, str] = {}
        for rel in self.list(prefix):
            st = os.stat(self.local_path(rel))
            out[rel] = f"{st.st_size}:{st.st_mtime_ns}"
        return out

    # ---- tables ------------------------------------------------------------------------------
    @staticmethod
    def table_dir(table: str) -> str:
        return f"tables/{safe_relpath(table)}"

    def table_glob(self, table: str) -> str:
        return self.uri(self.table_dir(table)) + "/*/*.parquet"

    def write_part(self, table: str, batch: str, part: str, tbl: pa.Table,
                   row_group_size: int | None = None, sort_by: list[tuple[str, str]] | None = None) -> str:
        """Atomically write one Parquet part of a batch (replacing a part of the same name)."""
        if sort_by and tbl.num_rows:
            tbl = tbl.sort_by(sort_by)
        buf = io.BytesIO()
        pq.write_table(tbl, buf, compression="zstd", row_group_size=row_group_size or 128 * 1024,
                       write_statistics=True)
        rel = f"{self.table_dir(table)}/{safe_relpath(batch)}/{safe_relpath(part)}.parquet"
        return self.put_bytes(rel, buf.getvalue())

    def replace_batch(self, table: str, batch: str, tbl: pa.Table, **kw) -> str:
        """Write a batch as a single part, then drop any other parts it had: a re-run never duplicates."""
        uri = self.write_part(table, batch, "part-0", tbl, **kw)
        for rel in self.list(f"{self.table_dir(table)}/{safe_relpath(batch)}"):
            if not rel.endswith("/part-0.parquet"):
                self.delete(rel)
        return uri

    def ensure_schema(self, table: str, schema: pa.Schema) -> None:
        """An empty part that gives a table's view its columns before any batch is written."""
        rel = f"{self.table_dir(table)}/{SCHEMA_BATCH}/empty.parquet"
        buf = io.BytesIO()
        pq.write_table(schema.empty_table(), buf)
        data = buf.getvalue()
        if not self.exists(rel) or self.get_bytes(rel) != data:
            self.put_bytes(rel, data)

    def table_parts(self, table: str, batches: Iterable[str] | None = None) -> list[str]:
        rels = [r for r in self.list(self.table_dir(table)) if r.endswith(".parquet")]
        rels = [r for r in rels if f"/{SCHEMA_BATCH}/" not in r]
        if batches is not None:
            wanted = {safe_relpath(b) for b in batches}
            rels = [r for r in rels if r.split("/")[2] in wanted]
        return rels

    def batches(self, table: str) -> list[str]:
        return sorted({r.split("/")[2] for r in self.table_parts(table)})

    def read_table(self, table: str, batches: Iterable[str] | None = None,
                   columns: list[str] | None = None, schema: pa.Schema | None = None) -> pa.Table:
        """All rows of a table (optionally some batches), unified by column name."""
        tables = []
        for rel in self.table_parts(table, batches):
            data = self.get_bytes(rel) if self.is_s3 else None
            src = pa.BufferReader(data) if data is not None else str(self.local_path(rel))
            t = pq.read_table(src, columns=columns)
            tables.append(t)
        if not tables:
            if schema is not None:
                empty = schema.empty_table()
                return empty.select(columns) if columns else empty
            return pa.table({c: pa.array([], pa.null()) for c in (columns or [])})
        return pa.concat_tables(tables, promote_options="permissive")

    def iter_parts(self, table: str) -> Iterator[tuple[str, pa.Table]]:
        for rel in self.table_parts(table):
            data = self.get_bytes(rel) if self.is_s3 else None
            src = pa.BufferReader(data) if data is not None else str(self.local_path(rel))
            yield rel, pq.read_table(src)

    # ---- pyarrow filesystem (DuckDB over S3) ---------------------------------------------------
    def arrow_filesystem(self):
        """A pyarrow filesystem plus the base path, for scanning tables without any DuckDB extension."""
        import pyarrow.fs as pafs

        if not self.is_s3:
            return pafs.LocalFileSystem(), self.root
        ep = self.s3.endpoint_url
        kw = {}
        if ep:
            scheme, _, hostport = ep.partition("://")
            kw = {"endpoint_override": hostport or ep, "scheme": scheme if hostport else "https"}
        creds = {}
        if os.environ.get("AWS_ACCESS_KEY_ID"):
            creds = {"access_key": os.environ["AWS_ACCESS_KEY_ID"],
                     "secret_key": os.environ.get("AWS_SECRET_ACCESS_KEY", ""),
                     "session_token": os.environ.get("AWS_SESSION_TOKEN")}
        fs = pafs.S3FileSystem(region=self.s3.region_name or "us-east-1", **kw, **creds)
        base = f"{self.bucket}/{self.prefix}" if self.prefix else self.bucket
        return fs, base

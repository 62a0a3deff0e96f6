"""The lake: the table layout of sav-assets over one object store (a local folder or ``s3://bucket/prefix``).

Tables live under ``tables/<table>/<batch>/<part>.parquet``; replacing a batch writes its new parts
first and only then removes parts that the new version no longer has. Every write is atomic (the
store's contract: a temporary file renamed over the target locally, one PUT on S3). After labeling, a batch's
per-video parts are merged into one *consolidated* part (:mod:`sav_assets.lib.store.consolidation`):

    tables/<table>/<batch>/consolidated/<generation>.parquet

whose footer (key ``sav_consolidated``) lists the part names it holds, with their row range and
version, and the older consolidated files it replaces. The *live* files of a batch
(:meth:`Lake.live_files`, what :meth:`table_parts`, :meth:`read_table`, the DuckDB views and
compaction read) are its consolidated files not replaced by a newer one, plus the plain parts that
no live consolidated file names: a part still present after being merged (consolidation writes the
merged file first, then deletes the parts) is never read twice, and a part rewritten after the merge
(a relabel) stays hidden until the next consolidation takes it in. :meth:`part_rows` reads one
part's rows wherever they live (the commit marker of resumable labeling). Storage itself
(keys, listings, versions, S3 clients) is :mod:`sav_assets.lib.store.objects`; the file methods here
(``put_bytes``, ``get_bytes``, ``list``, ...) are thin delegations to ``lake.store`` kept because every
stage writes through them.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from sav_assets.lib.store.objects import (  # noqa: F401 (UnsafeKeyError, S3Settings: public here too)
    ObjectStore,
    S3Settings,
    UnsafeKeyError,
    open_store,
    safe_relpath,
)

SCHEMA_BATCH = "_schema"
CONSOLIDATED = "consolidated"          # tables/<table>/<batch>/consolidated/<generation>.parquet
MANIFEST_KEY = b"sav_consolidated"     # footer key of a consolidated part: {"files": {...}, "parts": {...}}


def is_consolidated(rel: str) -> bool:
    bits = rel.split("/")
    return len(bits) == 5 and bits[3] == CONSOLIDATED and rel.endswith(".parquet")


def part_name(rel: str) -> str:
    """``tables/<t>/<batch>/<name>.parquet`` -> ``<name>``."""
    return rel.rsplit("/", 1)[-1][: -len(".parquet")]


class Lake:
    """Parquet tables and files under one root: ``Lake("data")``, ``Lake("s3://b/p")`` or ``Lake(store)``."""

    def __init__(self, root: str | os.PathLike | ObjectStore, s3: S3Settings | None = None, s3_client=None):
        self.store: ObjectStore = root if isinstance(root, ObjectStore) else open_store(root, s3, s3_client)
        self.root = self.store.uri()

    def __repr__(self) -> str:
        return f"Lake({self.root!r})"

    # ---- paths and files (delegated to the store) --------------------------------------------
    def uri(self, rel: str = "") -> str:
        return self.store.uri(rel)

    def local_path(self, rel: str) -> Path:
        """The path of ``rel`` inside a local lake (a lake on S3 has none: ValueError)."""
        if self.store.local_root is None:
            raise ValueError(f"local_path() is only for local lakes, not {self.root}")
        rel = safe_relpath(rel)
        return self.store.local_root / rel if rel else self.store.local_root

    def put_bytes(self, rel: str, data: bytes, content_type: str | None = None) -> str:
        return self.store.put(rel, data, content_type)

    def put_file(self, rel: str, local: str | os.PathLike) -> str:
        return self.store.put_file(rel, local)

    def get_bytes(self, rel: str) -> bytes:
        return self.store.get(rel)

    def exists(self, rel: str) -> bool:
        return self.store.exists(rel)

    def delete(self, rel: str) -> None:
        self.store.delete(rel)

    def list(self, prefix: str = "") -> list[str]:
        """Relative keys of every file under ``prefix`` (recursive), sorted, temp files skipped."""
        return self.store.list(prefix)

    def signatures(self, prefix: str = "") -> dict[str, str]:
        """``{rel: version}`` of every file under ``prefix``: ``size:mtime_ns`` locally, ``size:ETag`` on S3.

        A rewrite of a file (even under the same name) changes its version."""
        return self.store.signatures(prefix)

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
        """The live Parquet files of a table (or of some batches), schema part excluded."""
        rels = [r for r in self.list(self.table_dir(table)) if r.endswith(".parquet")]
        rels = [r for r in rels if f"/{SCHEMA_BATCH}/" not in r]
        if batches is not None:
            wanted = {safe_relpath(b) for b in batches}
            rels = [r for r in rels if r.split("/")[2] in wanted]
        return self.live_files(rels)

    # ---- consolidated parts ------------------------------------------------------------------
    def manifest(self, rel: str) -> dict:
        """The footer manifest of a consolidated part (cached: a generation's name is never reused)."""
        cache = self.__dict__.setdefault("_manifests", {})
        if rel not in cache:
            fs, base = self.arrow_filesystem()
            with fs.open_input_file(f"{base}/{rel}") as fh:
                meta = pq.ParquetFile(fh).metadata.metadata or {}     # the file's key-value metadata
            cache[rel] = json.loads(meta.get(MANIFEST_KEY, b'{"files": {}, "parts": {}}'))
        return cache[rel]

    def forget_manifest(self, rel: str) -> None:
        """Drop one cached footer manifest: for a consolidated part rewritten in place (a takedown)."""
        self.__dict__.get("_manifests", {}).pop(rel, None)

    def live_consolidated(self, rels: Iterable[str]) -> dict[str, list[str]]:
        """``{batch: [live consolidated files]}`` among ``rels`` (those no newer consolidated file replaces)."""
        by_batch: dict[str, list[str]] = {}
        for r in rels:
            if is_consolidated(r):
                by_batch.setdefault(r.split("/")[2], []).append(r)
        out = {}
        for b, cs in by_batch.items():
            replaced = {f for c in cs for f in self.manifest(c)["files"]}
            out[b] = sorted(c for c in cs if c not in replaced)
        return out

    def live_files(self, rels: Iterable[str]) -> list[str]:
        """``rels`` less the files a live consolidated part replaces (see the module docstring)."""
        rels = list(rels)
        if not any(is_consolidated(r) for r in rels):
            return rels
        live = self.live_consolidated(rels)
        shadowed = {f"{self.table_dir(c.split('/')[1])}/{b}/{name}.parquet"
                    for b, cs in live.items() for c in cs for name in self.manifest(c)["parts"]}
        keep = {c for cs in live.values() for c in cs}
        return [r for r in rels if r in keep or (not is_consolidated(r) and r not in shadowed)]

    def part_rows(self, table: str, batch: str, part: str) -> pa.Table | None:
        """The rows of part ``part`` of a batch: its own file, else its range in a consolidated part."""
        rel = f"{self.table_dir(table)}/{safe_relpath(batch)}/{safe_relpath(part)}.parquet"
        if self.exists(rel):
            return self._read_part(rel)
        cons = [r for r in self.list(f"{self.table_dir(table)}/{safe_relpath(batch)}/{CONSOLIDATED}")
                if is_consolidated(r)]
        for c in self.live_consolidated(cons).get(safe_relpath(batch), []):
            entry = self.manifest(c)["parts"].get(part)
            if entry is not None:
                start, n = entry["rows"]
                return self._read_part(c).slice(start, n)
        return None

    def part_names(self, table: str, batch: str) -> set[str]:
        """The names of a batch's parts, whether in their own file or merged into a consolidated one."""
        live = self.table_parts(table, [batch])
        return ({part_name(r) for r in live if not is_consolidated(r)}
                | {n for r in live if is_consolidated(r) for n in self.manifest(r)["parts"]})

    def clear_part(self, table: str, batch: str, part: str, schema: pa.Schema) -> None:
        """Remove a part's rows wherever they are. Deleting its file would not do once the batch is
        consolidated (the rows live on in the merged file): an empty part of the same name is a newer
        version, which the next consolidation takes instead of the merged rows."""
        if self.part_rows(table, batch, part) is not None:
            self.write_part(table, batch, part, schema.empty_table())

    def batches(self, table: str) -> list[str]:
        return sorted({r.split("/")[2] for r in self.table_parts(table)})

    def read_table(self, table: str, batches: Iterable[str] | None = None,
                   columns: list[str] | None = None, schema: pa.Schema | None = None) -> pa.Table:
        """All rows of a table (optionally some batches), unified by column name."""
        tables = [self._read_part(rel, columns) for rel in self.table_parts(table, batches)]
        if not tables:
            if schema is not None:
                empty = schema.empty_table()
                return empty.select(columns) if columns else empty
            return pa.table({c: pa.array([], pa.null()) for c in (columns or [])})
        return pa.concat_tables(tables, promote_options="permissive")

    def _read_part(self, rel: str, columns: list[str] | None = None) -> pa.Table:
        with self.store.local_path(rel) as path:   # the file itself locally, a download on S3
            return pq.read_table(path, columns=columns)

    def arrow_filesystem(self):
        """A pyarrow filesystem plus the base path, for scanning tables without any DuckDB extension."""
        return self.store.arrow_filesystem()

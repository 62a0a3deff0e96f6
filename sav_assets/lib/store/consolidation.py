"""Per-batch consolidation: a batch's per-video Parquet parts merged into one part, crash-safe.

Labeling writes one part per video and table (``tables/masklets/<batch>/<video_id>.sam2.parquet``)
so that each finished video is committed on its own and a re-run resumes by ``label_key``. At SA-V
scale that is ~51k files per table; after a batch's labeling, :func:`consolidate_batch` merges the
batch's live files into ``tables/<table>/<batch>/consolidated/<generation>.parquet`` and the table
holds a number of files proportional to batches. Order of operations:

1. the merged part is written (one atomic put) with its manifest in the footer: for each part name
   its row range and the version it was merged at, and the older consolidated files it replaces;
2. the merged plain parts and replaced consolidated files are deleted, each only if its version is
   still the merged one (a part rewritten meanwhile stays, and the next consolidation takes it).

Readers resolve the live files of a batch (:meth:`sav_assets.lib.store.lake.Lake.live_files`): from
the moment the merged part exists, the parts it names are no longer read, so a crash between 1 and 2
leaves extra files but never duplicate rows; the next run deletes them. A part rewritten after a
merge (a relabel) is hidden until the next consolidation, which takes its new rows instead of the
merged ones. The rows are copied part by part (memory: one part at a time). The resume marker stays
readable: :meth:`Lake.part_rows` finds a ``label_runs`` part inside the merged file.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from sav_assets.lib.store.lake import (
    CONSOLIDATED,
    MANIFEST_KEY,
    SCHEMA_BATCH,
    Lake,
    is_consolidated,
    part_name,
)
from sav_assets.lib.store.tables import SCHEMAS

# the tables labeling writes one part per video into (lib/label/batch.py)
LABEL_TABLES = ("masklets", "masklet_frames", "sav_annotations", "label_runs",
                "masklets_archive", "masklet_frames_archive", "label_runs_archive")
ROW_GROUP_ROWS = 128 * 1024     # as Lake.write_part; pieces are buffered up to it (one row group, not one per video)


@dataclass
class ConsolidationResult:
    table: str
    batch: str
    consolidated: str | None       # the new merged part, None when there was nothing to merge
    parts: int = 0                 # plain parts merged
    rows: int = 0
    deleted: int = 0               # files removed after the merged part was written
    seconds: float = 0.0


def _conform(tbl: pa.Table, schema: pa.Schema) -> pa.Table:
    """``tbl`` with exactly ``schema``'s columns (a missing one as nulls), in order, cast."""
    cols = [tbl.column(f.name) if f.name in tbl.column_names else pa.nulls(tbl.num_rows, f.type) for f in schema]
    return pa.Table.from_arrays(cols, schema=schema.remove_metadata())


def _plan(lake: Lake, rels: dict[str, str]) -> tuple[list[tuple], dict]:
    """What the merged part holds, in order: ``[(source rel, start, n or None (all), part name, version)]``,
    and the files it replaces (``{rel: version}``)."""
    live_cons = [c for cs in lake.live_consolidated(rels).values() for c in cs]
    pieces, files = [], {}
    for c in live_cons:
        files[c] = rels[c]
        for name, entry in sorted(lake.manifest(c)["parts"].items(), key=lambda kv: kv[1]["rows"][0]):
            plain = f"{c.rsplit('/', 2)[0]}/{name}.parquet"
            if plain in rels and rels[plain] != entry["version"]:
                continue                              # rewritten since the merge: the new file wins
            pieces.append((c, *entry["rows"], name, entry["version"]))
    taken = {p[3] for p in pieces}
    for c in rels:
        if is_consolidated(c) and c not in files:    # replaced already, left by an interrupted run
            files[c] = rels[c]
    for rel, version in sorted(rels.items()):
        if is_consolidated(rel):
            continue
        files[rel] = version
        if part_name(rel) not in taken:
            pieces.append((rel, 0, None, part_name(rel), version))
    return pieces, files


def consolidate_batch(lake: Lake, table: str, batch: str, *, min_parts: int = 2,
                      fault: Callable[[str], None] | None = None,
                      log: Callable[[str], None] = print) -> ConsolidationResult:
    """Merge the live files of one batch of ``table`` into one consolidated part (see the module docstring).

    Nothing is written when the batch already is one consolidated file (or fewer than ``min_parts``
    plain parts and no consolidated one). ``fault`` (tests) is called between writing the merged
    part and deleting what it replaces.
    """
    t0 = time.time()
    if table not in SCHEMAS or batch == SCHEMA_BATCH:
        raise ValueError(f"cannot consolidate {table}/{batch}")
    rels = {r: v for r, v in lake.signatures(f"{Lake.table_dir(table)}/{batch}").items() if r.endswith(".parquet")}
    plain = [r for r in rels if not is_consolidated(r)]
    cons = [r for r in rels if is_consolidated(r)]
    if (not cons and len(plain) < min_parts) or (len(cons) == 1 and not plain):
        return ConsolidationResult(table, batch, None)
    pieces, files = _plan(lake, rels)
    gen = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ") + "-" + uuid.uuid4().hex[:8]
    out_rel = f"{Lake.table_dir(table)}/{batch}/{CONSOLIDATED}/{gen}.parquet"
    parts = _write_merged(lake, out_rel, pieces, files, SCHEMAS[table])
    rows = sum(e["rows"][1] for e in parts.values())
    if fault is not None:
        fault(out_rel)
    deleted = _delete_replaced(lake, table, batch, files)
    res = ConsolidationResult(table, batch, out_rel, sum(1 for r in plain if part_name(r) in parts), rows,
                              deleted, time.time() - t0)
    log(f"{table}/{batch}: {len(files)} file(s) merged into {out_rel} ({rows:,} rows, {deleted} removed)")
    return res


def _write_merged(lake: Lake, out_rel: str, pieces: list[tuple], files: dict[str, str],
                  schema: pa.Schema) -> dict[str, dict]:
    """Copy ``pieces`` in order into one Parquet file (row groups of ~ROW_GROUP_ROWS rows), its manifest
    in the footer; returns the manifest's ``parts``."""
    fd, tmp = tempfile.mkstemp(prefix="sav-consolidate-", suffix=".parquet")
    os.close(fd)
    parts: dict[str, dict] = {}
    fs, base = lake.arrow_filesystem()
    try:
        with pq.ParquetWriter(tmp, schema, compression="zstd", write_statistics=True) as w:
            buf: list[pa.Table] = []
            cache: tuple[str, pa.Table] | None = None
            start = 0
            for src, first, n, name, version in pieces:
                if cache is None or cache[0] != src:
                    with fs.open_input_file(f"{base}/{src}") as fh:   # ParquetFile: no dataset machinery
                        cache = (src, pq.ParquetFile(fh).read())
                piece = cache[1] if n is None else cache[1].slice(first, n)
                buf.append(_conform(piece, schema))
                parts[name] = {"rows": [start, piece.num_rows], "version": version}
                start += piece.num_rows
                if sum(t.num_rows for t in buf) >= ROW_GROUP_ROWS:
                    w.write_table(pa.concat_tables(buf), row_group_size=ROW_GROUP_ROWS)
                    buf = []
            if buf:
                w.write_table(pa.concat_tables(buf), row_group_size=ROW_GROUP_ROWS)
            w.add_key_value_metadata({MANIFEST_KEY: json.dumps({"files": files, "parts": parts})})
        lake.put_file(out_rel, tmp)
    finally:
        os.unlink(tmp)
    return parts


def _delete_replaced(lake: Lake, table: str, batch: str, files: dict[str, str]) -> int:
    now = lake.signatures(f"{Lake.table_dir(table)}/{batch}")
    deleted = 0
    for rel, version in files.items():
        if now.get(rel) == version:      # a part rewritten meanwhile stays (the next run merges it)
            lake.delete(rel)
            deleted += 1
    return deleted


def consolidate_label_batch(lake: Lake, batch: str, tables: tuple[str, ...] = LABEL_TABLES,
                            log: Callable[[str], None] = print) -> list[ConsolidationResult]:
    """After a batch's labeling: merge its per-video parts in every table labeling writes."""
    return [consolidate_batch(lake, t, batch, log=log) for t in tables]

"""Compaction: a few big, globally sorted Parquet files per table, so SQL at SA-V scale opens few files.

The batch parts under ``tables/<table>/<batch>/`` stay the source of truth: the pipeline writes,
replaces and reads them exactly as before. Compaction adds a derived copy of a table, like a
materialised index:

    compacted/<table>/<generation>/data_<n>.parquet   sorted by SORT_KEYS[table], 64Ki-row groups,
                                                       plus a ``_sav_batch`` column (the source batch)
    compacted/<table>/CURRENT.json                     the generation in use and the version (size +
                                                       mtime, or ETag) of every source part it holds

``CURRENT.json`` is written last, in one atomic put: a crash while compacting leaves the previous
generation in use and an orphan folder that the next compaction removes.

Compaction is **incremental**: a run sorts only the parts of batches that are new or changed since
the last one into a new generation, a *segment* added to the pointer (``segments``: each with its
files, its source parts and its ``dead_batches``, batches whose rows in it a newer segment or a
later change replaced); the other segments are not read. When ``max_segments`` would be exceeded
(or with ``force``) every live part is sorted into one segment again. A lookup by video reads one
row group per segment.

The DuckDB view of a compacted table (``catalog``) reads the compacted files for every batch whose
parts are unchanged since compaction, and the parts themselves for the rest (batches written or
rewritten since). A batch rewritten after compaction is therefore never counted twice: its
compacted rows are filtered out (``_sav_batch NOT IN (...)``) once the views are refreshed, which
every pipeline write does; until then the view keeps showing the batch as it was compacted.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from sav_assets.lib.store.lake import SCHEMA_BATCH, Lake, is_consolidated
from sav_assets.lib.store.sqlfiles import literal, literal_list, render
from sav_assets.lib.store.tables import SCHEMAS

COMPACTED = "compacted"
POINTER = "CURRENT.json"
BATCH_COLUMN = "_sav_batch"
ROW_GROUP_SIZE = 64 * 1024
FILE_SIZE = "512MB"
# The compacted files serve queries: LZ4 decompresses ~2x faster than zstd, which halves a one-video
# lookup at SA-V scale (the matching row group is read whole) for ~20% more bytes. The batch parts,
# the durable copy, stay zstd.
COMPRESSION = "lz4_raw"
MAX_SEGMENTS = 8                # incremental segments before a run sorts everything into one again
DEFAULT_TABLES = ("masklet_frames", "masklets", "masklet_qc", "label_runs", "videos", "video_quality")

# Sort order of the compacted files: one video's rows are contiguous, so a one-video lookup reads one
# row group of one file (DuckDB skips the rest by their min/max statistics).
SORT_KEYS: dict[str, tuple[str, ...]] = {
    "masklet_frames": ("video_id", "masklet_type", "masklet_id", "frame_idx"),
    "masklets": ("video_id", "masklet_type", "masklet_id"),
    "masklet_qc": ("video_id", "masklet_type", "masklet_id"),
    "sav_annotations": ("video_id", "masklet_type"),
}


class CompactionError(RuntimeError):
    pass


def batch_of(rel: str) -> str:
    """``tables/<table>/<batch>/<part>.parquet`` -> ``<batch>``."""
    return rel.split("/")[2]


def pointer_rel(table: str) -> str:
    return f"{COMPACTED}/{table}/{POINTER}"


def read_pointer(lake: Lake, table: str) -> dict | None:
    rel = pointer_rel(table)
    if not lake.exists(rel):
        return None
    return json.loads(lake.get_bytes(rel))


@dataclass
class TableLayout:
    """What the view of one table reads (all paths relative to the lake root)."""

    table: str
    generation: str | None = None
    compacted: list[str] = field(default_factory=list)      # compacted files in use
    fresh_batches: list[str] = field(default_factory=list)  # batches served from the compacted files
    stale_batches: list[str] = field(default_factory=list)  # compacted, but changed since: read the parts
    parts: list[str] = field(default_factory=list)          # parts read directly (incl. the schema part)
    parts_match_schema: bool = True                         # every part has the table's current columns
    consolidated: bool = False                              # some batch is merged: views name live files
    segments: list[tuple[list[str], list[str]]] = field(default_factory=list)  # (files, batches to drop)

    @property
    def is_compacted(self) -> bool:
        return self.generation is not None


def _part_signatures(lake: Lake, table: str) -> dict[str, str]:
    """Versions of the table's live files (a consolidated batch: its merged part, see ``Lake.live_files``)."""
    sigs = {r: v for r, v in lake.signatures(Lake.table_dir(table)).items() if r.endswith(".parquet")}
    return {r: sigs[r] for r in lake.live_files(sigs)}


def segments(ptr: dict) -> list[dict]:
    """The pointer's segments, oldest first (a pointer written before segments: one)."""
    if "segments" in ptr:
        return ptr["segments"]
    return [{"generation": ptr["generation"], "files": ptr["files"], "sources": ptr["sources"], "dead_batches": []}]


def _compacted_layout(lake: Lake, table: str, sigs: dict[str, str], ptr: dict, merged: bool,
                      check_schema: bool) -> TableLayout:
    segs = segments(ptr)
    by_batch: dict[str, dict[str, str]] = {}
    for seg in segs:
        for rel, v in seg["sources"].items():
            by_batch.setdefault(batch_of(rel), {})[rel] = v
    current: dict[str, dict[str, str]] = {}
    for rel, v in sigs.items():
        current.setdefault(batch_of(rel), {})[rel] = v
    fresh, stale = [], []
    for b, want in sorted(by_batch.items()):
        (fresh if current.get(b) == want else stale).append(b)
    fresh_set, stale_set = set(fresh), set(stale)
    parts = sorted(r for r in sigs if batch_of(r) not in fresh_set)
    files = [f for seg in segs for f in seg["files"]]
    layout = TableLayout(table, ptr["generation"], files, fresh, stale, parts, consolidated=merged)
    for seg in segs:
        drop = sorted(set(seg.get("dead_batches", [])) | {batch_of(r) for r in seg["sources"]} & stale_set)
        layout.segments.append((list(seg["files"]), drop))
    if check_schema and table in SCHEMAS:
        layout.parts_match_schema = parts_match_schema(lake, table, {r: sigs[r] for r in parts})
    return layout


def table_layout(lake: Lake, table: str, check_schema: bool = True) -> TableLayout:
    """What the views of ``table`` read: the compacted files of unchanged batches, the live parts of
    the others; ``parts_match_schema`` says whether those parts all have the table's exact schema."""
    sigs = _part_signatures(lake, table)
    ptr = read_pointer(lake, table)
    merged = any(is_consolidated(r) for r in sigs)
    if ptr is None:
        layout = TableLayout(table, parts=sorted(sigs), consolidated=merged)
        if check_schema and table in SCHEMAS:
            layout.parts_match_schema = parts_match_schema(lake, table, sigs)
        return layout
    return _compacted_layout(lake, table, sigs, ptr, merged, check_schema)


def _schema_key(schema) -> list[list[str]]:
    return [[f.name, str(f.type)] for f in schema]


def columns_cache_rel(table: str) -> str:
    """Where the parts whose schema was checked are remembered, with their version (next to the schema part)."""
    return f"{Lake.table_dir(table)}/{SCHEMA_BATCH}/columns.json"


def parts_match_schema(lake: Lake, table: str, sigs: dict[str, str]) -> bool:
    """Whether every part in ``sigs`` has exactly the table's columns and types (then DuckDB can read
    them without ``union_by_name``, which opens every footer when a view is made).

    Incremental: the parts already checked at their current version are remembered in
    ``tables/<table>/_schema/columns.json``; only new or rewritten parts have their footer read."""
    want = _schema_key(SCHEMAS[table])
    cache_rel = columns_cache_rel(table)
    cache = json.loads(lake.get_bytes(cache_rel)) if lake.exists(cache_rel) else {}
    known: dict[str, str] = cache.get("parts", {}) if cache.get("schema") == want else {}
    checked = {r: v for r, v in sigs.items() if known.get(r) == v}
    fs, base = lake.arrow_filesystem()      # reads the footer only, locally and on S3
    ok = True
    for rel, v in sigs.items():
        if rel in checked or batch_of(rel) == SCHEMA_BATCH:
            continue
        with fs.open_input_file(f"{base}/{rel}") as fh:
            if _schema_key(pq.ParquetFile(fh).schema_arrow) != want:
                ok = False
                continue
        checked[rel] = v
    if checked != known:
        lake.put_bytes(cache_rel, json.dumps({"schema": want, "parts": checked}, separators=(",", ":")).encode(),
                       "application/json")
    return ok


@dataclass
class CompactionResult:
    table: str
    compacted: bool
    reason: str
    generation: str | None = None
    rows: int = 0
    files: int = 0
    source_parts: int = 0
    batches: int = 0
    bytes: int = 0
    seconds: float = 0.0
    segments: int = 0               # segments in the pointer afterwards


def compact_table(lake: Lake, table: str, min_new_parts: int = 1, force: bool = False,
                  memory_limit: str = "2GB", threads: int | None = None, file_size: str = FILE_SIZE,
                  row_group_size: int = ROW_GROUP_SIZE, compression: str = COMPRESSION,
                  max_segments: int = MAX_SEGMENTS, log: Callable[[str], None] = print) -> CompactionResult:
    """Sort the parts of new or changed batches into a new segment and switch the pointer to it.

    Skipped (``compacted=False``) when fewer than ``min_new_parts`` parts are outside the current
    segments and no compacted batch has changed since, unless ``force``. With ``force``, or when the
    pointer already holds ``max_segments`` segments, every live part is sorted into one segment.
    DuckDB sorts out of core: ``memory_limit`` bounds its memory and it spills to a temporary folder.
    """
    if compression not in ("lz4_raw", "zstd", "snappy", "uncompressed", "gzip", "lz4"):
        raise CompactionError(f"unknown Parquet compression {compression!r}")
    t0 = time.time()
    if table not in SCHEMAS:
        raise CompactionError(f"unknown table {table!r}; tables: {', '.join(SCHEMAS)}")
    layout = table_layout(lake, table, check_schema=False)
    new_parts = [r for r in layout.parts if batch_of(r) != SCHEMA_BATCH]
    if not force and not new_parts and not layout.stale_batches:
        return CompactionResult(table, False, "nothing new since the last compaction")
    if not force and len(new_parts) < min_new_parts and not layout.stale_batches:
        return CompactionResult(table, False, f"{len(new_parts)} new part(s) < min_new_parts={min_new_parts}")
    keys = [k for k in SORT_KEYS.get(table, ("video_id",)) if k in SCHEMAS[table].names]
    ptr = read_pointer(lake, table)
    old = segments(ptr) if ptr else []
    full = force or not old or len(old) >= max(1, max_segments)
    fresh = set() if full else set(layout.fresh_batches)
    opts = (memory_limit, threads, file_size, row_group_size, compression)
    for attempt in (1, 2):
        sources = {r: v for r, v in _part_signatures(lake, table).items()
                   if batch_of(r) != SCHEMA_BATCH and batch_of(r) not in fresh}
        if not sources and (full or not _supersede(old, layout.stale_batches, sources)):
            return CompactionResult(table, False, "table has no rows yet")
        gen = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]
        log(f"{table}: compacting {len(sources)} parts of {len({batch_of(r) for r in sources})} batches "
            f"into {'generation' if full else f'segment {len(old) + 1} of'} {gen} "
            f"(sorted by {', '.join(keys) or 'nothing'})")
        try:
            files, rows, nbytes = _write_generation(lake, table, sources, gen, keys, *opts) if sources else ([], 0, 0)
            new_seg = {"generation": gen, "files": files, "sources": sources, "dead_batches": [], "rows": rows,
                       "bytes": nbytes}
            segs = [new_seg] if full else _supersede(old, layout.stale_batches, sources) + [new_seg]
            _write_pointer(lake, table, [sg for sg in segs if sg["files"]], keys, row_group_size, compression)
            break
        except Exception as e:
            lake.store.delete_prefix(f"{COMPACTED}/{table}/{gen}")
            if attempt == 1 and not set(sources) <= set(_part_signatures(lake, table)):
                log(f"{table}: parts were removed while compacting (a batch re-run?); trying once more")
                continue
            raise CompactionError(f"{table}: compaction failed, previous generation kept: {e}") from e
    _drop_other_generations(lake, table, keep={sg["generation"] for sg in segs + old})
    res = CompactionResult(table, True, "compacted" if full else "compacted incrementally", gen, rows, len(files),
                           len(sources), len({batch_of(r) for r in sources}), nbytes, time.time() - t0,
                           segments=len([sg for sg in segs if sg["files"]]))
    log(f"{table}: {rows:,} rows from {res.source_parts} parts -> {res.files} file(s), "
        f"{nbytes / 1e6:.1f} MB in {res.seconds:.1f}s ({res.segments} segment(s))")
    return res


def _supersede(old: list[dict], stale: list[str], sources: dict[str, str]) -> list[dict]:
    """The old segments, each with the batches now in the new segment (or changed) marked dead."""
    dead = set(stale) | {batch_of(r) for r in sources}
    out = []
    for sg in old:
        mine = {batch_of(r) for r in sg["sources"]} & dead
        out.append({**sg, "sources": {r: v for r, v in sg["sources"].items() if batch_of(r) not in dead},
                    "dead_batches": sorted(set(sg.get("dead_batches", [])) | mine)})
    return [sg for sg in out if sg["sources"]]      # a segment whose every batch is dead is dropped


def _write_pointer(lake: Lake, table: str, segs: list[dict], keys: list[str], row_group_size: int,
                   compression: str) -> None:
    """``CURRENT.json``: the segments, plus the union of their files and sources (the generation: newest)."""
    pointer = {"table": table, "generation": segs[-1]["generation"] if segs else None,
               "files": [f for sg in segs for f in sg["files"]],
               "sources": {r: v for sg in segs for r, v in sg["sources"].items()},
               "rows": sum(sg.get("rows", 0) for sg in segs), "bytes": sum(sg.get("bytes", 0) for sg in segs),
               "segments": segs, "sort_by": keys, "row_group_size": row_group_size, "compression": compression,
               "created_at": dt.datetime.now(dt.timezone.utc).isoformat()}
    lake.put_bytes(pointer_rel(table), json.dumps(pointer, separators=(",", ":")).encode(), "application/json")


def _drop_other_generations(lake: Lake, table: str, keep: set) -> None:
    """Remove orphaned generations and those older than the previous one (kept for open sessions whose
    views were defined before the switch)."""
    generations = {rel.split("/")[2] for rel in lake.list(f"{COMPACTED}/{table}") if rel.count("/") >= 3}
    for gen in sorted(generations - keep):
        lake.store.delete_prefix(f"{COMPACTED}/{table}/{gen}")


def drop_compaction(lake: Lake, table: str) -> None:
    """Forget a table's compaction (its views read the batch parts again)."""
    lake.delete(pointer_rel(table))
    _drop_other_generations(lake, table, keep=set())


def _write_generation(lake: Lake, table: str, sources: dict[str, str], gen: str, keys: list[str],
                      memory_limit: str, threads: int | None, file_size: str, row_group_size: int,
                      compression: str) -> tuple[list[str], int, int]:
    """Sort ``sources`` into ``compacted/<table>/<gen>/`` (the caller then points ``CURRENT.json`` at it)."""
    import duckdb

    work = Path(tempfile.mkdtemp(prefix=f"sav-compact-{table}-"))
    try:
        # the table's current columns, in schema order, come first (an empty file): the compacted files
        # then carry every column, in the order the plain view shows them
        schema_file = work / "schema.parquet"
        pq.write_table(SCHEMAS[table].empty_table(), str(schema_file))
        prefix = f"{COMPACTED}/{table}/{gen}"
        # DuckDB reads and writes local files (no httpfs): the parts themselves in a local lake, downloads
        # from S3; the output folder is the generation's own folder locally, uploaded afterwards on S3
        with contextlib.ExitStack() as stack, lake.store.write_tree(prefix) as out:
            src_paths = [str(schema_file)] + [stack.enter_context(lake.store.local_path(rel)) for rel in sources]
            con = duckdb.connect(config={"memory_limit": memory_limit, "temp_directory": str(work / "spill"),
                                         **({"threads": threads} if threads else {})})
            try:
                con.execute(render(
                    "compact_table.sql", sources=literal_list(src_paths), out_dir=literal(out),
                    order_by=f"ORDER BY {', '.join(keys)}" if keys else "", compression=compression,
                    row_group_size=str(int(row_group_size)), file_size=literal(file_size)))
            finally:
                con.close()
            produced = sorted(Path(out).glob("*.parquet"))
            rows = sum(pq.ParquetFile(str(p)).metadata.num_rows for p in produced)
            nbytes = sum(p.stat().st_size for p in produced)
            files = [f"{prefix}/{p.name}" for p in produced]
        return files, rows, nbytes
    finally:
        shutil.rmtree(work, ignore_errors=True)

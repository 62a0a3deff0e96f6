"""Takedown: remove a video and everything derived from it, and keep its content out for good.

:func:`takedown` takes a ``video_id``, a source URI or key, or a content SHA-256 and, in this order
(each step idempotent and atomic per file, so an interrupted takedown is finished by running it again):

1. writes the tombstone, one ``takedowns`` row per video of that content (SHA-256, video id, batch,
   source URI/key, reason, who, when) as ``tables/takedowns/tombstones/<sha256>.parquet``: from then
   on ingestion refuses the same bytes under any name, in any batch (a ``taken_down`` row of
   ``videos``, see :mod:`sav_assets.lib.ingest.ingest_batch`); a re-run keeps the first tombstone;
2. removes the video's rows from every table that has a ``video_id`` column (labels, label runs, QC,
   reviews, splits, SA-V headers, quality, and last ``videos``): only the Parquet parts holding them
   are rewritten, each in one atomic put; a part left empty stays as an empty part (the batch stays
   ingested), unless it is named after the video (per-video label parts): then it is deleted. ``source_objects`` keeps its rows of that content, marked ``taken_down`` (the ingestion
   record, like the tombstone). The compacted copies (``compacted/<table>/``) are filtered the same
   way and their ``CURRENT.json`` follows the rewritten parts, so the views stay compacted;
3. rewrites the WebDataset shards holding one of its samples
   (:func:`sav_assets.lib.dataset.publisher.rewrite_shards`: new shard names, new manifest last) and
   the matching ``shards`` rows; ``shard_samples`` rows of other videos follow their shard's new name;
4. removes its files under ``exports/`` (SA-V JSON, evaluation and training layouts, filmstrips) and
   its lines from list files (``sav_<split>.txt``, ``*.jsonl``); a page (HTML, Markdown, CSV) that
   names it is deleted, to be rebuilt by the next run; its content claim goes too;
5. re-derives ``reports/statistics.*`` (when present) and refreshes the DuckDB views.

Rows of *other* videos are never changed: their splits do not move, and references to the removed id
(a near-duplicate link, a group key) stay as they were. :func:`apply_requests` serves takedown request
files dropped in the lake (``takedowns/requests/*.json``), for the ``takedowns`` asset.

Past ~400 lines because removal is one contract across every table, shard and export: split up, a
new derived artefact would be easier to forget in one of the parts.
"""

from __future__ import annotations

import bisect
import datetime as dt
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sav_assets.lib.dataset.publisher import MANIFEST, rewrite_shards
from sav_assets.lib.dataset.shard_samples import sample_key
from sav_assets.lib.store.compaction import COMPACTED, COMPRESSION, ROW_GROUP_SIZE, pointer_rel, read_pointer
from sav_assets.lib.store.lake import MANIFEST_KEY, Lake
from sav_assets.lib.store.tables import SCHEMAS, SOURCE_OBJECTS, TAKEDOWNS, VIDEOS, to_table
from sav_assets.lib.video.errors import TAKEN_DOWN

TOMBSTONE_BATCH = "tombstones"
REQUESTS = "takedowns/requests"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_PAGES = (".html", ".htm", ".md", ".csv")       # derived pages: deleted when they name the video
_KINDS = ("auto", "manual", "prompted")


class TakedownError(LookupError):
    """A takedown request names no video of the lake (or several contents)."""


@dataclass
class Target:
    """What a request resolved to: one content and the video ids it was ingested as."""

    content_sha256: str
    video_ids: list[str]
    videos: list[dict]                 # their ``videos`` rows (none once removed)
    tombstones: list[dict]             # existing ``takedowns`` rows of this content


@dataclass
class TakedownReport:
    content_sha256: str
    video_ids: list[str]
    already: bool                                          # a tombstone existed before this call
    rows_removed: dict[str, int] = field(default_factory=dict)
    compacted_rows_removed: dict[str, int] = field(default_factory=dict)
    objects_marked: int = 0
    shards_rewritten: dict[str, str] = field(default_factory=dict)   # old rel -> new rel ("" if emptied)
    samples_removed: int = 0
    files_removed: list[str] = field(default_factory=list)
    files_rewritten: list[str] = field(default_factory=list)
    statistics: bool = False

    def summary(self) -> dict:
        return {"content_sha256": self.content_sha256, "video_ids": self.video_ids, "already": self.already,
                "rows_removed": self.rows_removed, "compacted_rows_removed": self.compacted_rows_removed,
                "objects_marked": self.objects_marked, "shards_rewritten": len(self.shards_rewritten),
                "samples_removed": self.samples_removed, "files_removed": len(self.files_removed),
                "files_rewritten": len(self.files_rewritten), "statistics": self.statistics}


# ---- resolving a request ------------------------------------------------------------------------

def resolve(lake: Lake, target: str) -> Target:
    """The content a ``video_id``, source URI or key, or content SHA-256 names (TakedownError if none)."""
    t = (target or "").strip()
    videos = lake.read_table("videos", schema=VIDEOS).to_pylist()
    videos = [v for v in videos if v.get("error_class") != TAKEN_DOWN]     # refusals are not the content
    tombs = lake.read_table("takedowns", schema=TAKEDOWNS).to_pylist()
    if _SHA256.match(t.lower()):
        sha = t.lower()
    else:
        objects = lake.read_table("source_objects", schema=SOURCE_OBJECTS).to_pylist()
        shas = {r["content_sha256"] for r in videos + tombs if t in (r["video_id"], r["source_uri"], r["source_key"])}
        shas |= {o["content_sha256"] for o in objects
                 if t in (o["source_uri"], o["source_key"]) and o["content_sha256"]}
        if len(shas) > 1:
            raise TakedownError(f"{target!r} names {len(shas)} different contents; name one by video_id or SHA-256")
        if not shas:
            raise TakedownError(f"no video matches {target!r} (not a video_id, source URI or key, "
                                "or content SHA-256 of this lake)")
        sha = shas.pop()
    rows = [v for v in videos if v["content_sha256"] == sha]
    tombs = [r for r in tombs if r["content_sha256"] == sha]
    if not rows and not tombs:
        raise TakedownError(f"no video with content SHA-256 {sha} in this lake")
    ids = sorted({v["video_id"] for v in rows} | {r["video_id"] for r in tombs})
    return Target(sha, ids, rows, tombs)


# ---- the takedown -------------------------------------------------------------------------------

def takedown(lake: Lake, target: str, reason: str, requested_by: str,
             now: dt.datetime | None = None, log: Callable[[str], None] | None = None) -> TakedownReport:
    """Take the content ``target`` names down (see the module docstring); safe to run again."""
    log = log or (lambda m: None)
    tgt = resolve(lake, target)
    ids = set(tgt.video_ids)
    rep = TakedownReport(tgt.content_sha256, tgt.video_ids, already=bool(tgt.tombstones))
    if not tgt.tombstones:
        _write_tombstone(lake, tgt, target, reason, requested_by, now or dt.datetime.now(dt.timezone.utc))
    log(f"takedown {tgt.content_sha256[:12]}: videos {', '.join(tgt.video_ids)}")
    _drop_rows(lake, ids, tgt.content_sha256, rep)
    _rewrite_all_shards(lake, ids, rep)
    _clean_files(lake, ids, rep)
    lake.delete(f"claims/content/{tgt.content_sha256}.json")
    _refresh(lake, rep)
    log(f"takedown {tgt.content_sha256[:12]}: {rep.summary()}")
    return rep


def _write_tombstone(lake: Lake, tgt: Target, target: str, reason: str, who: str, now: dt.datetime) -> None:
    by_id = {v["video_id"]: v for v in tgt.videos}
    rows = [{"content_sha256": tgt.content_sha256, "video_id": vid, "batch_id": by_id.get(vid, {}).get("batch_id"),
             "source_uri": by_id.get(vid, {}).get("source_uri"), "source_key": by_id.get(vid, {}).get("source_key"),
             "requested_as": target, "reason": reason, "requested_by": who, "taken_down_at": now}
            for vid in tgt.video_ids]
    lake.write_part("takedowns", TOMBSTONE_BATCH, tgt.content_sha256, to_table(rows, TAKEDOWNS))


# ---- tables -------------------------------------------------------------------------------------

def _in(col: pa.ChunkedArray, values: set[str]) -> pa.ChunkedArray:
    return pc.fill_null(pc.is_in(col, value_set=pa.array(sorted(values), pa.string())), False)


def _table_edit(table: str, ids: set[str]) -> Callable[[pa.Table], tuple[pa.Table, int]] | None:
    """How a part of ``table`` loses the videos: drop their rows, or (``source_objects``) mark them."""
    names = SCHEMAS[table].names
    if table == "takedowns" or "video_id" not in names:
        return None
    if table == "source_objects":
        def mark(tbl: pa.Table) -> tuple[pa.Table, int]:
            hit = pc.and_(pc.or_(_in(tbl["video_id"], ids), _in(tbl["duplicate_of"], ids)),
                          pc.invert(pc.fill_null(pc.equal(tbl["disposition"], "taken_down"), False)))
            n = pc.sum(hit).as_py() or 0
            if n:
                col = pc.if_else(hit, pa.scalar("taken_down"), tbl["disposition"])
                tbl = tbl.set_column(tbl.schema.get_field_index("disposition"), "disposition", col)
            return tbl, n
        return mark

    def drop(tbl: pa.Table) -> tuple[pa.Table, int]:
        hit = _in(tbl["video_id"], ids)
        n = pc.sum(hit).as_py() or 0
        return (tbl.filter(pc.invert(hit)) if n else tbl), n
    return drop


_PROBE = ("video_id", "duplicate_of", "disposition")


def _rewrite_parquet(lake: Lake, rel: str, edit: Callable[[pa.Table], tuple[pa.Table, int]],
                     compression: str = "zstd", row_group_size: int = 128 * 1024,
                     probe: tuple[str, ...] = _PROBE) -> int:
    """Apply ``edit`` to one Parquet file; rewrite it (one atomic put) only when it changes rows. The
    ``probe`` columns are read first (nulls for those a file lacks), the whole file only on a hit."""
    with lake.store.local_path(rel) as path:
        pf = pq.ParquetFile(path)
        names = pf.schema_arrow.names
        if probe[0] not in names:
            return 0
        cols = pq.read_table(path, columns=[c for c in probe if c in names])
        for c in probe:
            if c not in cols.column_names:
                cols = cols.append_column(c, pa.nulls(cols.num_rows, pa.string()))
        if not edit(cols)[1]:
            return 0
        tbl = pq.read_table(path)
        meta = pf.metadata.metadata or {}
    manifest = json.loads(meta[MANIFEST_KEY]) if MANIFEST_KEY in meta else None
    if manifest is not None:         # a consolidated part: its footer's row ranges must follow the rows
        tbl = tbl.append_column(_ROW, pa.array(range(tbl.num_rows), pa.int64()))
    tbl, n = edit(tbl)
    if manifest is not None:
        kept = tbl.column(_ROW).to_pylist()
        tbl = tbl.drop_columns([_ROW]).replace_schema_metadata(
            {**(tbl.schema.metadata or {}), MANIFEST_KEY: json.dumps(_shift_ranges(manifest, kept)).encode()})
        lake.forget_manifest(rel)                       # this name now says otherwise
    buf = io.BytesIO()
    pq.write_table(tbl, buf, compression=compression, row_group_size=row_group_size, write_statistics=True)
    lake.put_bytes(rel, buf.getvalue())
    return n


_ROW = "__sav_row"


def _shift_ranges(manifest: dict, kept: list[int]) -> dict:
    """A consolidated part's manifest after its rows were filtered to ``kept`` (old row numbers, in
    order): each merged part's ``[start, n]`` becomes its range among the kept rows; a part that lost
    every row (the video's own) leaves the manifest, with its entry among the merged files."""
    parts, gone = {}, set()
    for name, e in manifest.get("parts", {}).items():
        start, n = e["rows"]
        lo, hi = bisect.bisect_left(kept, start), bisect.bisect_left(kept, start + n)
        if n and hi == lo:
            gone.add(f"{name}.parquet")
            continue
        parts[name] = {**e, "rows": [lo, hi - lo]}
    files = {rel: v for rel, v in manifest.get("files", {}).items() if rel.rsplit("/", 1)[-1] not in gone}
    return {**manifest, "files": files, "parts": parts}


def _drop_rows(lake: Lake, ids: set[str], sha: str, rep: TakedownReport) -> None:
    order = sorted(SCHEMAS, key=lambda t: t == "videos")        # the ingestion record last
    for table in order:
        edit = _table_edit(table, ids)
        if edit is None:
            continue
        before = lake.signatures(Lake.table_dir(table))
        n = 0
        for rel in lake.table_parts(table):
            n += _rewrite_parquet(lake, rel, edit)
            if _names_video(rel, ids):      # a per-video part (labels): gone, name and all, once empty
                lake.delete(rel)
        if table == "source_objects":
            rep.objects_marked += n
        elif n:
            rep.rows_removed[table] = n
        _filter_compacted(lake, table, edit, before, rep, counted=table != "source_objects")


def _filter_compacted(lake: Lake, table: str, edit, before: dict[str, str], rep: TakedownReport | None,
                      counted: bool) -> None:
    """Filter every compacted file of ``table`` (any generation); keep its pointer current for the parts
    this takedown rewrote (those that were fresh stay fresh: their compacted rows match them again).
    ``counted``: the edit drops the rows it hits (not so when it marks or renames them), so the
    pointer's row counts go down by as many; ``rep`` (when given) records them."""
    ptr = read_pointer(lake, table)
    files = [r for r in lake.list(f"{COMPACTED}/{table}") if r.endswith(".parquet")]
    removed = {r: _rewrite_parquet(lake, r, edit, (ptr or {}).get("compression", COMPRESSION),
                                   (ptr or {}).get("row_group_size", ROW_GROUP_SIZE)) for r in files}
    if rep is not None and counted and sum(removed.values()):
        rep.compacted_rows_removed[table] = sum(removed.values())
    if ptr is None:
        return
    after = lake.signatures(Lake.table_dir(table))

    def follow(srcs: dict[str, str]) -> dict[str, str]:
        out = {}
        for rel, v in srcs.items():
            if before.get(rel) != v or after.get(rel) == v:
                out[rel] = v                 # untouched (or already stale): as it was
            elif rel in after:
                out[rel] = after[rel]        # rewritten by this takedown: its compacted rows match again
            # else: a per-video part this takedown deleted, its compacted rows with it
        return out

    sources = follow(ptr["sources"])
    segs = [{**sg, "sources": follow(sg["sources"]),
             "rows": sg.get("rows", 0) - (sum(removed.get(f, 0) for f in sg["files"]) if counted else 0)}
            for sg in ptr.get("segments", [])]
    current = sum(n for r, n in removed.items() if r in set(ptr["files"]))
    if sources != ptr["sources"] or current or segs != ptr.get("segments", []):
        new = {**ptr, "sources": sources, "rows": ptr.get("rows", 0) - (current if counted else 0)}
        if "segments" in ptr:
            new["segments"] = segs
        lake.put_bytes(pointer_rel(table), json.dumps(new, indent=1).encode(), "application/json")


# ---- shards -------------------------------------------------------------------------------------

def _rewrite_all_shards(lake: Lake, ids: set[str], rep: TakedownReport) -> None:
    prefixes = [rel[: -len(MANIFEST) - 1] for rel in lake.list("shards") if rel.endswith(f"/{MANIFEST}")]
    keys = re.compile("|".join(rf"^{re.escape(sample_key(v, 0)[:-6])}\d{{6,}}$" for v in sorted(ids)))
    for prefix in prefixes:
        hit: set[str] = set()
        samples = [0]

        def drop(sample: dict, hit=hit, samples=samples) -> bool:
            vid = json.loads(sample.get("meta.json") or b"{}").get("video_id")
            if vid in ids:
                hit.add(vid)
                samples[0] += 1
                return True
            return False

        def amend(manifest: dict, hit=hit) -> dict:
            if isinstance(manifest.get("videos"), int):
                manifest = {**manifest, "videos": max(0, manifest["videos"] - len(hit))}
            return manifest

        res = rewrite_shards(lake, prefix, drop, key_filter=lambda k: bool(keys.match(k)), amend=amend)
        if res["replaced"]:
            rep.samples_removed += samples[0]
            rep.shards_rewritten.update({f"{prefix}/{old}": f"{prefix}/{new['shard']}" if new else ""
                                         for old, new in res["replaced"].items()})
    if rep.shards_rewritten:
        _update_shard_rows(lake, rep.shards_rewritten)
        _rename_sample_shards(lake, rep.shards_rewritten)


def _update_shard_rows(lake: Lake, replaced: dict[str, str]) -> None:
    """The ``shards`` rows of replaced shards follow their new manifest entries; emptied ones go."""
    entries: dict[str, dict] = {}
    for prefix in {old.rsplit("/", 1)[0] for old in replaced}:
        manifest = json.loads(lake.get_bytes(f"{prefix}/{MANIFEST}"))
        entries.update({f"{prefix}/{e['shard']}": e for e in manifest["shards"]})

    def old_rel(uri) -> str | None:
        return next((old for old in replaced if uri and uri.endswith("/" + old)), None)

    def edit(tbl: pa.Table) -> tuple[pa.Table, int]:
        rows = tbl.to_pylist()
        hits = sum(1 for r in rows if old_rel(r.get("uri")))
        if not hits or tbl.num_columns == 1:      # the probe only asks whether the file has a replaced shard
            return tbl, hits
        out = []
        for r in rows:
            old = old_rel(r.get("uri"))
            if old is None:
                out.append(r)
            elif replaced[old]:
                e = entries[replaced[old]]
                out.append({**r, **{k: e[k] for k in ("shard", "samples", "bytes", "sha256", "first_key", "last_key")},
                            "uri": lake.uri(replaced[old])})
        return pa.Table.from_pylist(out, schema=tbl.schema), hits

    for rel in lake.table_parts("shards"):
        _rewrite_parquet(lake, rel, edit, probe=("uri",))


def _rename_sample_shards(lake: Lake, replaced: dict[str, str]) -> None:
    """The ``shard_samples`` rows of other videos in a rewritten shard follow it to its new name (the
    video's own rows are already gone), in the table parts and their compacted copies."""
    def new_name(batch, shard) -> str | None:
        new = replaced.get(f"shards/{batch}/{shard}")
        return new.rsplit("/", 1)[1] if new else None

    def edit(tbl: pa.Table) -> tuple[pa.Table, int]:
        rows = tbl.to_pylist()
        hits = sum(1 for r in rows if new_name(r.get("batch_id"), r.get("shard")))
        if not hits or tbl.num_columns <= 2:      # the probe only asks whether the file has a renamed shard
            return tbl, hits
        out = [{**r, "shard": new_name(r["batch_id"], r["shard"]) or r["shard"]} for r in rows]
        return pa.Table.from_pylist(out, schema=tbl.schema), hits

    before = lake.signatures(Lake.table_dir("shard_samples"))
    for rel in lake.table_parts("shard_samples"):
        _rewrite_parquet(lake, rel, edit, probe=("shard", "batch_id"))
    _filter_compacted(lake, "shard_samples", edit, before, None, counted=False)


# ---- files --------------------------------------------------------------------------------------

def _names_video(rel: str, ids: set[str]) -> bool:
    """A path of the video's own: a folder named after it, ``<id>.<...>``, or ``<id>_<kind>.json``."""
    parts = rel.split("/")
    if any(p in ids for p in parts[:-1]):
        return True
    name = parts[-1]
    return any(name.startswith(v + ".") or name in {f"{v}_{k}.json" for k in _KINDS} for v in ids)


def _clean_files(lake: Lake, ids: set[str], rep: TakedownReport) -> None:
    mention = re.compile("|".join(rf"(?<![A-Za-z0-9_-]){re.escape(v)}(?![A-Za-z0-9_-])" for v in sorted(ids)))
    for rel in lake.list("exports"):
        if _names_video(rel, ids):
            lake.delete(rel)
            rep.files_removed.append(rel)
            continue
        if not rel.endswith((".txt", ".jsonl") + _PAGES):
            continue
        text = lake.get_bytes(rel).decode("utf-8", errors="replace")
        if not mention.search(text):
            continue
        if rel.endswith(_PAGES):
            lake.delete(rel)
            rep.files_removed.append(rel)
            continue
        keep = [ln for ln in text.splitlines(keepends=True) if not _line_names(ln, rel, ids)]
        lake.put_bytes(rel, "".join(keep).encode())
        rep.files_rewritten.append(rel)


def _line_names(line: str, rel: str, ids: set[str]) -> bool:
    if rel.endswith(".txt"):
        return line.strip() in ids
    try:
        doc = json.loads(line)
    except ValueError:
        return False
    return isinstance(doc, dict) and doc.get("video_id") in ids


def _refresh(lake: Lake, rep: TakedownReport) -> None:
    from sav_assets.lib.dataset.statistics import run_stats, stats_markdown, stats_plots_png
    from sav_assets.lib.store.catalog import connect, refresh_catalog

    refresh_catalog(lake)
    if not lake.exists("reports/statistics.md"):
        return
    con = connect(lake, read_only=False)
    try:
        results = run_stats(con)
    finally:
        con.close()
    lake.put_bytes("reports/statistics.md", stats_markdown(results).encode(), "text/markdown")
    lake.put_bytes("reports/statistics.png", stats_plots_png(results), "image/png")
    rep.statistics = True


# ---- request files ------------------------------------------------------------------------------

def apply_requests(lake: Lake, default_by: str = "takedown request file",
                   log: Callable[[str], None] | None = None) -> list[dict]:
    """Apply every ``takedowns/requests/*.json`` (``{"target", "reason", "requested_by"}``, or a list of
    them); a done file moves to ``takedowns/done/``, one naming no video to ``takedowns/rejected/`` with
    the error. Returns one row per request: file, target, status (done | rejected), detail."""
    out = []
    for rel in lake.list(REQUESTS):
        if not rel.endswith(".json"):
            continue
        name = rel.rsplit("/", 1)[-1]
        try:
            doc = json.loads(lake.get_bytes(rel))
            reqs = doc if isinstance(doc, list) else [doc]
            if not all(isinstance(r, dict) and r.get("target") for r in reqs):
                raise ValueError('expected {"target": ..., "reason": ...} or a list of them')
        except ValueError as e:
            _move(lake, rel, name, [f"unreadable request: {e}"])
            out.append({"file": name, "target": None, "status": "rejected", "detail": f"unreadable request: {e}"})
            continue
        errors = []
        for r in reqs:
            try:
                rep = takedown(lake, str(r["target"]), str(r.get("reason") or ""),
                               str(r.get("requested_by") or default_by), log=log)
                out.append({"file": name, "target": r["target"], "status": "done",
                            "detail": f"videos {', '.join(rep.video_ids)}"})
            except TakedownError as e:
                errors.append(str(e))
                out.append({"file": name, "target": r["target"], "status": "rejected", "detail": str(e)})
        _move(lake, rel, name, errors)
    return out


def _move(lake: Lake, rel: str, name: str, errors: list[str]) -> None:
    """A handled request file to ``takedowns/done/`` (or ``rejected/``, with its errors)."""
    data = lake.get_bytes(rel)
    if errors:
        data = json.dumps({"request": data.decode("utf-8", errors="replace"), "errors": errors}, indent=1).encode()
    lake.put_bytes(f"takedowns/{'rejected' if errors else 'done'}/{name}", data, "application/json")
    lake.delete(rel)

"""Turn a batch manifest into ``videos`` and ``source_objects`` rows: hash, dedupe, probe, quarantine.

Every object of the batch gets a ``source_objects`` row with its disposition; every video file gets
exactly one ``videos`` row (``ok`` or ``quarantined`` with an error class), unless the same content
was already ingested (then it is recorded as ``duplicate_content`` and points at the first video), or
it is no longer the version the batch claimed once it has been read and probed (``changed``: a file
still being copied in; its final version is a new object for a later batch, never a ``truncated``
video now and the same video again later). ``bytes`` and ``content_sha256`` come from one read.
Nothing here raises for bad input: an object that vanished or cannot be read (``OSError``, which
both store backends raise for a missing or forbidden object) is an ``unreadable`` row, and a file the
decoder rejects is a quarantined video. Anything else raises and fails the step: a bug in our code
(``TypeError``, ``KeyError``...), or an object store that cannot be reached, which must leave the batch
to be resumed rather than record every video as unreadable. Objects are read through the batch's
:class:`Source` (its own store and credentials). Content that was taken down (``taken_down``: the
``takedowns`` tombstones by SHA-256) is never probed: whatever its name, it becomes a quarantined
``videos`` row with error class ``taken_down`` and a ``taken_down`` object row.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from sav_assets.lib.store.source import Source, SourceObject
from sav_assets.lib.util import sha256_file_size, sha256_text
from sav_assets.lib.video.errors import TAKEN_DOWN
from sav_assets.lib.video.probe import ProbeLimits, is_video_name, probe_file

SAV_NAME = re.compile(r"^sav_\d+$")
ANNOTATION_SUFFIXES = ("_manual.json", "_auto.json")


def _slug(stem: str) -> str:
    s = re.sub(r"[^A-Za-z0-9_-]+", "-", stem).strip("-_")
    return (s or "video")[:48]


def video_id_for(key: str, content_sha256: str) -> str:
    """Stable id: the stem for SA-V-style names (``sav_000001``), else slug plus a content/key hash."""
    stem = key.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    if SAV_NAME.match(stem):
        return stem
    h = sha256_text(f"{key}\x00{content_sha256}")[:10]
    return f"{_slug(stem)}_{h}"


def classify_object(key: str, keys: set[str]) -> str:
    """video | annotation | sidecar | non_video, by name."""
    name = key.rsplit("/", 1)[-1]
    if is_video_name(name):
        return "video"
    low = name.lower()
    if low.endswith(ANNOTATION_SUFFIXES):
        return "annotation"
    if low.endswith(".json"):
        base = key[: -len(".json")]
        if any(k.startswith(base + ".") and is_video_name(k) for k in keys):
            return "sidecar"
    return "non_video"


def sidecar_for(video_key: str, keys: set[str]) -> str | None:
    stem = video_key.rsplit(".", 1)[0]
    cand = stem + ".json"
    return cand if cand in keys else None


@dataclass
class IngestResult:
    videos: list[dict]
    objects: list[dict]
    counts: dict[str, int]


def ingest_batch(source: Source, manifest: dict, batch_id: str, prior_videos: list[dict],
                 limits: ProbeLimits, workers: int = 2,
                 log: Callable[[str], None] | None = None, taken_down: dict[str, dict] | None = None,
                 probe: Callable[[list[SourceObject], set[str]], list[tuple]] | None = None) -> IngestResult:
    """Probe the batch's video objects; ``prior_videos`` are ``videos`` rows of *other* batches;
    ``taken_down``: tombstone rows by content SHA-256 (refused, never probed). ``probe(objects, skip)``
    runs :func:`hash_and_probe` over the video objects, results in their order (default: ``workers``
    threads here; ``lib/ingest/fanout.py``: units on the cluster runner)."""
    taken_down = taken_down or {}
    log = log or (lambda m: None)
    now = dt.datetime.now(dt.timezone.utc)
    objs = [SourceObject(**o) for o in manifest["objects"]]
    # sidecars are matched against everything at the source, not only this batch's objects
    all_keys = {o.key for o in objs} | {o.key for o in source.list_objects()}
    by_sha = {}
    for v in sorted(prior_videos, key=lambda r: (str(r.get("ingested_at")), r["video_id"])):
        by_sha.setdefault(v["content_sha256"], v)

    objects_rows: list[dict] = []
    counts = {"objects": len(objs), "videos_ok": 0, "videos_quarantined": 0, "duplicate_content": 0,
              "non_video": 0, "sidecar": 0, "annotation": 0, "unreadable": 0, "changed": 0, "taken_down": 0}

    def base_row(o: SourceObject, disposition: str, **kw) -> dict:
        return {"batch_id": batch_id, "source_uri": o.uri, "source_key": o.key, "source_version": o.version,
                "bytes": o.size, "disposition": disposition, "seen_at": now, **kw}

    video_objs = []
    for o in objs:
        kind = classify_object(o.key, all_keys)
        if kind == "video":
            video_objs.append(o)
        else:
            counts[kind] += 1
            objects_rows.append(base_row(o, kind))

    seen_in_batch: dict[str, str] = {}
    videos: list[dict] = []
    skip = set(by_sha) | set(taken_down)        # hashed, never probed
    if probe is None:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            results = list(pool.map(lambda o: hash_and_probe(source, o, skip, limits), video_objs))
    else:
        results = probe(video_objs, skip)
    for i, (o, probe, sha, err) in enumerate(results, 1):
        log(f"[{i}/{len(results)}] {o.key}")
        if isinstance(err, str):   # still being written: its final version is a new object for a later batch
            log(f"[{i}/{len(results)}] {o.key}: {err}; left for a later batch")
            counts["changed"] += 1
            objects_rows.append(base_row(o, "changed", duplicate_of=None, video_id=None, content_sha256=None))
            continue
        if err is not None:
            log(f"[{i}/{len(results)}] {o.key}: unreadable ({type(err).__name__}: {err})")
            counts["unreadable"] += 1
            objects_rows.append(base_row(o, "unreadable", duplicate_of=None,
                                         video_id=None, content_sha256=None))
            continue
        if sha in taken_down:
            videos.append(_refused_row(o, batch_id, sha, taken_down[sha], now))
            counts["taken_down"] += 1
            objects_rows.append(base_row(o, "taken_down", content_sha256=sha, video_id=videos[-1]["video_id"]))
            continue
        dup = by_sha.get(sha)
        if dup is not None or sha in seen_in_batch:
            first = dup["video_id"] if dup is not None else seen_in_batch[sha]
            counts["duplicate_content"] += 1
            objects_rows.append(base_row(o, "duplicate_content", content_sha256=sha, duplicate_of=first))
            continue
        vid = video_id_for(o.key, sha)
        seen_in_batch[sha] = vid
        sidecar = _read_sidecar(source, o, all_keys)
        row = {
            "video_id": vid, "batch_id": batch_id, "source_uri": o.uri, "source_key": o.key,
            "source_version": o.version, "content_sha256": sha, "bytes": o.size,
            **probe, "sidecar_json": json.dumps(sidecar, sort_keys=True) if sidecar else None,
            "ingested_at": now,
        }
        if row.get("video_height") and row.get("video_width"):
            row["video_resolution"] = int(row["video_height"]) * int(row["video_width"])
        videos.append(row)
        counts["videos_ok" if row["status"] == "ok" else "videos_quarantined"] += 1
        objects_rows.append(base_row(o, "video", content_sha256=sha, video_id=vid))
    return IngestResult(videos=videos, objects=objects_rows, counts=counts)


def hash_and_probe(source: Source, o: SourceObject, skip: set[str],
                   limits: ProbeLimits) -> tuple[SourceObject, dict | None, str | None, Exception | str | None]:
    """One video object: ``(object, probe row or None, content SHA-256, error)``; content in ``skip`` is
    hashed but not probed; error: an ``OSError`` (unreadable) or why it changed since it was claimed."""
    try:
        with source.local_path(o.key) as path:
            sha, nbytes = sha256_file_size(path)
            res = None if sha in skip else probe_file(path, limits)
        changed = _changed_since_claimed(source, o, nbytes)
        if changed:
            return o, None, None, changed
        return o, res.as_row() if res else None, sha, None
    except OSError as e:  # the object vanished or cannot be read (the store's contract): a row
        return o, None, None, e


def _refused_row(o: SourceObject, batch_id: str, sha: str, tombstone: dict, now: dt.datetime) -> dict:
    """The ``videos`` row of content that was taken down: quarantined as ``taken_down``, never probed."""
    when = tombstone.get("taken_down_at")
    return {"video_id": video_id_for(o.key, sha), "batch_id": batch_id, "source_uri": o.uri, "source_key": o.key,
            "source_version": o.version, "content_sha256": sha, "bytes": o.size, "status": "quarantined",
            "error_class": TAKEN_DOWN,
            "error_message": f"content {sha[:12]}... was taken down"
                             f"{f' on {when:%Y-%m-%d}' if hasattr(when, 'strftime') else ''} "
                             f"({tombstone.get('reason') or 'no reason given'}): not ingested",
            "ingested_at": now}


def _changed_since_claimed(source: Source, o: SourceObject, nbytes: int) -> str | None:
    """Why the object is no longer the version the batch claimed (read ``nbytes``, then probed), or None.

    A file still being copied in grows while it is hashed and probed; recording it would give a
    ``truncated`` video now and the same video again once complete."""
    if nbytes != o.size:
        return f"changed since it was claimed: {nbytes} bytes read, {o.size} listed"
    version = source.store.info(o.key).version
    if version != o.version:
        return f"changed while it was read: version {version}, {o.version} claimed"
    return None


def _read_sidecar(source: Source, o: SourceObject, keys: set[str]) -> dict | None:
    """``<name>.json`` beside the video, merged over S3 user metadata; invalid JSON is noted, not fatal."""
    meta: dict = dict(o.metadata or {})
    if not meta:       # S3 user metadata; {} for a local file
        try:
            meta = dict(source.head_metadata(o.key))
        except OSError:    # gone since listing: the probe's own read decides what the object is
            meta = {}
    side = sidecar_for(o.key, keys)
    if side:
        try:
            doc = json.loads(source.read_bytes(side))
            if isinstance(doc, dict):
                meta.update(doc)
            else:
                meta["sidecar_error"] = "sidecar JSON is not an object"
        except (ValueError, OSError) as e:
            meta["sidecar_error"] = f"unreadable sidecar {side}: {e}"[:300]
    return meta or None

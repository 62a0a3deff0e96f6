"""WebDataset training shards of temporal windows of annotated frames, published by a manifest.

Two parts, joined here: :mod:`sav_assets.lib.dataset.shard_samples` encodes the samples (one temporal
window of one video: JPEG frames, ``masks.json`` with the source RLEs, ``meta.json``; see its
docstring for the member layout and keys) and :mod:`sav_assets.lib.dataset.publisher` packs them into
``<out_prefix>/<split>-NNNNNN.tar`` shards with :class:`ShardPublisher`, atomically, ``manifest.json``
last (the only thing readers trust). Output is deterministic: sorted videos, fixed tar metadata,
stable JPEG encoding, no timestamps in the manifest, so a re-run writes byte-identical shards.

:func:`write_shards` is the whole path (rows -> samples -> shards -> ``shards`` table rows);
:func:`write_samples` publishes samples built elsewhere (the benchmark); :func:`export_sav_train`
writes what SAM 2's trainer reads (the 24 fps JPEG frames of SA-V's time base, ``<video>_manual.json``
and the file list; see its docstring).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import asdict
from datetime import datetime, timezone

from sav_assets.lib.dataset.publisher import ShardPublisher, read_manifest, verify_manifest
from sav_assets.lib.dataset.shard_samples import ShardConfig, build_samples, sample_key
from sav_assets.lib.store.lake import Lake, safe_relpath

__all__ = ["ShardConfig", "ShardPublisher", "build_samples", "export_sav_train", "export_sav_train_lake",
           "read_manifest",
           "sample_key", "verify_manifest", "write_samples", "write_shards"]


def write_samples(lake: Lake, out_prefix: str, samples: Iterable[dict], cfg: ShardConfig,
                  split: str = "train", now: datetime | None = None, batch_id: str | None = None,
                  tmp_dir: str | None = None, extra: dict | Callable[[], dict] | None = None) -> dict:
    """Pack encoded samples into shards under ``out_prefix``, publish them, then the manifest.

    ``extra``: more manifest keys (or a callable returning them, called once every sample is written).
    Returns ``{"manifest", "manifest_uri", "rows" (SHARDS rows), "sample_rows" (SHARD_SAMPLES rows: one
    per sample, naming its shard and video), "shards", "samples", "bytes"}``.
    """
    now = now or datetime.now(timezone.utc)
    chash = cfg.config_hash()

    def manifest_extra() -> dict:
        return {"config": asdict(cfg), "config_hash": chash,
                **((extra() if callable(extra) else extra) or {})}

    metas: dict[str, dict] = {}
    with ShardPublisher(lake, out_prefix, split, max_samples=cfg.shard_max_samples,
                        max_bytes=cfg.shard_max_bytes, manifest_extra=manifest_extra, tmp_dir=tmp_dir) as pub:
        for s in samples:
            pub.write(s)
            if "meta.json" in s:
                metas[s["__key__"]] = json.loads(s["meta.json"])
    manifest = pub.manifest
    rows = [{
        "shard": e["shard"], "batch_id": batch_id, "uri": e["uri"], "split": pub.split,
        "samples": e["samples"], "bytes": e["bytes"], "sha256": e["sha256"],
        "window": cfg.window, "stride": cfg.step, "first_key": e["first_key"], "last_key": e["last_key"],
        "config_hash": chash, "created_at": now,
    } for e in pub.entries]
    sample_rows = [_sample_row(metas.get(key, {}), key, e["shard"], pub.split, batch_id, now)
                   for e in pub.entries for key in e["keys"]]
    return {"manifest": manifest, "manifest_uri": pub.manifest_uri, "rows": rows, "sample_rows": sample_rows,
            "shards": len(pub.entries), "samples": manifest["samples"], "bytes": manifest["bytes"]}


def _sample_row(meta: dict, key: str, shard: str, split: str, batch_id: str | None, now: datetime) -> dict:
    """A ``shard_samples`` row: which shard holds which video's window (from the sample's meta.json)."""
    frames = meta.get("frame_idx") or []
    return {"key": key, "shard": shard, "batch_id": batch_id, "video_id": meta.get("video_id"),
            "split": meta.get("split", split), "start_frame": frames[0] if frames else None,
            "frames": len(frames), "masklets": len(meta.get("masklet_id") or []), "created_at": now}


def write_shards(lake: Lake, out_prefix: str, train_videos: list[dict],
                 frames_by_video: dict[str, list[dict]], masklets_by_video: dict[str, list[dict]] | None,
                 video_paths: dict[str, str], cfg: ShardConfig | None = None, split: str = "train",
                 now: datetime | None = None, batch_id: str | None = None,
                 tmp_dir: str | None = None) -> dict:
    """Windows of annotated frames of ``train_videos`` as WebDataset shards + manifest.

    Returns ``{"manifest", "manifest_uri", "rows" (SHARDS rows), "shards", "samples", "bytes",
    "videos", "skipped"}``. Shards are ``<out_prefix>/<split>-NNNNNN.tar``.
    """
    cfg = cfg or ShardConfig()
    stats: dict = {}
    samples = build_samples(train_videos, frames_by_video, masklets_by_video, video_paths, cfg, split, stats)
    result = write_samples(lake, out_prefix, samples, cfg, split=split, now=now, batch_id=batch_id,
                           tmp_dir=tmp_dir, extra=lambda: {"videos": stats.get("videos", 0)})
    result["videos"] = stats.get("videos", 0)
    result["skipped"] = stats.get("skipped", [])
    return result


# ---- SA-V train export ------------------------------------------------------------------------

TRAIN_FRAMES = "JPEGImages_24fps"     # SAM 2's img_folder: <video>/%05d.jpg, the 24 fps timeline
TRAIN_JSON = "annotations"            # SAM 2's gt_folder: <video>_manual.json
TRAIN_LIST = "sav_train.txt"          # SAM 2's file_list_txt: one video name per line


def export_sav_train(lake: Lake, out_prefix: str, videos: list[dict], video_paths: dict[str, str],
                     json_docs: dict[str, dict[str, dict]],
                     json_for: Callable[[str], dict[str, dict]] | None = None,
                     masklet_type: str = "manual", jpeg_quality: int = 95,
                     open_video: Callable[[str], AbstractContextManager[str]] | None = None) -> dict:
    """What SAM 2's trainer reads (``JSONRawDataset`` + ``VOSDataset``, SA-V's ``ann_every: 4``)::

        <out_prefix>/JPEGImages_24fps/<video_id>/00000.jpg ...   the video on SA-V's 24 fps timeline
        <out_prefix>/annotations/<video_id>_manual.json          the chosen masklets, SA-V JSON
        <out_prefix>/sav_train.txt                              the exported ids (written last)

    JPEG ``j`` is the source frame :func:`sav_assets.lib.sav.fields.sav_timeline` puts at ``j / 24``
    s (by presentation timestamp), so mask ``k`` of the JSON lies on JPEG ``4k`` at any frame rate.
    SAM 2's loader opens only ``<video>_manual.json``: ``masklet_type`` (manual | auto | prompted)
    chooses which document is written under that name; a video without one is skipped.
    ``json_docs``: video id -> {masklet_type: SA-V doc}; ``json_for`` produces that dict per video
    instead. ``videos`` rows give ``video_frame_count`` / ``video_fps`` (the labeling grid's). A video
    not in ``video_paths`` is opened with ``open_video(video_id)`` (a context manager giving a local
    path, e.g. a download from S3 for the time of that video). ``out_prefix`` ``""`` is the root.
    Returns counts, the written keys and the skipped videos with reasons (an undecodable video is
    skipped, not fatal).
    """
    from sav_assets.lib.video.errors import VideoError

    prefix = safe_relpath(out_prefix)
    written: list[str] = []
    exported: list[str] = []
    skipped: list[dict] = []
    nbytes = 0
    rows = {v["video_id"]: v for v in videos}
    for vid in sorted(rows):
        safe_relpath(vid)
        docs = json_docs.get(vid) if json_docs else None
        if docs is None and json_for is not None:
            docs = json_for(vid)
        doc = (docs or {}).get(masklet_type)
        if vid not in video_paths and open_video is None:
            skipped.append({"video_id": vid, "reason": "no video file"})
            continue
        if not doc:
            skipped.append({"video_id": vid, "reason": f"no {masklet_type} annotations"})
            continue
        try:
            with (contextlib.nullcontext(video_paths[vid]) if vid in video_paths else open_video(vid)) as path:
                frames, fbytes = _write_timeline_jpegs(lake, _join(prefix, f"{TRAIN_FRAMES}/{vid}"), path,
                                                       rows[vid], jpeg_quality)
        except (VideoError, OSError) as e:   # the video's own failure: recorded, the export goes on
            reason = f"{e.error_class}: {e.message}" if isinstance(e, VideoError) else f"{type(e).__name__}: {e}"
            skipped.append({"video_id": vid, "reason": reason})
            continue
        data = json.dumps(doc).encode()
        rel = _join(prefix, f"{TRAIN_JSON}/{vid}_manual.json")
        lake.put_bytes(rel, data, content_type="application/json")
        written += frames + [rel]
        nbytes += fbytes + len(data)
        exported.append(vid)
    lake.put_bytes(_join(prefix, TRAIN_LIST), "".join(f"{v}\n" for v in exported).encode())
    return {"videos": len(exported), "files": written, "bytes": nbytes, "skipped": skipped,
            "masklet_type": masklet_type}


def _join(prefix: str, rel: str) -> str:
    return f"{prefix}/{rel}" if prefix else rel


def export_sav_train_lake(lake: Lake, dest: str | None = None, video_ids: list[str] | None = None,
                          masklet_type: str = "manual", opener=None) -> dict:
    """:func:`export_sav_train` of the lake's labeled videos (``sav-assets export-sav --train``).

    Writes to ``dest`` (a local folder or ``s3://`` prefix, reached with the lake's S3 settings) or
    ``<root>/exports/sav_train``; documents from :func:`sav_assets.lib.sav.exports.build_sav_docs`
    (current headers), videos opened from their ``source_uri`` one at a time through ``opener``
    (:class:`~sav_assets.lib.store.source.SourceOpener`). Returns export_sav_train's dict plus ``uri``.
    """
    from sav_assets.lib.sav.exports import build_sav_docs
    from sav_assets.lib.store.source import SourceOpener
    from sav_assets.lib.store.tables import VIDEOS

    opener = opener or SourceOpener()
    docs: dict[str, dict[str, dict]] = {}
    for (vid, kind), doc in build_sav_docs(lake, video_ids).items():
        docs.setdefault(vid, {})[kind] = doc
    rows = {v["video_id"]: v for v in lake.read_table("videos", schema=VIDEOS).to_pylist()
            if v["video_id"] in docs and v.get("status") in (None, "ok")}
    out, prefix = (Lake(dest, s3=getattr(lake.store, "settings", None)), "") if dest else (lake, "exports/sav_train")
    res = export_sav_train(out, prefix, list(rows.values()), {}, docs, masklet_type=masklet_type,
                           open_video=lambda vid: opener.local_path(rows[vid]["source_uri"]))
    res["skipped"] += [{"video_id": v, "reason": "not an ingested video"} for v in sorted(set(docs) - set(rows))]
    res["uri"] = out.uri(prefix) if prefix else out.uri("")
    return res


def _write_timeline_jpegs(lake: Lake, folder: str, path: str, video: dict, quality: int) -> tuple[list[str], int]:
    """``folder/%05d.jpg`` for every 24 fps instant: each source frame decoded and encoded once."""
    from sav_assets.lib.sav.fields import sav_timeline
    from sav_assets.lib.video.decode import iter_frame_chunks, presentation_times
    from sav_assets.lib.video.images import encode_jpeg

    pts = presentation_times(path, isolate=True)
    n = int(video.get("video_frame_count") or 0) or len(pts)
    n = min(n, len(pts)) if pts else n
    timeline = sav_timeline(n, float(video.get("video_fps") or 0.0), pts)
    positions: dict[int, list[int]] = {}
    for j, i in enumerate(timeline):
        positions.setdefault(i, []).append(j)
    written, nbytes = [], 0
    for chunk in iter_frame_chunks(path, sorted(positions), 16, isolate=True):
        for i, img in zip(chunk.indices, chunk.frames):
            data = encode_jpeg(img, quality)
            for j in positions[i]:
                rel = f"{folder}/{j:05d}.jpg"
                lake.put_bytes(rel, data, content_type="image/jpeg")
                written.append(rel)
                nbytes += len(data)
    return written, nbytes

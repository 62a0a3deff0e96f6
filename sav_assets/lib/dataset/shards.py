"""WebDataset training shards of temporal windows of annotated frames, published by a manifest.

Two parts, joined here: :mod:`sav_assets.lib.dataset.shard_samples` encodes the samples (one temporal
window of one video: JPEG frames, ``masks.json`` with the source RLEs, ``meta.json``; see its
docstring for the member layout and keys) and :mod:`sav_assets.lib.dataset.publisher` packs them into
``<out_prefix>/<split>-NNNNNN.tar`` shards with :class:`ShardPublisher`, atomically, ``manifest.json``
last (the only thing readers trust). Output is deterministic: sorted videos, fixed tar metadata,
stable JPEG encoding, no timestamps in the manifest, so a re-run writes byte-identical shards.

:func:`write_shards` is the whole path (rows -> samples -> shards -> ``shards`` table rows);
:func:`write_samples` publishes samples built elsewhere (the benchmark); :func:`export_sav_train`
writes the SA-V train layout (videos plus SA-V JSON).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import asdict
from datetime import datetime, timezone

from sav_assets.lib.dataset.publisher import ShardPublisher, read_manifest, verify_manifest
from sav_assets.lib.dataset.shard_samples import ShardConfig, build_samples, sample_key
from sav_assets.lib.store.lake import Lake, safe_relpath

__all__ = ["ShardConfig", "ShardPublisher", "build_samples", "export_sav_train", "read_manifest",
           "sample_key", "verify_manifest", "write_samples", "write_shards"]


def write_samples(lake: Lake, out_prefix: str, samples: Iterable[dict], cfg: ShardConfig,
                  split: str = "train", now: datetime | None = None, batch_id: str | None = None,
                  tmp_dir: str | None = None, extra: dict | Callable[[], dict] | None = None) -> dict:
    """Pack encoded samples into shards under ``out_prefix``, publish them, then the manifest.

    ``extra``: more manifest keys (or a callable returning them, called once every sample is written).
    Returns ``{"manifest", "manifest_uri", "rows" (SHARDS rows), "shards", "samples", "bytes"}``.
    """
    now = now or datetime.now(timezone.utc)
    chash = cfg.config_hash()

    def manifest_extra() -> dict:
        return {"config": asdict(cfg), "config_hash": chash,
                **((extra() if callable(extra) else extra) or {})}

    with ShardPublisher(lake, out_prefix, split, max_samples=cfg.shard_max_samples,
                        max_bytes=cfg.shard_max_bytes, manifest_extra=manifest_extra, tmp_dir=tmp_dir) as pub:
        for s in samples:
            pub.write(s)
    manifest = pub.manifest
    rows = [{
        "shard": e["shard"], "batch_id": batch_id, "uri": e["uri"], "split": pub.split,
        "samples": e["samples"], "bytes": e["bytes"], "sha256": e["sha256"],
        "window": cfg.window, "stride": cfg.step, "first_key": e["first_key"], "last_key": e["last_key"],
        "config_hash": chash, "created_at": now,
    } for e in pub.entries]
    return {"manifest": manifest, "manifest_uri": pub.manifest_uri, "rows": rows,
            "shards": len(pub.entries), "samples": manifest["samples"], "bytes": manifest["bytes"]}


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

def export_sav_train(lake: Lake, out_prefix: str, videos: list[dict], video_paths: dict[str, str],
                     json_docs: dict[str, dict[str, dict]],
                     json_for: Callable[[str], dict[str, dict]] | None = None) -> dict:
    """SA-V train layout: ``<out_prefix>/<video_id>.mp4`` + ``<video_id>_manual.json`` / ``_auto.json``.

    ``json_docs``: video id -> {"manual": doc, "auto": doc} (SA-V JSON dicts, e.g. from the SA-V
    writer); ``json_for`` is an alternative callable producing that dict per video. Also writes
    ``sav_train.txt`` (the exported ids) last. Returns counts and the written keys.
    """
    prefix = safe_relpath(out_prefix)
    written: list[str] = []
    exported: list[str] = []
    skipped: list[dict] = []
    nbytes = 0
    for vid in sorted({v["video_id"] for v in videos}):
        safe_relpath(vid)
        docs = json_docs.get(vid) if json_docs else None
        if docs is None and json_for is not None:
            docs = json_for(vid)
        if vid not in video_paths:
            skipped.append({"video_id": vid, "reason": "no video file"})
            continue
        if not docs:
            skipped.append({"video_id": vid, "reason": "no annotations"})
            continue
        rel = f"{prefix}/{vid}.mp4"
        lake.put_file(rel, video_paths[vid])
        nbytes += os.path.getsize(video_paths[vid])
        written.append(rel)
        for kind in sorted(docs):
            if kind not in ("manual", "auto"):
                raise ValueError(f"unknown SA-V annotation kind {kind!r} (manual | auto)")
            data = json.dumps(docs[kind]).encode()
            rel = f"{prefix}/{vid}_{kind}.json"
            lake.put_bytes(rel, data, content_type="application/json")
            nbytes += len(data)
            written.append(rel)
        exported.append(vid)
    lake.put_bytes(f"{prefix}/sav_train.txt", "".join(f"{v}\n" for v in exported).encode())
    return {"videos": len(exported), "files": written, "bytes": nbytes, "skipped": skipped}

"""WebDataset samples: temporal windows of annotated frames of one video, encoded member by member.

A sample is ``window`` consecutive annotated frames (SA-V annotates at 6 fps) of one video::

    <key>.f00.jpg ... <key>.f07.jpg   the frames (RGB JPEG)
    <key>.masks.json                  {"size", "frame_idx", "masklet_id", "masklet_type",
                                       "rles": [[rle per masklet] per frame]}
    <key>.meta.json                   video_id, frame/ann indices, masklet ids/types, visibility, sizes

with ``key = <video_id>_<first frame_idx:06d>`` (video ids that are not ``[A-Za-z0-9_-]`` get a
sanitised prefix plus a hash, since WebDataset splits keys at the first dot). Masks are the
source RLEs verbatim unless ``max_side`` resizes the frames (then they are resized with nearest
neighbour and re-encoded). Encoding is deterministic (sorted videos, stable JPEG encoding, sorted
JSON keys), so the same inputs give the same bytes. :mod:`sav_assets.lib.dataset.publisher` packs
the samples into shards; :mod:`sav_assets.lib.dataset.shards` joins the two.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np

from sav_assets.lib.sav import rle as rle_lib
from sav_assets.lib.util import sha256_json, sha256_text
from sav_assets.lib.video.images import encode_jpeg, iter_frames, resize_max_side


@dataclass
class ShardConfig:
    window: int = 8                      # annotated frames per sample (8-16 is typical)
    stride: int | None = None            # annotated frames between window starts; None = window
    shard_max_bytes: int = 300_000_000
    shard_max_samples: int = 10_000
    jpeg_quality: int = 90
    max_side: int | None = None          # downscale frames (and masks) so the long side fits

    @property
    def step(self) -> int:
        return int(self.stride or self.window)

    def config_hash(self) -> str:
        return sha256_json(asdict(self))[:16]


# ---- samples -----------------------------------------------------------------------------------

_SAFE = re.compile(r"[^A-Za-z0-9_-]")


def sample_key(video_id: str, start_frame: int) -> str:
    safe = _SAFE.sub("_", video_id)
    if safe != video_id or len(safe) > 64:
        safe = f"{safe[:40]}-{sha256_text(video_id)[:10]}"
    return f"{safe}_{int(start_frame):06d}"


def frame_name(i: int) -> str:
    return f"f{i:02d}.jpg"


def window_starts(n_frames: int, window: int, step: int) -> list[int]:
    if n_frames < window or window <= 0:
        return []
    return list(range(0, n_frames - window + 1, max(1, step)))


def _resize_rle(r: dict, hw: tuple[int, int]) -> dict:
    from PIL import Image

    m = rle_lib.decode(r)
    if m.shape == hw:
        return r
    img = Image.fromarray(m * 255).resize((hw[1], hw[0]), Image.NEAREST)
    return rle_lib.encode(np.asarray(img) > 127)


def build_samples(videos: list[dict], frames_by_video: dict[str, list[dict]],
                  masklets_by_video: dict[str, list[dict]] | None, video_paths: dict[str, str],
                  cfg: ShardConfig, split: str = "train", stats: dict | None = None) -> Iterator[dict]:
    """Encoded samples (``__key__`` plus bytes per member) for the videos, in deterministic order.

    ``masklets_by_video`` (masklet rows) chooses which masklets go in and gives their types; when a
    video has none there, every masklet in its frame rows is used. ``stats`` (a dict) is filled with
    per-run counts: videos, samples, skipped videos with reasons.
    """
    stats = stats if stats is not None else {}
    stats.setdefault("videos", 0)
    stats.setdefault("samples", 0)
    stats.setdefault("skipped", [])
    for vid in sorted({v["video_id"] for v in videos}):
        rows = frames_by_video.get(vid) or []
        mrows = (masklets_by_video or {}).get(vid)
        if mrows:
            # masklets are (type, id): SA-V numbers manual and auto masklets independently from 0
            keep = {_mkey(m) for m in mrows}
            rows = [r for r in rows if _mkey(r) in keep]
        else:
            keep = {_mkey(r) for r in rows}
        frames = sorted({int(r["frame_idx"]) for r in rows})
        starts = window_starts(len(frames), cfg.window, cfg.step)
        if not starts:
            stats["skipped"].append({"video_id": vid, "reason": f"{len(frames)} annotated frames < window"})
            continue
        if vid not in video_paths:
            stats["skipped"].append({"video_id": vid, "reason": "no video file"})
            continue
        mids = sorted(keep)
        cell: dict[tuple, dict] = {(_mkey(r), int(r["frame_idx"])): r for r in rows}
        ann_of = {int(r["frame_idx"]): int(r["ann_idx"]) for r in rows if r.get("ann_idx") is not None}
        size = [int(x) for x in rows[0]["size"]]
        stats["videos"] += 1

        windows = [frames[s: s + cfg.window] for s in starts]
        needed = sorted({f for w in windows for f in w})
        jpegs: dict[int, bytes] = {}
        out_hw: tuple[int, int] | None = None
        wi = 0
        frames_iter = iter_frames(video_paths[vid], needed)
        while True:
            try:
                idx, img = next(frames_iter)
            except StopIteration:
                break
            except Exception as e:  # a video that fails to decode is recorded, the run goes on
                stats["skipped"].append({"video_id": vid, "reason": f"{type(e).__name__}: {e}",
                                         "samples_written": wi})
                break
            img = resize_max_side(img, cfg.max_side)
            out_hw = img.shape[:2]
            jpegs[idx] = encode_jpeg(img, cfg.jpeg_quality)
            while wi < len(windows) and windows[wi][-1] <= idx:
                w = windows[wi]
                yield _make_sample(vid, w, mids, cell, ann_of, size, out_hw, jpegs, cfg, split)
                stats["samples"] += 1
                wi += 1
                lo = windows[wi][0] if wi < len(windows) else idx + 1
                for f in [f for f in jpegs if f < lo]:
                    del jpegs[f]


def _mkey(row: dict) -> tuple[str, int]:
    return (row.get("masklet_type") or "", int(row["masklet_id"]))


def _make_sample(vid, w, mids, cell, ann_of, size, out_hw, jpegs, cfg, split) -> dict:
    resized = tuple(size) != tuple(out_hw)
    empty = rle_lib.empty(*size)
    rles, visible = [], []
    for f in w:
        fr, fv = [], []
        for m in mids:
            r = cell.get((m, f))
            src = rle_lib.from_row(r) if r is not None else empty
            if resized:
                src = _resize_rle(src, out_hw)
            fr.append(src)
            if r is not None and r.get("visible") is not None:
                fv.append(bool(r["visible"]))
            else:
                fv.append(r is not None and rle_lib.area(src) > 0)
        rles.append(fr)
        visible.append(fv)
    key = sample_key(vid, w[0])
    ids = [m[1] for m in mids]
    types = [m[0] or None for m in mids]
    masks = {"size": [int(out_hw[0]), int(out_hw[1])], "frame_idx": w, "masklet_id": ids,
             "masklet_type": types, "rles": rles}
    meta = {
        "video_id": vid, "key": key, "split": split,
        "frame_idx": w, "ann_idx": [ann_of.get(f) for f in w],
        "masklet_id": ids, "masklet_type": types, "visible": visible,
        "height": int(out_hw[0]), "width": int(out_hw[1]),
        "source_height": int(size[0]), "source_width": int(size[1]),
        "window": cfg.window,
    }
    sample = {"__key__": key}
    for i, f in enumerate(w):
        sample[frame_name(i)] = jpegs[f]
    sample["masks.json"] = json.dumps(masks, separators=(",", ":")).encode()
    sample["meta.json"] = json.dumps(meta, separators=(",", ":"), sort_keys=True).encode()
    return sample

"""SA-V val/test folder layout, so Meta's ``sav_evaluator.py`` and ``tools/vos_inference.py`` run unchanged.

::

    <out_dir>/
      sav_<split>.txt                          video ids, one per line
      JPEGImages_24fps/<video_id>/<frame:05d>.jpg
      Annotations_6fps/<video_id>/<obj:03d>/<frame:05d>.png

Frame numbers are the video's own frame indices (annotated every 4th frame at 24 fps gives
00000, 00004, ...). JPEGs cover every frame from the first to the last annotated frame, so the
first JPEG of a video is annotated for every object, as ``vos_inference.py`` expects (it prompts
with the first frame's masks). Each object folder (``int()``-parsable, ``{masklet_id:03d}``) has one
binary palette PNG (values 0/1) per annotated frame, empty where the object is not visible; the
evaluator scans these folders, drops the first and last frame, and reads ``png > 0``.

Pass ``--gt_root <out_dir>/Annotations_6fps`` to ``sav_evaluator.py``.
"""

from __future__ import annotations

import os
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np

from sav_assets.lib.sav import rle as rle_lib
from sav_assets.lib.store.lake import safe_relpath
from sav_assets.lib.util import atomic_write_bytes
from sav_assets.lib.video.images import encode_jpeg, encode_mask_png, iter_frames

JPEG_DIR = "JPEGImages_24fps"
ANN_DIR = "Annotations_6fps"


def _write(path: Path, data: bytes) -> None:
    # a re-run rewrites whole folders anyway: atomic per file, no fsync per frame
    atomic_write_bytes(path, data, fsync=False)


def _by_object(vid: str, rows: list[dict]) -> dict[int, dict[int, dict]]:
    """masklet_id -> frame_idx -> row; one masklet type per id (object folders are masklet ids)."""
    by_obj: dict[int, dict[int, dict]] = defaultdict(dict)
    type_of: dict[int, str | None] = {}
    for r in rows:
        mid = int(r["masklet_id"])
        if type_of.setdefault(mid, r.get("masklet_type")) != r.get("masklet_type"):
            raise ValueError(f"{vid}: masklet_id {mid} is both {type_of[mid]} and {r.get('masklet_type')}; "
                             "pass masklet_types= to choose one kind (object folders are masklet ids)")
        by_obj[mid][int(r["frame_idx"])] = r
    return by_obj


def _write_masks(out: Path, vid: str, by_obj: dict[int, dict[int, dict]], ann_frames: list[int],
                 summary: dict) -> int:
    """One PNG per object and annotated frame; returns the number of objects written.

    The evaluators score frames strictly between the first and the last annotated one; an object
    absent from all of them has no score (Meta's sav_evaluator.py stops on an assert): left out."""
    n_objects = 0
    for obj_id in sorted(by_obj):
        obj = by_obj[obj_id]
        size = next(iter(obj.values()))["size"]
        masks = {f: rle_lib.decode(rle_lib.from_row(obj[f])) if f in obj else
                 np.zeros((int(size[0]), int(size[1])), dtype=np.uint8) for f in ann_frames}
        if not any(masks[f].any() for f in ann_frames[1:-1]):
            summary["skipped_objects"].append({"video_id": vid, "masklet_id": obj_id,
                                               "reason": "not visible between the first and last "
                                                         "annotated frames"})
            continue
        for f in ann_frames:
            _write(out / ANN_DIR / vid / f"{obj_id:03d}" / f"{f:05d}.png", encode_mask_png(masks[f]))
            summary["pngs"] += 1
        n_objects += 1
    return n_objects


def _write_jpegs(out: Path, vid: str, path: str, frames: range, mask_hw: tuple, jpeg_quality: int,
                 summary: dict) -> int:
    """Every frame from the first to the last annotated one; notes a frame size unlike the masks'."""
    n_jpegs = 0
    for idx, img in iter_frames(path, frames):
        if img.shape[:2] != mask_hw and vid not in summary["size_mismatch"]:
            summary["size_mismatch"].append(vid)
        _write(out / JPEG_DIR / vid / f"{idx:05d}.jpg", encode_jpeg(img, jpeg_quality))
        n_jpegs += 1
    return n_jpegs


def _write_video(out: Path, vid: str, rows: list[dict], path: str, jpeg_quality: int, summary: dict) -> bool:
    """Masks first (no decoding, fail fast on bad RLE), then the JPEGs; whether the video was written."""
    by_obj = _by_object(vid, rows)
    ann_frames = sorted({f for o in by_obj.values() for f in o})
    for d in (JPEG_DIR, ANN_DIR):                 # a re-run replaces the video's folders whole
        shutil.rmtree(out / d / vid, ignore_errors=True)
    n_objects = _write_masks(out, vid, by_obj, ann_frames, summary)
    summary["objects"] += n_objects
    if not n_objects:
        shutil.rmtree(out / ANN_DIR / vid, ignore_errors=True)
        summary["skipped"].append({"video_id": vid, "reason": "no object visible between the first and "
                                                              "last annotated frames"})
        return False
    mask_hw = tuple(int(x) for x in rows[0]["size"])
    try:
        n_jpegs = _write_jpegs(out, vid, path, range(ann_frames[0], ann_frames[-1] + 1), mask_hw, jpeg_quality,
                               summary)
    except Exception as e:  # undecodable or too short: leave the video out entirely, go on
        shutil.rmtree(out / JPEG_DIR / vid, ignore_errors=True)
        shutil.rmtree(out / ANN_DIR / vid, ignore_errors=True)
        summary["skipped"].append({"video_id": vid, "reason": f"{type(e).__name__}: {e}"})
        summary["objects"] -= n_objects
        summary["pngs"] -= n_objects * len(ann_frames)
        return False
    summary["jpegs"] += n_jpegs
    return True


def _remove_stale(out: Path, keep: set[str], summary: dict) -> None:
    """Folders of videos no longer in the split would break the evaluator's strict gt/pred match."""
    for d in (JPEG_DIR, ANN_DIR):
        if (out / d).is_dir():
            for child in (out / d).iterdir():
                if child.is_dir() and child.name not in keep:
                    shutil.rmtree(child)
                    summary.setdefault("removed", []).append(f"{d}/{child.name}")


def write_eval_layout(out_dir: str | os.PathLike, split_name: str, videos: list[dict],
                      frames_by_video: dict[str, list[dict]], video_paths: dict[str, str],
                      jpeg_quality: int = 95, masklet_types: tuple[str, ...] | None = None) -> dict:
    """Write the SA-V val/test layout for ``videos`` (dicts with ``video_id``) under ``out_dir``.

    ``frames_by_video``: masklet_frames rows (``masklet_id``, ``frame_idx``, ``size``, ``counts``,
    optional ``masklet_type``) per video; ``masklet_types`` keeps only those types (SA-V val/test
    hold manual masklets only). ``out_dir`` belongs to this split: a re-run rewrites each video's
    folders and removes folders of videos no longer listed. Returns a summary dict (counts, paths).
    """
    out = Path(out_dir)
    split = safe_relpath(split_name)
    summary = {"split": split, "videos": 0, "objects": 0, "jpegs": 0, "pngs": 0,
               "skipped": [], "skipped_objects": [], "size_mismatch": [], "gt_root": str(out / ANN_DIR),
               "jpeg_root": str(out / JPEG_DIR), "list_file": str(out / f"sav_{split}.txt")}
    written: list[str] = []
    for vid in sorted({v["video_id"] for v in videos}):
        safe_relpath(vid)
        rows = [r for r in frames_by_video.get(vid, [])
                if masklet_types is None or r.get("masklet_type") in masklet_types]
        if not rows:
            summary["skipped"].append({"video_id": vid, "reason": "no annotated frames"})
        elif vid not in video_paths:
            summary["skipped"].append({"video_id": vid, "reason": "no video file"})
        elif _write_video(out, vid, rows, video_paths[vid], jpeg_quality, summary):
            written.append(vid)
            summary["videos"] += 1
    _write(out / f"sav_{split}.txt", "".join(f"{v}\n" for v in written).encode())
    _remove_stale(out, set(written), summary)
    summary["video_ids"] = written
    return summary

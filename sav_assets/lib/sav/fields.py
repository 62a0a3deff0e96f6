"""SA-V per-masklet fields derived from per-frame areas, exactly as the SA-V release computes them.

Checked against ``shared/data/sav_example``: ``masklet_size_abs`` is the mean area over the frames
where the object is visible, ``masklet_size_rel`` that divided by the frame's pixel count, the bucket
uses small < 32^2 <= medium < 96^2 <= large on that mean, ``masklet_first_appeared_frame`` is the
first annotated-frame index with a non-empty mask, and visibility changes are counted from that
first appearance on.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SMALL = 32 ** 2
LARGE = 96 ** 2


def size_bucket(size_abs: float) -> str:
    if size_abs < SMALL:
        return "small"
    if size_abs < LARGE:
        return "medium"
    return "large"


def derive(areas: Sequence[int], height: int, width: int) -> dict:
    """Per-masklet SA-V fields from the masklet's area on each annotated frame."""
    a = np.asarray(areas, dtype=np.float64)
    vis = a > 0
    if not vis.any():
        return {
            "masklet_size_abs": 0.0, "masklet_size_rel": 0.0, "masklet_size_bucket": "small",
            "masklet_visibility_changes": 0, "masklet_first_appeared_frame": -1,
            "masklet_frame_count": int(len(a)),
        }
    first = int(np.argmax(vis))
    size_abs = float(a[vis].mean())
    tail = vis[first:]
    return {
        "masklet_size_abs": size_abs,
        "masklet_size_rel": size_abs / float(height * width),
        "masklet_size_bucket": size_bucket(size_abs),
        "masklet_visibility_changes": int(np.count_nonzero(tail[1:] != tail[:-1])),
        "masklet_first_appeared_frame": first,
        "masklet_frame_count": int(len(a)),
    }


def annotation_grid(frame_count: int, fps: float, target_fps: float = 6.0) -> list[int]:
    """Frame indices to annotate: the nearest frames to a ``target_fps`` time grid.

    For 24 fps video at 6 fps this is every 4th frame (0, 4, 8, ...), as in SA-V.
    """
    if frame_count <= 0:
        return []
    if not fps or fps <= 0 or target_fps <= 0 or target_fps >= fps:
        return list(range(frame_count))
    ratio = fps / target_fps
    if abs(ratio - round(ratio)) < 1e-6:
        return list(range(0, frame_count, int(round(ratio))))
    duration = frame_count / fps
    n = int(np.floor(duration * target_fps + 1e-9)) + 1
    idx = [int(round(k * fps / target_fps)) for k in range(n)]
    out: list[int] = []
    for i in idx:
        if i < frame_count and (not out or i != out[-1]):
            out.append(i)
    return out

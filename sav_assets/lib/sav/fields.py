"""SA-V per-masklet fields and SA-V's time base.

Per-masklet fields (:func:`derive`), checked against ``shared/data/sav_example``: ``masklet_size_abs``
is the mean area over the frames where the object is visible, ``masklet_size_rel`` that divided by the
frame's pixel count, the bucket uses small < 32^2 <= medium < 96^2 <= large on that mean,
``masklet_first_appeared_frame`` is the first annotated-frame index with a non-empty mask, and
visibility changes are counted from that first appearance on.

One time base (:func:`sav_timeline`, :func:`annotation_grid`). SA-V's layout is a 24 fps frame
sequence (``JPEGImages_24fps``) with masks on every 4th frame (``Annotations_6fps``): annotated frame
``k`` of a masklet is 24 fps frame ``4k``, at ``4k / 24`` s. A video at any frame rate is resampled to
that 24 fps timeline by presentation timestamp: 24 fps frame ``j`` is the source frame whose timestamp
(seconds from the first frame's) is nearest to ``j / 24`` (ties, within 0.1 ms, go to the earlier
frame: container timestamps are often float32 or rounded to the time base), for every
``j`` with ``j / 24`` before the end of the last source frame (its timestamp plus one frame
duration). ``pts_s`` are the container's presentation timestamps (variable frame rate works); without
them frame ``i`` is at ``i / fps``. At exactly 24 fps the timeline is the identity (``0 .. n-1``), so
24 fps exports are unchanged. Below 24 fps a source frame may appear twice on the timeline, above it
some source frames are skipped. The labeling grid, the SA-V JSON export, the evaluation layout and the
training export/shards all use this; ``masklet_frames`` keeps each annotated frame's source
``frame_idx`` and its ``timestamp_s``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SMALL = 32 ** 2
LARGE = 96 ** 2
SAV_FPS = 24.0          # SA-V's frame sequence (JPEGImages_24fps)
SAV_ANN_EVERY = 4       # masks on every 4th frame of it (Annotations_6fps; SAM 2's ann_every: 4)
_TIE_S = 1e-4           # timestamps this close count as equal (float32 pts, time-base rounding)


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


def frame_times(n_frames: int, fps: float, pts_s: Sequence[float] | None = None) -> np.ndarray:
    """Seconds of each source frame from the first frame: ``pts_s - pts_s[0]``, or ``i / fps``."""
    if pts_s is not None and len(pts_s) >= n_frames > 0:
        t = np.asarray(pts_s[:n_frames], dtype=np.float64)
        return t - t[0]
    if not fps or fps <= 0:
        fps = SAV_FPS
    return np.arange(n_frames, dtype=np.float64) / float(fps)


def sav_timeline(n_frames: int, fps: float, pts_s: Sequence[float] | None = None) -> list[int]:
    """The source frame index shown at each 24 fps instant ``j / 24`` (see the module docstring)."""
    if n_frames <= 0:
        return []
    t = frame_times(n_frames, fps, pts_s)
    if pts_s is None and fps and abs(float(fps) - SAV_FPS) < 1e-9:
        return list(range(n_frames))        # exactly 24 fps: the identity, no rounding involved
    if n_frames > 1:
        last_dur = float(t[-1] - t[-2]) if pts_s is not None else 1.0 / float(fps or SAV_FPS)
    else:
        last_dur = 1.0 / float(fps) if fps and fps > 0 else 1.0 / SAV_FPS
    end = float(t[-1]) + max(last_dur, 0.0)
    n_out = max(1, int(np.ceil(end * SAV_FPS - _TIE_S * SAV_FPS)))
    inst = np.arange(n_out, dtype=np.float64) / SAV_FPS
    hi = np.clip(np.searchsorted(t, inst, side="left"), 0, n_frames - 1)
    lo = np.clip(hi - 1, 0, n_frames - 1)
    pick = np.where(np.abs(t[lo] - inst) <= np.abs(t[hi] - inst) + _TIE_S, lo, hi)  # ties: the earlier
    return [int(i) for i in pick]


def annotation_grid(frame_count: int, fps: float, target_fps: float = SAV_FPS / SAV_ANN_EVERY,
                    pts_s: Sequence[float] | None = None) -> list[int]:
    """Source frame indices to annotate: every 4th entry of :func:`sav_timeline` (6 fps, as SA-V).

    Annotated frame ``k`` is 24 fps frame ``4k``. ``target_fps`` other than 6 takes every
    ``round(24 / target_fps)``-th entry (at least every entry); SA-V's layout needs 6. At 24 fps this
    is ``0, 4, 8, ...`` as before. A source frame can repeat when the video is under 6 fps.
    """
    timeline = sav_timeline(frame_count, fps, pts_s)
    step = max(1, int(round(SAV_FPS / target_fps))) if target_fps and target_fps > 0 else 1
    return timeline[::step]


def annotation_times(frame_count: int, fps: float, target_fps: float = SAV_FPS / SAV_ANN_EVERY,
                     pts_s: Sequence[float] | None = None) -> list[float]:
    """``timestamp_s`` of each :func:`annotation_grid` entry (the source frame's own timestamp)."""
    t = frame_times(frame_count, fps, pts_s)
    return [float(t[i]) for i in annotation_grid(frame_count, fps, target_fps, pts_s)]

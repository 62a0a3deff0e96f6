"""The backward cycle-consistency check behind ``masklets.masklet_cycle_iou``.

From the last annotated frame, the forward masks of the masklets visible there seed one cohort of
a reverse-time :class:`~sav_assets.lib.label.tracker.Tracker`, which is propagated back to the
earliest of those masklets' first frames (only those annotated frames are decoded, again chunk by
chunk). A masklet's ``masklet_cycle_iou`` is the mean IoU of its backward vs forward masks over its
frames before the last (two empty masks agree: 1.0). Masklets not visible on the last frame, and
videos with a single annotated frame, get no value (None).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from sav_assets.lib.label.config import LabelerConfig
from sav_assets.lib.label.records import MaskletRecords
from sav_assets.lib.label.tracker import Tracker, to_video_res
from sav_assets.lib.sav import rle
from sav_assets.lib.video.decode import iter_frame_chunks


def cycle_ious(loaded, video_path: str, grid: list[int], recs: MaskletRecords, hw: tuple[int, int],
               cfg: LabelerConfig, decode_kw: dict, last_masks: dict[int, np.ndarray],
               tick: Callable[[], None]) -> dict[int, float | None]:
    """``{masklet_id: cycle IoU}`` for the masklets visible on the last annotated frame.

    ``last_masks`` are the forward masks (HxW bool) on that frame, used as the backward seeds
    exactly; ``tick()`` is called once per annotated frame processed."""
    L = len(grid) - 1
    seeds = recs.visible_at(L)
    if not (cfg.cycle_check and L >= 1 and seeds):
        return {}
    lo = min(recs.created[m] for m in seeds)
    if lo >= L:
        return {}
    rt = Tracker(loaded, len(grid), offload_state=cfg.offload_state_to_cpu,
                 max_memory_frames=cfg.max_memory_frames, reverse=True)
    scores: dict[int, list[float]] = {m: [] for m in seeds}
    for chunk in iter_frame_chunks(video_path, grid[lo:L + 1], cfg.chunk_frames, reverse=True, **decode_kw):
        for j in reversed(range(len(chunk.indices))):
            a = lo + chunk.start + j
            bb = rt.backbone(chunk.frames[j])
            if a == L:
                ms = np.stack([last_masks[m] if m in last_masks else rle.decode(recs.rle(m, L, hw)).astype(bool)
                               for m in seeds])
                rt.add_masks(L, bb, ms, list(seeds))
            else:
                _score_frame(rt.track(a, bb), a, seeds, recs, hw, scores)
            tick()
    return {m: (float(np.mean(v)) if v else None) for m, v in scores.items()}


def _score_frame(per_obj: dict, a: int, seeds: list[int], recs: MaskletRecords, hw: tuple[int, int],
                 scores: dict[int, list[float]]) -> None:
    """Append the backward-vs-forward IoU on annotated frame ``a`` of the masklets that exist there."""
    active = [m for m in seeds if recs.created[m] <= a]
    if not active:
        return
    masks, _, _ = to_video_res(per_obj, active, hw)
    backward = [r for r, _, _ in rle.encode_many_wh(masks)]
    ious = rle.paired_ious(backward, [recs.rle(m, a, hw) for m in active], both_empty=1.0)
    for m, v in zip(active, ious):
        scores[m].append(float(v))

"""The backward cycle-consistency check behind ``masklets.masklet_cycle_iou``.

From the last annotated frame, the forward masks of the masklets visible there seed one cohort of
a reverse-time :class:`~sav_assets.lib.label.tracker.Tracker`, which is propagated back over the
last ``cfg.cycle_frames`` annotated frames (no further than the earliest of those masklets' first
frames). Those frames' backbone features are the forward pass's own (its
:class:`~sav_assets.lib.label.tracker.FeatureCache`), so the check adds no image-encoder pass: one
encoder pass per annotated frame for the whole labeling. ``cycle_frames`` 0 covers the whole video;
frames the cache does not hold are then decoded again (chunk by chunk) and re-encoded, which is
what every frame cost before the cache (about twice the encoder work).

A masklet's ``masklet_cycle_iou`` is the mean IoU of its backward vs forward masks over the covered
frames before the last (two empty masks agree: 1.0). Masklets not visible on the last frame, and
videos with a single annotated frame, get no value (None).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from sav_assets.lib.label.config import LabelerConfig
from sav_assets.lib.label.records import MaskletRecords
from sav_assets.lib.label.tracker import FeatureCache, Tracker, to_video_res
from sav_assets.lib.sav import rle
from sav_assets.lib.video.decode import iter_frame_chunks


def cycle_ious(loaded, video_path: str, grid: list[int], recs: MaskletRecords, hw: tuple[int, int],
               cfg: LabelerConfig, decode_kw: dict, cache: FeatureCache, tick: Callable[[], None],
               cost: dict | None = None) -> dict[int, float | None]:
    """``{masklet_id: cycle IoU}`` for the masklets visible on the last annotated frame.

    The forward masks on that frame (decoded from ``recs``) seed the backward pass exactly;
    ``tick()`` is called once per annotated frame processed; the backward tracker's encoder calls
    and decoder passes are added to ``cost``."""
    L = len(grid) - 1
    seeds = recs.visible_at(L)
    if not (cfg.cycle_check and L >= 1 and seeds):
        return {}
    lo = min(recs.created[m] for m in seeds)
    if cfg.cycle_frames > 0:
        lo = max(lo, L - cfg.cycle_frames + 1)
    if lo >= L:
        return {}
    rt = Tracker(loaded, len(grid), offload_state=cfg.offload_state_to_cpu,
                 max_memory_frames=cfg.max_memory_frames, reverse=True)
    scores: dict[int, list[float]] = {m: [] for m in seeds}
    for a, bb in _backward_features(rt, cache, video_path, grid, lo, L, cfg, decode_kw):
        if a == L:
            ms = np.stack([rle.decode(recs.rle(m, L, hw)).astype(bool) for m in seeds])
            rt.add_masks(L, bb, ms, list(seeds))
        else:
            _score_frame(rt.track(a, bb), a, seeds, recs, hw, scores)
        tick()
    if cost is not None:
        cost["encoder_calls"] = cost.get("encoder_calls", 0) + rt.encoder_calls
        cost["decoder_passes"] = cost.get("decoder_passes", 0) + rt.decoder_passes
    return {m: (float(np.mean(v)) if v else None) for m, v in scores.items()}


def _backward_features(rt: Tracker, cache: FeatureCache, video_path: str, grid: list[int], lo: int, L: int,
                       cfg: LabelerConfig, decode_kw: dict) -> Iterator[tuple[int, dict]]:
    """``(a, backbone features)`` for annotated frames ``L`` down to ``lo``: cached ones as they
    are, the others (below the cache) decoded in reverse chunks and encoded by ``rt``."""
    a = L
    while a >= lo:
        bb = cache.get(a)
        if bb is None:
            break
        yield a, bb
        a -= 1
    if a < lo:
        return
    for chunk in iter_frame_chunks(video_path, grid[lo:a + 1], cfg.chunk_frames, reverse=True, **decode_kw):
        for j in reversed(range(len(chunk.indices))):
            yield lo + chunk.start + j, rt.backbone(chunk.frames[j])


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

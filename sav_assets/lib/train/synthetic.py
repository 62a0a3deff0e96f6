"""Synthetic training clips and evaluation episodes with exact masks, from the demo corpus's scene.

The demo corpus (:mod:`sav_assets.lib.ingest.demo`) renders videos whose every mask is exact: a
textured panning background, a ball, a box that passes behind a bar, the bar, and a diamond that
enters after the first second. :func:`demo_clips` draws training clips from scenes of the training
seeds and :func:`demo_episodes` renders held-out scenes (other seeds: other backgrounds, phases and
paths) as validation videos, both on SA-V's annotation grid (every 4th frame at 24 fps), rendered in
memory at a small size: the benchmark and the tests train and evaluate without encoding video.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from sav_assets.lib.train.evaluate import Episode

TRAIN_SEED_BASE = 10_000
VAL_SEED_BASE = 90_000


@dataclass
class SyntheticClip:
    frames: object   # torch float32 [T,3,H,W] in 0..1
    masks: object    # torch bool [T,N,H,W]


def render_video(seed: int, n_frames: int = 96, width: int = 160, height: int = 120, fps: float = 24.0):
    """Frames ``[F,H,W,3]`` uint8 and masks ``[F,4,H,W]`` bool of the annotated frames (every 4th)."""
    from sav_assets.lib.ingest.demo import Scene

    scene = Scene(width, height, fps, n_frames, seed=seed)
    frames, masks = [], []
    for i in range(0, n_frames, 4):
        f, m = scene.render(i, want_masks=True)
        frames.append(f)
        masks.append(np.stack(m))
    return np.stack(frames), np.stack(masks)


def demo_clips(n_videos: int = 16, clip_frames: int = 8, max_objects: int = 3, seed: int = 0,
               size: tuple[int, int] = (160, 120)) -> callable:
    """``clips(epoch)``: one random clip per training video per epoch (objects visible in the clip's
    first frame, horizontal flip at random), for :func:`sav_assets.lib.train.finetune.finetune`."""
    videos = [render_video(TRAIN_SEED_BASE + seed * 1000 + i, width=size[0], height=size[1])
              for i in range(n_videos)]

    def clips(epoch: int) -> Iterator[SyntheticClip]:
        import torch

        rng = np.random.default_rng([seed, epoch])
        for i in rng.permutation(len(videos)):
            frames, masks = videos[i]
            start = int(rng.integers(0, max(1, len(frames) - clip_frames + 1)))
            f, m = frames[start:start + clip_frames], masks[start:start + clip_frames]
            visible = np.flatnonzero(m[0].reshape(m.shape[1], -1).any(1))
            if not len(visible):
                continue
            objs = rng.permutation(visible)[:max_objects]
            f, m = f, m[:, objs]
            if rng.random() < 0.5:
                f, m = f[:, :, ::-1], m[..., ::-1]
            yield SyntheticClip(torch.from_numpy(np.ascontiguousarray(f)).permute(0, 3, 1, 2).float() / 255.0,
                                torch.from_numpy(np.ascontiguousarray(m)))
    return clips


def demo_episodes(n_videos: int = 4, n_frames: int = 96, seed: int = 0,
                  size: tuple[int, int] = (160, 120)) -> list[Episode]:
    """Held-out validation videos (seeds disjoint from :func:`demo_clips`'): every object visible on
    the first annotated frame (the prompt frame of the first-frame-mask protocol; the diamond, which
    enters later, has no prompt there and would score 0 for every model) with its exact masks on
    every annotated frame."""
    out = []
    for i in range(n_videos):
        frames, masks = render_video(VAL_SEED_BASE + seed * 1000 + i, n_frames, size[0], size[1])
        keep = np.flatnonzero(masks[0].reshape(masks.shape[1], -1).any(1))
        out.append(Episode(video_id=f"synthetic_val_{i:02d}", frames=frames, masks=masks[:, keep],
                           obj_ids=[str(int(j)) for j in keep]))
    return out

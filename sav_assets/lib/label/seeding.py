"""Automatic masklets: where they come from (SAM 2's automatic mask generator) and the policy that
decides when the generator runs and which of its masks start new masklets.

:class:`SeedPolicy` states the re-seeding policy (built from :class:`LabelerConfig`, which holds
the defaults). Its ``name`` (``cfg.seed_policy``) says when and where the generator is prompted:

* ``uncovered`` (the default): annotated frame 0 and every ``reseed_every`` annotated frames, only
  at the ``points_per_side`` x ``points_per_side`` grid points that no tracked mask covers on that
  frame (outside the union of the tracked masks; none left: the generator does not run), so
  re-seeding costs in proportion to what is new in the frame;
* ``grid``: the same frames, every grid point (the behaviour before the policy had a name: about
  one full grid per ``reseed_every`` annotated frames);
* ``first_frame``: annotated frame 0 only, every grid point (what SA-V's own engine does).

All of them run while the video has fewer than ``max_objects`` masklets; a generated mask (a
:class:`Seed`) starts a new masklet when the union of the tracked masks covers less than
``new_object_max_overlap`` of it (:func:`new_masklet_candidates`), so objects entering later get
``masklet_first_appeared_frame > 0``. :meth:`SeedPolicy.prompt_points` gives the points of one
seeding; the labeler counts them (``label_runs.seed_prompts``).

:func:`make_generator` builds ``SAM2AutomaticMaskGenerator`` over the tracker's own predictor
(:func:`sav_assets.lib.label.tracker.image_predictor`), so a seeding frame's backbone runs once;
:func:`generate_seeds` runs it on one frame and returns the seeds best first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sav_assets.lib.label.config import LabelerConfig
from sav_assets.lib.label.tracker import image_predictor

SEED_POLICIES = ("uncovered", "grid", "first_frame")


@dataclass(frozen=True)
class Seed:
    """One mask of the automatic mask generator (HxW bool at video resolution) and its scores."""

    mask: np.ndarray
    predicted_iou: float
    stability_score: float


@dataclass(frozen=True)
class SeedPolicy:
    """When automatic masklets are seeded and which seeds start one (defaults: :class:`LabelerConfig`)."""

    enabled: bool                   # automatic masklets at all (modes "auto" and "auto+prompted")
    name: str                       # one of SEED_POLICIES
    points_per_side: int            # the generator's point grid
    reseed_every: int               # annotated frames between seedings; 0 = annotated frame 0 only
    max_objects: int                # cap on masklets per video; prompted ones count and are always kept
    new_object_max_overlap: float   # a seed is new if tracked masks cover less than this fraction of it
    min_area_frac: float            # seeds smaller than this fraction of the frame are dropped
    min_mask_region_area: int       # px; > 0 removes islands / fills holes below this area first

    def __post_init__(self):
        if self.name not in SEED_POLICIES:
            raise ValueError(f"seed_policy must be one of {SEED_POLICIES}, got {self.name!r}")

    @classmethod
    def from_config(cls, cfg: LabelerConfig, *, enabled: bool = True) -> SeedPolicy:
        return cls(enabled=enabled, name=cfg.seed_policy, points_per_side=cfg.points_per_side,
                   reseed_every=cfg.reseed_every, max_objects=cfg.max_objects,
                   new_object_max_overlap=cfg.new_object_max_overlap, min_area_frac=cfg.min_area_frac,
                   min_mask_region_area=cfg.min_mask_region_area)

    def seeds_at(self, ann_idx: int, masklets: int = 0) -> bool:
        """Whether the generator may run on annotated frame ``ann_idx`` when the video has
        ``masklets``: frame 0 and every ``reseed_every``-th one (``first_frame``: frame 0 only),
        while under the object cap."""
        every = 0 if self.name == "first_frame" else self.reseed_every
        scheduled = ann_idx == 0 or (every > 0 and ann_idx % every == 0)
        return self.enabled and scheduled and masklets < self.max_objects

    def grid(self) -> np.ndarray:
        """The full point grid ``[n*n, 2]`` (x, y in [0, 1], cell centres: SAM's own grid)."""
        n = int(self.points_per_side)
        c = (np.arange(n, dtype=np.float64) + 0.5) / n
        return np.stack([np.tile(c, n), np.repeat(c, n)], axis=1)

    def prompt_points(self, tracked_union: np.ndarray | None) -> np.ndarray:
        """The grid points to prompt on a seeding frame whose tracked masks' union is ``tracked_union``
        (HxW bool, None when nothing is tracked): every point, or for ``uncovered`` the points outside
        the union (a point at pixel (x*W, y*H) is covered when that pixel is)."""
        pts = self.grid()
        if self.name != "uncovered" or tracked_union is None:
            return pts
        u = np.asarray(tracked_union, dtype=bool)
        h, w = u.shape
        xi = np.minimum((pts[:, 0] * w).astype(np.int64), w - 1)
        yi = np.minimum((pts[:, 1] * h).astype(np.int64), h - 1)
        return pts[~u[yi, xi]]

    def budget(self, masklets: int) -> int:
        """How many new masklets a seeding may still start."""
        return max(0, self.max_objects - masklets)

    def min_area(self, h: int, w: int) -> int:
        """Smallest seed area (px) on an ``h`` x ``w`` frame."""
        return max(1, math.ceil(self.min_area_frac * h * w))

    def pick(self, seeds: Sequence[Seed], tracked_masks, masklets: int) -> list[int]:
        """Indices of the seeds (best first) that start new masklets, within the budget."""
        new = new_masklet_candidates([s.mask for s in seeds], tracked_masks, self.new_object_max_overlap)
        return new[:self.budget(masklets)]


def new_masklet_candidates(seed_masks: Sequence[np.ndarray], tracked_masks: Sequence[np.ndarray] | np.ndarray | None,
                           max_overlap: float, min_area: int = 1) -> list[int]:
    """Indices of seed masks that should start new masklets.

    A seed (HxW bool) qualifies when its area is at least ``min_area`` and the fraction of it covered
    by the union of the tracked masks is below ``max_overlap``. Using the union means a seed split
    across two tracked objects is not re-added; using the seed's own area means a part of a tracked
    object is not re-added, while a whole whose part alone is tracked is.
    """
    union = None
    if tracked_masks is not None and len(tracked_masks):
        union = np.zeros(np.asarray(tracked_masks[0]).shape, dtype=bool)
        for m in tracked_masks:
            union |= np.asarray(m, dtype=bool)
    out = []
    for i, s in enumerate(seed_masks):
        s = np.asarray(s, dtype=bool)
        a = int(s.sum())
        if a < max(1, min_area):
            continue
        cov = 0.0 if union is None else float(np.count_nonzero(s & union)) / a
        if cov < max_overlap:
            out.append(i)
    return out


def clean_regions(mask: np.ndarray, min_area: int) -> np.ndarray:
    """Remove islands and fill holes smaller than min_area (SAM's postprocess, without OpenCV)."""
    from scipy import ndimage

    m = mask.astype(bool)
    lab, n = ndimage.label(m)
    if n:
        sizes = ndimage.sum(m, lab, range(1, n + 1))
        small = np.isin(lab, 1 + np.flatnonzero(sizes < min_area))
        if small.any() and not small.all():
            m = m & ~small
    inv = ~m
    lab, n = ndimage.label(inv)
    if n:
        sizes = ndimage.sum(inv, lab, range(1, n + 1))
        holes = np.isin(lab, 1 + np.flatnonzero(sizes < min_area))
        m = m | holes
    return m


def make_generator(loaded, cfg: LabelerConfig):
    """``SAM2AutomaticMaskGenerator`` with the config's grid and thresholds, on the tracker's predictor."""
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

    gen = SAM2AutomaticMaskGenerator(
        loaded.model, points_per_side=cfg.points_per_side, points_per_batch=cfg.points_per_batch,
        pred_iou_thresh=cfg.pred_iou_thresh, stability_score_thresh=cfg.stability_score_thresh,
        box_nms_thresh=cfg.box_nms_thresh, min_mask_region_area=0, output_mode="binary_mask",
    )
    gen.predictor = image_predictor(loaded)
    return gen


def generate_seeds(gen, tracker, bb: dict, frame: np.ndarray, policy: SeedPolicy,
                   points: np.ndarray | None = None) -> list[Seed]:
    """The generator's masks on ``frame`` prompted at ``points`` (``[n, 2]``, x, y in [0, 1]; None:
    the policy's full grid), reusing the tracker's backbone features ``bb``, cleaned and
    size-filtered by the policy, best (predicted IoU x stability) first. No points: no seeds, and
    the generator does not run."""
    points = policy.grid() if points is None else np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if len(points) == 0:
        return []
    gen.point_grids = [points]
    gen.predictor.preset = (tracker.image_predictor_features(bb), tuple(frame.shape[:2]))
    anns = gen.generate(frame)
    gen.predictor.preset = None
    min_area = policy.min_area(*frame.shape[:2])
    seeds = []
    for a in anns:
        m = np.asarray(a["segmentation"], dtype=bool)
        if policy.min_mask_region_area > 0:
            m = clean_regions(m, policy.min_mask_region_area)
        if int(m.sum()) < min_area:
            continue
        seeds.append(Seed(m, float(a["predicted_iou"]), float(a["stability_score"])))
    seeds.sort(key=lambda s: -(s.predicted_iou * s.stability_score))
    return seeds

"""Automatic masklet seeding: the named re-seeding policy and the pure mask helpers (no model).

The policy comparison runs the labeler's seeding loop (the policy's own ``seeds_at`` /
``prompt_points`` / ``pick``) on the demo corpus's scenes with a deterministic construction in
place of SAM 2: a generator that returns, for each prompted point, the exact mask of the object
(or the background) under it, and a tracker that follows every picked object exactly.
"""

from __future__ import annotations

import numpy as np
import pytest

from sav_assets.lib.ingest.demo import Scene
from sav_assets.lib.label.config import LabelerConfig
from sav_assets.lib.label.seeding import (
    SEED_POLICIES,
    Seed,
    SeedPolicy,
    clean_regions,
    new_masklet_candidates,
)
from sav_assets.lib.sav import fields as masklet_fields
from sav_assets.lib.sav import rle


def box(y0, y1, x0, x1, shape=(40, 60)):
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    return m


def test_new_masklet_candidates_hand_made_masks():
    tracked = [box(0, 20, 0, 20), box(20, 40, 40, 60)]
    seeds = [
        box(0, 20, 0, 20),       # 0: the same as a tracked object -> covered
        box(5, 15, 5, 15),       # 1: a part of a tracked object -> covered
        box(0, 40, 0, 60),       # 2: the whole frame: covered 800/2400 = 0.33 -> not new at 0.3
        box(25, 35, 5, 25),      # 3: a new object entering -> new
        box(10, 30, 10, 30),     # 4: a quarter overlaps a tracked one (0.25 < 0.3) -> new
        np.zeros((40, 60), bool),  # 5: empty -> never
        box(0, 20, 15, 45),      # 6: split over nothing tracked except 5 cols (100/600) -> new
    ]
    assert new_masklet_candidates(seeds, tracked, 0.3) == [3, 4, 6]
    assert new_masklet_candidates(seeds, tracked, 0.5) == [2, 3, 4, 6]
    assert new_masklet_candidates(seeds, [], 0.3) == [0, 1, 2, 3, 4, 6]
    assert new_masklet_candidates(seeds, None, 0.3, min_area=150) == [0, 2, 3, 4, 6]


def test_clean_regions_and_batch_encoding():
    m = np.zeros((30, 30), bool)
    m[5:25, 5:25] = True
    m[10, 10] = False          # 1-px hole
    m[0, 29] = True            # 1-px island
    c = clean_regions(m, 4)
    assert c[10, 10] and not c[0, 29] and c.sum() == 400
    # the tracker's [N, W, H] layout encodes to the same RLEs as mask-by-mask encoding
    masks = np.stack([m, c, np.zeros_like(m)])
    encs = rle.encode_many_wh(np.ascontiguousarray(masks.transpose(0, 2, 1)))
    for (r, area, bbox), mm in zip(encs, masks):
        ref = rle.encode(mm)
        assert r == ref and area == rle.area(ref) and bbox == rle.bbox(ref)


def test_seed_policy_schedule_cap_and_budget():
    cfg = LabelerConfig(reseed_every=4, max_objects=5, new_object_max_overlap=0.3, min_area_frac=0.01,
                        min_mask_region_area=7)
    p = SeedPolicy.from_config(cfg)
    assert p.name == "uncovered" == LabelerConfig.seed_policy  # the default
    assert (p.reseed_every, p.max_objects, p.new_object_max_overlap, p.min_area_frac, p.min_mask_region_area) \
        == (4, 5, 0.3, 0.01, 7) and p.enabled
    # annotated frame 0 and every 4th one, while the video has fewer than max_objects masklets
    assert [a for a in range(13) if p.seeds_at(a)] == [0, 4, 8, 12]
    assert p.seeds_at(8, masklets=4) and not p.seeds_at(8, masklets=5)
    assert p.budget(3) == 2 and p.budget(7) == 0
    # reseed_every = 0: the first annotated frame only; disabled (mode "prompted"): never
    assert [a for a in range(13) if SeedPolicy.from_config(LabelerConfig(reseed_every=0)).seeds_at(a)] == [0]
    assert not any(SeedPolicy.from_config(cfg, enabled=False).seeds_at(a) for a in range(13))
    # the defaults come from LabelerConfig, the one place they are written
    d = SeedPolicy.from_config(LabelerConfig())
    assert (d.reseed_every, d.max_objects) == (LabelerConfig.reseed_every, LabelerConfig.max_objects)
    assert p.min_area(100, 200) == 200 and SeedPolicy.from_config(LabelerConfig(min_area_frac=0.0)).min_area(9, 9) == 1


def test_seed_policy_picks_new_objects_within_the_budget():
    p = SeedPolicy.from_config(LabelerConfig(max_objects=3, new_object_max_overlap=0.3))
    tracked = [box(0, 20, 0, 20)]
    seeds = [Seed(box(0, 20, 0, 20), 0.9, 0.9),      # already tracked
             Seed(box(25, 35, 5, 25), 0.9, 0.9),     # new
             Seed(box(0, 10, 30, 50), 0.8, 0.9),     # new
             Seed(box(25, 40, 40, 60), 0.7, 0.9)]    # new, but over the budget
    assert p.pick(seeds, tracked, masklets=1) == [1, 2]
    assert p.pick(seeds, tracked, masklets=0) == [1, 2, 3]
    assert p.pick(seeds, tracked, masklets=3) == []



def test_seed_policies_by_name_schedule_and_points():
    grid = SeedPolicy.from_config(LabelerConfig(points_per_side=4, seed_policy="grid", reseed_every=4))
    first = SeedPolicy.from_config(LabelerConfig(points_per_side=4, seed_policy="first_frame", reseed_every=4))
    unc = SeedPolicy.from_config(LabelerConfig(points_per_side=4, seed_policy="uncovered", reseed_every=4))
    assert [a for a in range(9) if grid.seeds_at(a)] == [a for a in range(9) if unc.seeds_at(a)] == [0, 4, 8]
    assert [a for a in range(9) if first.seeds_at(a)] == [0]
    # SAM's own 4x4 grid of cell centres
    assert np.allclose(grid.grid(), [[x, y] for y in (0.125, 0.375, 0.625, 0.875) for x in (0.125, 0.375, 0.625, 0.875)])
    union = np.zeros((40, 80), bool)
    union[:20, :40] = True                   # the top-left quarter is tracked: its 4 points are covered
    assert len(grid.prompt_points(union)) == len(first.prompt_points(union)) == 16
    pts = unc.prompt_points(union)
    assert len(pts) == 12 and not any(x < 0.5 and y < 0.5 for x, y in pts)
    assert len(unc.prompt_points(None)) == 16 and len(unc.prompt_points(np.ones((40, 80), bool))) == 0
    assert set(SEED_POLICIES) == {"uncovered", "grid", "first_frame"}
    with pytest.raises(ValueError, match="seed_policy"):
        SeedPolicy.from_config(LabelerConfig(seed_policy="sometimes"))


def _scene_truth(index: int, width: int = 256, height: int = 144, seconds: float = 5.0, fps: float = 24):
    """Exact masks per annotated frame of demo video ``index`` (as write_demo_video renders it):
    ``{object: [HxW bool per annotated frame]}``, the background ("bg") included."""
    n = int(round(seconds * fps))
    scene = Scene(width, height, fps, n, seed=index)
    truth: dict = {}
    for i in masklet_fields.annotation_grid(n, fps):
        _, masks = scene.render(i, want_masks=True)
        fg = np.zeros((height, width), bool)
        for k, m in enumerate(masks):
            truth.setdefault(k, []).append(m)
            fg |= m
        truth.setdefault("bg", []).append(~fg)
    return truth


def _simulate(policy: SeedPolicy, truth: dict) -> tuple[dict, int]:
    """The labeler's seeding loop with an exact generator and an exact tracker:
    ``({object: annotated frame its masklet started}, prompts)``."""
    T = len(truth["bg"])
    tracked: dict = {}
    prompts = 0
    for a in range(T):
        if not policy.seeds_at(a, len(tracked)):
            continue
        union = None
        for k in tracked:
            union = truth[k][a].copy() if union is None else union | truth[k][a]
        pts = policy.prompt_points(union)
        prompts += len(pts)
        h, w = truth["bg"][a].shape
        hit = []
        for x, y in pts:   # the generator: the object under each point (one seed per object, NMS-like)
            yi, xi = min(int(y * h), h - 1), min(int(x * w), w - 1)
            k = next(k for k in truth if truth[k][a][yi, xi])
            if k not in hit:
                hit.append(k)
        seeds = [Seed(truth[k][a], 0.9, 0.9) for k in hit]
        for i in policy.pick(seeds, [] if union is None else [union], len(tracked)):
            tracked[hit[i]] = a
    return tracked, prompts


@pytest.mark.parametrize("index", [0, 1, 2])
def test_uncovered_seeding_costs_what_it_finds_on_the_demo_corpus(index):
    """On each demo video (a late-entering diamond, an object hidden behind a bar for a while, a
    panning background), ``uncovered`` finds every masklet ``grid`` finds, on the same or an earlier
    annotated frame, at no more than 1.5x the prompts of first-frame-only seeding."""
    truth = _scene_truth(index)
    cfg = {"points_per_side": 32, "reseed_every": 8, "max_objects": 64, "new_object_max_overlap": 0.3}
    runs = {name: _simulate(SeedPolicy.from_config(LabelerConfig(seed_policy=name, **cfg)), truth)
            for name in SEED_POLICIES}
    found = {name: r[0] for name, r in runs.items()}
    prompts = {name: r[1] for name, r in runs.items()}
    T = len(truth["bg"])
    assert prompts["first_frame"] == 32 * 32
    assert prompts["grid"] == 32 * 32 * len(range(0, T, 8))          # a full grid every 8th frame
    assert prompts["uncovered"] <= 1.5 * prompts["first_frame"], prompts
    for k, a in found["grid"].items():
        assert k in found["uncovered"] and found["uncovered"][k] <= a, (k, found)
    # the late-entering diamond (object 2) is found by re-seeding, after annotated frame 0 ...
    assert found["uncovered"].get(2, 0) > 0 and found["grid"].get(2, 0) > 0
    # ... and missed by first-frame seeding: re-seeding is worth something
    assert 2 not in found["first_frame"]

"""Automatic masklet seeding: the named re-seeding policy and the pure mask helpers (no model)."""

from __future__ import annotations

import numpy as np

from sav_assets.lib.label.config import LabelerConfig
from sav_assets.lib.label.seeding import Seed, SeedPolicy, clean_regions, new_masklet_candidates
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


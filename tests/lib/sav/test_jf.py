"""J&F against the DAVIS 2017 / SA-V evaluator definitions on constructed cases."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from sav_evaluator_ref import dilate_disk, f_measure

from sav_assets.lib.sav.jf import (
    bound_pix,
    boundary_points,
    db_eval_boundary,
    db_eval_iou,
    evaluate_layout,
    jf_for_masklet,
    seg2bmap,
)

# ---------------------------------------------------------------- independent reference (davis2017)

def ref_seg2bmap(seg):
    """davis2017-evaluation ``_seg2bmap`` (same width/height), written out separately."""
    seg = seg.astype(bool)
    h, w = seg.shape
    b = np.zeros((h, w), bool)
    for y in range(h):
        for x in range(w):
            e = seg[y, x + 1] if x + 1 < w else False
            s = seg[y + 1, x] if y + 1 < h else False
            se = seg[y + 1, x + 1] if (x + 1 < w and y + 1 < h) else False
            if y == h - 1 and x == w - 1:
                b[y, x] = False
            elif y == h - 1:
                b[y, x] = seg[y, x] ^ e
            elif x == w - 1:
                b[y, x] = seg[y, x] ^ s
            else:
                b[y, x] = (seg[y, x] ^ e) | (seg[y, x] ^ s) | (seg[y, x] ^ se)
    return b


def ref_dilate(b, r):
    """cv2.dilate(b, skimage.morphology.disk(r)): OR of shifts over the disk x^2 + y^2 <= r^2."""
    r = int(r)
    out = np.zeros_like(b)
    h, w = b.shape
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            if dy * dy + dx * dx > r * r:
                continue
            out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] |= \
                b[max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


def ref_boundary_f(gt, pred, bound_th=0.008):
    r = bound_th if bound_th >= 1 else np.ceil(bound_th * np.linalg.norm(gt.shape))
    fg_b, gt_b = ref_seg2bmap(pred), ref_seg2bmap(gt)
    return f_measure(fg_b, gt_b, ref_dilate(fg_b, r), ref_dilate(gt_b, r))


def square(h, w, y, x, s):
    m = np.zeros((h, w), bool)
    m[y:y + s, x:x + s] = True
    return m


# ---------------------------------------------------------------- J

def test_iou_identical_disjoint_empty_and_hand_computed():
    a = square(50, 60, 10, 10, 10)
    assert db_eval_iou(a, a) == 1.0
    assert db_eval_iou(a, square(50, 60, 30, 30, 10)) == 0.0
    z = np.zeros((50, 60), bool)
    assert db_eval_iou(z, z) == 1.0 and db_eval_iou(a, z) == 0.0
    # 10x10 vs the same shifted by 4 columns: overlap 10x6 = 60, union 140
    assert db_eval_iou(a, square(50, 60, 10, 14, 10)) == pytest.approx(60 / 140)
    stack = db_eval_iou(np.stack([a, z, a]), np.stack([a, z, z]))
    assert stack.tolist() == [1.0, 1.0, 0.0]


# ---------------------------------------------------------------- F

def test_boundary_identical_empty_and_disjoint():
    a = square(100, 100, 20, 20, 20)
    z = np.zeros_like(a)
    assert db_eval_boundary(a, a) == 1.0
    assert db_eval_boundary(z, z) == 1.0
    assert db_eval_boundary(a, z) == 0.0 and db_eval_boundary(z, a) == 0.0
    assert db_eval_boundary(a, square(100, 100, 60, 60, 20)) == 0.0


def test_bound_pix_is_ceil_of_diagonal_fraction():
    assert bound_pix((100, 100)) == 2.0            # ceil(0.008 * 141.4) = ceil(1.13)
    assert bound_pix((848, 480)) == 8.0            # ceil(7.80): SA-V frames
    assert bound_pix((480, 848), bound_th=3) == 3.0


@pytest.mark.parametrize("shift, expect_one", [(1, True), (2, True), (3, False), (6, False)])
def test_boundary_shifted_square_within_and_outside_threshold(shift, expect_one):
    # 100x100 frame: the tolerance is 2 px; a square shifted by <= 2 px is a perfect boundary match
    a = square(100, 100, 30, 30, 25)
    b = square(100, 100, 30, 30 + shift, 25)
    f = db_eval_boundary(a, b)
    assert f == pytest.approx(ref_boundary_f(a, b))
    if expect_one:
        assert f == 1.0
    else:
        assert 0.0 < f < 1.0


def test_boundary_shift_by_three_hand_counted():
    """Square side 25 at (30, 30) vs shifted right by 3, r = 2: count matched boundary pixels."""
    a = square(100, 100, 30, 30, 25)
    b = square(100, 100, 30, 33, 25)
    ba, bb = seg2bmap(a), seg2bmap(b)
    # seg2bmap marks the ring rows/cols 29..54 (26 px a side, 100 px): offset half a pixel up-left
    assert ba.sum() == 100 and set(np.flatnonzero(ba.any(0))) == set(range(29, 55))
    assert (bb == np.roll(ba, 3, axis=1)).all()
    # a's points with a b point within 2 px: top and bottom rows x = 30..54 (25 + 25); left column
    # none (b's left column is 3 px away); right column rows 30, 31, 52, 53 (near b's top/bottom
    # rows). 54 of 100, and by symmetry recall is 54/100 too, so F = 0.54
    assert len(boundary_points(a)) == 100
    f = db_eval_boundary(a, b)
    assert f == pytest.approx(ref_boundary_f(a, b))
    assert f == pytest.approx(0.54)


@st.composite
def shapes(draw):
    h = draw(st.integers(3, 24))
    w = draw(st.integers(3, 24))

    def blob():
        m = np.zeros((h, w), bool)
        for _ in range(draw(st.integers(0, 4))):
            y0, x0 = draw(st.integers(0, h - 1)), draw(st.integers(0, w - 1))
            y1, x1 = draw(st.integers(y0, h - 1)), draw(st.integers(x0, w - 1))
            m[y0:y1 + 1, x0:x1 + 1] ^= True
        noise = draw(st.lists(st.tuples(st.integers(0, h - 1), st.integers(0, w - 1)), max_size=6))
        for y, x in noise:
            m[y, x] ^= True
        return m

    return blob(), blob(), draw(st.sampled_from([0.008, 0.05, 1, 2, 3]))


@settings(max_examples=150, deadline=None)
@given(shapes())
def test_boundary_matches_straightforward_davis_implementation(case):
    gt, pred, th = case
    assert (seg2bmap(gt) == ref_seg2bmap(gt)).all()
    pts = boundary_points(gt)
    ref = np.argwhere(ref_seg2bmap(gt))
    assert sorted(map(tuple, pts.tolist())) == sorted(map(tuple, ref.tolist()))
    assert db_eval_boundary(gt, pred, bound_th=th) == pytest.approx(ref_boundary_f(gt, pred, th), abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(shapes())
def test_evaluator_reference_dilation_is_the_disk_dilation(case):
    """sav_evaluator_ref's distance-transform dilation = cv2.dilate with skimage's disk (ref_dilate)."""
    gt, _, _ = case
    b = ref_seg2bmap(gt)
    for r in [r for r in (1, 2, 3, 8) if r < min(b.shape)]:   # ref_dilate's shifts need r < size
        assert (dilate_disk(b, r) == ref_dilate(b, r)).all()


def test_full_frame_mask_has_no_boundary_like_davis():
    full = np.ones((10, 12), bool)
    assert boundary_points(full).shape == (0, 2) and not ref_seg2bmap(full).any()


def test_jf_for_masklet():
    a = [square(40, 40, 5, 5, 10), np.zeros((40, 40), bool), square(40, 40, 5, 5, 10)]
    b = [square(40, 40, 5, 5, 10), np.zeros((40, 40), bool), square(40, 40, 25, 25, 10)]
    j, f = jf_for_masklet(a, b)
    assert j == pytest.approx(2 / 3) and f == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        jf_for_masklet(a, b[:2])


# ---------------------------------------------------------------- SA-V layout

def write_png(path: Path, m: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(m.astype(np.uint8) * 255).save(path)


def test_evaluate_layout_skips_first_and_last_and_averages(tmp_path):
    gt_root = tmp_path / "gt" / "Annotations_6fps"
    pred_root = tmp_path / "pred"
    h, w = 40, 50
    good = square(h, w, 10, 10, 12)
    bad = square(h, w, 25, 30, 8)
    # video A, object 000: first and last predicted frames are wrong, middle ones exact
    for k in range(5):
        write_png(gt_root / "vA" / "000" / f"{4 * k:05d}.png", good)
        write_png(pred_root / "vA" / "000" / f"{4 * k:05d}.png", bad if k in (0, 4) else good)
    # object 001: prediction missing for frame 8 (counts as empty) -> J: [1, 0, 1] over frames 4, 8, 12
    for k in range(5):
        write_png(gt_root / "vA" / "001" / f"{4 * k:05d}.png", bad)
        if k != 2:
            write_png(pred_root / "vA" / "001" / f"{4 * k:05d}.png", bad)
    # video B: object appears from frame 3; frames before it (both empty) are not counted
    z = np.zeros((h, w), bool)
    for k in range(6):
        write_png(gt_root / "vB" / "000" / f"{k:05d}.png", good if k >= 3 else z)
        write_png(pred_root / "vB" / "000" / f"{k:05d}.png", good if k == 3 else z)
    # object that never appears in the ground truth is skipped (SA-V would fail on it)
    for k in range(4):
        write_png(gt_root / "vB" / "007" / f"{k:05d}.png", z)

    res = evaluate_layout(tmp_path / "gt", pred_root)
    a = res["videos"]["vA"]
    assert a["objects"]["000"] == {"J": 1.0, "F": 1.0, "J&F": 1.0}
    assert a["objects"]["001"]["J"] == pytest.approx(2 / 3) and a["objects"]["001"]["F"] == pytest.approx(2 / 3)
    assert a["J"] == pytest.approx((1 + 2 / 3) / 2)
    b = res["videos"]["vB"]["objects"]["000"]
    assert b["J"] == pytest.approx(0.5)  # frames 3 and 4 evaluated (0..2 empty on both, 5 is last)
    assert res["skipped_objects"] == ["vB/007"]
    assert res["num_objects"] == 3 and res["num_videos"] == 2
    assert res["J"] == pytest.approx((1 + 2 / 3 + 0.5) / 3)
    assert res["J&F"] == pytest.approx((res["J"] + res["F"]) / 2)
    only = evaluate_layout(gt_root, pred_root, video_ids=["vA"])
    assert list(only["videos"]) == ["vA"] and only["J"] == pytest.approx(a["J"])
    full = evaluate_layout(gt_root, pred_root, video_ids=["vA"], skip_first_and_last=False)
    assert full["videos"]["vA"]["objects"]["000"]["J"] == pytest.approx(3 / 5)
    assert not math.isnan(res["J&F_video_mean"])

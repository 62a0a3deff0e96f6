"""sav/rle.py, the one home of COCO RLE: round trips, batched == single, IoU conventions, parse_counts."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from pycocotools import mask as mask_utils

from sav_assets.lib.sav import rle

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def random_masks(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, h, w), np.uint8)
    for i in range(n):
        if i % 4 == 3:
            continue                                   # every 4th mask empty
        y, x = rng.integers(0, h - 4), rng.integers(0, w - 4)
        masks[i, y: y + rng.integers(2, h - y), x: x + rng.integers(2, w - x)] = 1
        masks[i] &= rng.random((h, w)) > 0.2           # holes, several runs per column
    return masks


def test_single_round_trip_and_types():
    m = random_masks(1, 13, 17)[0]
    r = rle.encode(m)
    assert r["size"] == [13, 17] and isinstance(r["counts"], str)
    assert all(type(v) is int for v in r["size"])
    assert np.array_equal(rle.decode(r), m) and rle.decode(r).dtype == np.uint8
    assert rle.area(r) == int(m.sum())
    ys, xs = np.nonzero(m)
    assert rle.bbox(r) == [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1),
                           float(ys.max() - ys.min() + 1)]
    assert rle.bbox(rle.empty(4, 5)) == [0.0, 0.0, 0.0, 0.0] and rle.area(rle.empty(4, 5)) == 0
    # bytes counts (pycocotools' own form) are accepted too
    assert rle.area({"size": r["size"], "counts": r["counts"].encode()}) == int(m.sum())


def test_from_row_keeps_counts_and_makes_size_ints():
    r = rle.encode(random_masks(1, 6, 7)[0])
    row = {"size": np.array(r["size"]), "counts": r["counts"], "area": 3, "video_id": "v"}
    out = rle.from_row(row)
    assert out == r and all(type(v) is int for v in out["size"]) and set(out) == {"size", "counts"}


def test_batched_equals_single():
    masks = random_masks(9, 20, 24, seed=3)
    rles = rle.encode_many(masks)
    assert rles == [rle.encode(m) for m in masks]
    assert rle.encode_many(np.zeros((0, 5, 5), np.uint8)) == []
    assert np.array_equal(rle.decode_many(rles), masks)
    assert rle.decode_many([]).shape == (0, 0, 0)
    assert rle.areas(rles).tolist() == [rle.area(r) for r in rles]
    assert np.array_equal(rle.bboxes(rles), np.array([rle.bbox(r) for r in rles]))
    assert rle.bboxes([]).shape == (0, 4) and rle.areas([]).shape == (0,)
    wh = np.ascontiguousarray(masks.astype(bool).transpose(0, 2, 1))      # the tracker's [N, W, H]
    triples = rle.encode_many_wh(wh)
    assert [t[0] for t in triples] == rles
    assert [t[1] for t in triples] == [rle.area(r) for r in rles]
    assert [t[2] for t in triples] == [rle.bbox(r) for r in rles]


def test_iou_conventions():
    masks = random_masks(8, 16, 16, seed=5)
    rles = rle.encode_many(masks)
    mat = rle.iou_matrix(rles)
    for i, a in enumerate(masks):
        for j, b in enumerate(masks):
            union = np.logical_or(a, b).sum()
            want = np.logical_and(a, b).sum() / union if union else 0.0
            assert mat[i, j] == pytest.approx(want)                          # pycocotools: 0 for empty-empty
    empty = rle.empty(16, 16)
    assert rle.iou(empty, empty) == 1.0                                      # the J metric: 1 for empty-empty
    assert rle.iou(rles[0], rles[0]) == 1.0 and rle.iou(rles[0], empty) == 0.0
    assert rle.iou_matrix(rles[:2], rles[2:5]).shape == (2, 3)
    assert rle.iou_matrix([], rles).shape == (0, len(rles))
    pairs = rle.paired_ious(rles[:-1], rles[1:])
    assert pairs.tolist() == pytest.approx([rle.iou(a, b) for a, b in zip(rles[:-1], rles[1:])])
    assert rle.paired_ious([empty], [empty], both_empty=0.0).tolist() == [0.0]


@settings(max_examples=40, deadline=None)
@given(arrays(np.uint8, st.tuples(st.integers(1, 12), st.integers(1, 12)), elements=st.integers(0, 1)))
def test_parse_counts_matches_pycocotools(mask):
    r = rle.encode(mask)
    runs = rle.parse_counts(r["counts"])
    assert runs.sum() == mask.size and (runs >= 0).all()
    flat = np.repeat(np.arange(runs.size) % 2, runs).astype(np.uint8)
    assert (flat.reshape(mask.shape[1], mask.shape[0]).T == mask).all()
    assert int(runs[1::2].sum()) == int(mask_utils.area(rle.to_coco(r)))


def test_parse_counts_long_runs_and_errors():
    m = np.zeros((300, 300), np.uint8)
    m[10:290, 5:295] = 1                                   # long runs, differences two back
    runs = rle.parse_counts(rle.encode(m)["counts"])
    assert runs.sum() == m.size and int(runs[1::2].sum()) == int(m.sum())
    assert rle.parse_counts("").size == 0
    with pytest.raises(ValueError, match="alphabet"):
        rle.parse_counts("ab~")
    with pytest.raises(ValueError, match="truncated"):
        rle.parse_counts("0g")
    with pytest.raises(ValueError, match="ASCII"):
        rle.parse_counts("é")

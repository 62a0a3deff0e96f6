"""late_object_report (lib/train/reseeding.py, issue 11 item 6): a late-entering object counts as found
only when a masklet started by a re-seeding matches it; one masklet matches at most one object; the
counts of automatic, re-seeded and frame-covering masklets. Constructed rows, then one real labeling run
(SAM 2.1 tiny, random weights, 64 px, CPU) on a demo video whose diamond enters after the first second."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sav_assets.lib.sav import rle
from sav_assets.lib.train.reseeding import late_object_report, sav_ground_truth

T, H, W = 8, 24, 32


def _box(y0, y1, x0, x1) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


EMPTY = np.zeros((H, W), bool)
BALL = _box(2, 10, 2, 10)                # visible on every frame
LATE = _box(14, 22, 20, 28)              # enters on annotated frame 3
GT = {0: np.stack([BALL] * T), 2: np.stack([EMPTY] * 3 + [LATE] * (T - 3))}


def _rows(masklets: dict[int, list[np.ndarray]], kind: str = "auto") -> tuple[list[dict], list[dict]]:
    """``masklets`` / ``masklet_frames`` rows as the labeler writes them (the columns the report reads)."""
    ms = [{"masklet_id": mid, "masklet_type": kind} for mid in masklets]
    fs = [{"masklet_id": mid, "masklet_type": kind, "ann_idx": a, "frame_idx": 4 * a, "size": [H, W],
           **{"counts": rle.encode(m)["counts"]}} for mid, masks in masklets.items() for a, m in enumerate(masks)]
    return ms, fs


def _obj(rep, oid):
    return next(o for o in rep.objects if o["obj_id"] == oid)


def test_frame0_masklet_over_the_late_objects_place_is_not_found():
    # masklet 1 exists from frame 0 (a patch elsewhere) and then lies exactly on the late object: a
    # perfect J&F over the object's visible frames, but frame 0's seeds started it, not a re-seeding
    patch = _box(0, 4, 28, 32)
    rep = late_object_report(*_rows({0: [BALL] * T, 1: [patch] * 3 + [LATE] * (T - 3)}), GT)
    late = _obj(rep, 2)
    assert late["late"] and late["first_visible"] == 3 and late["first_visible_frame"] == 12
    assert late["masklet_id"] == 1 and late["masklet_first_appeared"] == 0
    assert late["J&F"] == 1.0 and late["found"] is False
    ball = _obj(rep, 0)
    assert (ball["late"], ball["masklet_id"], ball["J&F"], ball["found"]) == (False, 0, 1.0, True)
    assert rep.summary() == {"annotated_frames": T, "auto_masklets": 2, "reseeded_masklets": 0,
                             "covering_masklets": 0, "objects": 2, "found": 1, "late_objects": 1, "late_found": 0}


def test_masklet_started_by_a_reseed_and_matching_is_found():
    # masklet 5 first appears on annotated frame 4 (a re-seed frame), one frame after the object entered
    rep = late_object_report(*_rows({0: [BALL] * T, 5: [EMPTY] * 4 + [LATE] * (T - 4)}), GT)
    late = _obj(rep, 2)
    assert late["masklet_id"] == 5
    assert (late["masklet_first_appeared"], late["masklet_first_appeared_frame"]) == (4, 16)
    # J = 1 on frames 4..7 and 0 on frame 3 (empty prediction of a visible object): 4/5; F likewise
    assert late["J"] == pytest.approx(0.8) and late["F"] == pytest.approx(0.8)
    assert late["found"] is True
    s = rep.summary()
    assert (s["reseeded_masklets"], s["late_found"]) == (1, 1)
    assert [m["reseeded"] for m in rep.masklets] == [False, True]


def test_below_threshold_is_not_found_even_when_reseeded():
    half = _box(14, 22, 20, 24)
    rep = late_object_report(*_rows({7: [EMPTY] * 3 + [half] * (T - 3)}), GT, threshold=0.9)
    late = _obj(rep, 2)
    assert late["masklet_id"] == 7 and late["masklet_first_appeared"] == 3
    assert late["J"] == pytest.approx(0.5) and late["J&F"] < 0.9 and late["found"] is False


def test_one_masklet_cannot_match_two_objects():
    # masklet 3 covers both objects on every frame; masklet 4 is the ball exactly: the assignment gives
    # the ball to 4 and the late object to 3, never 3 to both
    both = BALL | LATE
    rep = late_object_report(*_rows({3: [both] * T, 4: [BALL] * T}), GT)
    assert (_obj(rep, 0)["masklet_id"], _obj(rep, 2)["masklet_id"]) == (4, 3)
    # with only the one masklet, one object stays unmatched
    rep = late_object_report(*_rows({3: [both] * T}), GT)
    got = sorted((o["obj_id"], o["masklet_id"]) for o in rep.objects)
    assert [m for _, m in got].count(3) == 1 and [m for _, m in got].count(None) == 1
    none = next(o for o in rep.objects if o["masklet_id"] is None)
    assert (none["J&F"], none["found"], none["masklet_first_appeared"]) == (0.0, False, None)


def test_covering_masklets_counted_and_prompted_masklets_ignored():
    full = np.ones((H, W), bool)
    ms, fs = _rows({0: [full] * T, 1: [EMPTY] * 2 + [BALL] * (T - 2)})
    pm, pf = _rows({9: [LATE] * T}, kind="prompted")
    rep = late_object_report(ms + pm, fs + pf, GT)
    assert [(m["masklet_id"], m["covers_frame"], m["mean_area_frac"]) for m in rep.masklets] == \
        [(0, True, 1.0), (1, False, round(64 / (H * W), 4))]
    assert rep.summary()["covering_masklets"] == 1 and rep.summary()["auto_masklets"] == 2
    assert all(o["masklet_id"] != 9 for o in rep.objects)


def test_ground_truth_of_a_sav_document_and_frame_count_mismatch():
    doc = {"masklet_id": [0, 2], "masklet": [[rle.encode(GT[0][a]), rle.encode(GT[2][a])] for a in range(T)]}
    gt = sav_ground_truth(json.loads(json.dumps(doc)))
    assert sorted(gt) == [0, 2] and gt[2].shape == (T, H, W)
    assert np.array_equal(gt[2], GT[2]) and np.array_equal(gt[0], GT[0])
    ms, fs = _rows({0: [BALL] * (T + 1)})
    with pytest.raises(ValueError, match="annotated frame 8"):
        late_object_report(ms, fs, GT)


def test_real_labeling_run_reports_the_late_diamond(tmp_path):
    pytest.importorskip("sam2")
    from sav_assets.lib.ingest.demo import write_demo_video
    from sav_assets.lib.label.config import LabelerConfig
    from sav_assets.lib.label.labeler import label_video
    from sav_assets.lib.label.model import ModelSpec, load_model
    from sav_assets.lib.util import sha256_file

    v = write_demo_video(tmp_path, 0, seconds=2, fps=24, width=160, height=120, seed=91)
    row = {"video_id": v["video_id"], "video_fps": 24.0, "video_frame_count": v["frames"], "video_height": 120,
           "video_width": 160, "content_sha256": sha256_file(v["video"])}
    loaded = load_model(ModelSpec(config="tiny", image_size=64, device="cpu", multimask_tracking=False))
    cfg = LabelerConfig(points_per_side=4, points_per_batch=16, pred_iou_thresh=0.0, stability_score_thresh=0.0,
                        reseed_every=4, max_objects=8, isolate_decode=False, prefetch=False, cycle_check=False)
    res = label_video(loaded, v["video"], row, cfg, mode="auto")
    gt = sav_ground_truth(v["annotation"])
    rep = late_object_report(res.masklets, res.frames, gt)
    assert rep.annotated_frames == len(v["annotated_frames"]) == 12
    assert [o["obj_id"] for o in rep.objects] == [0, 1, 2, 3]
    late = rep.late
    assert [o["obj_id"] for o in late] == [2]                  # the diamond, entering after frame 24
    assert late[0]["first_visible"] > 0 and late[0]["first_visible_frame"] >= 25
    assert late[0]["first_visible_frame"] == v["annotated_frames"][late[0]["first_visible"]]
    s = rep.summary()
    assert s["auto_masklets"] == len(res.masklets) == len(rep.masklets)
    assert s["reseeded_masklets"] == sum(m["masklet_first_appeared_frame"] > 0 for m in res.masklets)
    matched = [o["masklet_id"] for o in rep.objects if o["masklet_id"] is not None]
    assert len(matched) == len(set(matched))
    for o in rep.objects:
        assert 0.0 <= o["J&F"] <= 1.0 and isinstance(o["found"], bool)

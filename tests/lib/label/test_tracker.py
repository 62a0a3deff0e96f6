"""The batched SAM 2 tracker against SAM 2's own SAM2VideoPredictor (real sam2 code, tiny 2.1 config,
random weights, 128 px input, CPU): same masks for the same prompts, cohorts batched, memory bounded."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sam2")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _video_util import synth_frames  # noqa: E402

from sav_assets.lib.label.model import ModelSpec, load_model  # noqa: E402
from sav_assets.lib.label.planning import point_inputs  # noqa: E402
from sav_assets.lib.label.prompts import Prompt  # noqa: E402
from sav_assets.lib.label.tracker import Tracker, init_video_state, to_video_res  # noqa: E402

W, H = 160, 120
SIZE = 128  # model input size (a multiple of 32): keeps CPU tests fast


@pytest.fixture(scope="module")
def loaded():
    """The real SAM 2.1 tiny model, random weights, at a 128 px input on the CPU."""
    return load_model(ModelSpec(config="tiny", image_size=SIZE, device="cpu"))


def _square(y0, y1, x0, x1) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


def test_batched_tracker_matches_sam2_video_predictor(loaded):
    frames = synth_frames(5, W, H)
    m1 = _square(30, 70, 20, 56)
    m2 = _square(45, 75, 105, 135)
    pts = Prompt("x", 0, 3, [[120.0, 60.0]], [1], None)
    bx = Prompt("x", 0, 4, None, None, [20.0, 30.0, 56.0, 70.0])
    pred = loaded.model
    with torch.inference_mode():
        st = init_video_state(pred, frames)
        assert len(st["images"]) == 5 and tuple(st["images"][2].shape) == (3, SIZE, SIZE)
        pred.add_new_mask(st, 0, 1, m1)
        pred.add_new_mask(st, 0, 2, m2)
        pred.add_new_points_or_box(st, 0, 3, points=pts.points, labels=pts.labels)
        pred.add_new_points_or_box(st, 0, 4, box=bx.box)
        ref = {t: (vm[:, 0] > 0).numpy() for t, _, vm in pred.propagate_in_video(st)}

        tr = Tracker(loaded, 5, offload_state=False, max_memory_frames=16)
        ours = {}
        for t in range(5):
            bb = tr.backbone(frames[t])
            if t == 0:
                po = tr.add_masks(0, bb, np.stack([m1, m2]), [1, 2])
                po.update(tr.add_points(0, bb, [(3, point_inputs(pts, H, W, SIZE, "cpu")),
                                                (4, point_inputs(bx, H, W, SIZE, "cpu"))]))
            else:
                po = tr.track(t, bb)
            masks, _, _ = to_video_res(po, [1, 2, 3, 4], (H, W))
            ours[t] = masks.transpose(0, 2, 1)
    assert len(tr.cohorts) == 2  # the two mask objects and the two prompted ones are batched
    assert tr.ids == [1, 2, 3, 4]
    for t in range(5):
        for k in range(4):
            a, b = ref[t][k], ours[t][k]
            union = (a | b).sum()
            iou = 1.0 if union == 0 else (a & b).sum() / union
            assert iou >= 0.99, (t, k, iou)


def test_tracking_state_is_bounded(loaded):
    frames = synth_frames(5, W, H)
    m1 = _square(30, 70, 20, 56)
    with torch.inference_mode():
        tr = Tracker(loaded, 5, offload_state=True, max_memory_frames=2)
        for t in range(5):
            bb = tr.backbone(frames[t])
            po = tr.add_masks(0, bb, m1[None], [1]) if t == 0 else tr.track(t, bb)
            assert set(po) == {1}
            nc = tr.cohorts[0].out["non_cond_frame_outputs"]
            assert sorted(nc) == [k for k in range(max(1, t - 1), t + 1)]  # only the last 2 frames kept
            assert all(o["maskmem_features"].device.type == "cpu" for o in nc.values())  # offloaded
        assert list(tr.cohorts[0].out["cond_frame_outputs"]) == [0]  # conditioning frames are kept


def test_to_video_res_hides_objects_with_a_non_positive_score():
    logits = torch.full((1, 1, 8, 8), 5.0)
    per_obj = {1: (logits, torch.tensor([2.0]), torch.tensor([0.7])),
               2: (logits, torch.tensor([-1.0]), torch.tensor([0.6]))}
    masks, stab, ious = to_video_res(per_obj, [1, 2], (H, W))
    assert masks.shape == (2, W, H) and masks.dtype == bool  # [N, W, H]: transposed for RLE
    assert masks[0].all() and not masks[1].any()
    assert np.allclose(ious, [0.7, 0.6]) and stab.shape == (2,)
    empty, s0, i0 = to_video_res({}, [], (H, W))
    assert empty.shape == (0, W, H) and s0.size == 0 and i0.size == 0

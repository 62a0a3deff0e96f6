"""masklet_qc's J and F against a manual masklet are the SA-V evaluator's: the stored value equals
J&F computed by :func:`sav_assets.lib.sav.jf.evaluate_layout` on the evaluation layout of the same masks."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _video_util import make_video  # noqa: E402

from sav_assets.lib.qc.masklet_qc import QCThresholds, masklet_qc_rows  # noqa: E402
from sav_assets.lib.sav import rle  # noqa: E402
from sav_assets.lib.sav.eval_layout import write_eval_layout  # noqa: E402
from sav_assets.lib.sav.jf import evaluate_layout  # noqa: E402
from sav_assets.lib.util import atomic_write_bytes  # noqa: E402
from sav_assets.lib.video.images import encode_mask_png  # noqa: E402

H, W = 60, 80
Z = np.zeros((H, W), np.uint8)


def square(y, x, s):
    m = np.zeros((H, W), np.uint8)
    m[y:y + s, x:x + s] = 1
    return m


def rows(mid, masks: dict[int, np.ndarray], mtype):
    frames = []
    for k, (f, m) in enumerate(sorted(masks.items())):
        r = rle.encode(m)
        frames.append({"video_id": "v", "masklet_id": mid, "masklet_type": mtype, "ann_idx": k, "frame_idx": f,
                       "size": r["size"], "counts": r["counts"], "area": int(m.sum()), "visible": bool(m.any())})
    return {"video_id": "v", "masklet_id": mid, "masklet_type": mtype}, frames


def write_pred(root: Path, gt_root: Path, obj: int, masks: dict[int, np.ndarray]) -> None:
    """A prediction folder as vos_inference.py writes it: a PNG for every ground-truth frame."""
    for p in sorted((gt_root / "v" / f"{obj:03d}").iterdir()):
        atomic_write_bytes(root / "v" / f"{obj:03d}" / p.name, encode_mask_png(masks.get(int(p.stem), Z)))


def test_stored_manual_j_and_f_equal_the_evaluator_on_the_layout(tmp_path):
    grid = list(range(0, 32, 4))                                        # 8 annotated frames, 0..28
    # manual 0 appears mid-video (from frame 12); manual 5 has one frame more (32): the layout's grid
    # is the union, so frame 28 is scored and 32 is the skipped last frame
    man0 = {f: (square(10 + k, 10 + 2 * k, 16) if k >= 3 else Z) for k, f in enumerate(grid)}
    man5 = {f: square(40, 50, 12) for f in [*grid, 32]}
    # auto 1 tracks manual 0 three pixels off, with a false positive at frame 8 (scored from there on)
    # and no row at frame 20 (an empty prediction there)
    auto1 = {f: np.roll(m, 3, axis=1) for f, m in man0.items() if f != 20}
    auto1[8] = square(12, 12, 16)
    # auto 2 follows manual 5 exactly except at the first frame (skipped) and a 2-px shift at 16
    auto2 = {f: m for f, m in man5.items() if f != 32}
    auto2[0] = Z
    auto2[16] = np.roll(man5[16], 2, axis=0)
    # manual 7 is visible only on the first and last frames: the evaluator cannot score it
    man7 = {f: (square(2, 60, 10) if f in (0, 32) else Z) for f in [*grid, 32]}
    auto3 = {f: (square(2, 60, 10) if f in (0, 4, 32) else Z) for f in [*grid, 32]}
    items = [rows(0, man0, "manual"), rows(5, man5, "manual"), rows(7, man7, "manual"),
             rows(1, auto1, "auto"), rows(2, auto2, "auto"), rows(3, auto3, "auto")]
    qc = {(r["masklet_type"], r["masklet_id"]): r
          for r in masklet_qc_rows([m for m, _ in items], [f for _, fr in items for f in fr], QCThresholds())}
    assert qc[("auto", 1)]["manual_masklet_id"] == 0 and qc[("auto", 2)]["manual_masklet_id"] == 5

    video = make_video(tmp_path / "v.mp4", n=33, w=W, h=H)
    gt = tmp_path / "sav_val"
    manual_rows = [f for m, fr in items if m["masklet_type"] == "manual" for f in fr]
    s = write_eval_layout(gt, "val", [{"video_id": "v"}], {"v": manual_rows}, {"v": str(tmp_path / "v.mp4")})
    assert s["objects"] == 2 and video["video_frame_count"] == 33     # manual 7 left out of the layout
    pred = tmp_path / "pred"
    write_pred(pred, gt / "Annotations_6fps", 0, auto1)
    write_pred(pred, gt / "Annotations_6fps", 5, auto2)
    res = evaluate_layout(gt, pred)["videos"]["v"]["objects"]
    for auto, obj in ((1, "000"), (2, "005")):
        r = qc[("auto", auto)]
        assert abs(r["manual_j"] - res[obj]["J"]) < 1e-12, (auto, r["manual_j"], res[obj]["J"])
        assert abs(r["manual_f"] - res[obj]["F"]) < 1e-12, (auto, r["manual_f"], res[obj]["F"])
        assert abs(r["manual_jf"] - res[obj]["J&F"]) < 1e-12
    # the empty frames before manual 0 appears are not scored (today's grid mean counted them as J = 1)
    assert qc[("auto", 1)]["manual_j"] < 0.75
    # no evaluator score for an object it cannot score; matched all the same, and not a QC failure
    r3 = qc[("auto", 3)]
    assert r3["manual_masklet_id"] == 7
    assert r3["manual_j"] is None and r3["manual_f"] is None and r3["manual_jf"] is None
    assert "low_manual_agreement" not in r3["reasons"]


def test_manual_j_counts_from_the_objects_first_appearance():
    """Half of the scored frames before the object appears: J over the frames the evaluator scores."""
    grid = list(range(0, 40, 4))                                       # 10 frames, 8 scored at most
    man = {f: (square(10, 10, 20) if k >= 5 else Z) for k, f in enumerate(grid)}
    auto = {f: (np.roll(m, 4, axis=1) if m.any() else Z) for f, m in man.items()}
    items = [rows(0, man, "manual"), rows(1, auto, "auto")]
    r = {(x["masklet_type"], x["masklet_id"]): x for x in
         masklet_qc_rows([m for m, _ in items], [f for _, fr in items for f in fr])}[("auto", 1)]
    # frames 20..32 scored (4 frames), each IoU 16*20 / (24*20)
    assert r["manual_j"] == pytest.approx(320 / 480, abs=1e-12)

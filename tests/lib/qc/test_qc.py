"""Masklet QC: metrics against hand-made masks with known answers, verdicts, schema."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import SHARED_DATA

from sav_assets.lib.qc.masklet_qc import REASONS, QCThresholds, masklet_qc_rows
from sav_assets.lib.sav import jf, rle
from sav_assets.lib.sav.annotations import import_sav
from sav_assets.lib.store.tables import MASKLET_QC, SCHEMAS, to_table

DATA = SHARED_DATA / "sav_example"
H, W = 60, 80


def square(y, x, s, h=H, w=W):
    m = np.zeros((h, w), np.uint8)
    m[max(y, 0):y + s, max(x, 0):x + s] = 1
    return m


def masklet(mid, masks, *, mtype="auto", video="v", stability=None, predicted_iou=None, **row):
    """(masklet row, frame rows) from a list of HxW masks (one per annotated frame)."""
    frames = []
    for k, m in enumerate(masks):
        r = rle.encode(m)
        frames.append({"video_id": video, "masklet_id": mid, "masklet_type": mtype, "ann_idx": k,
                       "frame_idx": 4 * k, "size": r["size"], "counts": r["counts"], "area": int(m.sum()),
                       "visible": bool(m.any()), "stability_score": stability, "predicted_iou": predicted_iou})
    return {"video_id": video, "masklet_id": mid, "masklet_type": mtype, **row}, frames


# The hand-made cases use tight thresholds; the library defaults are calibrated on real SA-V data.
STRICT = QCThresholds(min_temporal_iou=0.5, max_area_jump=3.0, max_fragments=3.0)


def run(*items, t=None):
    ms = [m for m, _ in items]
    fs = [f for _, fr in items for f in fr]
    return {(r["masklet_type"], r["masklet_id"]): r for r in masklet_qc_rows(ms, fs, t or STRICT)}


def moving(n=6, s=20, step=5, y=10, x=5):
    return [square(y, x + step * k, s) for k in range(n)]


def test_clean_masklet_passes_with_expected_metrics():
    out = run(masklet(0, moving(step=2), stability=0.95, predicted_iou=0.9))[("auto", 0)]
    assert out["passed"] and out["reasons"] == []
    assert out["visible_frames"] == 6 and out["mean_area"] == 400.0
    assert out["fragments_mean"] == 1.0 and out["flicker_rate"] == 0.0 and out["max_area_jump"] == 1.0
    assert out["stability_mean"] == pytest.approx(0.95) and out["predicted_iou_mean"] == pytest.approx(0.9)
    assert out["duplicate_of"] is None and out["manual_masklet_id"] is None


@pytest.mark.parametrize("step", [1, 5, 12])
def test_temporal_iou_of_shifting_square_is_analytic(step):
    s = 20
    out = run(masklet(0, moving(n=5, s=s, step=step)))[("auto", 0)]
    expected = s * (s - step) / (s * (s + step))   # overlap s*(s-d), union s*(s+d)
    assert out["temporal_iou_mean"] == pytest.approx(expected)
    assert ("temporal_inconsistent" in out["reasons"]) == (expected < 0.5)


def test_identical_masklets_are_duplicates_of_the_earlier_id():
    masks = moving()
    out = run(masklet(3, masks), masklet(7, masks), masklet(5, [square(40, 50, 10)] * 6))
    assert out[("auto", 7)]["duplicate_of"] == 3 and out[("auto", 7)]["duplicate_iou"] == 1.0
    assert "duplicate" in out[("auto", 7)]["reasons"]
    assert out[("auto", 3)]["duplicate_of"] is None and out[("auto", 3)]["duplicate_iou"] is None
    assert out[("auto", 5)]["duplicate_of"] is None and out[("auto", 5)]["duplicate_iou"] == 0.0


def test_same_id_in_manual_and_auto_are_different_masklets():
    masks = moving()
    out = run(masklet(0, masks, mtype="manual"), masklet(0, masks, mtype="auto"))
    assert set(out) == {("manual", 0), ("auto", 0)}
    assert out[("auto", 0)]["duplicate_of"] is None  # across types it is a manual match, not a duplicate
    assert out[("auto", 0)]["manual_masklet_id"] == 0
    assert out[("auto", 0)]["manual_j"] == 1.0 and out[("auto", 0)]["manual_f"] == 1.0
    assert out[("auto", 0)]["passed"]


def test_tenfold_area_jump():
    masks = [square(10, 10, 10)] * 3 + [square(10, 10, 10)] * 0
    big = np.zeros((H, W), np.uint8)
    big[10:30, 10:60] = 1  # 20 x 50 = 1000 = 10 x 100, contains the small square
    out = run(masklet(0, masks + [big, big]))[("auto", 0)]
    assert out["max_area_jump"] == pytest.approx(10.0)
    assert "area_jump" in out["reasons"] and not out["passed"]


def test_five_blobs_are_fragmented_and_diagonal_touch_is_one_component():
    m = np.zeros((H, W), np.uint8)
    for i in range(5):
        m[5:10, 5 + 12 * i:10 + 12 * i] = 1
    out = run(masklet(0, [m] * 4))[("auto", 0)]
    assert out["fragments_mean"] == 5.0 and "fragmented" in out["reasons"]
    d = np.zeros((H, W), np.uint8)
    d[10:15, 10:15] = 1
    d[15:20, 15:20] = 1  # touches the first block only at a corner: one 8-connected component
    assert run(masklet(0, [d] * 3))[("auto", 0)]["fragments_mean"] == 1.0


def test_flicker_few_frames_small_and_scores():
    z = np.zeros((H, W), np.uint8)
    a = square(10, 10, 12)
    out = run(
        masklet(0, [a, z, a, z, a, z]),                              # 5 changes / 6 frames
        masklet(1, [z, z, z, a, z, z]),                              # visible once
        masklet(2, [square(40, 40, 5)] * 4),                         # 25 px
        masklet(3, [square(20, 40, 10)] * 4, stability=0.5, predicted_iou=0.2, masklet_cycle_iou=0.1),
        masklet(4, [square(20, 60, 10)] * 4, masklet_stability_mean=0.99, masklet_cycle_iou=0.9),
    )
    assert out[("auto", 0)]["flicker_rate"] == pytest.approx(5 / 6) and "flicker" in out[("auto", 0)]["reasons"]
    assert out[("auto", 0)]["temporal_iou_mean"] is None and out[("auto", 0)]["max_area_jump"] is None
    assert out[("auto", 1)]["visible_frames"] == 1 and "too_few_visible_frames" in out[("auto", 1)]["reasons"]
    assert out[("auto", 2)]["reasons"] == ["too_small"]
    assert out[("auto", 3)]["reasons"] == ["low_stability", "low_predicted_iou", "cycle_inconsistent"]
    assert out[("auto", 4)]["passed"] and out[("auto", 4)]["stability_mean"] == 0.99
    assert out[("auto", 4)]["predicted_iou_mean"] is None and out[("auto", 4)]["cycle_iou"] == 0.9


def test_manual_agreement_j_and_f_match_the_evaluator():
    man = moving(n=5, s=20, step=2)
    shifted = [np.roll(m, 6, axis=1) for m in man]  # IoU 14/26 per frame, boundaries 6 px apart
    z = np.zeros((H, W), np.uint8)
    shifted[4] = z  # a missed frame, but the last one: not scored
    out = run(masklet(0, man, mtype="manual"), masklet(1, moving(n=5, s=20, step=2), mtype="manual",
                                                        video="other"),
              masklet(2, shifted), masklet(3, [square(45, 60, 8)] * 5))
    r = out[("auto", 2)]
    # SA-V's evaluator skips the first and last annotated frames (the missed frame 4 is the last)
    j, f = jf.jf_for_masklet(man[1:-1], shifted[1:-1])
    assert r["manual_masklet_id"] == 0
    assert r["manual_j"] == pytest.approx(j) == pytest.approx(14 / 26)
    assert r["manual_f"] == pytest.approx(f)
    assert r["manual_jf"] == pytest.approx((j + f) / 2)
    assert "low_manual_agreement" in r["reasons"]  # F is low: 6 px shift, 1 px tolerance here
    # no manual masklet of the same object: the gate does not apply
    assert out[("auto", 3)]["manual_masklet_id"] is None and out[("auto", 3)]["manual_j"] is None
    assert "low_manual_agreement" not in out[("auto", 3)]["reasons"]


def test_thresholds_are_honoured():
    out = run(masklet(0, [square(40, 40, 5)] * 4), t=QCThresholds(min_mean_area=10))[("auto", 0)]
    assert out["passed"]


def test_rows_fit_the_masklet_qc_schema():
    assert SCHEMAS["masklet_qc"] is MASKLET_QC
    (m0, f0), (m1, f1) = masklet(0, moving()), masklet(1, moving())
    rows = masklet_qc_rows([m0, m1], f0 + f1)
    assert set(rows[0]) == set(MASKLET_QC.names) - {"batch_id", "evaluated_at"}
    tbl = to_table([{**r, "batch_id": "b"} for r in rows], MASKLET_QC)
    assert tbl.num_rows == 2 and tbl.column("reasons").to_pylist()[1] == ["duplicate"]
    assert set(REASONS) == {"too_few_visible_frames", "too_small", "temporal_inconsistent", "area_jump",
                            "flicker", "fragmented", "low_stability", "low_predicted_iou", "duplicate",
                            "low_manual_agreement", "cycle_inconsistent"}


def test_bad_rle_raises():
    m, fr = masklet(0, moving(n=2))
    fr[1]["counts"] = fr[1]["counts"] + "5"
    with pytest.raises(ValueError, match="do not cover"):
        masklet_qc_rows([m], fr, QCThresholds())


def test_real_sample_manual_and_auto_is_fast():
    ms, fs = [], []
    for kind in ("manual", "auto"):
        p = DATA / f"sav_000001_{kind}.json"
        if not p.is_file():
            pytest.skip(f"shared sample missing: {p}")
        _, m, f = import_sav(json.loads(p.read_text()), source_uri=str(p))
        ms += m
        fs += f
    rows = masklet_qc_rows(ms, fs, QCThresholds())
    # the defaults accept real SA-V annotations, human and automatic alike
    assert [(r["masklet_type"], r["masklet_id"], r["reasons"]) for r in rows if not r["passed"]] == []
    assert len(rows) == 14 and {r["masklet_type"] for r in rows} == {"manual", "auto"}
    by = {(r["masklet_type"], r["masklet_id"]): r for r in rows}
    assert by[("manual", 3)]["visible_frames"] == 8 and by[("auto", 0)]["visible_frames"] == 70
    assert by[("auto", 0)]["stability_mean"] == pytest.approx(ms[5]["masklet_stability_mean"])
    assert all(r["duplicate_of"] is None for r in rows)  # SA-V's masklets are distinct objects
    to_table(rows, MASKLET_QC)

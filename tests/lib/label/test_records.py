"""Frame records and the masklet / masklet_frames rows they become (no model)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from sav_assets.lib.label.config import LabelerConfig
from sav_assets.lib.label.cycle import cycle_ious
from sav_assets.lib.label.records import FrameRecord, MaskletRecords, rows
from sav_assets.lib.sav import fields as masklet_fields
from sav_assets.lib.sav import rle
from sav_assets.lib.store import tables

H, W = 12, 16
LOADED = SimpleNamespace(model_name="m", checkpoint_sha256=None, config_sha256="c", random_weights=True)


def enc(mask):
    r = rle.encode(mask)
    return r, rle.area(r), rle.bbox(r)


def test_frame_record_from_encoding():
    m = np.zeros((H, W), bool)
    m[2:5, 3:9] = True
    r = FrameRecord.from_encoding(enc(m), np.float32(0.5), float("nan"))
    assert r.visible and r.area == 18 and r.bbox == [3.0, 2.0, 6.0, 3.0]
    assert r.predicted_iou == 0.5 and r.stability_score is None  # NaN scores become None
    hidden = FrameRecord.from_encoding(enc(np.zeros((H, W), bool)), 0.9, 0.8)
    assert not hidden.visible and hidden.stability_score is None  # no stability when not visible
    assert hidden.predicted_iou == pytest.approx(0.9)


def test_rows_fill_every_annotated_frame_and_derive_sav_fields():
    grid = [0, 4, 8]
    m = np.zeros((H, W), bool)
    m[2:6, 2:6] = True
    recs = MaskletRecords(3)
    recs.new(5, "auto", 0)
    recs.new(2, "prompted", 1)              # created on annotated frame 1: empty before
    for a in range(3):
        recs.put(5, a, enc(m if a != 1 else np.zeros_like(m)), 0.9, 0.8)
    recs.put(2, 1, enc(m), 0.7, 0.6)
    recs.put(2, 2, enc(m), 0.7, 0.4)
    assert len(recs) == 2 and recs.visible_at(1) == [2] and recs.visible_at(2) == [5, 2]
    assert recs.rle(2, 0, (H, W)) == rle.empty(H, W)
    masklets, frames = rows("v", grid, recs, (H, W), LOADED, "k", {5: 0.75})
    assert [x["masklet_id"] for x in masklets] == [2, 5]
    by = {x["masklet_id"]: x for x in masklets}
    assert by[2]["masklet_cycle_iou"] is None and by[5]["masklet_cycle_iou"] == 0.75
    assert by[2]["source"] == "sam2_prompted" and by[5]["source"] == "sam2_auto"
    assert by[2]["masklet_stability_min"] == 0.4 and math.isclose(by[2]["masklet_stability_mean"], 0.5)
    for k, v in masklet_fields.derive([0, 16, 16], H, W).items():
        assert by[2][k] == v
    f2 = [f for f in frames if f["masklet_id"] == 2]
    assert [f["ann_idx"] for f in f2] == [0, 1, 2] and [f["frame_idx"] for f in f2] == grid
    assert f2[0]["counts"] == rle.empty(H, W)["counts"] and not f2[0]["visible"] and f2[0]["bbox"] == [0.0] * 4
    assert f2[1]["visible"] and f2[1]["area"] == 16 and f2[1]["size"] == [H, W]
    tables.to_table(masklets, tables.MASKLETS)
    tables.to_table(frames, tables.MASKLET_FRAMES)


def test_cycle_check_has_nothing_to_do_without_visible_masklets_or_frames():
    m = np.zeros((H, W), bool)
    m[2:6, 2:6] = True
    recs = MaskletRecords(2)
    recs.new(1, "auto", 1)                  # only created on the last frame: nothing to go back to
    recs.put(1, 1, enc(m), 0.9, 0.9)
    for cfg in (LabelerConfig(cycle_check=True), LabelerConfig(cycle_check=False)):
        assert cycle_ious(None, "unused.mp4", [0, 4], recs, (H, W), cfg, {}, {}, lambda: None) == {}
    assert cycle_ious(None, "unused.mp4", [0], MaskletRecords(1), (H, W), LabelerConfig(), {}, {}, lambda: None) == {}

"""Corrections (issue 12 item 2): a click on frame t of a labeled masklet re-propagates that masklet
from t on with the real SAM 2.1 tiny model (random weights, 128 px, CPU); frames before t and the
other masklets keep their rows byte for byte; ``masklet_edited_frame_count`` counts the edited
frames; the edit is recorded once in ``masklet_edits``; bad corrections are classified rows."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("sam2")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _video_util import make_video as synth_video  # noqa: E402

from sav_assets.lib.label.batch import label_batch  # noqa: E402
from sav_assets.lib.label.config import LabelerConfig  # noqa: E402
from sav_assets.lib.label.corrections import apply_corrections, correction_row, is_correction  # noqa: E402
from sav_assets.lib.label.model import ModelSpec, load_model  # noqa: E402
from sav_assets.lib.label.prompts import Prompt  # noqa: E402
from sav_assets.lib.qc.reviews import append_verdicts, read_verdicts, review_items  # noqa: E402
from sav_assets.lib.sav import fields as masklet_fields  # noqa: E402
from sav_assets.lib.store.lake import Lake  # noqa: E402
from sav_assets.lib.store.tables import MASKLET_EDITS  # noqa: E402

N, W, H, FPS = 32, 160, 120, 24
GRID = masklet_fields.annotation_grid(N, FPS)        # 8 annotated frames: 0, 4, ..., 28
T_ANN = 4                                            # the corrected annotated frame: source frame 16
CFG = LabelerConfig(points_per_side=4, points_per_batch=16, pred_iou_thresh=0.0, stability_score_thresh=0.0,
                    max_objects=4, reseed_every=0, chunk_frames=64, isolate_decode=False, prefetch=False,
                    cycle_check=False, min_area_frac=0.0)


@pytest.fixture(scope="module")
def loaded():
    return load_model(ModelSpec(config="tiny", image_size=128, device="cpu"))


def _frames(lake: Lake, vid: str) -> dict:
    t = lake.part_rows("masklet_frames", "b1", f"{vid}.sam2").to_pylist()
    return {(r["masklet_type"], r["masklet_id"], r["ann_idx"]): r for r in t}


def _masklets(lake: Lake, vid: str) -> dict:
    return {(r["masklet_type"], r["masklet_id"]): r
            for r in lake.part_rows("masklets", "b1", f"{vid}.sam2").to_pylist()}


@pytest.fixture()
def labeled(tmp_path, loaded):
    v = synth_video(tmp_path / "synth.mp4", n=N, w=W, h=H, fps=FPS, late_square_from=16)
    video = {**v, "content_sha256": "ab" * 32, "source_uri": str(tmp_path / "synth.mp4"),
             "source_key": "synth.mp4", "batch_id": "b1", "status": "ok"}
    lake = Lake(tmp_path / "lake")
    prompts = {"synth": [Prompt("synth", 0, 1, [[38.0, 50.0]], [1], None),      # two prompted masklets beside
                         Prompt("synth", 0, 2, None, None, [100.0, 20.0, 150.0, 60.0])]}   # any auto ones
    s = label_batch(lake, "b1", [video], {}, lambda: loaded, CFG, prompts=prompts, log=lambda m: None)
    assert s.labeled == ["synth"]
    return lake, video


def _apply(lake, video, loaded):
    return apply_corrections(lake, "b1", [video], review_items(lake), lambda: loaded, CFG, log=lambda m: None)


def test_a_click_re_propagates_only_that_masklet_from_its_frame(labeled, loaded):
    lake, video = labeled
    before_f, before_m = _frames(lake, "synth"), _masklets(lake, "synth")
    target = min(before_m)
    others = [k for k in before_m if k != target]
    assert others, "the test needs a second masklet"
    row = correction_row("synth.mp4", target[1], GRID[T_ANN], points=[[80.0, 50.0], [20.0, 20.0]], labels=[1, 0],
                         masklet_type=target[0], reviewer="ana", note="leaks")
    assert is_correction(row) and row["video"] == "synth.mp4"
    append_verdicts(lake, [row])
    assert [r for r in read_verdicts(lake) if r.get("error_class")] == []   # not read as a bad verdict

    s = _apply(lake, video, loaded)
    assert s.applied == 1 and s.errors == []
    after_f, after_m = _frames(lake, "synth"), _masklets(lake, "synth")
    assert after_f.keys() == before_f.keys()
    changed = {k[2] for k in before_f if k[:2] == target and before_f[k] != after_f[k]}
    assert T_ANN in changed and min(changed) >= T_ANN          # from t on, and only there
    for k in before_f:
        if k[:2] == target and k[2] < T_ANN:
            assert after_f[k] == before_f[k]
        elif k[:2] != target:
            assert after_f[k] == before_f[k]                    # other masklets byte-identical
    for k in others:
        assert after_m[k] == before_m[k]
    assert before_m[target]["masklet_edited_frame_count"] == 0
    assert after_m[target]["masklet_edited_frame_count"] == 1
    assert after_m[target]["label_key"] == before_m[target]["label_key"]

    (e,) = lake.read_table("masklet_edits", schema=MASKLET_EDITS).to_pylist()
    assert (e["status"], e["video_id"], e["masklet_type"], e["masklet_id"], e["frame_idx"], e["ann_idx"]) == (
        "applied", "synth", *target, GRID[T_ANN], T_ANN)
    assert e["reviewer"] == "ana" and e["note"] == "leaks" and e["corrected_at"] is not None
    assert e["old_area"] == before_f[(*target, T_ANN)]["area"] and e["new_area"] == after_f[(*target, T_ANN)]["area"]
    assert json.loads(e["prompt_json"]) == {"points": [[80.0, 50.0], [20.0, 20.0]], "labels": [1, 0], "box": None}
    assert e["frames_changed"] == len(changed)

    # a re-run does not re-apply it: same files, same count
    parts = {r: lake.get_bytes(r) for r in lake.list("tables") if "/masklet" in r}
    s2 = _apply(lake, video, loaded)
    assert s2.applied == 0 and s2.errors == []
    assert {r: lake.get_bytes(r) for r in lake.list("tables") if "/masklet" in r} == parts

    # a second click on a later frame of the same masklet: one more edited frame
    append_verdicts(lake, [correction_row("synth", target[1], GRID[6], box=[10.0, 10.0, 60.0, 60.0],
                                                 masklet_type=target[0])])
    assert _apply(lake, video, loaded).applied == 1
    final_f = _frames(lake, "synth")
    assert _masklets(lake, "synth")[target]["masklet_edited_frame_count"] == 2
    assert all(final_f[(*target, a)] == after_f[(*target, a)] for a in range(6))


def test_a_click_for_a_new_object_adds_a_masklet(labeled, loaded):
    lake, video = labeled
    before_m = _masklets(lake, "synth")
    append_verdicts(lake, [correction_row("ab" * 32, None, GRID[T_ANN], box=[10.0, 80.0, 40.0, 110.0])])
    s = _apply(lake, video, loaded)
    assert s.applied == 1
    after_m = _masklets(lake, "synth")
    (new,) = set(after_m) - set(before_m)
    assert new == ("prompted", max(k[1] for k in before_m) + 1)
    assert after_m[new]["masklet_edited_frame_count"] == 1
    f = _frames(lake, "synth")
    assert all(f[(*new, a)]["area"] == 0 for a in range(T_ANN))       # nothing before the click
    assert [f[(*new, a)]["frame_idx"] for a in range(len(GRID))] == GRID
    (e,) = lake.read_table("masklet_edits", schema=MASKLET_EDITS).to_pylist()
    assert (e["masklet_type"], e["masklet_id"], e["old_area"]) == ("prompted", new[1], None)


def test_bad_corrections_are_classified_rows_and_the_rest_goes_on(labeled, loaded):
    lake, video = labeled
    before_m = _masklets(lake, "synth")
    mtype, mid = min(before_m)
    append_verdicts(lake, [correction_row(v, m, t, points=p, masklet_type=mtype) for v, m, t, p in [
        ("synth", 999, GRID[2], [[10.0, 10.0]]),          # no such masklet
        ("synth", mid, 400, [[10.0, 10.0]]),              # frame out of range
        ("synth", mid, 5, [[10.0, 10.0]]),                # not an annotated frame
        ("synth", mid, GRID[2], [[500.0, 10.0]]),         # point outside the frame
        ("nope.mp4", mid, GRID[2], [[10.0, 10.0]]),       # no such video
        ("synth", mid, GRID[3], [[30.0, 30.0]]),          # good
    ]])
    s = _apply(lake, video, loaded)
    assert s.applied == 1
    rows = lake.read_table("masklet_edits", schema=MASKLET_EDITS).to_pylist()
    errs = sorted((r["error_class"], r["error_message"]) for r in rows if r["status"] == "error")
    assert [c for c, _ in errs] == ["bad_correction"] * 4 + ["unresolved_video"]
    text = " | ".join(m for _, m in errs)
    for needle in (f"no {mtype} masklet 999", "frame 400 is out of range", "frame 5 is not an annotated frame",
                   "point [500.0, 10.0] is outside the 160x120 frame", "nope.mp4"):
        assert needle in text
    assert _masklets(lake, "synth")[(mtype, mid)]["masklet_edited_frame_count"] == 1
    # the errors are recorded once, not again on the next run
    assert _apply(lake, video, loaded).applied == 0
    assert len(lake.read_table("masklet_edits", schema=MASKLET_EDITS)) == len(rows)


def test_a_crash_before_the_edit_is_recorded_re_applies_a_new_object_once(labeled, loaded, monkeypatch):
    """The masklets parts are written, then the process dies before the masklet_edits commit marker:
    the next run re-applies the correction without a second new object (same id, one edit row)."""
    lake, video = labeled
    before_m = _masklets(lake, "synth")
    append_verdicts(lake, [correction_row("synth", None, GRID[T_ANN], box=[10.0, 80.0, 40.0, 110.0])])
    real_write = Lake.write_part

    def crash_on_commit(self, table, batch, part, tbl, **kw):
        if table == "masklet_edits" and ".edits." in part:
            raise RuntimeError("killed before the commit marker")
        return real_write(self, table, batch, part, tbl, **kw)

    monkeypatch.setattr(Lake, "write_part", crash_on_commit)
    with pytest.raises(RuntimeError, match="killed"):
        _apply(lake, video, loaded)
    monkeypatch.setattr(Lake, "write_part", real_write)
    crashed_m = _masklets(lake, "synth")
    assert len(crashed_m) == len(before_m) + 1                      # the masks were written, not the edit
    assert lake.read_table("masklet_edits", schema=MASKLET_EDITS).num_rows == 0

    s = _apply(lake, video, loaded)
    assert s.applied == 1 and s.errors == []
    after_m = _masklets(lake, "synth")
    (new,) = set(after_m) - set(before_m)                           # one new object, not two
    assert new == ("prompted", max(k[1] for k in before_m) + 1)
    assert set(after_m) == set(crashed_m)
    assert after_m[new]["masklet_edited_frame_count"] == 1
    f = _frames(lake, "synth")
    assert sorted(k[2] for k in f if k[:2] == new) == list(range(len(GRID)))   # one row per annotated frame
    (e,) = lake.read_table("masklet_edits", schema=MASKLET_EDITS).to_pylist()
    assert (e["status"], e["masklet_type"], e["masklet_id"]) == ("applied", *new)
    assert _apply(lake, video, loaded).applied == 0                 # and committed: not again
    assert set(_masklets(lake, "synth")) == set(after_m)


@pytest.mark.timeout(1200)
def test_masklets_asset_applies_a_correction_file_to_its_consolidated_parts(tmp_path, make_video):
    """Through the ``masklets`` asset: label two videos (their per-video parts consolidated into one file
    per table), drop a correction in <root>/reviews/, materialize again: SQL shows the new masks from t
    on, edited count 1, no duplicate rows, one live file per table; ``masklet_qc`` re-checks the masklet."""
    import dagster as dg

    from sav_assets.defs.ingest import IngestConfig, QualityConfig, raw_videos, video_quality
    from sav_assets.defs.label import LabelingConfig, masklets
    from sav_assets.defs.partitions import batches
    from sav_assets.defs.qc import QCConfig, masklet_qc
    from sav_assets.lib.ingest.batches import claim_batch, plan_batch
    from sav_assets.lib.store.catalog import query
    from sav_assets.lib.store.lake import is_consolidated
    from sav_assets.lib.store.tables import MASKLET_QC
    from sav_assets.resources import LakeResource, SAM2Resource, SourceResource

    src = tmp_path / "src"
    make_video(src / "Street Cam.mp4", seconds=1.0, width=320, height=240, seed=3)
    make_video(src / "other.mp4", seconds=1.0, width=320, height=240, seed=4)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"file_name": "Street Cam.mp4", "frame_idx": 0, "obj_id": 5,
                                   "box": [40, 40, 200, 180]}) + "\n")
    lake_res, source_res = LakeResource(root=str(tmp_path / "lake")), SourceResource(uri=str(src), settle_seconds=0)
    lk = lake_res.lake()
    batch_id = claim_batch(lk, plan_batch(source_res.source(), lk, settle_seconds=0).manifest()).batch_id
    res = {"lake": lake_res, "source": source_res, "sam2": SAM2Resource(config="tiny", image_size=128, device="cpu")}
    labeling = LabelingConfig(prompts_uri=str(prompts), points_per_side=2, points_per_batch=4, max_objects=1,
                              reseed_every=0, cycle_check=False, isolate_decode=False, prefetch=False, overlay_width=0)
    frames_sql = ("SELECT masklet_id, ann_idx, frame_idx, area, visible, counts FROM masklet_frames "
                  "WHERE video_id = ? AND masklet_type = 'prompted' ORDER BY masklet_id, ann_idx")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(batches.name, [batch_id])

        def run(asset, config):
            ctx = dg.build_asset_context(partition_key=batch_id, instance=instance)
            out = asset(context=ctx, config=config, **{k: res[k] for k in asset.required_resource_keys if k in res})
            return {k: getattr(v, "value", v) for k, v in out.metadata.items()}

        run(raw_videos, IngestConfig())
        run(video_quality, QualityConfig(min_short_side=200, min_duration_s=0.5))
        first = run(masklets, labeling)
        assert first["videos_labeled"] == 2 and first["corrections_applied"] == 0
        qc_before = run(masklet_qc, QCConfig())
        (vid,) = [r["video_id"] for r in query(lk, "SELECT video_id FROM videos WHERE source_key = ?",
                                                    ["Street Cam.mp4"]).to_pylist()]
        before = query(lk, frames_sql, [vid]).to_pylist()
        total = query(lk, "SELECT count(*) AS n FROM masklet_frames").to_pylist()[0]["n"]
        grid = [r["frame_idx"] for r in before]
        assert [r["masklet_id"] for r in before] == [5] * len(grid) and len(grid) >= 4
        for table in ("masklets", "masklet_frames"):
            assert len(lk.table_parts(table)) == 1 and is_consolidated(lk.table_parts(table)[0])

        t = 2                                               # annotated frame 2 (source frame grid[2])
        append_verdicts(lk, [correction_row("Street Cam.mp4", 5, grid[t], masklet_type="prompted",
                                            points=[[300.0, 220.0], [100.0, 100.0]], labels=[1, 0],
                                            reviewer="ana", note="misses the corner")])
        second = run(masklets, labeling)
        assert second["videos_labeled"] == 0 and second["videos_skipped_already_labeled"] == 2
        assert (second["corrections_applied"], second["masklets_repropagated"], second["correction_errors"]) == (1, 1, 0)
        qc_after = run(masklet_qc, QCConfig())

    after = query(lk, frames_sql, [vid]).to_pylist()
    assert [(r["ann_idx"], r["frame_idx"]) for r in after] == [(r["ann_idx"], r["frame_idx"]) for r in before]
    assert after[:t] == before[:t]                                             # unchanged before t
    assert after[t] != before[t]                                               # the click changed frame t
    assert query(lk, "SELECT count(*) AS n FROM masklet_frames").to_pylist()[0]["n"] == total
    dups = query(lk, "SELECT video_id, masklet_type, masklet_id, ann_idx, count(*) AS n FROM masklet_frames "
                     "GROUP BY ALL HAVING count(*) > 1").num_rows
    assert dups == 0
    counts = query(lk, "SELECT video_id, masklet_type, masklet_id, masklet_edited_frame_count AS e, count(*) AS n "
                       "FROM masklets GROUP BY ALL ORDER BY ALL").to_pylist()
    assert all(r["n"] == 1 for r in counts)
    assert [(r["masklet_id"], r["e"]) for r in counts if r["video_id"] == vid and r["masklet_type"] == "prompted"] \
        == [(5, 1)]
    assert all(r["e"] == 0 for r in counts if (r["video_id"], r["masklet_type"]) != (vid, "prompted"))
    (edit,) = query(lk, "SELECT status, masklet_id, frame_idx, reviewer FROM masklet_edits").to_pylist()
    assert edit == {"status": "applied", "masklet_id": 5, "frame_idx": grid[t], "reviewer": "ana"}
    for table in ("masklets", "masklet_frames"):                               # merged again: one live file
        assert len(lk.table_parts(table)) == 1 and is_consolidated(lk.table_parts(table)[0])

    # masklet_qc re-checked the corrected masklet on its new masks
    qc = {(r["video_id"], r["masklet_type"], r["masklet_id"]): r
          for r in lk.read_table("masklet_qc", schema=MASKLET_QC).to_pylist()}
    row = qc[(vid, "prompted", 5)]
    visible = [r["area"] for r in after if r["visible"]]
    assert row["visible_frames"] == len(visible)
    assert row["mean_area"] == pytest.approx(sum(visible) / len(visible) if visible else 0.0)
    assert qc_before["masklets_checked"] == qc_after["masklets_checked"] == len(counts)

"""splits, eval_layout and training_shards, called directly on the tiny lake."""

import json


def test_splits(tiny_lake):
    m = tiny_lake.md("splits")
    rows = tiny_lake.lake.read_table("splits").to_pylist()
    assert m["dagster/row_count"] == len(rows) == 3
    assert {r["split"] for r in rows} == {"train", "val"}
    # one source group never straddles: demo videos 0 and 1 share demo_group_0
    by_id = {r["video_id"]: r["split"] for r in rows}
    assert by_id["sav_900000"] == by_id["sav_900001"]
    assert "| val | 1 |" in m["new_assignments"] and m["config_hash"] == rows[0]["config_hash"]


def test_eval_layout_covers_the_val_video(tiny_lake):
    m = tiny_lake.md("eval_layout")
    val = [r["video_id"] for r in tiny_lake.lake.read_table("splits").to_pylist() if r["split"] == "val"]
    assert m["val_videos"] == 1 and m["val_objects"] > 0
    layout = tiny_lake.root / "exports" / "sav_val"
    assert (layout / "sav_val.txt").read_text().split() == val
    assert any((layout / "Annotations_6fps" / val[0]).iterdir())


def test_training_shards(tiny_lake):
    m = tiny_lake.md("training_shards")
    rows = tiny_lake.lake.read_table("shards").to_pylist()
    assert m["dagster/row_count"] == len(rows) >= 1
    assert m["train_videos"] == 2 and m["samples"] == sum(r["samples"] for r in rows) > 0
    manifest = json.loads((tiny_lake.root / "shards" / tiny_lake.batch_id / "manifest.json").read_text())
    assert [s["shard"] for s in manifest["shards"]] == [r["shard"] for r in rows]
    assert m["bytes"] == sum(r["bytes"] for r in rows)


def test_eval_layout_lists_every_manual_masklet_it_leaves_out(tiny_lake):
    """Human ground truth never disappears silently: each manual masklet of a val video is an object of
    the layout or a line of val_left_out with its reason (QC verdicts do not remove them by default)."""
    m = tiny_lake.md("eval_layout")
    val = {r["video_id"] for r in tiny_lake.lake.read_table("splits").to_pylist() if r["split"] == "val"}
    manual = {(r["video_id"], r["masklet_id"]) for r in tiny_lake.lake.read_table("masklets").to_pylist()
              if r["video_id"] in val and r["masklet_type"] == "manual"}
    failed = {(r["video_id"], r["masklet_id"]) for r in tiny_lake.lake.read_table("masklet_qc").to_pylist()
              if r["masklet_type"] == "manual" and not r["passed"]} & manual
    layout = tiny_lake.root / "exports" / "sav_val" / "Annotations_6fps"
    written = {(v, int(o.name)) for v in val for o in (layout / v).iterdir()}
    left_out = {(x["video_id"], x["masklet_id"]): x["reason"] for x in m["val_left_out"] if "masklet_id" in x}
    assert m["val_ground_truth_masklets"] == len(manual)
    assert written | set(left_out) == manual and not written & set(left_out)
    assert failed <= written            # failing QC does not remove a manual masklet
    assert m["val_objects"] == len(written)
    assert all(r for r in left_out.values())


def test_eval_layout_passes_the_evaluator_layout_check(tiny_lake):
    m = tiny_lake.md("eval_layout")
    assert m["val_layout_problems"] == []

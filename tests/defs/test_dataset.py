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

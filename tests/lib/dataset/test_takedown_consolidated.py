"""Takedown over consolidated and compacted label parts: the rows of the other videos stay addressable.

A consolidated part's footer maps each merged part to its row range (the resume marker of a video is
read through it, :meth:`Lake.part_rows`), and ``CURRENT.json`` of a compacted table lists its source
parts per segment. Removing a video's rows from such a file must keep the ranges of the other parts
right and leave no trace of the video's parts in either index.
"""

from __future__ import annotations

import json

import pyarrow as pa

from sav_assets.lib.dataset import takedown as td
from sav_assets.lib.store.compaction import compact_table
from sav_assets.lib.store.consolidation import consolidate_batch
from sav_assets.lib.store.lake import Lake
from sav_assets.lib.store.tables import LABEL_RUNS, MASKLETS, VIDEOS, to_table

VIDS = ["vid_a", "vid_b", "vid_c"]


def _lake(tmp_path) -> Lake:
    lk = Lake(str(tmp_path / "lake"))
    lk.write_part("videos", "b1", "part-0", to_table(
        [{"video_id": v, "batch_id": "b1", "status": "ok", "content_sha256": f"{i:064x}",
          "source_uri": f"file:///src/{v}.mp4", "source_key": f"{v}.mp4"} for i, v in enumerate(VIDS)], VIDEOS))
    for i, v in enumerate(VIDS):
        # a different number of rows per video, so a shifted range shows
        lk.write_part("masklets", "b1", f"{v}.sam2", to_table(
            [{"video_id": v, "masklet_id": k, "masklet_type": "auto"} for k in range(i + 2)], MASKLETS))
        lk.write_part("label_runs", "b1", f"{v}.sam2", to_table(
            [{"video_id": v, "batch_id": "b1", "label_key": f"key-{v}", "status": "labeled"}], LABEL_RUNS))
    return lk


def test_consolidated_ranges_follow_the_removed_rows(tmp_path):
    lk = _lake(tmp_path)
    for t in ("masklets", "label_runs"):
        assert consolidate_batch(lk, t, "b1", log=lambda m: None).consolidated
    assert lk.part_rows("masklets", "b1", "vid_c.sam2").num_rows == 4

    td.takedown(lk, "vid_a", reason="test", requested_by="t")

    fresh = Lake(lk.root)                      # a new reader: no cached footers
    for t, n in (("masklets", {"vid_b": 3, "vid_c": 4}), ("label_runs", {"vid_b": 1, "vid_c": 1})):
        for v, rows in n.items():
            part = fresh.part_rows(t, "b1", f"{v}.sam2")
            assert part is not None and part.num_rows == rows, (t, v)
            assert set(part.column("video_id").to_pylist()) == {v}, (t, v)
        assert fresh.part_rows(t, "b1", "vid_a.sam2") is None
        cons = [r for r in fresh.table_parts(t) if "/consolidated/" in r]
        assert cons and all("vid_a" not in json.dumps(fresh.manifest(r)) for r in cons)
    assert sorted(fresh.read_table("masklets").column("video_id").to_pylist()) == ["vid_b"] * 3 + ["vid_c"] * 4


def test_compaction_pointer_segments_forget_the_removed_parts(tmp_path):
    lk = _lake(tmp_path)
    compact_table(lk, "masklets", log=lambda m: None)
    lk.write_part("masklets", "b2", "vid_x.sam2", to_table(
        [{"video_id": "vid_x", "masklet_id": 0, "masklet_type": "auto"}], MASKLETS))
    compact_table(lk, "masklets", log=lambda m: None)      # a second, incremental segment
    ptr = json.loads(lk.get_bytes("compacted/masklets/CURRENT.json"))
    assert "vid_a" in json.dumps(ptr)

    td.takedown(lk, "vid_a", reason="test", requested_by="t")

    ptr = json.loads(lk.get_bytes("compacted/masklets/CURRENT.json"))
    assert "vid_a" not in json.dumps(ptr)
    assert all("vid_a" not in json.dumps(seg) for seg in ptr.get("segments", []))
    got = sorted(pa.concat_tables([lk.read_table("masklets")]).column("video_id").to_pylist())
    assert got == ["vid_b"] * 3 + ["vid_c"] * 4 + ["vid_x"]

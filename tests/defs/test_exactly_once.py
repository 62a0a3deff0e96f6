"""Exactly once across concurrent runs: two batches from two sources that share a file, ingested at the
same time, keep one video and record the other copy as duplicate_content; neither run fails the
blocking check ``video_ids_unique_across_batches``."""

from __future__ import annotations

import shutil

import dagster as dg

from sav_assets.defs.checks import video_ids_unique_across_batches
from sav_assets.defs.ingest import IngestConfig, raw_videos
from sav_assets.lib.ingest.batches import claim_batch, plan_batch
from sav_assets.resources import LakeResource, SourceResource


def test_two_sources_sharing_a_file_do_not_fail_both_runs(tmp_path, make_video, monkeypatch):
    shared = make_video(tmp_path / "shared.mp4", seconds=1.0, seed=3)
    for name in ("src_a", "src_b"):
        shutil.copyfile(shared, tmp_path / name / "clip.mp4") if (tmp_path / name).mkdir() is None else None
    make_video(tmp_path / "src_b" / "own.mp4", seconds=1.0, seed=4)
    lake_res = LakeResource(root=str(tmp_path / "lake"))
    lk = lake_res.lake()
    # both runs read "no other batch has this content" before either writes (they run concurrently)
    monkeypatch.setattr("sav_assets.defs.ingest.other_batches", lambda lake, table, batch_id: [])
    ids = []
    with dg.instance_for_test() as instance:
        for name in ("src_a", "src_b"):
            src_res = SourceResource(uri=str(tmp_path / name), settle_seconds=0)
            plan = plan_batch(src_res.source(), lk, settle_seconds=0)
            claim_batch(lk, plan.manifest())
            ids.append(plan.batch_id)
            ctx = dg.build_asset_context(partition_key=plan.batch_id, instance=instance,
                                         resources={"lake": lake_res, "source": src_res})
            raw_videos(ctx, IngestConfig())
        results = [video_ids_unique_across_batches(dg.build_op_context(partition_key=b, instance=instance,
                                                                       resources={"lake": lake_res}))
                   for b in ids]
    assert [r.passed for r in results] == [True, True], [r.metadata for r in results]
    videos = lk.read_table("videos").to_pylist()
    assert sorted((v["batch_id"] == ids[0], v["source_key"]) for v in videos) == [(False, "own.mp4"), (True, "clip.mp4")]
    objs = {(o["batch_id"], o["source_key"]): o for o in lk.read_table("source_objects").to_pylist()}
    kept = [v["video_id"] for v in videos if v["source_key"] == "clip.mp4"][0]
    dup = objs[(ids[1], "clip.mp4")]
    assert dup["disposition"] == "duplicate_content" and dup["duplicate_of"] == kept

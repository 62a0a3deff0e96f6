"""Prompts that name their video by source file name, URI or content SHA-256 instead of the internal
``video_id`` (which for a non-SA-V name is ``<slug>_<hash>`` and unknown before ingestion).

The end-to-end test runs the real ``masklets`` asset body with the real SAM 2.1 tiny model (random
weights, 128 px input, CPU) on a freshly ingested lake."""

from __future__ import annotations

import json

import dagster as dg
import pytest

from sav_assets.lib.label.prompts import load_prompts, resolve_prompts, resolve_video

SHA_A, SHA_B = "a" * 64, "b" * 64
VIDEOS = [
    {"video_id": "my_cat_1f2e3d4c", "content_sha256": SHA_A, "source_uri": "/src/2024/My Cat.mp4",
     "source_key": "2024/My Cat.mp4"},
    {"video_id": "dog_99aa00bb", "content_sha256": SHA_B, "source_uri": "s3://b/in/dog.mp4", "source_key": "in/dog.mp4"},
    {"video_id": "dog_77cc11dd", "content_sha256": "c" * 64, "source_uri": "s3://b/old/dog.mp4",
     "source_key": "old/dog.mp4"},
]


def test_load_prompts_accepts_file_name_uri_and_sha_keys():
    text = "\n".join(json.dumps(d) for d in [
        {"file_name": "My Cat.mp4", "frame_idx": 0, "obj_id": 1, "box": [1, 1, 9, 9]},
        {"source_uri": "s3://b/in/dog.mp4", "frame_idx": 4, "obj_id": 2, "points": [[3, 4]]},
        {"content_sha256": SHA_B, "frame_idx": 8, "obj_id": 3, "points": [[5, 6]]},
    ])
    got = load_prompts(text)
    assert sorted(got) == sorted(["My Cat.mp4", "s3://b/in/dog.mp4", SHA_B])
    csv_text = "file_name,frame_idx,obj_id,x,y,label\nMy Cat.mp4,0,1,10,20,1\nMy Cat.mp4,0,1,30,40,0\n"
    (p,) = load_prompts(csv_text)["My Cat.mp4"]
    assert p.points == [[10.0, 20.0], [30.0, 40.0]] and p.labels == [1, 0]
    with pytest.raises(ValueError, match="exactly one of"):
        load_prompts(json.dumps({"file_name": "a.mp4", "video_id": "a", "frame_idx": 0, "obj_id": 1, "box": [0, 0, 1, 1]}))


def test_resolve_video_precedence_and_ambiguity():
    assert resolve_video("my_cat_1f2e3d4c", VIDEOS) == ("my_cat_1f2e3d4c", ["my_cat_1f2e3d4c"])
    assert resolve_video(SHA_A.upper(), VIDEOS)[0] == "my_cat_1f2e3d4c"
    assert resolve_video("s3://b/old/dog.mp4", VIDEOS)[0] == "dog_77cc11dd"
    assert resolve_video("in/dog.mp4", VIDEOS)[0] == "dog_99aa00bb"
    assert resolve_video("My Cat.mp4", VIDEOS)[0] == "my_cat_1f2e3d4c"
    assert resolve_video("dog.mp4", VIDEOS) == (None, ["dog_77cc11dd", "dog_99aa00bb"])
    assert resolve_video("cow.mp4", VIDEOS) == (None, [])


def test_resolve_prompts_maps_keys_and_reports_unknown_and_ambiguous():
    prompts = load_prompts("\n".join(json.dumps(d) for d in [
        {"file_name": "My Cat.mp4", "frame_idx": 0, "obj_id": 1, "box": [1, 1, 9, 9]},
        {"video_id": "my_cat_1f2e3d4c", "frame_idx": 0, "obj_id": 1, "box": [2, 2, 9, 9]},   # same prompt twice
        {"video_id": "my_cat_1f2e3d4c", "frame_idx": 4, "obj_id": 2, "box": [2, 2, 9, 9]},
        {"file_name": "dog.mp4", "frame_idx": 0, "obj_id": 1, "box": [1, 1, 9, 9]},           # two dogs
        {"file_name": "cow.mp4", "frame_idx": 0, "obj_id": 1, "box": [1, 1, 9, 9]},           # nowhere
        {"file_name": "elsewhere.mp4", "frame_idx": 0, "obj_id": 1, "box": [1, 1, 9, 9]},     # another batch
    ]))
    other = {"video_id": "elsewhere_00", "content_sha256": "d" * 64, "source_uri": "/s/elsewhere.mp4",
             "source_key": "elsewhere.mp4"}
    res = resolve_prompts(prompts, VIDEOS, VIDEOS + [other])
    assert list(res.by_video) == ["my_cat_1f2e3d4c"]
    assert [(p.video_id, p.frame_idx, p.obj_id, p.box) for p in res.by_video["my_cat_1f2e3d4c"]] == [
        ("my_cat_1f2e3d4c", 0, 1, [1.0, 1.0, 9.0, 9.0]), ("my_cat_1f2e3d4c", 4, 2, [2.0, 2.0, 9.0, 9.0])]
    by_key = {p["key"]: p for p in res.problems}
    assert set(by_key) == {"my_cat_1f2e3d4c", "dog.mp4", "cow.mp4"}
    assert by_key["dog.mp4"]["error_class"] == "unresolved_video" and "ambiguous" in by_key["dog.mp4"]["message"]
    assert "dog_77cc11dd" in by_key["dog.mp4"]["message"]
    assert by_key["cow.mp4"]["error_class"] == "unresolved_video" and "no ingested video" in by_key["cow.mp4"]["message"]
    assert by_key["my_cat_1f2e3d4c"]["error_class"] == "bad_prompt"
    assert res.elsewhere == ["elsewhere.mp4"]


@pytest.mark.timeout(900)
def test_masklets_asset_labels_prompts_keyed_by_file_name(tmp_path, make_video):
    """A prompt naming the source file 'Street Cam 01.mp4' becomes a prompted masklet of that video;
    one naming a file that was never ingested is a recorded ``unresolved_video`` row; the rest goes on."""
    from sav_assets.defs.ingest import IngestConfig, QualityConfig, raw_videos, video_quality
    from sav_assets.defs.label import LabelingConfig, masklets
    from sav_assets.defs.partitions import batches
    from sav_assets.lib.ingest.batches import claim_batch, plan_batch
    from sav_assets.lib.store.tables import LABEL_RUNS, MASKLETS, VIDEOS
    from sav_assets.resources import LakeResource, SAM2Resource, SourceResource

    src = tmp_path / "src"
    make_video(src / "Street Cam 01.mp4", seconds=1.0, width=320, height=240, seed=3)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"file_name": "Street Cam 01.mp4", "frame_idx": 0, "obj_id": 5,
                                   "box": [40, 40, 200, 180]}) + "\n"
                       + json.dumps({"file_name": "never_ingested.mp4", "frame_idx": 0, "obj_id": 1,
                                     "box": [1, 1, 50, 50]}) + "\n")
    lake_res, source_res = LakeResource(root=str(tmp_path / "lake")), SourceResource(uri=str(src), settle_seconds=0)
    lk = lake_res.lake()
    batch_id = claim_batch(lk, plan_batch(source_res.source(), lk, settle_seconds=0).manifest()).batch_id
    res = {"lake": lake_res, "source": source_res,
           "sam2": SAM2Resource(config="tiny", image_size=128, device="cpu")}
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(batches.name, [batch_id])

        def run(asset, config):
            ctx = dg.build_asset_context(partition_key=batch_id, instance=instance)
            return asset(context=ctx, config=config, **{k: res[k] for k in asset.required_resource_keys if k in res})

        run(raw_videos, IngestConfig())
        run(video_quality, QualityConfig(min_short_side=200, min_duration_s=0.5))
        (video,) = lk.read_table("videos", schema=VIDEOS).to_pylist()
        assert video["video_id"] != "Street Cam 01"          # the id is not the file name
        run(masklets, LabelingConfig(prompts_uri=str(prompts), points_per_side=2, points_per_batch=4,
                                     max_objects=1, reseed_every=0, cycle_check=False, isolate_decode=False,
                                     prefetch=False, overlay_width=0))
    rows = lk.read_table("masklets", schema=MASKLETS).to_pylist()
    prompted = [(r["video_id"], r["masklet_id"]) for r in rows if r["masklet_type"] == "prompted"]
    assert prompted == [(video["video_id"], 5)]
    runs = lk.read_table("label_runs", schema=LABEL_RUNS).to_pylist()
    assert [(r["video_id"], r["status"]) for r in runs if r["status"] == "labeled"] == [(video["video_id"], "labeled")]
    (bad,) = [r for r in runs if r["status"] == "failed"]
    assert bad["error_class"] == "unresolved_video" and "never_ingested.mp4" in bad["error_message"]


def test_a_solved_prompt_problem_leaves_label_runs_after_the_batch_was_consolidated(tmp_path):
    from sav_assets.lib.label.prompts import resolve_batch_prompts
    from sav_assets.lib.store.consolidation import consolidate_batch
    from sav_assets.lib.store.lake import Lake
    from sav_assets.lib.store.tables import VIDEOS as VIDEOS_SCHEMA
    from sav_assets.lib.store.tables import to_table

    lake = Lake(tmp_path / "lake")
    lake.write_part("videos", "b1", "part-0", to_table([{**v, "batch_id": "b1", "status": "ok"} for v in VIDEOS],
                                                       VIDEOS_SCHEMA))
    cow = {"file_name": "cow.mp4", "frame_idx": 0, "obj_id": 1, "box": [1, 1, 9, 9]}      # matches no video
    resolve_batch_prompts(lake, "b1", load_prompts(json.dumps(cow)), VIDEOS)
    assert consolidate_batch(lake, "label_runs", "b1", min_parts=1, log=lambda m: None).consolidated
    assert [r["error_class"] for r in lake.read_table("label_runs").to_pylist()] == ["unresolved_video"]
    fixed = {**cow, "file_name": "My Cat.mp4"}                                             # the file fixed
    resolve_batch_prompts(lake, "b1", load_prompts(json.dumps(fixed)), VIDEOS)
    consolidate_batch(lake, "label_runs", "b1", min_parts=1, log=lambda m: None)        # as the masklets step does
    assert lake.read_table("label_runs").to_pylist() == []

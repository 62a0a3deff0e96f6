"""masklets and sav_export, called directly on the tiny lake (SA-V manual masks imported, no SAM 2 run),
and the code_version that marks labels stale after a model swap."""

import json

from sav_assets.defs.label import LabelingConfig, annotation_uris, labels_code_version
from sav_assets.lib.label.model import ModelSpec


def test_masklets_imports_manual_annotations(tiny_lake):
    m = tiny_lake.md("masklets")
    rows = tiny_lake.lake.read_table("masklets").to_pylist()
    assert m["dagster/row_count"] == len(rows) > 0
    assert {r["masklet_type"] for r in rows} == {"manual"}
    assert m["videos_to_label"] == 3 and m["videos_with_imported_annotations"] == 3
    assert m["videos_labeled"] == 0 and m["frames_labeled"] == 0          # run_sam2=False
    assert f"| manual | {len(rows)} |" in m["masklets_by_type"]
    assert m["random_weights"] is False
    assert "masklet_frame_count" in m["masklets/preview"]


def test_sav_export_writes_one_file_per_annotated_video(tiny_lake):
    m = tiny_lake.md("sav_export")
    assert m["files"] == 3 and len(m["sample"]) == 3
    doc = json.loads((tiny_lake.root / "exports" / "sav" / "sav_900000_manual.json").read_text())
    assert doc["video_id"] == "sav_900000" and doc["masklet_num"] == len(doc["masklet_id"])


def test_annotation_uris_by_stem_by_video_id_and_under_a_prefix():
    objects = [{"source_key": k, "source_uri": f"s3://b/{k}", "disposition": "annotation"}
               for k in ("a/clip_manual.json", "a/clip_x1_auto.json", "ann/other_x2_manual.json")]
    videos = [{"video_id": "clip_x1", "source_key": "a/clip.mp4"}, {"video_id": "other_x2", "source_key": "b/other.mov"},
              {"video_id": "none", "source_key": "none.mp4"}]
    found = annotation_uris(videos, objects, "ann")
    assert found == {"clip_x1": {"manual": "s3://b/a/clip_manual.json", "auto": "s3://b/a/clip_x1_auto.json"},
                     "other_x2": {"manual": "s3://b/ann/other_x2_manual.json"}}
    assert annotation_uris(videos, objects, None) == {"clip_x1": found["clip_x1"]}


def test_labels_code_version_follows_the_model_not_the_device():
    base = labels_code_version(ModelSpec())
    assert labels_code_version(ModelSpec(device="cpu", cache_dir="/tmp/x", compile=True)) == base
    assert labels_code_version(ModelSpec(checkpoint="/m/sam2.1_hiera_tiny.pt")) != base
    assert labels_code_version(ModelSpec(checkpoint="/m/a.pt", checkpoint_sha256="ab" * 32)) != \
        labels_code_version(ModelSpec(checkpoint="/m/a.pt", checkpoint_sha256="cd" * 32))
    assert labels_code_version(ModelSpec(config="large")) != base


def test_max_videos_unset_labels_all():
    assert LabelingConfig().max_videos is None and [1, 2, 3][: LabelingConfig().max_videos] == [1, 2, 3]


def test_masklets_leaves_one_consolidated_file_per_batch_and_table(tiny_lake):
    """labeling's per-video parts are merged after the batch (lib/store/consolidation.py)."""
    from sav_assets.lib.store.lake import is_consolidated

    lk = tiny_lake.lake
    for table in ("masklets", "masklet_frames", "sav_annotations"):
        files = lk.table_parts(table)
        assert len(files) == len(lk.batches(table)) == 1 and is_consolidated(files[0]), (table, files)
        assert len([r for r in lk.list(f"tables/{table}") if "/_schema/" not in r]) == 1

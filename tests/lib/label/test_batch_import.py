"""SA-V annotation import checked against the probed video: size, frames, ids and bounds.

A ``_manual.json`` is imported beside a real (generated, probed) 1280x720 video through
``label_batch(run_sam2=False)``, exactly as the ``masklets`` asset does; a refused file is a
``label_runs`` row with ``error_class = bad_annotation`` and a message that says what differs.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from sav_assets.lib.ingest.demo import sav_annotation
from sav_assets.lib.label.batch import label_batch
from sav_assets.lib.label.config import LabelerConfig
from sav_assets.lib.sav import rle
from sav_assets.lib.sav.exports import build_sav_docs
from sav_assets.lib.store.lake import Lake
from sav_assets.lib.store.tables import LABEL_RUNS, MASKLETS, SAV_ANNOTATIONS
from sav_assets.lib.video.errors import BAD_ANNOTATION
from sav_assets.lib.video.probe import probe_file

VID = "clip_0123456789"


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """A probed ``videos`` row of a real 1280x720, 2 s, 24 fps video."""
    from sav_assets.lib.ingest.demo import write_synthetic_video

    path = tmp_path_factory.mktemp("v") / "clip.mp4"
    write_synthetic_video(path, 2.0, 24, 1280, 720, 7)
    row = probe_file(str(path)).as_row()
    assert (row["video_height"], row["video_width"], row["video_frame_count"]) == (720, 1280, 48)
    return {**row, "video_id": VID, "source_uri": str(path), "content_sha256": "0" * 64}


def _doc(h: int, w: int, n_obj: int = 2, n_frames: int = 12, video_id: str = VID) -> dict:
    """A manual annotation with ``n_obj`` boxes on ``n_frames`` annotated frames of an ``h x w`` video."""
    col = []
    for k in range(n_frames):
        row = []
        for j in range(n_obj):
            m = np.zeros((h, w), np.uint8)
            y, x = (2 + j) % max(1, h - 4), (2 + k) % max(1, w - 4)
            m[y:y + 3, x:x + 3] = 1
            row.append(rle.encode(m))
        col.append(row)
    return sav_annotation(video_id, col, 48, 24.0, w, h)


def _run(tmp_path, video, doc, cfg: LabelerConfig | None = None):
    ann = tmp_path / f"{VID}_manual.json"
    ann.write_text(json.dumps(doc))
    lake = Lake(tmp_path / "lake")
    log: list[str] = []
    summary = label_batch(lake, "b1", [video], {VID: {"manual": str(ann)}}, lambda: None,
                          cfg or LabelerConfig(), run_sam2=False, log=log.append)
    return lake, summary, log


def _label_runs(lake):
    return lake.read_table("label_runs", schema=LABEL_RUNS).to_pylist()


def _assert_refused(lake, summary, *needles):
    assert lake.read_table("masklets", schema=MASKLETS).num_rows == 0          # nothing imported
    assert lake.read_table("sav_annotations", schema=SAV_ANNOTATIONS).num_rows == 0
    assert summary.imported == {} and list(summary.failed) == [f"{VID}:manual"]
    runs = _label_runs(lake)
    assert len(runs) == 1 and runs[0]["video_id"] == VID and runs[0]["status"] == "failed"
    assert runs[0]["error_class"] == BAD_ANNOTATION
    for needle in needles:
        assert needle in runs[0]["error_message"], runs[0]["error_message"]
    return runs[0]["error_message"]


def test_a_matching_file_is_imported(tmp_path, video):
    lake, summary, _ = _run(tmp_path, video, _doc(720, 1280))
    assert summary.imported == {VID: ["manual"]} and summary.failed == {}
    assert lake.read_table("masklets", schema=MASKLETS).num_rows == 2
    assert _label_runs(lake) == []
    assert summary.warnings == []


def test_masks_of_another_frame_size_are_refused(tmp_path, video):
    """10x10 masks (header and RLEs agree with each other) beside a 1280x720 video."""
    lake, summary, _ = _run(tmp_path, video, _doc(10, 10))
    _assert_refused(lake, summary, "10x10", "720x1280")


def test_rle_size_other_than_the_video_is_refused(tmp_path, video):
    doc = _doc(720, 1280)
    doc["masklet"][3][1] = rle.encode(np.zeros((10, 10), np.uint8))
    lake, summary, _ = _run(tmp_path, video, doc)
    _assert_refused(lake, summary, "masklet[3][1]", "[10, 10]")


def test_more_annotated_frames_than_the_video_has_is_refused(tmp_path, video):
    """48 frames at 24 fps hold 12 annotated frames at 6 fps; 40 would run far past the end."""
    lake, summary, _ = _run(tmp_path, video, _doc(720, 1280, n_obj=1, n_frames=40))
    _assert_refused(lake, summary, "40 annotated frames", "48 frames")


def test_another_video_id_is_a_warning_and_never_reaches_the_export(tmp_path, video):
    lake, summary, log = _run(tmp_path, video, _doc(720, 1280, video_id="../../etc/passwd"))
    assert summary.imported == {VID: ["manual"]} and summary.failed == {}
    assert len(summary.warnings) == 1
    assert "'../../etc/passwd'" in summary.warnings[0] and VID in summary.warnings[0]
    assert any("../../etc/passwd" in m for m in log)
    header = lake.read_table("sav_annotations", schema=SAV_ANNOTATIONS).to_pylist()[0]
    assert header["video_id"] == VID
    docs = build_sav_docs(lake)
    assert list(docs) == [(VID, "manual")]
    assert docs[(VID, "manual")]["video_id"] == VID            # the pipeline's id, not the file's
    assert "passwd" not in json.dumps(docs[(VID, "manual")])


def test_a_15_mb_file_is_refused_quickly(tmp_path, video):
    """A generated ~15 MB file (600 valid masklets of striped masks on 12 frames): refused on its
    masklet count before any RLE is parsed, not imported over minutes."""
    m = np.zeros((720, 1280), np.uint8)
    m[::2, :3] = 1                                             # ~1 000 runs: a ~2 KB RLE string
    striped = rle.encode(m)
    n = 600
    doc = _doc(720, 1280, n_obj=1)
    doc.update({"masklet": [[striped] * n for _ in range(12)], "masklet_id": list(range(n)), "masklet_num": n})
    for key in ("masklet_size_rel", "masklet_size_abs", "masklet_size_bucket", "masklet_visibility_changes",
                "masklet_first_appeared_frame", "masklet_frame_count", "masklet_edited_frame_count",
                "masklet_type", "masklet_stability_score"):
        doc[key] = doc[key] * n
    assert len(json.dumps(doc)) > 14e6
    t0 = time.monotonic()
    lake, summary, _ = _run(tmp_path, video, doc)
    assert time.monotonic() - t0 < 10
    msg = _assert_refused(lake, summary, "600 masklets")
    assert f"at most {LabelerConfig().import_max_masklets}" in msg and "import_max_masklets" in msg


def test_bounds_are_configurable(tmp_path, video):
    doc = _doc(720, 1280, n_obj=3)
    lake, summary, _ = _run(tmp_path, video, doc, LabelerConfig(import_max_masklets=2))
    _assert_refused(lake, summary, "3 masklets", "import_max_masklets")
    (tmp_path / "f").mkdir()
    lake, summary, _ = _run(tmp_path / "f", video, doc, LabelerConfig(import_max_frames=11))
    _assert_refused(lake, summary, "12 annotated frames", "import_max_frames")


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", "[" * 100000 + "]" * 100000, '{"video_id": 3}'])
def test_unreadable_documents_are_bad_annotations(tmp_path, video, text):
    ann = tmp_path / f"{VID}_manual.json"
    ann.write_text(text)
    lake = Lake(tmp_path / "lake")
    summary = label_batch(lake, "b1", [video], {VID: {"manual": str(ann)}}, lambda: None, LabelerConfig(),
                          run_sam2=False, log=lambda m: None)
    _assert_refused(lake, summary)


def test_a_missing_file_is_a_recorded_failure(tmp_path, video):
    lake = Lake(tmp_path / "lake")
    summary = label_batch(lake, "b1", [video], {VID: {"manual": str(tmp_path / "gone_manual.json")}},
                          lambda: None, LabelerConfig(), run_sam2=False, log=lambda m: None)
    _assert_refused(lake, summary, "gone_manual.json")


def test_a_fixed_file_replaces_its_failure_row(tmp_path, video):
    lake, summary, _ = _run(tmp_path, video, _doc(10, 10))
    assert [r["error_class"] for r in _label_runs(lake)] == [BAD_ANNOTATION]
    lake, summary, _ = _run(tmp_path, video, _doc(720, 1280))       # same lake, the file fixed
    assert summary.imported == {VID: ["manual"]}
    assert _label_runs(lake) == []
    assert lake.read_table("masklets", schema=MASKLETS).num_rows == 2


def test_a_fixed_file_replaces_its_failure_row_after_the_batch_was_consolidated(tmp_path, video):
    from sav_assets.lib.store.consolidation import consolidate_batch

    lake, summary, _ = _run(tmp_path, video, _doc(10, 10))
    assert consolidate_batch(lake, "label_runs", "b1", min_parts=1, log=lambda m: None).consolidated
    assert [r["error_class"] for r in _label_runs(lake)] == [BAD_ANNOTATION]      # now inside the merged part
    lake, summary, _ = _run(tmp_path, video, _doc(720, 1280))                    # the file fixed
    assert summary.imported == {VID: ["manual"]}
    consolidate_batch(lake, "label_runs", "b1", min_parts=1, log=lambda m: None)  # what the masklets step does
    assert _label_runs(lake) == []
    assert lake.read_table("masklets", schema=MASKLETS).num_rows == 2


def test_warnings_reach_the_asset_metadata(tmp_path, video):
    from sav_assets.defs.label import _summary_metadata

    _, summary, _ = _run(tmp_path, video, _doc(720, 1280, video_id="other/sav_1"))
    md = _summary_metadata(summary)
    assert "'other/sav_1'" in md["annotation_warnings"].value and VID in md["annotation_warnings"].value
    (tmp_path / "ok").mkdir()
    _, clean, _ = _run(tmp_path / "ok", video, _doc(720, 1280))
    assert "annotation_warnings" not in _summary_metadata(clean)

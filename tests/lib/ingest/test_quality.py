"""Quality metrics, verdicts, near-duplicates and licences on real and generated videos."""

from __future__ import annotations

import os

import numpy as np
import pytest

from sav_assets.lib.ingest.demo import _Writer
from sav_assets.lib.ingest.near_duplicates import hamming, is_near_duplicate
from sav_assets.lib.ingest.quality import (
    REASONS,
    QualityThresholds,
    anchor_indices,
    assess_batch,
    phash,
    reason_counts,
    sample_indices,
)
from sav_assets.lib.store import tables
from sav_assets.lib.video.probe import probe_file

QUALITY_COLUMNS = {f.name for f in tables.VIDEO_QUALITY} - {"batch_id", "evaluated_at"}
# small generated videos: relax only the header checks, keep every frame-metric default
SMALL = dict(min_short_side=100, min_duration_s=1.0)
# the stricter HD profile documented in the README (the default accepts SA-V's 480 px videos)
HD = dict(min_short_side=720)


_PROBED: dict = {}


def video_row(video_id: str, path) -> dict:
    key = (str(path), os.stat(path).st_mtime_ns)
    if key not in _PROBED:
        r = probe_file(str(path))
        assert r.status == "ok", r
        _PROBED[key] = r.as_row()
    return {"video_id": video_id, **_PROBED[key]}


def assess(items: dict, sidecars=None, prior=None, **thresholds) -> dict:
    """items: video_id -> path. Returns video_id -> quality row."""
    videos = [video_row(vid, p) for vid, p in items.items()]
    rows = assess_batch(videos, {vid: str(p) for vid, p in items.items()}, sidecars or {}, prior or [],
                        QualityThresholds(**thresholds))
    for row in rows:
        assert set(row) == QUALITY_COLUMNS
        assert row["passed"] == (row["reasons"] == [])
        assert all(r in REASONS for r in row["reasons"])
    tables.to_table(rows, tables.VIDEO_QUALITY)  # the rows fit the Arrow contract
    return {r["video_id"]: r for r in rows}


def test_sample_indices_anchors_and_triplets():
    assert anchor_indices(100, 4) == [0, 33, 66, 99]
    assert anchor_indices(100, 4, step=2) == [0, 32, 63, 95]  # shifted left so that a+2*step fits
    assert anchor_indices(0, 4) == [] and anchor_indices(3, 8, step=2) == [0]
    assert sample_indices(100, 4, fps=30, triplets=True) == [0, 2, 4, 32, 34, 36, 63, 65, 67, 95, 97, 99]
    assert sample_indices(100, 4) == anchor_indices(100, 4)


def test_phash_and_hamming():
    rng = np.random.default_rng(0)
    img = (rng.random((90, 160, 3)) * 255).astype(np.uint8)
    img = np.repeat(np.repeat(img[::10, ::10], 10, 0), 10, 1)[:90, :160]
    h = phash(img)
    assert len(h) == 16 and int(h, 16) >= 0
    assert hamming(h, h) == 0
    assert hamming(h, phash(np.clip(img.astype(int) + 12, 0, 255).astype(np.uint8))) <= 4  # brighter
    assert hamming(h, phash(img[::2, ::2])) <= 6  # resized
    other = np.ascontiguousarray(img[::-1, ::-1])
    assert hamming(h, phash(other)) > 10
    assert hamming("ffffffffffffffff", "0000000000000000") == 64


def test_real_videos(shared_data):
    v = shared_data / "videos"
    items = {"dog": v / "01_dog.mp4", "blocks": v / "03_blocks.mp4", "bedroom": v / "bedroom.mp4"}
    assert all(r["passed"] for r in assess(items).values())   # the defaults accept 960x540
    rows = assess(items, **HD)
    assert rows["dog"]["passed"] and rows["blocks"]["passed"], rows
    assert rows["bedroom"]["reasons"] == ["low_resolution"]  # 960x540
    assert rows["bedroom"]["short_side"] == 540 and rows["dog"]["short_side"] == 720
    t = QualityThresholds()
    for r in rows.values():
        assert r["sampled_frames"] >= t.sample_frames
        assert len(r["phash"]) == t.sample_frames
        assert r["sharpness"] > 3 * t.min_sharpness
        assert t.min_brightness < r["brightness"] < t.max_brightness
        assert r["clipped_fraction"] < 0.1  # bedroom has a bright window: ~5 %
        assert r["motion"] > 2 * t.min_motion
        assert r["camera_shake"] < t.max_camera_shake
        assert r["duplicate_of"] is None
        assert r["licence"] is None and r["source_group"] is None  # no sidecar: unknown is allowed
    assert rows["dog"]["video_duration"] == pytest.approx(289 / (30000 / 1001))
    assert reason_counts(rows.values()) == {"low_resolution": 1}


def test_bad_looking_videos_fail_for_the_right_reason(make_video, tmp_path):
    items = {
        "a_good": make_video(tmp_path / "good.mp4", seed=11),
        "b_blurred": make_video(tmp_path / "blur.mp4", seed=12, blur=3.0),
        "c_static": make_video(tmp_path / "static.mp4", seed=13, static=True),
        "d_dark": make_video(tmp_path / "dark.mp4", seed=14, brightness=0.1),
        "e_shaky": make_video(tmp_path / "shaky.mp4", seed=15, shake=0.04),
        "f_bright": make_video(tmp_path / "bright.mp4", seed=16, brightness=3.0),
    }
    rows = assess(items, **SMALL)
    assert rows["a_good"]["reasons"] == [], rows["a_good"]
    assert "blurry" in rows["b_blurred"]["reasons"]
    assert rows["c_static"]["reasons"] == ["static"]
    assert "too_dark" in rows["d_dark"]["reasons"]
    assert rows["e_shaky"]["reasons"] == ["shaky"]
    assert {"too_bright", "clipped"} <= set(rows["f_bright"]["reasons"]), rows["f_bright"]
    # the defaults reject what the header says, too: 320x240 and 2 s
    header = assess({"a_good": items["a_good"]})["a_good"]
    assert header["reasons"] == ["low_resolution", "too_short"]
    fps = assess({"slow": make_video(tmp_path / "slow.mp4", seconds=2, fps=8, seed=17)}, **SMALL)["slow"]
    assert fps["reasons"] == ["fps_out_of_range"]


def _reencode(src, dst, scale: float, crf: int) -> None:
    import av
    from PIL import Image

    writer = None
    with av.open(str(src)) as c:
        vs = c.streams.video[0]
        for frame in c.decode(vs):
            a = frame.to_ndarray(format="rgb24")
            h, w = a.shape[:2]
            nw, nh = int(w * scale) // 2 * 2, int(h * scale) // 2 * 2
            a = np.asarray(Image.fromarray(a).resize((nw, nh), Image.BILINEAR))
            if writer is None:
                writer = _Writer(dst, float(vs.average_rate), nw, nh, crf=crf)
            writer.write(a)
    writer.close()


def test_near_duplicates(make_video, tmp_path):
    orig = make_video(tmp_path / "orig.mp4", seed=21)
    copy = tmp_path / "copy.mp4"
    _reencode(orig, copy, scale=0.75, crf=34)  # resized and re-encoded
    other = make_video(tmp_path / "other.mp4", seed=22)
    rows = assess({"v2_copy": copy, "v1_orig": orig, "v3_other": other}, **SMALL)
    assert rows["v1_orig"]["duplicate_of"] is None and rows["v1_orig"]["passed"]
    assert rows["v2_copy"]["duplicate_of"] == "v1_orig"
    assert rows["v2_copy"]["reasons"] == ["near_duplicate"]
    assert rows["v3_other"]["duplicate_of"] is None and rows["v3_other"]["passed"]
    # against earlier batches: of two kept matches the earlier batch wins (same size and length), then
    # the smaller id; a video never matches itself (a re-run sees its own earlier row)
    def old(vid, batch):
        return {**rows["v1_orig"], "video_id": vid, "batch_id": batch}
    prior = [old("z_old", "20250101-a"), old("y_old", "20250102-b"), old("x_old", "20250102-b"),
             {**rows["v3_other"], "batch_id": "20250101-a"}]
    again = assess({"v2_copy": copy, "v3_other": other}, prior=prior, **SMALL)
    assert again["v2_copy"]["duplicate_of"] == "z_old"
    assert again["v3_other"]["duplicate_of"] is None and again["v3_other"]["passed"]
    again = assess({"v2_copy": copy}, prior=prior[1:], **SMALL)
    assert again["v2_copy"]["duplicate_of"] == "x_old"


def test_licences_groups_and_environment(make_video, tmp_path):
    p = make_video(tmp_path / "v.mp4", seed=31)
    items = {k: p for k in ("l1", "l2", "l3", "l4")}
    sidecars = {
        "l1": {"license": "CC-BY-4.0", "group": "g1", "video_environment": "Outdoor"},
        "l2": {"licence": "cc-by-nc-4.0", "source_group": "g2", "environment": "Indoor"},
        "l3": None,
        "l4": {"licence": "MIT", "source_group": 7},
    }
    rows = assess(items, sidecars, dup_max_hamming=-1, **SMALL)  # same file four times: no dup check
    assert rows["l1"]["passed"] and rows["l1"]["licence"] == "cc-by-4.0"
    assert (rows["l1"]["source_group"], rows["l1"]["video_environment"]) == ("g1", "Outdoor")
    assert rows["l2"]["reasons"] == ["licence_not_allowed"]
    assert (rows["l2"]["source_group"], rows["l2"]["video_environment"]) == ("g2", "Indoor")
    assert rows["l3"]["passed"] and rows["l3"]["licence"] is None
    assert rows["l4"]["passed"] and rows["l4"]["source_group"] == "7"
    strict = assess({"l3": p}, {"l3": None}, unknown_licence_ok=False, **SMALL)
    assert strict["l3"]["reasons"] == ["licence_unknown"]


def test_decode_failure_while_sampling_is_a_reason(make_video, tmp_path, shared_data):
    good = make_video(tmp_path / "good.mp4", seed=41)
    row = video_row("broken", good)
    broken = tmp_path / "broken.mp4"  # probed fine earlier, damaged before sampling
    broken.write_bytes(good.read_bytes()[:2000])
    skipped = {"video_id": "bad", "status": "quarantined", "error_class": "empty_file"}
    rows = assess_batch([row, skipped, {**video_row("gone", good), "video_id": "gone"}],
                        {"broken": str(broken)}, {}, {}, QualityThresholds(**SMALL))
    assert [r["video_id"] for r in rows] == ["broken", "gone"]  # quarantined rows are not assessed
    for r in rows:
        assert r["passed"] is False and r["reasons"] == ["decode_failed"]
        assert r["sampled_frames"] == 0 and r["phash"] == [] and r["sharpness"] is None
    assert reason_counts(rows) == {"decode_failed": 2}


# ---------------------------------------------------------------- near-duplicate groups keep their best member
# A group is every video linked by a near-duplicate match. Its canonical is the best member among
# those that pass every other check (then higher resolution, longer, earlier batch, smaller id);
# the others are rejected as near_duplicate with duplicate_of pointing at a kept video.


@pytest.fixture(scope="module")
def hd_pair(tmp_path_factory):
    """The same content at 1280x720 (original) and 852x480 (a re-encoded copy)."""
    from sav_assets.lib.ingest.demo import write_synthetic_video

    d = tmp_path_factory.mktemp("hd_pair")
    orig = d / "orig720.mp4"
    write_synthetic_video(orig, 2.0, 24, 1280, 720, 51)
    copy = d / "copy480.mp4"
    _reencode(orig, copy, scale=2 / 3, crf=30)
    return orig, copy


def _prior(rows: dict, batch_id: str) -> list[dict]:
    return [{**r, "batch_id": batch_id} for r in rows.values()]


def test_low_resolution_copy_sorting_first_does_not_reject_the_original(hd_pair):
    orig, copy = hd_pair
    rows = assess({"a_copy480": copy, "b_orig720": orig}, min_duration_s=1.0, **HD)
    assert rows["a_copy480"]["short_side"] == 480 and rows["b_orig720"]["short_side"] == 720
    assert rows["b_orig720"]["passed"], rows["b_orig720"]
    assert rows["b_orig720"]["duplicate_of"] is None
    assert rows["a_copy480"]["reasons"] == ["low_resolution", "near_duplicate"]
    assert rows["a_copy480"]["duplicate_of"] == "b_orig720"


def test_canonical_is_the_higher_resolution_member(hd_pair):
    orig, copy = hd_pair
    rows = assess({"a_copy480": copy, "b_orig720": orig}, **SMALL)   # both pass every other check
    assert rows["b_orig720"]["passed"] and rows["b_orig720"]["duplicate_of"] is None
    assert rows["a_copy480"]["reasons"] == ["near_duplicate"]
    assert rows["a_copy480"]["duplicate_of"] == "b_orig720"


def test_a_group_where_every_member_fails_keeps_no_one_and_blames_no_one(hd_pair):
    orig, copy = hd_pair
    rows = assess({"a_copy480": copy, "b_orig720": orig}, min_duration_s=30.0, **HD)   # both too_short
    for r in rows.values():
        assert r["reasons"] == (["low_resolution", "too_short"] if r["video_id"] == "a_copy480"
                                else ["too_short"]), r
        assert r["duplicate_of"] is None   # duplicate_of only ever points at a kept video


def test_across_batches_a_later_better_copy_of_a_rejected_video_is_kept(hd_pair):
    orig, copy = hd_pair
    first = assess({"a_copy480": copy}, min_duration_s=1.0, **HD)
    assert first["a_copy480"]["reasons"] == ["low_resolution"]
    later = assess({"b_orig720": orig}, prior=_prior(first, "20250101-aaaa"), min_duration_s=1.0, **HD)
    assert later["b_orig720"]["passed"] and later["b_orig720"]["duplicate_of"] is None


def test_across_batches_a_kept_video_stays_canonical(hd_pair):
    orig, copy = hd_pair
    first = assess({"b_orig720": orig}, **SMALL)
    assert first["b_orig720"]["passed"]
    later = assess({"a_copy480": copy}, prior=_prior(first, "20250101-aaaa"), **SMALL)
    assert later["a_copy480"]["reasons"] == ["near_duplicate"]
    assert later["a_copy480"]["duplicate_of"] == "b_orig720"
    # a copy that only matches an earlier *rejected* duplicate points at that one's kept canonical
    chain = [{"video_id": "k_kept", "batch_id": "20250101-aaaa", "passed": True, "reasons": [],
              "duplicate_of": None, "short_side": 720, "video_duration": 2.0, "phash": ["0" * 16] * 8},
             {"video_id": "p_dup", "batch_id": "20250102-bbbb", "passed": False, "reasons": ["near_duplicate"],
              "duplicate_of": "k_kept", "short_side": 720, "video_duration": 2.0,
              "phash": first["b_orig720"]["phash"]}]
    again = assess({"a_copy480": copy}, prior=chain, **SMALL)
    assert again["a_copy480"]["reasons"] == ["near_duplicate"]
    assert again["a_copy480"]["duplicate_of"] == "k_kept"


def test_real_videos_never_match_each_other(shared_data):
    """Near-duplicate precision on the real videos: no pair is within the threshold, either way."""
    v = shared_data / "videos"
    names = sorted(p.name for p in v.glob("*.mp4"))
    assert len(names) >= 3
    items = {n.rsplit(".", 1)[0]: v / n for n in names}
    rows = assess(items, min_short_side=100)
    t = QualityThresholds()
    for a in rows.values():
        assert a["duplicate_of"] is None and "near_duplicate" not in a["reasons"], a
        for b in rows.values():
            if a is not b:
                assert not is_near_duplicate(a["phash"], b["phash"], t.dup_max_hamming), (a["video_id"], b["video_id"])
    # and as earlier batches: every real video against the others ingested before it
    for vid, path in items.items():
        prior = [{**r, "batch_id": "20250101-prior"} for k, r in rows.items() if k != vid]
        again = assess({vid: path}, prior=prior, min_short_side=100)[vid]
        assert again["duplicate_of"] is None and "near_duplicate" not in again["reasons"]


def test_sav_sample_video_passes_the_default_quality_and_its_annotations_import(make_video, shared_data, tmp_path):
    """A stand-in of SA-V's own sample video, built from its JSON header (480x848, 24 fps, 483 frames):
    the default thresholds must accept it (SA-V's videos are as small as 480 px on the short side), and its
    manual masklets must then import, as the masklets asset does for the videos that passed quality."""
    import json

    from sav_assets.lib.label.batch import label_batch
    from sav_assets.lib.label.config import LabelerConfig
    from sav_assets.lib.store.lake import Lake
    from sav_assets.lib.store.tables import MASKLETS

    ann = shared_data / "sav_example" / "sav_000001_manual.json"
    header = json.loads(ann.read_text())
    w, h, n = int(header["video_width"]), int(header["video_height"]), int(header["video_frame_count"])
    fps = n / header["video_duration"]
    assert (w, h, fps) == (480, 848, 24.0)
    path = make_video(tmp_path / "sav_000001.mp4", seconds=n / fps, fps=fps, width=w, height=h, seed=11)
    row = assess({"sav_000001": path})["sav_000001"]                 # every default
    assert (row["short_side"], row["reasons"], row["passed"]) == (480, [], True)
    # the stricter 720 px profile (README: "Video quality") still rejects it, for its resolution only
    assert assess({"sav_000001": path}, **HD)["sav_000001"]["reasons"] == ["low_resolution"]

    video = {**video_row("sav_000001", path), "source_uri": str(path), "content_sha256": "0" * 64}
    lake = Lake(tmp_path / "lake")
    summary = label_batch(lake, "b1", [video] if row["passed"] else [], {"sav_000001": {"manual": str(ann)}},
                          lambda: None, LabelerConfig(), run_sam2=False, log=lambda s: None)
    assert summary.imported == {"sav_000001": ["manual"]} and summary.failed == {}
    got = lake.read_table("masklets", schema=MASKLETS).to_pylist()
    assert sorted(r["masklet_id"] for r in got) == header["masklet_id"]
    assert {r["masklet_type"] for r in got} == {"manual"}

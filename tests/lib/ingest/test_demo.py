"""The demo corpus: SA-V schema key by key, exact masks, sidecars, bad files, and it ingests cleanly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sav_assets.lib.ingest.demo import Scene, write_demo_corpus
from sav_assets.lib.ingest.quality import QualityThresholds, assess_batch
from sav_assets.lib.sav import fields as masklet_fields
from sav_assets.lib.sav import rle
from sav_assets.lib.video.probe import is_video_name, probe_file

FPS = 24


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    # defaults except two videos, so that the quality defaults (720p, >= 5 s) apply as in `make demo`
    return write_demo_corpus(out, n_videos=2)


@pytest.fixture(scope="module")
def example(shared_data):
    return json.loads((shared_data / "sav_example" / "sav_000001_manual.json").read_text())


def test_files_and_summary(corpus):
    out = Path(corpus["out_dir"])
    assert corpus["video_ids"] == ["sav_900000", "sav_900001"]
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(["sav_900000.mp4", "sav_900000.json", "sav_900000_manual.json",
                            "sav_900001.mp4", "sav_900001.json", "sav_900001_manual.json",
                            "broken_empty.mp4", "not_really.mp4", "notes.txt"])
    assert (out / "broken_empty.mp4").stat().st_size == 0
    assert b"<html" in (out / "not_really.mp4").read_bytes().lower()
    assert not is_video_name("notes.txt")
    side = json.loads((out / "sav_900001.json").read_text())
    assert side["licence"] == "cc-by-4.0" and side["environment"] in ("Indoor", "Outdoor") and side["source_group"]


def test_schema_matches_sav_key_by_key(corpus, example):
    for path in corpus["annotations"]:
        ann = json.loads(Path(path).read_text())
        assert list(ann) == list(example)  # same keys, same order
        for key, ref in example.items():
            got = ann[key]
            assert type(got) is type(ref), key
            if isinstance(ref, list) and key != "masklet":
                assert len(got) == ann["masklet_num"], key
                assert {type(x) for x in got} == {type(x) for x in ref}, key
        frame0 = ann["masklet"][0]
        assert isinstance(frame0, list) and list(frame0[0]) == list(example["masklet"][0][0])  # size, counts
        assert isinstance(frame0[0]["counts"], str)
        assert ann["masklet_type"] == ["manual"] * ann["masklet_num"]
        assert ann["masklet_stability_score"] == [None] * ann["masklet_num"]


def test_rles_and_derived_fields(corpus):
    for path in corpus["annotations"]:
        ann = json.loads(Path(path).read_text())
        h, w, n = int(ann["video_height"]), int(ann["video_width"]), int(ann["video_frame_count"])
        assert (h, w, n) == (720, 1280, 5 * FPS)
        assert ann["video_duration"] == 5.0 and ann["video_resolution"] == float(h * w)
        grid = masklet_fields.annotation_grid(n, FPS)
        assert grid == list(range(0, n, 4)) and len(ann["masklet"]) == len(grid)
        masks = np.stack([np.stack([rle.decode(r) for r in fr]) for fr in ann["masklet"]])  # (t, obj, h, w)
        assert masks.shape == (len(grid), ann["masklet_num"], h, w)
        assert masks.sum(axis=1).max() <= 1  # visible masks never overlap
        for j in range(ann["masklet_num"]):
            areas = [rle.area(fr[j]) for fr in ann["masklet"]]
            d = masklet_fields.derive(areas, h, w)
            assert ann["masklet_size_abs"][j] == pytest.approx(d["masklet_size_abs"], abs=1e-9)
            assert ann["masklet_size_rel"][j] == pytest.approx(d["masklet_size_rel"], abs=1e-9)
            for k in ("masklet_size_bucket", "masklet_visibility_changes", "masklet_frame_count"):
                assert ann[k][j] == d[k], k
            assert ann["masklet_first_appeared_frame"][j] == float(d["masklet_first_appeared_frame"])
            assert ann["masklet_edited_frame_count"][j] == sum(a > 0 for a in areas)
        # the diamond enters after the first second; the box is fully hidden behind the bar for a while
        assert ann["masklet_first_appeared_frame"][2] * 4 > FPS
        box = [rle.area(fr[1]) for fr in ann["masklet"]]
        first = next(i for i, a in enumerate(box) if a)
        assert any(a == 0 for a in box[first:]) and ann["masklet_visibility_changes"][1] >= 2


def test_masks_match_the_pixels(corpus):
    """Inside the bar's mask the decoded video is magenta; the ball's mask holds orange pixels."""
    import decord
    from scipy.ndimage import binary_erosion

    ann = json.loads(Path(corpus["annotations"][0]).read_text())
    vr = decord.VideoReader(corpus["videos"][0])
    for fi in (0, 60, 116):
        frame = vr[fi].asnumpy().astype(int)
        r, g, b = frame[..., 0], frame[..., 1], frame[..., 2]
        bar = binary_erosion(rle.decode(ann["masklet"][fi // 4][3]).astype(bool), iterations=3)
        assert ((r > g + 50) & (b > g + 30))[bar].mean() > 0.95
        ball = binary_erosion(rle.decode(ann["masklet"][fi // 4][0]).astype(bool), iterations=3)
        if ball.sum() > 100:
            assert ((r > b + 60) & (r > 100))[ball].mean() > 0.9


def test_scene_render_is_deterministic():
    a = Scene(160, 120, 12, 24, seed=5).render(7, want_masks=True)
    b = Scene(160, 120, 12, 24, seed=5).render(7, want_masks=True)
    assert np.array_equal(a[0], b[0]) and all(np.array_equal(x, y) for x, y in zip(a[1], b[1]))


def test_corpus_ingests_cleanly(corpus):
    out = Path(corpus["out_dir"])
    probes = {p.name: probe_file(str(p)) for p in sorted(out.iterdir()) if is_video_name(p.name)}
    assert probes["broken_empty.mp4"].error_class == "empty_file"
    assert probes["not_really.mp4"].error_class == "not_a_container"
    videos, paths, sidecars = [], {}, {}
    for vid, path, side in zip(corpus["video_ids"], corpus["videos"], corpus["sidecars"]):
        r = probe_file(path)
        assert (r.status, r.video_frame_count, r.video_fps, r.video_width, r.video_height) == \
            ("ok", 5 * FPS, float(FPS), 1280, 720)
        videos.append({"video_id": vid, **r.as_row()})
        paths[vid] = path
        sidecars[vid] = json.loads(Path(side).read_text())
    rows = assess_batch(videos, paths, sidecars, {}, QualityThresholds())
    assert [r["reasons"] for r in rows] == [[], []], rows  # passes every default, no near-duplicate
    assert rows[0]["licence"] == "cc-by-4.0" and rows[0]["video_environment"] == "Indoor"


def test_lib_modules_do_not_import_dagster():
    code = ("import sys; import sav_assets.lib.video.probe, sav_assets.lib.ingest.quality, sav_assets.lib.ingest.demo, "
            "sav_assets.lib.video.sandbox; bad = [m for m in sys.modules if m.split('.')[0] in "
            "('dagster', 'torch', 'decord', 'av')]; print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr

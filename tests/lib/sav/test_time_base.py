"""One time base (issue 9): any frame rate onto SA-V's 24 fps timeline by timestamp, masks on every 4th."""

from __future__ import annotations

import pytest

from sav_assets.lib.sav.fields import annotation_grid, annotation_times, sav_timeline


def test_24fps_is_the_identity_and_the_grid_every_4th_frame():
    assert sav_timeline(10, 24) == list(range(10))
    assert annotation_grid(100, 24) == list(range(0, 100, 4))
    assert annotation_grid(101, 24.0) == list(range(0, 101, 4))


@pytest.mark.parametrize("fps", [25.0, 29.97, 30.0, 30000 / 1001, 50.0, 12.0])
def test_timeline_is_the_nearest_frame_to_each_24fps_instant(fps):
    n = int(fps * 7)
    tl = sav_timeline(n, fps)
    assert len(tl) == pytest.approx(n * 24 / fps, abs=1)
    for j, i in enumerate(tl):
        t = j / 24
        assert abs(i / fps - t) <= min(abs(k / fps - t) for k in range(n)) + 1e-9
    assert annotation_grid(n, fps) == tl[::4]


def test_30fps_skips_every_5th_frame_and_annotates_every_5th():
    assert sav_timeline(10, 30) == [0, 1, 2, 4, 5, 6, 7, 9]
    assert annotation_grid(60, 30) == [0, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55]
    assert annotation_times(60, 30)[:3] == pytest.approx([0.0, 1 / 6, 1 / 3])


def test_variable_frame_rate_follows_the_presentation_timestamps():
    # 1 s at 30 fps, then 1 s at 10 fps, starting at pts 5.0 s (the first frame is time 0)
    pts = [5.0 + i / 30 for i in range(30)] + [6.0 + i / 10 for i in range(10)]
    tl = sav_timeline(len(pts), 30.0, pts)
    assert len(tl) == 48
    for j, i in enumerate(tl):
        t = 5.0 + j / 24
        assert abs(pts[i] - t) == pytest.approx(min(abs(p - t) for p in pts))
    # the second second: 10 fps, each source frame held for ~2.4 timeline frames
    assert tl[24:] == [30, 30, 31, 31, 32, 32, 32, 33, 33, 34, 34, 35, 35, 35, 36, 36, 37, 37, 37, 38,
                       38, 39, 39, 39]   # ties (0.25 s between 6.2 and 6.3) go to the earlier frame
    assert annotation_times(len(pts), 30.0, pts_s=pts)[6:8] == pytest.approx([1.0, 1.2])


def test_empty_and_single_frame():
    assert sav_timeline(0, 24) == [] and annotation_grid(0, 30) == []
    assert sav_timeline(1, 30) == [0] and annotation_grid(1, 30) == [0]


@pytest.mark.parametrize("fps,n_ann", [(30, 12), (30, 7), (25, 9), (24, 12)])
def test_imported_sav_file_is_read_on_the_timeline(tmp_path, make_video, fps, n_ann):
    """A SA-V file for a 25 / 30 fps video: annotated frame k is the source frame at k / 6 s (the
    labeling grid), whether the file covers the whole video or not; ``timestamp_s`` kept per row."""
    import json

    import numpy as np

    from sav_assets.lib.ingest.demo import sav_annotation
    from sav_assets.lib.label.batch import label_batch
    from sav_assets.lib.sav import rle
    from sav_assets.lib.store.lake import Lake
    from sav_assets.lib.store.tables import MASKLET_FRAMES
    from sav_assets.lib.video.probe import probe_file

    path = make_video(tmp_path / "v.mp4", seconds=2.0, fps=fps, width=64, height=48)
    video = {**probe_file(str(path)).as_row(), "video_id": "v", "source_uri": str(path), "content_sha256": "0" * 64}
    n = int(video["video_frame_count"])
    assert n == 2 * fps
    col = [[rle.encode(np.pad(np.ones((2, 2), np.uint8), ((k, 46 - k), (0, 62))))] for k in range(n_ann)]
    ann = tmp_path / "v_manual.json"
    ann.write_text(json.dumps(sav_annotation("v", col, n, 24.0, 64, 48)))
    lake = Lake(tmp_path / "lake")
    summary = label_batch(lake, "b1", [video], {"v": {"manual": str(ann)}}, lambda: None, None,
                          run_sam2=False, log=lambda m: None)
    assert summary.failed == {}
    rows = sorted(lake.read_table("masklet_frames", schema=MASKLET_FRAMES).to_pylist(), key=lambda r: r["ann_idx"])
    expect = [int(np.floor(k * fps / 6 + 0.5 - 1e-9)) for k in range(n_ann)]   # nearest frame to k / 6 s
    assert [r["frame_idx"] for r in rows] == expect
    assert [r["timestamp_s"] for r in rows] == pytest.approx([i / fps for i in expect], abs=1e-4)
    assert expect == annotation_grid(n, fps)[:n_ann]


def test_labeler_grid_follows_presentation_timestamps_of_a_vfr_video(tmp_path):
    """The labeler's grid (``_Job``) is read from the container's pts, not from the average rate:
    1 s at 30 fps then 2 s at 10 fps, average 13.3 fps."""
    import fractions
    from types import SimpleNamespace

    import av
    import numpy as np

    from sav_assets.lib.label.config import LabelerConfig
    from sav_assets.lib.label.labeler import _Job

    pts = [i / 30 for i in range(30)] + [1 + i / 10 for i in range(20)]
    path = tmp_path / "vfr.mp4"
    tb = fractions.Fraction(1, 90000)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt, s.time_base = 64, 48, "yuv420p", tb
        s.codec_context.time_base = tb
        for t in pts:
            f = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")
            f.pts, f.time_base = int(round(t * 90000)), tb
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    video = {"video_id": "vfr", "video_frame_count": 50, "video_fps": 50 / 3.0, "video_height": 48,
             "video_width": 64, "content_sha256": "0" * 64}
    loaded = SimpleNamespace(model_name="m", checkpoint_sha256=None, config_sha256=None, random_weights=True)
    job = _Job.create(loaded, str(path), video, LabelerConfig(isolate_decode=False), [], "auto")
    # k / 6 s: 30 fps for the first second (frames 0, 5, ... 25), then 10 fps (frame 30 + round(10 t'))
    expect = [0, 5, 10, 15, 20, 25] + [30 + int(np.floor(10 * k / 6 + 0.5 - 1e-9)) for k in range(12)]
    assert job.grid == expect
    assert job.times == pytest.approx([pts[i] for i in expect], abs=1e-4)
    assert job.grid != annotation_grid(50, 50 / 3.0)      # the average rate would put them elsewhere

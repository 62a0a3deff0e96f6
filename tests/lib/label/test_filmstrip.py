"""Filmstrips of labeled videos: frames spread evenly, masks coloured by masklet id (the same colour in
every image), a legend line per masklet with its QC verdict (read back from the PNG's text chunk), a
strip of its own for each failing masklet in the review folder, and a video that cannot be decoded
recorded, not raised."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from sav_assets.lib.label.filmstrip import (
    PENDING,
    pick_frames,
    preview_path,
    render_video_strip,
    review_path,
    write_filmstrips,
)
from sav_assets.lib.label.overlay import LABEL_W, LEGEND_ROW_H, color_for, png_text
from sav_assets.lib.sav import rle
from sav_assets.lib.store.lake import Lake

H, W = 240, 320
GRID = list(range(0, 48, 4))     # 12 annotated frames of a 2 s, 24 fps video


def _box(y, x, s=40):
    m = np.zeros((H, W), np.uint8)
    m[y:y + s, x:x + s] = 1
    return m


def _frames(video_id: str, spec: dict[tuple[str, int], tuple[int, int]], grid=GRID) -> list[dict]:
    """masklet_frames rows: each masklet a box at (y, x), visible on every frame of ``grid``."""
    rows = []
    for (t, mid), (y, x) in spec.items():
        for a, f in enumerate(grid):
            r = rle.encode(_box(y, x))
            rows.append({"video_id": video_id, "masklet_type": t, "masklet_id": mid, "ann_idx": a,
                         "frame_idx": f, "size": r["size"], "counts": r["counts"], "visible": True})
    return rows


def _qc(video_id, t, mid, reasons=()):
    return {"video_id": video_id, "masklet_type": t, "masklet_id": mid, "passed": not reasons,
            "reasons": list(reasons)}


def _legend(png: bytes) -> list[str]:
    return json.loads(png_text(png)["legend"])


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    from sav_assets.lib.ingest.demo import write_synthetic_video
    from sav_assets.lib.video.probe import probe_file

    path = tmp_path_factory.mktemp("fs") / "v.mp4"
    write_synthetic_video(path, 2.0, 24, W, H, 3)
    return {**probe_file(str(path)).as_row(), "video_id": "vid_a", "source_uri": str(path)}


def test_pick_frames_spreads_over_the_annotated_frames():
    assert pick_frames(GRID) == [0, 8, 12, 20, 24, 32, 36, 44]
    assert pick_frames([8, 0, 4, 4]) == [0, 4, 8]          # distinct, sorted, fewer when fewer exist
    assert pick_frames([]) == []


def test_colours_by_id_are_stable_across_images():
    """Masklet 7 is drawn in color_for(7) whatever else is in the image (on black: half the colour)."""
    thumbs = {f: np.zeros((H // 2, W // 2, 3), np.uint8) for f in GRID}
    shown = pick_frames(GRID)
    one = _frames("v", {("auto", 7): (100, 100)})
    two = _frames("v", {("auto", 3): (10, 10), ("auto", 7): (100, 100), ("manual", 7): (10, 200)})
    pixels = []
    for rows in (one, two):
        img = np.asarray(Image.open(io.BytesIO(render_video_strip("v", thumbs, shown, rows, {}))).convert("RGB"))
        y, x = LEGEND_ROW_H + 4 + 60, LABEL_W + 60                 # centre of the box in the first frame, row 'auto'
        if rows is two:
            y += H // 2                                            # row 0 is 'manual' there
        pixels.append(img[y, x].astype(int))
    expected = (color_for(7) * 0.5).astype(int)
    assert np.abs(pixels[0] - expected).max() <= 1 and np.abs(pixels[1] - expected).max() <= 1
    assert not np.array_equal(color_for(3), color_for(7))


def test_preview_legend_lists_every_masklet_and_failing_ones_get_a_review_strip(tmp_path, video):
    lake = Lake(tmp_path / "lake")
    frames = _frames("vid_a", {("manual", 0): (20, 20), ("manual", 1): (100, 150), ("auto", 0): (30, 30),
                               ("auto", 4): (150, 200)})
    res = write_filmstrips(lake, "b1", [video], frames)          # before QC: no verdicts yet
    assert res.failed == {} and res.previews == {"vid_a": preview_path("b1", "vid_a")}
    png = (tmp_path / "lake" / "exports" / "previews" / "b1" / "vid_a.png").read_bytes()
    assert _legend(png) == [f"manual #0: {PENDING}", f"manual #1: {PENDING}", f"auto #0: {PENDING}",
                            f"auto #4: {PENDING}"]
    img = Image.open(io.BytesIO(png))
    assert img.width == LABEL_W + 8 * 128 and res.pngs == [("vid_a", png)]

    stale = tmp_path / "lake" / "exports" / "review" / "b1" / "vid_a.auto.9.png"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    (stale.parent / "failing_masklets.jsonl").write_text("{}\n")
    qc = [_qc("vid_a", "manual", 0), _qc("vid_a", "manual", 1), _qc("vid_a", "auto", 0),
          _qc("vid_a", "auto", 4, ["too_small", "flicker"])]
    res = write_filmstrips(lake, "b1", [video], frames, qc)
    png = lake.get_bytes(preview_path("b1", "vid_a"))
    assert _legend(png) == ["manual #0: passed", "manual #1: passed", "auto #0: passed",
                            "auto #4: FAILED too_small,flicker"]
    assert res.review == [review_path("b1", "vid_a", "auto", 4)] == ["exports/review/b1/vid_a.auto.4.png"]
    strip = lake.get_bytes(res.review[0])
    assert _legend(strip) == ["auto #4: FAILED too_small,flicker"]
    assert png_text(strip)["title"] == "vid_a  auto #4: FAILED too_small,flicker"
    assert not stale.exists() and (stale.parent / "failing_masklets.jsonl").exists()   # only old strips go


def test_the_strip_shows_the_masks_on_the_decoded_frames(tmp_path, video):
    """The 320x240 frame becomes a 128x96 thumbnail: the 40 px box at (100, 160) is 16 px at (40, 64);
    its edge is drawn in the masklet's colour, its inside blends colour and frame, outside is the frame."""
    from sav_assets.lib.video.decode import read_frames

    lake = Lake(tmp_path / "lake")
    write_filmstrips(lake, "b1", [video], _frames("vid_a", {("auto", 2): (100, 160)}, grid=[0]))
    img = np.asarray(Image.open(io.BytesIO(lake.get_bytes(preview_path("b1", "vid_a")))).convert("RGB")).astype(int)
    top = LEGEND_ROW_H + 4
    thumb = img[top:top + 96, LABEL_W:LABEL_W + 128]
    assert thumb.shape == (96, 128, 3)
    ys, xs = np.nonzero((thumb == color_for(2).astype(int)).all(-1))                 # the box's edge
    assert len(ys) >= 16 and 38 <= ys.min() and ys.max() <= 57 and 62 <= xs.min() and xs.max() <= 81
    frame = read_frames(video["source_uri"], [0], size=(96, 128))[0].astype(int)
    assert np.abs(thumb[47, 71] - (frame[47, 71] * 0.5 + color_for(2) * 0.5)).max() <= 1
    assert np.array_equal(thumb[80, 20], frame[80, 20])                               # no mask there


def test_a_video_that_cannot_be_decoded_is_recorded_and_the_others_are_written(tmp_path, video):
    lake = Lake(tmp_path / "lake")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 1000)
    gone = {**video, "video_id": "vid_gone", "source_uri": str(tmp_path / "missing.mp4")}
    broken = {**video, "video_id": "vid_bad", "source_uri": str(bad)}
    frames = [*_frames("vid_a", {("auto", 1): (0, 0)}), *_frames("vid_bad", {("auto", 1): (0, 0)}),
              *_frames("vid_gone", {("auto", 1): (0, 0)})]
    res = write_filmstrips(lake, "b1", [gone, broken, video], frames)
    assert list(res.previews) == ["vid_a"] and lake.exists(preview_path("b1", "vid_a"))
    assert res.failed["vid_gone"].startswith("unreadable: cannot open")
    assert res.failed["vid_bad"].startswith("decode_error:"), res.failed
    assert not lake.exists(preview_path("b1", "vid_bad"))

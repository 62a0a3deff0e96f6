"""Acceptance (issue 9, 3a): SAM 2's training loader pairs every exported mask with its frame.

The check opens ``sav-assets export-sav --train``'s output the way SAM 2's trainer does, with the
real classes of the installed ``sam2`` 1.1.0 package (``training/dataset/vos_raw_dataset.py``
``JSONRawDataset`` with SA-V's ``ann_every: 4`` / ``frames_fps: 24``, its ``JSONSegmentLoader``
from ``vos_segment_loader.py`` and ``vos_sampler.py``'s ``RandomUniformSampler``). ``VOSDataset``
(``vos_dataset.py``) does not import here (it needs ``tensordict``), so :func:`_construct` mirrors
its ``construct`` / ``load_images``: each sampled ``VOSFrame`` is ``PIL.Image.open(image_path)`` and
``segment_loader.load(frame.frame_idx, obj_ids=...)``, i.e. JPEG ``k`` of ``JPEGImages_24fps`` with
mask ``k / 4``.

The video is synthetic (PyAV, the pts of every frame set explicitly): a bright square whose x
position is a linear function of the frame's presentation time, at 24, 25, 29.97 and 30 fps and
with a variable frame rate. A "perfect labeler" writes the mask of each annotated source frame where
the square really is (rows built by ``records.rows`` over the labeler's own grid); the check is that
in what the loader returns, every mask lies on the square of its JPEG, and every JPEG shows the
video at its 24 fps instant. Before the time base the export had no 24 fps frames (the mp4 was
copied and the trainer's frame extraction numbers source frames), so mask ``k`` met source frame
``4k``: at 29.97 / 30 fps up to several frames away.
"""

from __future__ import annotations

import fractions
import json
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from sav_assets.lib.dataset.shards import TRAIN_FRAMES, TRAIN_JSON, TRAIN_LIST, export_sav_train
from sav_assets.lib.label.records import FrameRecord, MaskletRecords, rows
from sav_assets.lib.sav import rle
from sav_assets.lib.sav.annotations import export_sav
from sav_assets.lib.sav.fields import annotation_grid, annotation_times, sav_timeline
from sav_assets.lib.store.lake import Lake
from sav_assets.lib.video.decode import presentation_times

pytest.importorskip("training.dataset.vos_raw_dataset")

H, W, SQ = 64, 320, 16
SPEED = 90.0                 # px per second: 3 px between frames at 30 fps, 3.75 at 24
SECONDS = 3.0


def _x(t: float) -> float:
    """Left edge of the square at time t (seconds from the first frame)."""
    return 8.0 + SPEED * t


def _write_video(path: Path, pts_s: list[float], rate) -> None:
    import av

    tb = fractions.Fraction(1, 90000)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=rate)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        s.time_base = tb
        s.codec_context.time_base = tb
        s.options = {"crf": "4", "g": "12"}
        for t in pts_s:
            img = np.full((H, W, 3), 16, np.uint8)
            x = int(round(_x(t - pts_s[0])))    # time from the first frame
            img[24:24 + SQ, x:x + SQ] = 235
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts, f.time_base = int(round(t * 90000)), tb
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def _square_mask(t: float) -> np.ndarray:
    m = np.zeros((H, W), np.uint8)
    x = int(round(_x(t)))
    m[24:24 + SQ, x:x + SQ] = 1
    return m


def _x_in_image(img: np.ndarray) -> float:
    """Left edge of the bright square found in an image (column profile centroid minus half a side)."""
    prof = img.astype(np.float64).mean(axis=0)
    prof = np.clip(prof - np.median(prof), 0, None)
    prof[prof < 0.3 * prof.max()] = 0
    return float((prof * np.arange(len(prof))).sum() / prof.sum()) - (SQ - 1) / 2


def _label_perfectly(video_path: Path, video: dict) -> tuple[list[dict], list[dict], list[float]]:
    """What the labeler records for a perfect model: its grid (by pts) and the square's mask there."""
    pts = presentation_times(str(video_path))
    n, fps = int(video["video_frame_count"]), float(video["video_fps"])
    grid = annotation_grid(n, fps, pts_s=pts)
    times = annotation_times(n, fps, pts_s=pts)
    recs = MaskletRecords(len(grid))
    recs.new(0, "auto", 0)
    for a, i in enumerate(grid):
        r = rle.encode(_square_mask(pts[i] - pts[0]))
        enc = (r, rle.area(r), rle.bbox(r))
        recs.rec[0][a] = FrameRecord.from_encoding(enc, 0.9, 0.95)
    loaded = SimpleNamespace(model_name="perfect", checkpoint_sha256=None, config_sha256=None,
                             random_weights=False)
    masklets, frames = rows(video["video_id"], grid, recs, (H, W), loaded, "key", {}, times=times)
    return masklets, frames, [p - pts[0] for p in pts]


def _construct(video, segment_loader, sampled) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """Mirror of sam2 1.1.0 VOSDataset.construct + load_images: (frame_idx, RGB image, mask)."""
    from PIL import Image

    out = []
    for frame in sampled.frames:
        with open(frame.image_path, "rb") as fh:
            img = np.asarray(Image.open(fh).convert("RGB"))
        segments = segment_loader.load(frame.frame_idx, obj_ids=sampled.object_ids)
        out.append((frame.frame_idx, img, segments[sampled.object_ids[0]].numpy()))
    return out


CASES = {
    "24fps": (24, [i / 24 for i in range(int(24 * SECONDS))]),
    "25fps": (25, [i / 25 for i in range(int(25 * SECONDS))]),
    "29.97fps": (fractions.Fraction(30000, 1001), [i * 1001 / 30000 for i in range(int(29.97 * SECONDS))]),
    "30fps": (30, [i / 30 for i in range(int(30 * SECONDS))]),
    # 1 s at 30 fps, 1 s at 15 fps, 1 s at 25 fps, starting at pts 0.5 s
    "vfr": (30, [0.5 + i / 30 for i in range(30)] + [1.5 + i / 15 for i in range(15)]
            + [2.5 + i / 25 for i in range(25)]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_sam2_loader_pairs_every_mask_with_its_frame(tmp_path, case):
    from training.dataset.vos_raw_dataset import JSONRawDataset
    from training.dataset.vos_sampler import RandomUniformSampler

    rate, pts = CASES[case]
    path = tmp_path / f"{case}.mp4"
    _write_video(path, pts, rate)
    span = pts[-1] - pts[0]
    video = {"video_id": f"syn_{case.replace('.', '_')}", "video_frame_count": len(pts),
             "video_fps": (len(pts) - 1) / span if case == "vfr" else float(rate),
             "video_height": H, "video_width": W, "video_duration": span, "video_split": "train",
             "video_environment": "Indoor"}
    masklets, frames, rel_t = _label_perfectly(path, video)
    vid = video["video_id"]

    # masklet_frames keeps the source frame index and its timestamp
    assert [f["ann_idx"] for f in frames] == list(range(len(frames)))
    max_gap = max(b - a for a, b in zip(pts, pts[1:]))
    for f in frames:   # annotated frame k: the source frame nearest to k / 6 s
        assert f["timestamp_s"] == pytest.approx(rel_t[f["frame_idx"]], abs=1e-6)
        assert abs(f["timestamp_s"] - f["ann_idx"] / 6) <= max_gap / 2 + 1e-3

    doc = export_sav(None, masklets, frames, video=video, masklet_type="auto")
    lake = Lake(tmp_path / "out")
    res = export_sav_train(lake, "train", [video], {vid: str(path)}, {vid: {"auto": doc}}, masklet_type="auto")
    assert res["videos"] == 1 and res["skipped"] == []
    root = tmp_path / "out" / "train"
    n24 = len(sav_timeline(len(pts), video["video_fps"], presentation_times(str(path))))
    jpegs = sorted((root / TRAIN_FRAMES / vid).iterdir())
    assert [p.name for p in jpegs] == [f"{j:05d}.jpg" for j in range(n24)]
    assert n24 == pytest.approx(24 * (span + (pts[-1] - pts[-2])), abs=1)
    assert (root / TRAIN_LIST).read_text() == f"{vid}\n"
    assert json.loads((root / TRAIN_JSON / f"{vid}_manual.json").read_text()) == doc

    # every JPEG shows the video at its 24 fps instant (the nearest source frame's position)
    from PIL import Image

    for j in range(0, n24, 5):
        x = _x_in_image(np.asarray(Image.open(jpegs[j]).convert("L")))
        nearest = min(rel_t, key=lambda t: (round(abs(t - j / 24), 4), t))   # ties: the earlier frame
        assert x == pytest.approx(_x(nearest), abs=1.0), f"JPEG {j}"

    ds = JSONRawDataset(str(root / TRAIN_FRAMES), str(root / TRAIN_JSON), file_list_txt=str(root / TRAIN_LIST),
                        ann_every=4, frames_fps=24)
    assert ds.video_names == [vid]
    vos_video, loader = ds.get_video(0)
    # rm_unannotated: the loader keeps exactly the JPEGs 0, 4, 8, ... that have a mask
    assert [f.frame_idx for f in vos_video.frames] == list(range(0, 4 * len(doc["masklet"]), 4))[:len(vos_video)]
    assert len(vos_video.frames) >= len(doc["masklet"]) - 1
    random.seed(0)
    sampler = RandomUniformSampler(num_frames=len(vos_video.frames), max_num_objects=3)
    checked = 0
    for frame_idx, img, mask in _construct(vos_video, loader, sampler.sample(vos_video, loader)):
        assert mask.shape == img.shape[:2]
        cols = np.nonzero(mask.any(axis=0))[0]
        x_img = _x_in_image(img.mean(axis=2))
        assert cols[0] == pytest.approx(x_img, abs=1.0), f"{case}: mask {frame_idx // 4} vs JPEG {frame_idx}"
        checked += 1
    assert checked == len(vos_video.frames) >= 12


@pytest.mark.parametrize("case", ["29.97fps", "vfr"])
def test_export_sav_train_cli_imported_file_on_the_timeline(tmp_path, case, capsys):
    """``sav-assets export-sav --train`` over a lake: a SA-V ``_manual.json`` written for the video's
    24 fps timeline (mask k: the square at k / 6 s) is imported through ``label_batch`` and exported
    for SAM 2; the loader pairs each mask with the JPEG showing the square there. Headers current."""
    import datetime as dt

    from training.dataset.vos_raw_dataset import JSONRawDataset

    from sav_assets.cli import main
    from sav_assets.lib.ingest.demo import sav_annotation
    from sav_assets.lib.label.batch import label_batch
    from sav_assets.lib.store.tables import SPLITS, VIDEOS, to_table
    from sav_assets.lib.video.probe import probe_file

    rate, pts = CASES[case]
    path = tmp_path / "v.mp4"
    _write_video(path, pts, rate)
    video = {**probe_file(str(path)).as_row(), "video_id": "v", "source_uri": str(path),
             "content_sha256": "0" * 64, "status": "ok", "batch_id": "b1"}
    n_ann = len(annotation_grid(int(video["video_frame_count"]), float(video["video_fps"]),
                                pts_s=presentation_times(str(path))))
    col = [[rle.encode(_square_mask(k / 6))] for k in range(n_ann)]
    (tmp_path / "v_manual.json").write_text(json.dumps(sav_annotation("v", col, len(pts), 24.0, W, H)))
    lake = Lake(tmp_path / "lake")
    lake.replace_batch("videos", "b1", to_table([video], VIDEOS))
    lake.replace_batch("splits", "s1", to_table([{"video_id": "v", "batch_id": "s1", "split": "val",
                                                  "assigned_at": dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)}],
                                                SPLITS))
    summary = label_batch(lake, "b1", [video], {"v": {"manual": str(tmp_path / "v_manual.json")}}, lambda: None,
                          None, run_sam2=False, log=lambda m: None)
    assert summary.failed == {} and summary.imported == {"v": ["manual"]}

    assert main(["export-sav", "--train", "--root", str(tmp_path / "lake"), "--dest", str(tmp_path / "out")]) == 0
    assert "wrote 1 video(s) for SAM 2 training" in capsys.readouterr().out
    root = tmp_path / "out"
    doc = json.loads((root / TRAIN_JSON / "v_manual.json").read_text())
    assert doc["video_split"] == "val" and len(doc["masklet"]) == n_ann
    ds = JSONRawDataset(str(root / TRAIN_FRAMES), str(root / TRAIN_JSON), file_list_txt=str(root / TRAIN_LIST),
                        ann_every=4, frames_fps=24)
    vos_video, loader = ds.get_video(0)
    assert len(vos_video.frames) >= n_ann - 1 >= 12
    from PIL import Image

    for frame in vos_video.frames:
        img = np.asarray(Image.open(frame.image_path).convert("L"))
        mask = loader.load(frame.frame_idx)[0].numpy()
        # the JPEG shows the nearest source frame to frame_idx / 24 s: within half a source frame
        # (plus rounding) of the square drawn for that instant
        max_gap = max(b - a for a, b in zip(pts, pts[1:]))
        assert np.nonzero(mask.any(axis=0))[0][0] == pytest.approx(_x_in_image(img), abs=SPEED * max_gap / 2 + 1.0)

    # and --masklet-type auto with no auto masklets: nothing exported, said so
    assert main(["export-sav", "--train", "--root", str(tmp_path / "lake"), "--dest", str(tmp_path / "out2"),
                 "--masklet-type", "auto"]) == 0
    assert "skipped v: no auto annotations" in capsys.readouterr().out
    assert (tmp_path / "out2" / TRAIN_LIST).read_text() == ""


@pytest.mark.parametrize("name", ["01_dog.mp4", "03_blocks.mp4", "bedroom.mp4"])
def test_real_29_97_and_30fps_video_jpeg_4k_is_the_annotated_frame(tmp_path, shared_data, name):
    """On the shared real videos: JPEG ``4k`` of the training export is the source frame the labeler
    annotated as frame ``k`` (``masklet_frames.frame_idx``), not source frame ``4k``."""
    from PIL import Image

    from sav_assets.lib.video.decode import read_frames
    from sav_assets.lib.video.probe import probe_file

    path = str(shared_data / "videos" / name)
    row = probe_file(path).as_row()
    n, fps = int(row["video_frame_count"]), float(row["video_fps"])
    grid = annotation_grid(n, fps, pts_s=presentation_times(path))
    h, w = int(row["video_height"]), int(row["video_width"])
    doc = {"video_id": "real", "masklet": [[rle.empty(h, w)] for _ in grid], "masklet_id": [0], "masklet_num": 1}
    lake = Lake(tmp_path / "out")
    res = export_sav_train(lake, "", [{**row, "video_id": "real"}], {"real": path}, {"real": {"manual": doc}})
    assert res["videos"] == 1
    ks = [1, len(grid) // 2, len(grid) - 1]
    src = read_frames(path, [grid[k] for k in ks] + [4 * k for k in ks]).astype(np.float64)
    for j, k in enumerate(ks):
        jpeg = np.asarray(Image.open(tmp_path / "out" / TRAIN_FRAMES / "real" / f"{4 * k:05d}.jpg").convert("RGB"))
        mine, naive = np.abs(jpeg - src[j]).mean(), np.abs(jpeg - src[len(ks) + j]).mean()
        assert mine < 3.0 and naive > mine + 1.0, (k, grid[k], mine, naive)

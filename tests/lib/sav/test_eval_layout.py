"""SA-V val/test layout: the folder structure sav_evaluator.py / vos_inference.py read, exact masks."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_DATA as DATA
from conftest import needs_shared
from PIL import Image

from sav_assets.lib.sav import rle
from sav_assets.lib.sav.eval_layout import write_eval_layout

BEDROOM = DATA / "videos" / "bedroom.mp4"
SAV_MANUAL = DATA / "sav_example" / "sav_000001_manual.json"


def make_video(path: Path, n: int, h: int, w: int, fps: int = 24) -> None:
    """Frame k is a flat grey of level 8*k (so a decoded frame tells its own index)."""
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"crf": "10", "preset": "ultrafast", "bf": "0"}
        for k in range(n):
            img = np.full((h, w, 3), (8 * k) % 256, np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def frame_rows(vid: str, masks: dict[int, dict[int, np.ndarray]], mtype: str = "manual") -> list[dict]:
    rows = []
    for mid, per_frame in masks.items():
        for ann, (f, m) in enumerate(sorted(per_frame.items())):
            r = rle.encode(m)
            rows.append({"video_id": vid, "masklet_id": mid, "masklet_type": mtype, "ann_idx": ann,
                         "frame_idx": f, "size": r["size"], "counts": r["counts"], "visible": bool(m.any())})
    return rows


def evaluator_scan(gt_root: Path, vid: str) -> list[tuple[list[str], str]]:
    """What sav_benchmark.VideoEvaluator.scan_vid_folder does for an SA-V style folder."""
    entries = sorted(os.listdir(gt_root / vid))
    assert not all(e.endswith(".png") for e in entries)
    return [(sorted(os.listdir(gt_root / vid / o)), o) for o in entries]


@needs_shared
def test_layout_on_real_video(tmp_path):
    h, w = 540, 960
    ann = list(range(0, 25, 4))
    m0 = {}
    m1 = {}
    for i, f in enumerate(ann):
        a = np.zeros((h, w), np.uint8)
        a[100 + 5 * i: 200 + 5 * i, 300:420] = 1
        m0[f] = a
        b = np.zeros((h, w), np.uint8)
        if i not in (2, 3):                      # object 1 disappears and comes back
            b[10:50, 10 + 10 * i: 80 + 10 * i] = 1
        m1[f] = b
    rows = frame_rows("bed", {0: m0, 1: m1}) + frame_rows("bed", {7: m0}, mtype="auto")
    summary = write_eval_layout(tmp_path / "sav_val", "val", [{"video_id": "bed"}],
                                {"bed": rows}, {"bed": str(BEDROOM)}, masklet_types=("manual",))
    root = tmp_path / "sav_val"
    assert (root / "sav_val.txt").read_text() == "bed\n"
    assert summary["videos"] == 1 and summary["objects"] == 2 and summary["pngs"] == 14
    assert summary["size_mismatch"] == [] and summary["skipped"] == []

    jpgs = sorted(os.listdir(root / "JPEGImages_24fps" / "bed"))
    assert jpgs == [f"{k:05d}.jpg" for k in range(25)]             # every frame the annotations cover
    assert Image.open(root / "JPEGImages_24fps" / "bed" / "00012.jpg").size == (w, h)

    gt_root = root / "Annotations_6fps"
    scanned = evaluator_scan(gt_root, "bed")
    assert [o for _, o in scanned] == ["000", "001"]                # auto masklet 007 filtered out
    for frames, obj in scanned:
        assert int(obj) in (0, 1)
        assert frames == [f"{f:05d}.png" for f in ann]
        for f in frames:
            arr = np.array(Image.open(gt_root / "bed" / obj / f))
            assert len(np.unique(arr)) <= 2 and arr.shape == (h, w)
            src = (m0 if obj == "000" else m1)[int(f[:5])]
            assert np.array_equal(arr > 0, src > 0)
    # the first JPEG has a mask for every object (vos_inference prompts from frame 0)
    assert all((gt_root / "bed" / o / "00000.png").exists() for _, o in scanned)


@needs_shared
def test_layout_real_sav_rles_and_frame_numbering(tmp_path):
    doc = json.loads(SAV_MANUAL.read_text())
    h, w = int(doc["video_height"]), int(doc["video_width"])
    video = tmp_path / "sav_000001.mp4"
    make_video(video, 13, h, w)
    rows = []
    for ann, frame in enumerate(doc["masklet"][:4]):               # frames 0, 4, 8, 12
        for j, r in enumerate(frame):
            rows.append({"video_id": "sav_000001", "masklet_id": doc["masklet_id"][j], "ann_idx": ann,
                         "frame_idx": 4 * ann, "size": r["size"], "counts": r["counts"]})
    out = tmp_path / "sav_test"
    s = write_eval_layout(out, "test", [{"video_id": "sav_000001"}, {"video_id": "missing"}],
                          {"sav_000001": rows}, {"sav_000001": str(video)})
    assert s["videos"] == 1 and s["skipped"] == [{"video_id": "missing", "reason": "no annotated frames"}]
    assert (out / "sav_test.txt").read_text() == "sav_000001\n"
    for k in (0, 5, 12):
        mean = np.asarray(Image.open(out / "JPEGImages_24fps" / "sav_000001" / f"{k:05d}.jpg")).mean()
        assert abs(mean - 8 * k) < 3, (k, mean)
    # objects absent from frames 4 and 8 (the evaluated ones) are left out, as the evaluators need
    left_out = {o["masklet_id"] for o in s["skipped_objects"]}
    middle = {j for ann in (1, 2) for j, r in enumerate(doc["masklet"][ann]) if rle.decode(r).any()}
    assert left_out == {doc["masklet_id"][j] for j in range(len(doc["masklet_id"])) if j not in middle}
    assert s["objects"] == len(doc["masklet_id"]) - len(left_out) > 0
    for ann, frame in enumerate(doc["masklet"][:4]):
        for j, r in enumerate(frame):
            p = out / "Annotations_6fps" / "sav_000001" / f"{doc['masklet_id'][j]:03d}" / f"{4 * ann:05d}.png"
            if doc["masklet_id"][j] in left_out:
                assert not p.parent.exists()
                continue
            assert np.array_equal(np.array(Image.open(p)) > 0, rle.decode(r) > 0)


def test_path_traversal_refused(tmp_path):
    from sav_assets.lib.store.lake import UnsafeKeyError

    with pytest.raises(UnsafeKeyError):
        write_eval_layout(tmp_path, "../x", [], {}, {})
    with pytest.raises(UnsafeKeyError):
        write_eval_layout(tmp_path, "val", [{"video_id": "../../etc"}], {}, {})


def test_video_shorter_than_annotations_is_left_out(tmp_path):
    video = tmp_path / "short.mp4"
    make_video(video, 6, 32, 48)
    m = np.zeros((32, 48), np.uint8)
    m[4:9, 4:9] = 1
    rows = frame_rows("short", {0: {f: m for f in (0, 4, 8)}})          # frame 8 is past the end
    s = write_eval_layout(tmp_path / "out", "val", [{"video_id": "short"}], {"short": rows},
                          {"short": str(video)})
    assert s["videos"] == 0 and s["objects"] == 0 and s["pngs"] == 0 and s["jpegs"] == 0
    assert s["skipped"][0]["video_id"] == "short" and "MissingFramesError" in s["skipped"][0]["reason"]
    assert not (tmp_path / "out" / "JPEGImages_24fps" / "short").exists()
    assert not (tmp_path / "out" / "Annotations_6fps" / "short").exists()
    assert (tmp_path / "out" / "sav_val.txt").read_text() == ""


def test_objects_not_visible_between_first_and_last_frame_are_left_out(tmp_path):
    """The evaluators drop the first and last annotated frames; an object seen only there cannot be
    scored (Meta's evaluator asserts), so it is not written and is listed; so is a video left with none."""
    video = tmp_path / "v.mp4"
    make_video(video, 13, 32, 48)
    m = np.zeros((32, 48), np.uint8)
    m[2:6, 2:6] = 1
    z = np.zeros_like(m)
    rows = frame_rows("a", {0: {0: m, 4: m, 8: m, 12: m}, 1: {0: m, 4: z, 8: z, 12: m}})
    rows += frame_rows("b", {3: {0: m, 4: z, 8: z, 12: z}})
    out = tmp_path / "out"
    s = write_eval_layout(out, "val", [{"video_id": "a"}, {"video_id": "b"}], {"a": rows[:8], "b": rows[8:]},
                          {"a": str(video), "b": str(video)})
    assert s["videos"] == 1 and s["objects"] == 1 and s["pngs"] == 4
    assert s["skipped_objects"] == [
        {"video_id": "a", "masklet_id": 1, "reason": "not visible between the first and last annotated frames"},
        {"video_id": "b", "masklet_id": 3, "reason": "not visible between the first and last annotated frames"}]
    assert [x["video_id"] for x in s["skipped"]] == ["b"]
    assert sorted(os.listdir(out / "Annotations_6fps" / "a")) == ["000"]
    assert not (out / "Annotations_6fps" / "b").exists() and not (out / "JPEGImages_24fps" / "b").exists()
    assert (out / "sav_val.txt").read_text() == "a\n"


def two_objects(tmp_path):
    """A 9-frame 48x32 video, a 4x4 square, and frame rows of objects 0 and 1 of video "a" on frames 0, 4, 8."""
    video = tmp_path / "v.mp4"
    make_video(video, 9, 32, 48)
    m = np.zeros((32, 48), np.uint8)
    m[2:6, 2:6] = 1
    return video, m, frame_rows("a", {0: {0: m, 4: m, 8: m}, 1: {0: m, 4: m, 8: m}})


def test_rerun_replaces_and_prunes(tmp_path):
    video, _, rows = two_objects(tmp_path)
    out = tmp_path / "out"
    write_eval_layout(out, "val", [{"video_id": "a"}, {"video_id": "b"}],
                      {"a": rows, "b": [dict(r, video_id="b") for r in rows]}, {"a": str(video), "b": str(video)})
    s = write_eval_layout(out, "val", [{"video_id": "a"}], {"a": [r for r in rows if r["masklet_id"] == 0]},
                          {"a": str(video)})
    assert s["removed"] == ["JPEGImages_24fps/b", "Annotations_6fps/b"]
    assert sorted(os.listdir(out / "Annotations_6fps")) == ["a"]
    assert sorted(os.listdir(out / "Annotations_6fps" / "a")) == ["000"]      # object 001 gone too
    assert (out / "sav_val.txt").read_text() == "a\n"


def test_colliding_masklet_ids_need_a_type_filter(tmp_path):
    m = np.zeros((32, 48), np.uint8)
    rows = frame_rows("a", {0: {0: m}}) + frame_rows("a", {0: {0: m}}, mtype="auto")
    with pytest.raises(ValueError, match="masklet_types"):
        write_eval_layout(tmp_path, "val", [{"video_id": "a"}], {"a": rows}, {"a": "unused.mp4"})


# ---------------------------------------------------------------- ground truth selection


def _acc(qc: dict[tuple[str, str, int], list[str]]):
    """An ``Accepted`` whose masklet_qc verdicts are ``qc`` (key -> reasons; [] passed)."""
    from sav_assets.lib.dataset.selection import Accepted

    return Accepted(videos=[], masklets=[], keys={k for k, r in qc.items() if not r}, quality={},
                    failed={k: r for k, r in qc.items() if r})


def test_manual_masklets_failing_qc_stay_ground_truth_unless_a_rule_says_so():
    from sav_assets.lib.dataset.selection import eval_ground_truth

    m = np.zeros((8, 8), np.uint8)
    m[2:5, 2:5] = 1
    frames = (frame_rows("a", {0: {0: m, 4: m}, 1: {0: m, 4: m}}) + frame_rows("a", {3: {0: m}}, mtype="auto")
              + frame_rows("b", {0: {0: m}, 1: {0: m}}, mtype="auto"))
    acc = _acc({("a", "manual", 0): [], ("a", "manual", 1): ["flicker", "too_small"], ("a", "auto", 3): [],
                ("b", "auto", 0): [], ("b", "auto", 1): ["duplicate"]})
    gt, left_out = eval_ground_truth(frames, ["a", "b"], acc)
    # human masks are the ground truth whatever pseudo-label QC says; QC-failing pseudo-labels are not
    assert sorted({(f["masklet_type"], f["masklet_id"]) for f in gt["a"]}) == [("manual", 0), ("manual", 1)]
    assert len(gt["a"]) == 4 and {f["masklet_id"] for f in gt["b"]} == {0}
    assert left_out == [{"video_id": "b", "masklet_type": "auto", "masklet_id": 1,
                         "reason": "failed masklet QC: duplicate"}]
    gt, left_out = eval_ground_truth(frames, ["a", "b"], acc, exclude_failed_manual=True)
    assert {f["masklet_id"] for f in gt["a"]} == {0}
    assert left_out[0] == {"video_id": "a", "masklet_type": "manual", "masklet_id": 1,
                           "reason": "failed masklet QC: flicker, too_small (exclude_failed_manual is set)"}
    assert len(left_out) == 2


# ---------------------------------------------------------------- SA-V's on-disk layout, Meta's evaluator


def test_sav_layout_exact_names_and_formats(tmp_path):
    """The names and formats of SA-V's val/test release (sav_dataset/README.md) and what
    sav_evaluator.py / vos_inference.py open, spelled out literally."""
    from sav_assets.lib.sav.eval_layout import check_layout

    video = tmp_path / "v.mp4"
    make_video(video, 9, 32, 48)
    m = np.zeros((32, 48), np.uint8)
    m[2:6, 2:6] = 1
    rows = frame_rows("sav_000042", {0: {0: m, 4: m, 8: m}, 12: {0: m, 4: m, 8: 0 * m}})
    out = tmp_path / "sav_val"
    write_eval_layout(out, "val", [{"video_id": "sav_000042"}], {"sav_000042": rows}, {"sav_000042": str(video)})
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    # plus the incremental writer's hidden record of what it wrote (no tool of Meta's reads it)
    assert files == [".layout_state/sav_000042.json", "Annotations_6fps/sav_000042/000/00000.png", "Annotations_6fps/sav_000042/000/00004.png",
                     "Annotations_6fps/sav_000042/000/00008.png", "Annotations_6fps/sav_000042/012/00000.png",
                     "Annotations_6fps/sav_000042/012/00004.png", "Annotations_6fps/sav_000042/012/00008.png",
                     *[f"JPEGImages_24fps/sav_000042/{k:05d}.jpg" for k in range(9)], "sav_val.txt"]
    assert (out / "sav_val.txt").read_bytes() == b"sav_000042\n"
    with Image.open(out / "Annotations_6fps/sav_000042/012/00004.png") as im:
        assert (im.format, im.mode, im.size) == ("PNG", "P", (48, 32))
        assert im.getpalette()[:6] == [0, 0, 0, 128, 0, 0]
        assert np.array_equal(np.asarray(im), m)              # indices 0/1, not 0/255
    with Image.open(out / "JPEGImages_24fps/sav_000042/00000.jpg") as im:
        assert (im.format, im.mode, im.size) == ("JPEG", "RGB", (48, 32))
    assert check_layout(out, "val") == []


def test_check_layout_reports_what_the_evaluator_would_trip_on(tmp_path):
    from sav_assets.lib.sav.eval_layout import check_layout

    video, m, rows = two_objects(tmp_path)
    out = tmp_path / "sav_val"
    write_eval_layout(out, "val", [{"video_id": "a"}], {"a": rows}, {"a": str(video)})
    assert check_layout(out, "val") == []
    ann = out / "Annotations_6fps" / "a"
    Image.fromarray(m * 255).save(ann / "001" / "00004.png")                 # 0/255 greyscale
    (out / "JPEGImages_24fps" / "a" / "00008.jpg").unlink()
    (ann / "000").rename(ann / "obj")
    (out / "Annotations_6fps" / "b").mkdir()
    problems = "\n".join(check_layout(out, "val"))
    assert "001/00004.png: PNG mode L, expected a palette (P) PNG" in problems
    assert "no 00008.jpg in JPEGImages_24fps" in problems
    assert "a/obj: not an object folder named %03d" in problems
    assert "video folders ['a', 'b'] are not the list file's ['a']" in problems
    (out / "sav_val.txt").unlink()
    assert check_layout(out, "val") == [f"{out / 'sav_val.txt'}: missing"]


@needs_shared
def test_meta_evaluator_on_the_layout_equals_our_jf_on_real_sav_masks(tmp_path):
    """Acceptance: the layout of SA-V's own manual masks, scored by a re-implementation of Meta's
    sav_evaluator.py (tests/lib/sav/sav_evaluator_ref.py), gives our J&F to 1e-12 per object and overall."""
    import sav_evaluator_ref

    from sav_assets.lib.sav.annotations import import_sav
    from sav_assets.lib.sav.eval_layout import check_layout
    from sav_assets.lib.sav.jf import evaluate_layout
    from sav_assets.lib.util import atomic_write_bytes
    from sav_assets.lib.video.images import encode_mask_png

    doc = json.loads(SAV_MANUAL.read_text())
    _, _, frames = import_sav(doc, source_uri=str(SAV_MANUAL))
    frames = [f for f in frames if f["frame_idx"] <= 36]                 # 10 annotated frames
    h, w = int(doc["video_height"]), int(doc["video_width"])
    video = tmp_path / "sav_000001.mp4"
    make_video(video, 37, h, w)
    out = tmp_path / "sav_val"
    s = write_eval_layout(out, "val", [{"video_id": "sav_000001"}], {"sav_000001": frames},
                          {"sav_000001": str(video)})
    assert s["objects"] >= 2 and check_layout(out, "val") == []
    gt = out / "Annotations_6fps"
    # a prediction that lags one annotated frame behind and misses object 1's 6th frame
    pred = tmp_path / "pred"
    for obj in sorted(os.listdir(gt / "sav_000001")):
        names = sorted(os.listdir(gt / "sav_000001" / obj))
        for i, n in enumerate(names):
            mask = np.array(Image.open(gt / "sav_000001" / obj / names[max(i - 1, 0)]))
            if obj == "001" and i == 5:
                mask = 0 * mask
            atomic_write_bytes(pred / "sav_000001" / obj / n, encode_mask_png(mask))
    g_jf, g_j, g_f, per_video = sav_evaluator_ref.benchmark(str(gt), str(pred))
    ours = evaluate_layout(out, pred)
    ious, fs = per_video["sav_000001"]
    objects = ours["videos"]["sav_000001"]["objects"]
    assert sorted(objects) == sorted(ious)
    for obj in ious:
        assert abs(ious[obj] / 100 - objects[obj]["J"]) < 1e-12 and abs(fs[obj] / 100 - objects[obj]["F"]) < 1e-12
    assert abs(g_j / 100 - ours["J"]) < 1e-12 and abs(g_f / 100 - ours["F"]) < 1e-12
    assert abs(g_jf / 100 - ours["J&F"]) < 1e-12
    assert 0.1 < ours["J"] < 0.9 and 0.1 < ours["F"] < 0.9                # a real, imperfect score

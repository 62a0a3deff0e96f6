"""The evaluation layout is incremental (issue 13, item 4): a second run over the same videos and labels
writes nothing (no file replaced, no video opened); a video whose labels, file or split settings
changed is rewritten, and only it; a video whose folders went missing is written again. Rows come per
video from a callable (streamed from DuckDB by the asset), so no whole table is held in Python.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
from test_eval_layout import frame_rows, make_video

from sav_assets.lib.sav.eval_layout import check_layout, write_eval_layout

H, W = 48, 64


def _masks(shift: int) -> dict[int, dict[int, np.ndarray]]:
    per = {}
    for i, f in enumerate(range(0, 25, 4)):
        m = np.zeros((H, W), np.uint8)
        m[5 + i + shift: 20 + i + shift, 10:30] = 1
        per[f] = m
    return {0: per}


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime_ns) of every file of the layout: an atomic rewrite changes both."""
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            st = os.stat(os.path.join(d, f))
            out[os.path.relpath(os.path.join(d, f), root)] = (st.st_ino, st.st_mtime_ns)
    return out


def _setup(tmp_path):
    paths = {}
    for vid in ("a", "b"):
        paths[vid] = str(tmp_path / f"{vid}.mp4")
        make_video(Path(paths[vid]), 30, H, W)
    videos = [{"video_id": v, "content_sha256": f"sha-{v}", "video_fps": 24.0, "video_frame_count": 30}
              for v in ("a", "b")]
    rows = {"a": frame_rows("a", _masks(0)), "b": frame_rows("b", _masks(0))}
    return paths, videos, rows


def test_second_run_writes_nothing_and_a_changed_video_is_rewritten(tmp_path):
    paths, videos, rows = _setup(tmp_path)
    out = tmp_path / "sav_val"
    first = write_eval_layout(out, "val", videos, rows, paths)
    assert first["videos"] == 2 and first["rewritten"] == ["a", "b"] and check_layout(out, "val") == []
    before = _snapshot(out)

    again = write_eval_layout(out, "val", videos, rows, paths)
    assert again["rewritten"] == [] and again["unchanged"] == ["a", "b"]
    assert _snapshot(out) == before                          # not one file replaced
    for k in ("videos", "objects", "jpegs", "pngs", "video_ids"):
        assert again[k] == first[k], k

    rows["b"] = frame_rows("b", _masks(3))                   # b's labels changed
    third = write_eval_layout(out, "val", videos, rows, paths)
    assert third["rewritten"] == ["b"] and third["unchanged"] == ["a"]
    after = _snapshot(out)
    assert {k: v for k, v in after.items() if "/a/" in k} == {k: v for k, v in before.items() if "/a/" in k}
    changed_b = [k for k, v in after.items() if "Annotations_6fps/b/" in k and before.get(k) != v]
    assert len(changed_b) == 7 and check_layout(out, "val") == []

    videos[0] = {**videos[0], "content_sha256": "sha-a-v2"}  # a's file changed (its timeline may have too)
    assert write_eval_layout(out, "val", videos, rows, paths)["rewritten"] == ["a"]
    assert write_eval_layout(out, "val", videos, rows, paths, jpeg_quality=80)["rewritten"] == ["a", "b"]


def test_missing_folder_is_rewritten_and_dropped_video_removed(tmp_path):
    import shutil

    paths, videos, rows = _setup(tmp_path)
    out = tmp_path / "sav_val"
    write_eval_layout(out, "val", videos, rows, paths)
    shutil.rmtree(out / "JPEGImages_24fps" / "a")
    s = write_eval_layout(out, "val", videos, rows, paths)
    assert s["rewritten"] == ["a"] and check_layout(out, "val") == []
    s = write_eval_layout(out, "val", videos[1:], rows, paths)
    assert s["video_ids"] == ["b"] and not (out / "Annotations_6fps" / "a").exists()
    assert (out / "sav_val.txt").read_text() == "b\n" and check_layout(out, "val") == []
    # a comes back: written again (its old signature went with it)
    assert write_eval_layout(out, "val", videos, rows, paths)["rewritten"] == ["a"]


def test_rows_and_files_come_per_video_and_unchanged_videos_are_not_opened(tmp_path):
    paths, videos, rows = _setup(tmp_path)
    out = tmp_path / "sav_val"
    asked, opened = [], []

    def frames_for(vid):
        asked.append(vid)
        return rows[vid]

    @contextlib.contextmanager
    def open_video(vid):
        opened.append(vid)
        yield paths[vid]

    s = write_eval_layout(out, "val", videos, frames_for, open_video)
    assert s["videos"] == 2 and asked == ["a", "b"] and opened == ["a", "b"]
    asked.clear()
    opened.clear()
    s = write_eval_layout(out, "val", videos, frames_for, open_video)
    assert s["rewritten"] == [] and asked == ["a", "b"] and opened == []    # no download of unchanged videos


def test_skips_recorded_only_when_they_do_not_depend_on_decoding(tmp_path):
    """A video none of whose objects is visible mid-way is settled by its rows: not looked at again. A
    video that failed to decode (here: annotations past its end) is tried again on the next run."""
    paths, videos, rows = _setup(tmp_path)
    empty = {0: {f: np.zeros((H, W), np.uint8) for f in range(0, 25, 4)}}
    rows["a"] = frame_rows("a", empty)
    late = {f: np.ones((H, W), np.uint8) for f in (28, 32, 36)}
    rows["b"] = frame_rows("b", {0: {**_masks(0)[0], **late}})      # 24 fps frame 4 * 9 = 36 > 29: past the end
    out = tmp_path / "sav_val"
    for expect_unchanged in ([], ["a"]):
        s = write_eval_layout(out, "val", videos, rows, paths)
        assert s["videos"] == 0 and s["unchanged"] == expect_unchanged
        assert s["rewritten"] == [v for v in ("a", "b") if v not in expect_unchanged]
        reasons = {x["video_id"]: x["reason"] for x in s["skipped"]}
        assert reasons["a"].startswith("no object visible") and "past the video's end" in reasons["b"]
        assert (out / "sav_val.txt").read_text() == ""

"""Labeling a batch tells data errors from code errors.

A video's own failure (a decoder error, a bad prompt, an OOM after the offloading retry, a video gone
from the source since ingestion) is a ``label_runs`` row with its error class and the other videos go
on. A bug in our code (a TypeError, KeyError, AttributeError...) fails the batch at once instead of
turning every video into an ``internal_error`` row and ending green: it would fail the same way on
every video. ``label_video`` is replaced by a stub here; the real SAM 2 paths are in test_labeler.py.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from sav_assets.lib.label import labeler as lab
from sav_assets.lib.label.batch import label_batch
from sav_assets.lib.label.config import LabelerConfig, LabelingFailed, LabelResult
from sav_assets.lib.store.lake import Lake
from sav_assets.lib.store.tables import LABEL_RUNS
from sav_assets.lib.video.errors import DECODE_ERROR, OOM, UNREADABLE, VideoError

LOADED = SimpleNamespace(model_name="sam2.1_hiera_tiny", checkpoint_sha256=None, config_sha256="c",
                         random_weights=True, spec=SimpleNamespace(seed=0), precision="fp32")


def _videos(folder, names=("a", "b", "c")) -> list[dict]:
    folder.mkdir(exist_ok=True)
    out = []
    for n in names:
        (folder / f"{n}.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + n.encode() * 64)
        out.append({"video_id": n, "content_sha256": n * 64, "source_uri": str(folder / f"{n}.mp4"),
                    "video_frame_count": 8, "video_fps": 24.0, "video_height": 4, "video_width": 4})
    return out


def _result(video_id: str) -> LabelResult:
    m = {"video_id": video_id, "masklet_id": 0, "masklet_type": "auto"}
    return LabelResult([m], [], {"frames_labeled": 2, "peak_host_mb": 1.0})


def _runs(lake: Lake) -> dict[str, dict]:
    return {r["video_id"]: r for r in lake.read_table("label_runs", batches=["b1"], schema=LABEL_RUNS).to_pylist()}


def _label(lake, videos, stub, monkeypatch):
    monkeypatch.setattr(lab, "label_video", stub)
    return label_batch(lake, "b1", videos, {}, lambda: LOADED, LabelerConfig(), log=lambda m: None)


@pytest.mark.parametrize("bug", [TypeError("label_video() got an unexpected keyword argument 'mode'"),
                                 KeyError("video_fps"), AttributeError("'NoneType' object has no attribute 'shape'")])
def test_a_bug_while_labeling_fails_the_batch_instead_of_becoming_a_row(tmp_path, monkeypatch, bug):
    lake, videos = Lake(tmp_path / "lake"), _videos(tmp_path / "src")

    def stub(loaded, path, video, cfg, prompts=None):
        if video["video_id"] == "b":
            raise bug
        return _result(video["video_id"])

    with pytest.raises(type(bug)) as ei:
        _label(lake, videos, stub, monkeypatch)
    assert ei.value is bug
    runs = _runs(lake)
    assert list(runs) == ["a"] and runs["a"]["status"] == "labeled"      # finished work stays committed
    assert lake.read_table("masklets", batches=["b1"]).column("video_id").to_pylist() == ["a"]


def test_data_failures_are_rows_and_the_batch_goes_on(tmp_path, monkeypatch):
    lake, videos = Lake(tmp_path / "lake"), _videos(tmp_path / "src")

    def stub(loaded, path, video, cfg, prompts=None):
        vid = video["video_id"]
        if vid == "a":
            raise LabelingFailed(DECODE_ERROR, f"{path}: decoding frames 0..4 failed")
        if vid == "b":
            raise LabelingFailed(OOM, "CUDA out of memory even with offloading")
        return _result(vid)

    summary = _label(lake, videos, stub, monkeypatch)
    runs = _runs(lake)
    assert {v: (r["status"], r["error_class"]) for v, r in runs.items()} == {
        "a": ("failed", DECODE_ERROR), "b": ("failed", OOM), "c": ("labeled", None)}
    assert "a.mp4: decoding frames" in runs["a"]["error_message"]
    assert summary.labeled == ["c"] and set(summary.failed) == {"a", "b"}


def test_a_video_gone_from_the_source_is_an_unreadable_row(tmp_path, monkeypatch):
    lake, videos = Lake(tmp_path / "lake"), _videos(tmp_path / "src")
    (tmp_path / "src" / "a.mp4").unlink()           # removed from the landing zone after ingestion
    called = []

    def stub(loaded, path, video, cfg, prompts=None):
        called.append(video["video_id"])
        with open(path, "rb") as fh:                 # what a decoder does first
            fh.read(16)
        return _result(video["video_id"])

    summary = _label(lake, videos, stub, monkeypatch)
    runs = _runs(lake)
    assert runs["a"]["status"] == "failed" and runs["a"]["error_class"] == UNREADABLE
    assert "a.mp4" in runs["a"]["error_message"] and "FileNotFoundError" in runs["a"]["error_message"]
    assert called == ["b", "c"] and summary.labeled == ["b", "c"]


def test_label_video_lets_bugs_through_and_classifies_video_errors(tmp_path, monkeypatch):
    """The driver itself: a VideoError raised anywhere inside is a LabelingFailed of the same class; any
    other exception is not wrapped into ``internal_error`` but raised as it is."""
    def video_error(*a, **k):
        raise VideoError(DECODE_ERROR, "x.mp4: decoder returned uint16 (2, 4, 4, 3) for 2 frames")

    monkeypatch.setattr(lab, "_label", video_error)
    with pytest.raises(LabelingFailed) as ei:
        lab.label_video(LOADED, "x.mp4", {"video_id": "x"}, LabelerConfig())
    assert ei.value.error_class == DECODE_ERROR and "uint16" in ei.value.message

    def bug(*a, **k):
        raise KeyError("surprise")

    monkeypatch.setattr(lab, "_label", bug)
    with pytest.raises(KeyError, match="surprise"):
        lab.label_video(LOADED, "x.mp4", {"video_id": "x"}, LabelerConfig())

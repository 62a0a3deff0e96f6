"""lib/label/runners.py: a lost unit becomes worker_lost rows without destroying committed labels; the
in-process path is today's label_batch; units are weighted by annotated frames."""

from __future__ import annotations

import datetime as dt
import functools
from types import SimpleNamespace

from sav_assets.lib.cluster.runner import InlineRunner, UnitOutcome, pack_units
from sav_assets.lib.label import labeler as lab
from sav_assets.lib.label.batch import _record_failure, label_batch
from sav_assets.lib.label.config import LabelerConfig, LabelResult
from sav_assets.lib.label.runners import LabelJob, annotated_frames, record_lost, run_labeling
from sav_assets.lib.store.lake import Lake
from sav_assets.lib.store.source import Source, SourceOpener
from sav_assets.lib.store.tables import LABEL_RUNS, to_table
from sav_assets.lib.video.errors import DECODE_ERROR, WORKER_LOST

LOADED = SimpleNamespace(model_name="sam2.1_hiera_tiny", checkpoint_sha256=None, config_sha256="c",
                         random_weights=True, spec=SimpleNamespace(seed=0, device="cpu"), precision="fp32")


def _runs(lake: Lake) -> dict[str, dict]:
    return {r["video_id"]: r for r in lake.read_table("label_runs", batches=["b1"], schema=LABEL_RUNS).to_pylist()}


def test_a_lost_unit_records_worker_lost_only_for_videos_this_run_left_unfinished(tmp_path):
    lake = Lake(tmp_path / "lake")
    old = dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)
    labeled = {"video_id": "a", "batch_id": "b1", "label_key": "k", "status": "labeled", "masklets": 3,
               "frames_labeled": 8, "model_name": "m", "finished_at": old}
    lake.write_part("label_runs", "b1", "a.sam2", to_table([labeled], LABEL_RUNS))
    _record_failure(lake, "b1", "b", "sam2", DECODE_ERROR, "an earlier run's failure")   # before this run
    started = dt.datetime.now(dt.timezone.utc)
    _record_failure(lake, "b1", "d", "sam2", DECODE_ERROR, "this run's own failure")     # finished this run
    out = record_lost(lake, "b1", ["a", "b", "c", "d"], "NodeDiedError: node 12ab died", started, "m")
    runs = _runs(lake)
    assert out == ["b", "c"]
    assert runs["a"]["status"] == "labeled" and runs["a"]["label_key"] == "k"      # a commit is never replaced
    assert runs["d"]["error_class"] == DECODE_ERROR
    for v in ("b", "c"):
        assert runs[v]["status"] == "failed" and runs[v]["error_class"] == WORKER_LOST
        assert "NodeDiedError: node 12ab died" in runs[v]["error_message"]


def _videos(folder) -> list[dict]:
    folder.mkdir(exist_ok=True)
    out = []
    for n in ("a", "b", "c"):
        (folder / f"{n}.mp4").write_bytes(n.encode() * 64)
        out.append({"video_id": n, "content_sha256": n * 64, "source_uri": str(folder / f"{n}.mp4"),
                    "video_frame_count": 48, "video_fps": 24.0})
    return out


def test_in_process_run_is_label_batch_over_the_whole_batch(tmp_path, monkeypatch):
    calls = []

    def stub(loaded, path, video, cfg, prompts=None):
        calls.append(video["video_id"])
        return LabelResult([{"video_id": video["video_id"], "masklet_id": 0, "masklet_type": "auto"}], [],
                           {"frames_labeled": 12})

    monkeypatch.setattr(lab, "label_video", stub)
    videos = _videos(tmp_path / "src")
    a, b = Lake(tmp_path / "a"), Lake(tmp_path / "b")
    job = LabelJob(functools.partial(Lake, tmp_path / "b"), Source, "b1", {v["video_id"]: v for v in videos}, {},
                   LOADED.spec, LabelerConfig())
    loads = []
    summary, report = run_labeling(InlineRunner(), job, b, SourceOpener(), lambda: loads.append(1) or LOADED,
                                   log=lambda m: None)
    expected = label_batch(a, "b1", videos, {}, lambda: LOADED, LabelerConfig(), log=lambda m: None)
    assert summary.labeled == expected.labeled == ["a", "b", "c"] and loads == [1]    # one model load
    assert summary.frames_labeled == 36 and report.units == 1 and report.per_node["inline"]["frames"] == 36
    strip = {"finished_at", "seconds"}
    assert [{k: v for k, v in r.items() if k not in strip} for r in _runs(a).values()] == \
        [{k: v for k, v in r.items() if k not in strip} for r in _runs(b).values()]


def test_units_are_weighted_by_annotated_frames():
    v = {"video_frame_count": 240, "video_fps": 24.0}          # 10 s at 24 fps: 60 annotated frames
    assert annotated_frames(v) == 60 and annotated_frames({"video_frame_count": 0}) == 1
    units = pack_units({"long": 60, "s1": 20, "s2": 20, "s3": 20}, 60, min_units=2)
    assert [u.items for u in units] == [["long"], ["s1", "s2", "s3"]]
    assert UnitOutcome(units[0]).lost is None

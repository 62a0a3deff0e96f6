"""Crash tests of ``sav-assets run`` with real processes: kill -9 of the run and its children (the
whole process group) at several points, then a plain ``sav-assets run`` says what it resumes, marks the
killed run failed in the Dagster instance and finishes the batch: no duplicate or lost rows, nothing
half-written visible. ``sav-assets batches`` lists the batches with their state."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

# what must exist in the lake before the kill, i.e. where the run is killed
KILL_POINTS = {
    "claimed": "batches/*.json",                      # the batch is claimed, ingestion may not have begun
    "ingesting": "claims/content/*.json",             # raw_videos has probed and is about to write its parts
    "assessing": "tables/videos/*/part-0.parquet",    # raw_videos is done, video_quality is running
}


def _cli(*args, env, cwd):
    return [sys.executable, "-m", "sav_assets.cli", *args], {"env": env, "cwd": cwd}


def _run(args, env, cwd, timeout=300) -> subprocess.CompletedProcess:
    cmd, kw = _cli(*args, env=env, cwd=cwd)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


def _kill_when(pattern: str, lake: Path, args, env, cwd) -> None:
    cmd, kw = _cli(*args, env=env, cwd=cwd)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, **kw)
    try:
        deadline = time.time() + 240
        while not list(lake.glob(pattern)):
            assert proc.poll() is None, f"the run ended before reaching {pattern}"
            assert time.time() < deadline, f"no {pattern} after 240 s"
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)           # the run and every child it started
        proc.wait()


def _rows(lake: Path, table: str) -> list[dict]:
    from sav_assets.lib.store.lake import Lake

    return Lake(lake).read_table(table).to_pylist()


def _nothing_half_written(lake: Path) -> None:
    """Every object a reader can see parses; a temporary file a kill left behind is hidden from listings."""
    import json

    import pyarrow.parquet as pq

    from sav_assets.lib.store.lake import Lake

    visible = Lake(lake).list()
    assert visible and not [k for k in visible if k.endswith(".tmp")]
    for key in visible:
        if key.endswith(".json"):
            json.loads((lake / key).read_bytes())
        elif key.endswith(".parquet"):
            pq.read_metadata(lake / key)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from sav_assets.lib.ingest.demo import write_demo_corpus

    src = tmp_path_factory.mktemp("corpus") / "src"
    write_demo_corpus(src, n_videos=3, seconds=1.0, width=320, height=240, seed=1, include_bad=True)
    return src


@pytest.mark.parametrize("point", [pytest.param("claimed", marks=pytest.mark.slow), "ingesting",
                                   pytest.param("assessing", marks=pytest.mark.slow)])
def test_kill_9_then_a_plain_run_resumes_the_batch(point, corpus, tmp_path):
    import dagster as dg

    lake, home = tmp_path / "lake", tmp_path / "dh"
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    args = ["run", "--source", str(corpus), "--root", str(lake), "--select", "raw_videos video_quality"]
    _kill_when(KILL_POINTS[point], lake, args, env, tmp_path)

    listed = _run(["batches", "--root", str(lake)], env, tmp_path)
    assert listed.returncode == 0 and " unfinished " in listed.stdout, listed.stdout + listed.stderr
    batch_id = next(p.stem for p in (lake / "batches").glob("*.json"))

    out = _run(args, env, tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"resuming batch {batch_id} (claimed at " in out.stdout and "never finished)" in out.stdout
    assert "nothing new" not in out.stdout and out.stdout.count("succeeded (batch") == 1   # no second batch

    videos, objects = _rows(lake, "videos"), _rows(lake, "source_objects")
    n_objects = len([p for p in corpus.rglob("*") if p.is_file()])
    assert len(objects) == n_objects and {o["batch_id"] for o in objects} == {batch_id}   # none lost, none twice
    assert len({v["video_id"] for v in videos}) == len(videos) == 5    # 3 demo videos + 2 bad files
    assert {r["video_id"] for r in _rows(lake, "video_quality")} == {v["video_id"] for v in videos if v["status"] == "ok"}
    _nothing_half_written(lake)
    assert "finished" in _run(["batches", "--root", str(lake)], env, tmp_path).stdout
    again = _run(args, env, tmp_path)                  # and then there is nothing left to do
    assert "nothing new" in again.stdout and "resuming" not in again.stdout, again.stdout

    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs(filters=dg.RunsFilter(tags={"sav/batch": batch_id}))
    statuses = sorted(r.status.value for r in runs)
    assert "STARTED" not in statuses and statuses.count("SUCCESS") == 1, statuses
    if point != "claimed":                             # the killed run had started: now marked failed
        assert statuses == ["FAILURE", "SUCCESS"], statuses
        assert "marked 1 run(s) whose process is gone as failed" in out.stdout

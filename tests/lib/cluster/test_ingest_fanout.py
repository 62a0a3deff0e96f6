"""Ingestion's CPU stages on an embedded ``local`` Ray give the inline rows: probing (ok, quarantined,
duplicate content, a vanished object) and quality sampling with near-duplicates across units."""

from __future__ import annotations

import shutil

import pytest

from sav_assets.lib.cluster.runner import ClusterSettings, connect
from sav_assets.lib.ingest.demo import write_demo_corpus
from sav_assets.lib.ingest.fanout import assess_on, probe_on
from sav_assets.lib.ingest.ingest_batch import ingest_batch
from sav_assets.lib.ingest.quality import QualityThresholds, assess_batch
from sav_assets.lib.store.source import Source, SourceOpener
from sav_assets.lib.video.probe import ProbeLimits

pytestmark = pytest.mark.slow

_VOLATILE = ("ingested_at", "seen_at", "evaluated_at")


def _strip(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in _VOLATILE} for r in rows]


def test_probe_and_quality_units_on_local_ray_give_the_inline_rows(tmp_path):
    pytest.importorskip("ray")
    src = tmp_path / "src"
    write_demo_corpus(src, n_videos=3, seconds=1.0, width=160, height=120, seed=3, include_bad=True)
    shutil.copyfile(src / "sav_900001.mp4", src / "zz_copy_of_900001.mp4")      # same content, later name
    source = Source(str(src))
    manifest = {"objects": [o.to_json() for o in source.list_objects()]}
    manifest["objects"].append({**manifest["objects"][0], "key": "vanished.mp4",
                                "uri": str(src / "vanished.mp4")})             # listed, gone before probing
    limits, t = ProbeLimits(), QualityThresholds(min_short_side=100, min_duration_s=0.5, dup_max_hamming=64)

    inline = ingest_batch(source, manifest, "b1", [], limits, workers=2)
    ok = [v for v in inline.videos if v["status"] == "ok"]
    with SourceOpener().local_videos(ok) as paths:
        q_inline = assess_batch(ok, paths, {}, [], t)

    runner = connect(ClusterSettings(address="local"))
    logs: list[str] = []
    try:
        assert runner.kind == "ray" and runner.workers() >= 1
        probe = probe_on(runner, Source, str(src), limits, log=logs.append, unit_bytes=1)   # one object per unit
        on_ray = ingest_batch(source, manifest, "b1", [], limits, workers=2, probe=probe)
        q_ray = assess_on(runner, on_ray.videos, {}, [], t, Source, log=logs.append, unit_videos=1)
    finally:
        runner.close()

    assert _strip(on_ray.videos) == _strip(inline.videos)
    assert _strip(on_ray.objects) == _strip(inline.objects)
    assert on_ray.counts == inline.counts
    assert inline.counts["duplicate_content"] == 1 and inline.counts["unreadable"] == 1
    assert inline.counts["videos_quarantined"] >= 1 and inline.counts["videos_ok"] == 3
    dup = next(o for o in on_ray.objects if o["source_key"] == "zz_copy_of_900001.mp4")
    assert dup["disposition"] == "duplicate_content" and dup["duplicate_of"].startswith("sav_900001")
    assert _strip(q_ray) == _strip(q_inline)
    assert any(r["duplicate_of"] for r in q_ray)           # near-duplicates resolved across units
    video_objects = [o for o in inline.objects if o["disposition"] not in ("non_video", "sidecar", "annotation")]
    assert sum("probe: unit" in m for m in logs) == len(video_objects)        # one unit per video object
    assert sum("quality: unit" in m for m in logs) == 3
    assert all("LOST" not in m for m in logs)

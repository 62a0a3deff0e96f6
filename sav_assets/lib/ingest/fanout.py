"""Ingestion's CPU stages on the cluster runner: probing (``raw_videos``) and quality sampling (``video_quality``).

With ``SAV_RAY_ADDRESS`` set, the per-object work of both steps runs as ``num_cpus=1`` units of
``lib/cluster`` instead of threads in the step's process, so a large landing zone is not one process:

* :func:`probe_on` gives ``ingest_batch`` its ``probe``: the batch's video objects packed into units by
  size (``unit_bytes``, at least one unit per CPU), each unit hashing and probing its objects with
  :func:`~sav_assets.lib.ingest.ingest_batch.hash_and_probe` through a Source rebuilt on the worker
  from a picklable factory; the results come back in the objects' order, so the rows (and which
  copy of the same content is the first) are the inline run's.
* :func:`assess_on` runs :func:`~sav_assets.lib.ingest.quality.assess_videos` in units of whole videos
  (each worker opens its videos through the source), then near-duplicates and verdicts on the driver
  over every row (:func:`~sav_assets.lib.ingest.quality.finish_assessment`), as inline.

Only small rows travel back. A unit whose retries ran out is an infrastructure failure, not a
property of its videos: it raises :class:`~sav_assets.lib.cluster.runner.ClusterError` and the step
fails; both steps replace their batch, so a re-run starts over cleanly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sav_assets.lib.cluster.runner import ClusterError, pack_units
from sav_assets.lib.ingest.ingest_batch import hash_and_probe
from sav_assets.lib.ingest.quality import QualityThresholds, assess_videos, finish_assessment
from sav_assets.lib.store.source import SourceObject, SourceOpener
from sav_assets.lib.video.probe import ProbeLimits

UNIT_BYTES = 2 * 1024**3     # bytes of video hashed and probed per unit
UNIT_VIDEOS = 32             # videos sampled per quality unit


@dataclass
class ProbeJob:
    source_for: Callable[[str], object]   # folder URI -> Source, picklable
    source_uri: str
    objects: list[SourceObject]
    skip: set[str]
    limits: ProbeLimits


@dataclass
class QualityJob:
    source_for: Callable[[str], object]
    videos: dict[str, dict]
    sidecars: dict[str, dict | None]
    t: QualityThresholds


def probe_unit(items: list[str], job: ProbeJob) -> list[tuple]:
    """One task: hash and probe the objects at these positions."""
    source = job.source_for(job.source_uri)
    return [hash_and_probe(source, job.objects[int(i)], job.skip, job.limits) for i in items]


def assess_unit(video_ids: list[str], job: QualityJob) -> list[dict]:
    """One task: the per-video quality rows of these videos, opened through the source."""
    videos = [job.videos[v] for v in video_ids]
    with SourceOpener(job.source_for).local_videos(videos) as paths:
        return assess_videos(videos, paths, job.sidecars, job.t)


def _results(runner, fn: Callable, units, job, log: Callable[[str], None], what: str) -> list:
    done = [0]

    def on_done(o) -> None:
        done[0] += 1
        state = f"LOST ({o.lost})" if o.lost else f"done on {o.host} in {o.seconds:.1f}s"
        log(f"{what}: unit {done[0]}/{len(units)} ({len(o.unit.items)} items) {state}")

    outcomes = runner.map(fn, units, (job,), on_done=on_done)
    lost = [o for o in outcomes if o.lost]
    if lost:
        raise ClusterError(f"{what}: {len(lost)} unit(s) lost after their retries ({lost[0].lost}); the step "
                           "replaces its batch, re-run it")
    return outcomes


def probe_on(runner, source_for: Callable[[str], object], source_uri: str, limits: ProbeLimits,
             log: Callable[[str], None] = print, unit_bytes: int = UNIT_BYTES) -> Callable:
    """``ingest_batch``'s ``probe`` on ``runner``: units of objects by size, results in the objects' order."""
    def probe(objects: list[SourceObject], skip: set[str]) -> list[tuple]:
        units = pack_units({str(i): max(1, o.size or 0) for i, o in enumerate(objects)}, unit_bytes,
                           min_units=runner.workers())
        job = ProbeJob(source_for, source_uri, list(objects), set(skip), limits)
        by_pos: dict[int, tuple] = {}
        for o in _results(runner, probe_unit, units, job, log, "probe"):
            by_pos.update(zip((int(i) for i in o.unit.items), o.result))
        return [by_pos[i] for i in range(len(objects))]

    return probe


def assess_on(runner, videos: list[dict], sidecars: dict[str, dict | None], prior: list[dict],
              t: QualityThresholds, source_for: Callable[[str], object], log: Callable[[str], None] = print,
              unit_videos: int = UNIT_VIDEOS) -> list[dict]:
    """``assess_batch`` with the per-video sampling in units of whole videos on ``runner``."""
    ok = {v["video_id"]: v for v in videos if v.get("status") == "ok"}
    units = pack_units({v: 1 for v in ok}, unit_videos, min_units=runner.workers())
    job = QualityJob(source_for, ok, {v: sidecars.get(v) for v in ok}, t)
    rows = [r for o in _results(runner, assess_unit, units, job, log, "quality") for r in o.result]
    return finish_assessment(rows, prior, t)

"""The labeling runner behind ``masklets``: one batch in-process, or its videos fanned out over Ray.

:func:`run_labeling` takes the runner from ``lib/cluster`` (``connect``):

* in-process (``SAV_RAY_ADDRESS`` unset): one :func:`label_batch` call over every video, today's loop,
  with the step's already-loaded model;
* on Ray: whole videos bin-packed into units by annotated-frame count (``unit_frames`` per unit, at
  least one unit per worker), one task per unit. A task (:func:`label_unit`) rebuilds the lake and
  the source from picklable factories, loads the model once (an ``s3://`` checkpoint is cached on
  its node and checked by SHA-256 in ``lib/label/model.py``) and calls :func:`label_batch` on its
  videos, so the worker writes its Parquet parts and ``label_runs`` rows straight to the lake and
  returns only the :class:`BatchLabelSummary` (counts, no masks).

A unit whose retries ran out (its node or worker died each time) becomes a ``worker_lost`` row of
``label_runs`` for each of its videos that has no row written by this run, and the batch goes on; a
video that already holds a ``labeled`` commit keeps it (it is never replaced by a failure). A re-run
resumes by ``label_key`` as before: a retried unit skips the videos its lost attempt committed.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sav_assets.lib.cluster.runner import INLINE_NODE, InlineRunner, UnitOutcome, pack_units
from sav_assets.lib.label.batch import BatchLabelSummary, _existing_run, _record_failure, label_batch
from sav_assets.lib.sav.fields import annotation_grid
from sav_assets.lib.store.lake import Lake
from sav_assets.lib.store.source import SourceOpener
from sav_assets.lib.util import markdown_table
from sav_assets.lib.video.errors import WORKER_LOST

UNIT_FRAMES = 2000   # annotated frames per unit: minutes of GPU work against a ~2 s task start


@dataclass
class LabelJob:
    """Everything a worker needs, picklable: factories instead of open clients."""

    lake_for: Callable[[], Lake]
    source_for: Callable[[str], object]      # folder URI -> Source (the source's stores and credentials)
    batch_id: str
    videos: dict[str, dict]
    annotations: dict[str, dict[str, str]]
    spec: object                              # lib.label.model.ModelSpec
    cfg: object                               # lib.label.config.LabelerConfig
    prompts: dict[str, list] | None = None
    run_sam2: bool = True


@dataclass
class RunReport:
    """What the runner adds to a labeling summary: where each unit ran and how fast."""

    units: int = 0
    units_lost: int = 0
    units_retried: int = 0
    per_node: dict[str, dict] = field(default_factory=dict)


def annotated_frames(video: dict) -> int:
    """A video's weight: its annotated frames on SA-V's 24 fps timeline (every 4th 24 fps frame)."""
    n, fps = int(video.get("video_frame_count") or 0), float(video.get("video_fps") or 0)
    return max(1, len(annotation_grid(n, fps))) if n and fps else 1


def label_unit(video_ids: list[str], job: LabelJob) -> BatchLabelSummary:
    """One Ray task: label these videos into the lake; the model is loaded once, on first use."""
    from sav_assets.lib.label.model import load_model

    summary = label_batch(job.lake_for(), job.batch_id, [job.videos[v] for v in video_ids], job.annotations,
                          lambda: load_model(job.spec), job.cfg, job.prompts, run_sam2=job.run_sam2,
                          log=lambda m: None, opener=SourceOpener(job.source_for))
    summary.overlay_png = summary.overlay_png if summary.overlay_png and len(summary.overlay_png) < 200_000 else None
    return summary


def merge(into: BatchLabelSummary, s: BatchLabelSummary) -> None:
    into.labeled += s.labeled
    into.skipped += s.skipped
    into.failed.update(s.failed)
    into.imported.update(s.imported)
    into.warnings += s.warnings
    for k, v in s.masklets_by_type.items():
        into.masklets_by_type[k] = into.masklets_by_type.get(k, 0) + v
    into.frames_labeled += s.frames_labeled
    into.peak_host_mb = max(into.peak_host_mb, s.peak_host_mb)
    into.peak_gpu_mb = max(into.peak_gpu_mb, s.peak_gpu_mb)
    into.random_weights = s.random_weights if into.random_weights is None else into.random_weights
    into.model_name = into.model_name or s.model_name
    if into.overlay_png is None and s.overlay_png:
        into.overlay_png, into.overlay_video = s.overlay_png, s.overlay_video


def record_lost(lake: Lake, batch_id: str, video_ids: list[str], reason: str, started: dt.datetime,
                model_name: str | None) -> list[str]:
    """``worker_lost`` rows for the unit's videos that this run left without a row (a video already
    ``labeled`` keeps its commit); returns the videos recorded."""
    out = []
    for vid in video_ids:
        prev = _existing_run(lake, batch_id, vid)
        if prev and (prev.get("status") == "labeled" or (prev.get("finished_at") and prev["finished_at"] >= started)):
            continue
        _record_failure(lake, batch_id, vid, "sam2", WORKER_LOST, f"the unit's worker was lost: {reason}",
                        model_name=model_name)
        out.append(vid)
    return out


def _node_row(report: RunReport, o: UnitOutcome, s: BatchLabelSummary) -> None:
    row = report.per_node.setdefault(o.node, {"node": o.node[:12], "host": o.host, "units": 0, "videos": 0,
                                              "frames": 0, "seconds": 0.0})
    row["units"] += 1
    row["videos"] += len(s.labeled)
    row["frames"] += s.frames_labeled
    row["seconds"] += o.seconds


def node_table(report: RunReport) -> str:
    """Per-node throughput as Markdown: units, videos, frames, busy seconds, frames/s."""
    rows = [{**r, "seconds": round(r["seconds"], 1),
             "frames_per_s": round(r["frames"] / r["seconds"], 2) if r["seconds"] else 0.0}
            for r in sorted(report.per_node.values(), key=lambda r: r["node"])]
    return markdown_table(rows, ["node", "host", "units", "videos", "frames", "seconds", "frames_per_s"])


def run_labeling(runner, job: LabelJob, lake: Lake, opener: SourceOpener, load_model: Callable[[], object], *,
                 unit_frames: int = UNIT_FRAMES, log: Callable[[str], None] = print,
                 progress: Callable[[int, int, str], None] | None = None) -> tuple[BatchLabelSummary, RunReport]:
    """Label ``job.videos`` with ``runner``. In-process it uses the step's ``lake``, ``opener`` and
    ``load_model``; on Ray the workers build their own from ``job``. Units ask for a GPU each unless the
    model runs on the CPU (``SAV_DEVICE=cpu``) or the cluster has no GPU; then one CPU each."""
    t0, started = time.time(), dt.datetime.now(dt.timezone.utc)
    report = RunReport()
    videos = [job.videos[v] for v in sorted(job.videos)]
    if isinstance(runner, InlineRunner):
        summary = label_batch(lake, job.batch_id, videos, job.annotations, load_model, job.cfg,
                              job.prompts, run_sam2=job.run_sam2, log=log, progress=progress, opener=opener)
        report.units = 1
        report.per_node[INLINE_NODE] = {"node": INLINE_NODE, "host": "", "units": 1, "videos": len(summary.labeled),
                                        "frames": summary.frames_labeled, "seconds": summary.seconds}
        return summary, report
    gpu = getattr(job.spec, "device", "auto") != "cpu" and runner.gpus > 0
    workers = runner.workers(gpu)
    units = pack_units({v["video_id"]: annotated_frames(v) for v in videos}, unit_frames, min_units=workers)
    report.units = len(units)
    log(f"labeling {len(videos)} videos in {len(units)} units over {workers} {'GPU' if gpu else 'CPU'} workers")
    summary, done = BatchLabelSummary(), [0]

    def on_done(o: UnitOutcome) -> None:
        done[0] += 1
        if o.lost:
            report.units_lost += 1
            lost = record_lost(lake, job.batch_id, o.unit.items, o.lost, started, summary.model_name)
            for vid in lost:
                summary.failed[vid] = f"{WORKER_LOST}: {o.lost}"
            log(f"unit {done[0]}/{len(units)} LOST after its retries ({o.lost}): {len(lost)} videos recorded "
                f"as {WORKER_LOST}")
            return
        merge(summary, o.result)
        _node_row(report, o, o.result)
        log(f"unit {done[0]}/{len(units)} done on {o.host} ({o.node[:12]}): {len(o.result.labeled)} labeled, "
            f"{len(o.result.skipped)} skipped, {len(o.result.failed)} failed, {o.result.frames_labeled} frames "
            f"in {o.seconds:.1f}s")

    outcomes = runner.map(label_unit, units, (job,), gpu=gpu, on_done=on_done)
    report.units_retried = sum(1 for o in outcomes if o.attempts > 1)
    summary.seconds = time.time() - t0
    return summary, report

"""raw_videos and video_quality: probe, hash, quarantine and quality-filter each ingestion batch.

Run config defaults come from the lib: ``ProbeLimits`` (lib/video/probe.py), ``ingest_batch``'s
``workers`` (lib/ingest/ingest_batch.py) and ``QualityThresholds`` (lib/ingest/quality.py).

With ``SAV_RAY_ADDRESS`` set, probing and quality sampling run as ``num_cpus=1`` units on the cluster
runner (``lib/ingest/fanout.py``); unset, in this process as before (Ray never imported).
"""

import datetime
import json
from collections import Counter

import dagster as dg
from pydantic import Field

from sav_assets.defs.metadata import counts_md, refresh_views, table_metadata
from sav_assets.defs.partitions import batches, other_batches
from sav_assets.defs.tunables import lib_field, to_lib
from sav_assets.lib.ingest.ingest_batch import ingest_batch
from sav_assets.lib.ingest.quality import QualityThresholds
from sav_assets.lib.video.probe import ProbeLimits
from sav_assets.resources import LakeResource, SourceResource


class IngestConfig(dg.Config):
    """Limits checked from the container header before any decoding, and probe isolation."""

    max_width: int = lib_field(ProbeLimits, "max_width", "wider videos are quarantined (over_limits)")
    max_height: int = lib_field(ProbeLimits, "max_height", "taller videos are quarantined (over_limits)")
    max_duration_s: float = lib_field(ProbeLimits, "max_duration_s", "longer videos are quarantined (over_limits)")
    max_bytes: int = lib_field(ProbeLimits, "max_bytes", "bigger files are quarantined (over_limits)")
    probe_timeout_s: float = lib_field(ProbeLimits, "timeout_s", "wall-clock limit of the isolated probe "
                                       "process (decoder_timeout)")
    probe_memory_mb: int = lib_field(ProbeLimits, "memory_mb", "address-space limit of the probe process, MB")
    workers: int = lib_field(ingest_batch, "workers", "videos probed in parallel")
    batch_plan: str = Field(default="", description="the batch plan (JSON) this run claims, set by the schedule "
                                                    "or sensor that requested it; empty: the batch's manifest in the lake")

    def probe_limits(self) -> ProbeLimits:
        return to_lib(ProbeLimits, self, timeout_s="probe_timeout_s", memory_mb="probe_memory_mb")


@dg.asset(
    partitions_def=batches,
    group_name="ingestion",
    kinds={"parquet", "duckdb"},
    description="One row per video file of the batch: probed in an isolated subprocess (decord), "
                "content-hashed, and either ok or quarantined with an error class.",
)
def raw_videos(context: dg.AssetExecutionContext, config: IngestConfig, lake: LakeResource,
               source: SourceResource) -> dg.MaterializeResult:
    from sav_assets.defs.automation import claim_run_batch
    from sav_assets.defs.label import connect_runner
    from sav_assets.lib.ingest.batches import claim_contents, tombstones
    from sav_assets.lib.ingest.fanout import probe_on
    from sav_assets.lib.store.tables import SOURCE_OBJECTS, VIDEOS, to_table

    batch_id = context.partition_key
    lk = lake.lake()
    manifest = claim_run_batch(context, lk, config.batch_plan)     # the run's first step: claim the batch
    src = source.source(manifest.get("source_uri"))
    prior = lk.read_table("videos", batches=other_batches(lk, "videos", batch_id), schema=VIDEOS).to_pylist()
    limits = config.probe_limits()
    runner = connect_runner(lk, source)     # in-process unless SAV_RAY_ADDRESS is set
    try:
        probe = None if runner.kind == "inline" else probe_on(runner, source.source_factory(), src.uri,
                                                              limits, log=context.log.info)
        res = ingest_batch(src, manifest, batch_id, prior, limits, workers=config.workers,
                           log=context.log.info, taken_down=tombstones(lk),   # taken-down content: refused rows
                           probe=probe)
    finally:
        runner.close()
    res = claim_contents(lk, batch_id, res)     # content another batch claimed first: duplicate_content
    videos = to_table(res.videos, VIDEOS)
    uri = lk.replace_batch("videos", batch_id, videos)
    lk.replace_batch("source_objects", batch_id, to_table(res.objects, SOURCE_OBJECTS))
    refresh_views(context, lk)
    errors = Counter(v["error_class"] for v in res.videos if v["status"] == "quarantined")
    if errors:
        context.log.warning(f"quarantined {sum(errors.values())} file(s): {dict(errors)}")
    return dg.MaterializeResult(metadata={
        **table_metadata("videos", videos, uri, ["video_id", "status", "error_class", "video_width",
                                                 "video_height", "video_duration", "video_fps", "codec"]),
        "batch_id": batch_id,
        "source_uri": dg.MetadataValue.text(manifest.get("source_uri", "")),
        "objects": res.counts["objects"],
        "videos_ok": res.counts["videos_ok"],
        "videos_quarantined": res.counts["videos_quarantined"],
        "duplicate_content": res.counts["duplicate_content"],
        "taken_down_refused": res.counts["taken_down"],
        "non_video_skipped": res.counts["non_video"],
        "sidecars": res.counts["sidecar"],
        "annotations": res.counts["annotation"],
        "quarantine_by_error_class": counts_md(dict(errors), "error_class", "files"),
    })


class QualityConfig(dg.Config):
    """Quality thresholds (SA-V-like defaults) and the licence allowlist."""

    min_short_side: int = lib_field(QualityThresholds, "min_short_side", "px; smaller: low_resolution")
    min_duration_s: float = lib_field(QualityThresholds, "min_duration_s", "shorter: too_short")
    max_duration_s: float = lib_field(QualityThresholds, "max_duration_s", "longer: too_long")
    min_fps: float = lib_field(QualityThresholds, "min_fps", "lower frame rate: fps_out_of_range")
    max_fps: float = lib_field(QualityThresholds, "max_fps", "higher frame rate: fps_out_of_range")
    min_sharpness: float = lib_field(QualityThresholds, "min_sharpness", "variance of the Laplacian; below: blurry")
    min_brightness: float = lib_field(QualityThresholds, "min_brightness", "mean luma 0-255; below: too_dark")
    max_brightness: float = lib_field(QualityThresholds, "max_brightness", "mean luma 0-255; above: too_bright")
    max_clipped_fraction: float = lib_field(QualityThresholds, "max_clipped_fraction",
                                            "fraction of clipped pixels; above: clipped")
    max_camera_shake: float = lib_field(QualityThresholds, "max_camera_shake",
                                        "global motion per frame (fraction of the frame); above: shaky")
    min_motion: float = lib_field(QualityThresholds, "min_motion", "mean frame difference; below: static")
    dup_max_hamming: int = lib_field(QualityThresholds, "dup_max_hamming",
                                     "perceptual-hash distance at or below which a video is a near-duplicate")
    sample_frames: int = lib_field(QualityThresholds, "sample_frames", "frames sampled per video for the metrics")
    decode_timeout_s: float = lib_field(QualityThresholds, "decode_timeout_s",
                                        "wall-clock limit of the isolated frame-sampling process")
    decode_memory_mb: int = lib_field(QualityThresholds, "decode_memory_mb",
                                      "address-space limit of the frame-sampling process, MB")
    max_side: int = lib_field(QualityThresholds, "max_side", "sampled frames are downscaled to this long side")
    licence_allowlist: list[str] = lib_field(QualityThresholds, "licence_allowlist",
                                             "licences (sidecar / object metadata) that pass")
    unknown_licence_ok: bool = lib_field(QualityThresholds, "unknown_licence_ok",
                                         "a video without a licence passes")

    def thresholds(self) -> QualityThresholds:
        return to_lib(QualityThresholds, self)


@dg.asset(
    partitions_def=batches,
    group_name="ingestion",
    kinds={"parquet"},
    deps=["raw_videos"],
    description="Per video: resolution, duration, fps, sharpness, exposure, camera shake, static content, "
                "near-duplicates against every earlier batch, licence; a verdict with every failing reason.",
)
def video_quality(context: dg.AssetExecutionContext, config: QualityConfig, lake: LakeResource,
                  source: SourceResource) -> dg.MaterializeResult:
    from sav_assets.defs.label import connect_runner
    from sav_assets.lib.ingest.fanout import assess_on
    from sav_assets.lib.ingest.quality import assess_batch, reason_counts
    from sav_assets.lib.store.source import SourceOpener
    from sav_assets.lib.store.tables import VIDEO_QUALITY, VIDEOS, to_table

    batch_id = context.partition_key
    lk = lake.lake()
    ok = [v for v in lk.read_table("videos", batches=[batch_id], schema=VIDEOS).to_pylist() if v["status"] == "ok"]
    prior = lk.read_table("video_quality", batches=other_batches(lk, "video_quality", batch_id),
                          columns=["video_id", "batch_id", "phash", "passed", "duplicate_of", "short_side",
                                   "video_duration"], schema=VIDEO_QUALITY).to_pylist()
    sidecars = {v["video_id"]: (json.loads(v["sidecar_json"]) if v["sidecar_json"] else None) for v in ok}
    runner = connect_runner(lk, source)     # in-process unless SAV_RAY_ADDRESS is set
    try:
        if runner.kind == "inline":
            with SourceOpener(source.source).local_videos(ok) as paths:   # the source's store, not the lake's
                rows = assess_batch(ok, paths, sidecars, prior, config.thresholds())
        else:
            rows = assess_on(runner, ok, sidecars, prior, config.thresholds(), source.source_factory(),
                             log=context.log.info)
    finally:
        runner.close()
    now = datetime.datetime.now(datetime.timezone.utc)
    for r in rows:
        r["batch_id"], r["evaluated_at"] = batch_id, now
    tbl = to_table(rows, VIDEO_QUALITY)
    uri = lk.replace_batch("video_quality", batch_id, tbl)
    refresh_views(context, lk)
    passed = sum(1 for r in rows if r["passed"])
    return dg.MaterializeResult(metadata={
        **table_metadata("video_quality", tbl, uri, ["video_id", "passed", "reasons", "duplicate_of", "short_side",
                                                     "video_duration", "sharpness", "brightness", "camera_shake"]),
        "batch_id": batch_id,
        "videos_assessed": len(rows),
        "videos_passed": passed,
        "videos_rejected": len(rows) - passed,
        "rejections_by_reason": counts_md(reason_counts(rows), "reason", "videos"),
    })

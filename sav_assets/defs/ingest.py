"""raw_videos and video_quality: probe, hash, quarantine and quality-filter each ingestion batch."""


import datetime
import json
from collections import Counter

import dagster as dg

from sav_assets.defs.common import (batches, counts_markdown, other_batches, refresh_views,
                                    table_metadata)
from sav_assets.resources import LakeResource, SourceResource


class IngestConfig(dg.Config):
    """Limits checked from the container header before any decoding, and probe isolation."""

    max_width: int = 7680
    max_height: int = 4320
    max_duration_s: float = 3600.0
    max_bytes: int = 20 * 1024**3
    probe_timeout_s: float = 60.0
    probe_memory_mb: int = 4096
    workers: int = 2


@dg.asset(
    partitions_def=batches,
    group_name="ingestion",
    kinds={"parquet", "duckdb"},
    description="One row per video file of the batch: probed in an isolated subprocess (decord), "
                "content-hashed, and either ok or quarantined with an error class.",
)
def raw_videos(context: dg.AssetExecutionContext, config: IngestConfig, lake: LakeResource,
               source: SourceResource) -> dg.MaterializeResult:
    from sav_assets.lib.ingest.ingest_batch import ingest_batch
    from sav_assets.lib.video.probe import ProbeLimits
    from sav_assets.lib.store.source import Source, read_manifest
    from sav_assets.lib.store.tables import SOURCE_OBJECTS, VIDEOS, to_table

    batch_id = context.partition_key
    lk = lake.lake()
    manifest = read_manifest(lk, batch_id)
    src = source.source(manifest.get("source_uri"))
    assert isinstance(src, Source)
    prior = lk.read_table("videos", batches=other_batches(lk, "videos", batch_id), schema=VIDEOS).to_pylist()
    limits = ProbeLimits(max_width=config.max_width, max_height=config.max_height,
                         max_duration_s=config.max_duration_s, max_bytes=config.max_bytes,
                         timeout_s=config.probe_timeout_s, memory_mb=config.probe_memory_mb)
    res = ingest_batch(src, manifest, batch_id, prior, limits, workers=config.workers, log=context.log.info)
    videos = to_table(res.videos, VIDEOS)
    objects = to_table(res.objects, SOURCE_OBJECTS)
    uri = lk.replace_batch("videos", batch_id, videos)
    lk.replace_batch("source_objects", batch_id, objects)
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
        "non_video_skipped": res.counts["non_video"],
        "sidecars": res.counts["sidecar"],
        "annotations": res.counts["annotation"],
        "quarantine_by_error_class": dg.MetadataValue.md(counts_markdown(dict(errors), "error_class", "files")
                                                         if errors else "_none_"),
    })


class QualityConfig(dg.Config):
    """Quality thresholds (SA-V-like defaults) and the licence allowlist."""

    min_short_side: int = 720
    min_duration_s: float = 5.0
    max_duration_s: float = 60.0
    min_fps: float = 15.0
    max_fps: float = 120.0
    min_sharpness: float | None = None
    min_brightness: float | None = None
    max_brightness: float | None = None
    max_clipped_fraction: float | None = None
    max_camera_shake: float | None = None
    min_motion: float | None = None
    dup_max_hamming: int | None = None
    sample_frames: int = 8
    licence_allowlist: list[str] | None = None
    unknown_licence_ok: bool = True


def quality_thresholds(config: QualityConfig):
    from sav_assets.lib.ingest.quality import QualityThresholds

    kw = {k: v for k, v in config.model_dump().items() if v is not None}
    if "licence_allowlist" in kw:
        kw["licence_allowlist"] = tuple(kw["licence_allowlist"])
    return QualityThresholds(**kw)


@dg.asset(
    partitions_def=batches,
    group_name="ingestion",
    kinds={"parquet"},
    deps=[raw_videos],
    description="Per video: resolution, duration, fps, sharpness, exposure, camera shake, static content, "
                "near-duplicates against every earlier batch, licence; a verdict with every failing reason.",
)
def video_quality(context: dg.AssetExecutionContext, config: QualityConfig, lake: LakeResource) -> dg.MaterializeResult:
    import contextlib

    from sav_assets.lib.ingest.quality import assess_batch, reason_counts
    from sav_assets.lib.store.tables import VIDEO_QUALITY, VIDEOS, to_table

    batch_id = context.partition_key
    lk = lake.lake()
    videos = lk.read_table("videos", batches=[batch_id], schema=VIDEOS).to_pylist()
    ok = [v for v in videos if v["status"] == "ok"]
    prior = lk.read_table("video_quality", batches=other_batches(lk, "video_quality", batch_id),
                          columns=["video_id", "phash"], schema=VIDEO_QUALITY).to_pylist()
    prior_hashes = {r["video_id"]: list(r["phash"] or []) for r in prior}
    sidecars = {v["video_id"]: (json.loads(v["sidecar_json"]) if v["sidecar_json"] else None) for v in ok}
    with contextlib.ExitStack() as stack:
        paths = {v["video_id"]: stack.enter_context(lk.local_file(v["source_uri"]))
                 for v in ok}
        rows = assess_batch(ok, paths, sidecars, prior_hashes, quality_thresholds(config))
    now = datetime.datetime.now(datetime.timezone.utc)
    for r in rows:
        r["batch_id"], r["evaluated_at"] = batch_id, now
    tbl = to_table(rows, VIDEO_QUALITY)
    uri = lk.replace_batch("video_quality", batch_id, tbl)
    refresh_views(context, lk)
    reasons = reason_counts(rows)
    passed = sum(1 for r in rows if r["passed"])
    return dg.MaterializeResult(metadata={
        **table_metadata("video_quality", tbl, uri, ["video_id", "passed", "reasons", "duplicate_of", "short_side",
                                                     "video_duration", "sharpness", "brightness", "camera_shake"]),
        "batch_id": batch_id,
        "videos_assessed": len(rows),
        "videos_passed": passed,
        "videos_rejected": len(rows) - passed,
        "rejections_by_reason": dg.MetadataValue.md(counts_markdown(reasons, "reason", "videos") if reasons else "_none_"),
    })

"""masklets (SAM 2 automatic + prompted + imported SA-V) and the SA-V JSON export."""


import dataclasses
from typing import Optional

import dagster as dg

from sav_assets.defs.common import batches, counts_markdown, refresh_views, table_metadata
from sav_assets.defs.ingest import video_quality
from sav_assets.resources import LakeResource, SAM2Resource, SourceResource


class LabelingConfig(dg.Config):
    """SAM 2 labeling: the annotation rate, mask-generator seeding, re-seeding and memory bounds."""

    run_sam2: bool = True                  # False: only import SA-V annotations found beside the videos
    target_fps: float = 6.0                # SA-V rate: every 4th frame of a 24 fps video
    points_per_side: Optional[int] = None  # mask generator grid (default: the labeler's)
    pred_iou_thresh: Optional[float] = None
    stability_score_thresh: Optional[float] = None
    box_nms_thresh: Optional[float] = None
    max_objects: Optional[int] = None
    reseed_every: Optional[int] = None     # annotated frames between re-seeding (0: off)
    chunk_frames: Optional[int] = None     # annotated frames per chunk for long videos
    cycle_check: Optional[bool] = None
    prompts_uri: Optional[str] = None      # JSONL/CSV/JSON of point/box prompts ($SAV_PROMPTS_URI)
    annotation_prefix: Optional[str] = None  # also look for <video_id>_manual.json under this source prefix
    max_videos: Optional[int] = None       # label at most this many videos of the batch (smoke runs)


def labeler_config(config: LabelingConfig):
    from sav_assets.lib.label.labeler import LabelerConfig

    names = {f.name for f in dataclasses.fields(LabelerConfig)}
    kw = {k: v for k, v in config.model_dump().items() if k in names and v is not None}
    return LabelerConfig(**kw)


@dg.asset(
    partitions_def=batches,
    group_name="labeling",
    kinds={"pytorch", "parquet"},
    deps=[video_quality],
    pool="gpu",
    description="SAM 2 masklets for the batch's videos that passed quality: automatic (seeded by the mask "
                "generator, propagated by the video predictor, re-seeded for objects that enter later), "
                "prompted, and imported SA-V manual/auto annotations. Tables: masklets, masklet_frames, "
                "label_runs.",
)
def masklets(context: dg.AssetExecutionContext, config: LabelingConfig, lake: LakeResource,
             source: SourceResource, sam2: SAM2Resource) -> dg.MaterializeResult:
    import os

    from sav_assets.lib.label.batch import label_batch
    from sav_assets.lib.store.tables import MASKLETS, SOURCE_OBJECTS, VIDEO_QUALITY, VIDEOS

    batch_id = context.partition_key
    lk = lake.lake()
    videos = lk.read_table("videos", batches=[batch_id], schema=VIDEOS).to_pylist()
    passed = {r["video_id"] for r in lk.read_table("video_quality", batches=[batch_id], schema=VIDEO_QUALITY).to_pylist()
              if r["passed"]}
    todo = [v for v in videos if v["status"] == "ok" and v["video_id"] in passed]
    if config.max_videos is not None:
        todo = todo[: config.max_videos]
    # SA-V annotations beside each video (same batch or any earlier one), or under annotation_prefix.
    objects = lk.read_table("source_objects", schema=SOURCE_OBJECTS).to_pylist()
    ann_keys = {o["source_key"]: o["source_uri"] for o in objects if o["disposition"] == "annotation"}
    annotations: dict[str, dict[str, str]] = {}
    for v in todo:
        stem = v["source_key"].rsplit(".", 1)[0]
        base = v["source_key"].rsplit("/", 1)[0] + "/" if "/" in v["source_key"] else ""
        for kind in ("manual", "auto"):
            cands = [f"{stem}_{kind}.json", f"{base}{v['video_id']}_{kind}.json"]
            if config.annotation_prefix:
                cands.append(f"{config.annotation_prefix.strip('/')}/{v['video_id']}_{kind}.json")
            for c in cands:
                if c in ann_keys:
                    annotations.setdefault(v["video_id"], {})[kind] = ann_keys[c]
                    break
    prompts = None
    prompts_uri = config.prompts_uri or os.environ.get("SAV_PROMPTS_URI")
    if prompts_uri:
        from sav_assets.lib.label.prompts import load_prompts

        with lk.local_file(prompts_uri) as p:
            prompts = load_prompts(open(p, "rb").read())

    def progress(i, n, vid):
        context.log.info(f"labeling {i}/{n}: {vid}")

    summary = label_batch(lk, batch_id, todo, annotations, sam2.load, labeler_config(config), prompts,
                          run_sam2=config.run_sam2, log=context.log.info, progress=progress)
    refresh_views(context, lk)
    if summary.random_weights:
        context.log.warning("SAM 2 ran with RANDOM WEIGHTS (no SAV_SAM2_CHECKPOINT): masks are meaningless, "
                            "every masklet is tagged random_weights=true — do not train on them.")
    tbl = lk.read_table("masklets", batches=[batch_id], schema=MASKLETS)
    md = {
        **table_metadata("masklets", tbl, lk.uri(f"tables/masklets/{batch_id}"),
                         ["video_id", "masklet_id", "masklet_type", "masklet_size_bucket", "masklet_frame_count",
                          "masklet_visibility_changes", "masklet_first_appeared_frame"]),
        "batch_id": batch_id,
        "videos_to_label": len(todo),
        "videos_labeled": len(summary.labeled),
        "videos_skipped_already_labeled": len(summary.skipped),
        "videos_failed": len(summary.failed),
        "videos_with_imported_annotations": len(summary.imported),
        "masklets_by_type": dg.MetadataValue.md(counts_markdown(summary.masklets_by_type, "masklet_type", "masklets")
                                                if summary.masklets_by_type else "_none_"),
        "frames_labeled": summary.frames_labeled,
        "frames_per_second": round(summary.frames_labeled / summary.seconds, 3) if summary.seconds else 0.0,
        "peak_host_mb": round(summary.peak_host_mb, 1),
        "peak_gpu_mb": round(summary.peak_gpu_mb, 1),
        "model": summary.model_name or "",
        "random_weights": bool(summary.random_weights),
    }
    if summary.failed:
        md["failures"] = dg.MetadataValue.md(counts_markdown({k: 1 for k in summary.failed}, "video", "failed")
                                             + "\n\n" + "\n".join(f"- `{k}`: {v}" for k, v in summary.failed.items()))
    if summary.overlay_png:
        import base64

        b64 = base64.b64encode(summary.overlay_png).decode()
        md["sample_overlay"] = dg.MetadataValue.md(f"masks over a frame of `{summary.overlay_video}`\n\n"
                                                   f"![overlay](data:image/png;base64,{b64})")
        lk.put_bytes(f"previews/{batch_id}/{summary.overlay_video}.png", summary.overlay_png, "image/png")
    return dg.MaterializeResult(metadata=md)


@dg.asset(
    partitions_def=batches,
    group_name="labeling",
    kinds={"json"},
    deps=[masklets],
    description="SA-V JSON (<video_id>_auto.json / _manual.json, plus _prompted.json) for every labeled "
                "video of the batch under <lake root>/exports/sav/.",
)
def sav_export(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    from sav_assets.lib.sav.exports import export_sav_all

    lk = lake.lake()
    written = export_sav_all(lk, None, batches=[context.partition_key])
    return dg.MaterializeResult(metadata={
        "files": len(written),
        "destination": dg.MetadataValue.path(lk.uri("exports/sav")),
        "sample": dg.MetadataValue.json(written[:10]),
    })

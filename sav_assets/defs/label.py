"""masklets (SAM 2 automatic + prompted + imported SA-V) and the SA-V JSON export.

``LabelingConfig`` takes every labeling default from ``LabelerConfig`` (lib/label/config.py).
``masklets`` carries a code_version derived from the SAM 2 spec and the labeling defaults
(``labels_code_version``), applied when the definitions are built, so the UI marks the labels stale
after a model swap. After labeling, ``masklets`` applies the corrections found under
``<root>/reviews/`` (lib/label/corrections.py) and only then consolidates the batch's per-video parts,
so the merge takes the rewritten parts.
"""

import base64
import dataclasses
import posixpath

import dagster as dg
from pydantic import Field

from sav_assets.defs.metadata import counts_md, refresh_views, table_metadata
from sav_assets.defs.partitions import batches
from sav_assets.defs.tunables import lib_field, to_lib
from sav_assets.lib.label.batch import label_batch
from sav_assets.lib.label.config import LABELER_VERSION, LabelerConfig
from sav_assets.lib.label.model import ModelSpec
from sav_assets.lib.label.runners import LabelJob, run_labeling
from sav_assets.lib.util import sha256_json
from sav_assets.resources import LakeResource, SAM2Resource, SourceResource

L = LabelerConfig


class LabelingConfig(dg.Config):
    """SAM 2 labeling: the annotation rate, mask-generator seeding, re-seeding and memory bounds."""

    run_sam2: bool = lib_field(label_batch, "run_sam2", "False: only import SA-V annotations found beside the videos")
    target_fps: float = lib_field(L, "target_fps", "annotation grid rate (SA-V: 6 fps, every 4th frame at 24 fps)")
    points_per_side: int = lib_field(L, "points_per_side", "mask generator grid on seeding frames")
    points_per_batch: int = lib_field(L, "points_per_batch", "mask generator points per forward pass")
    pred_iou_thresh: float = lib_field(L, "pred_iou_thresh", "mask generator: minimum predicted IoU of a seed")
    stability_score_thresh: float = lib_field(L, "stability_score_thresh", "mask generator: minimum stability")
    box_nms_thresh: float = lib_field(L, "box_nms_thresh", "mask generator: box NMS threshold between seeds")
    min_mask_region_area: int = lib_field(L, "min_mask_region_area", "px; >0 removes smaller islands/holes from seeds")
    min_area_frac: float = lib_field(L, "min_area_frac", "seeds smaller than this fraction of the frame are dropped")
    max_objects: int = lib_field(L, "max_objects", "masklets per video at most (prompted ones are always kept)")
    reseed_every: int = lib_field(L, "reseed_every", "annotated frames between re-seeding; 0: seed on frame 0 only")
    seed_policy: str = lib_field(L, "seed_policy", "where re-seeding prompts the mask generator: uncovered (grid "
                                 "points no tracked mask covers), grid (every point), first_frame (frame 0 only)")
    new_object_max_overlap: float = lib_field(L, "new_object_max_overlap", "a seed covered by tracked masks "
                                              "below this fraction starts a new masklet")
    chunk_frames: int = lib_field(L, "chunk_frames", "annotated frames decoded and held at once")
    offload_video_to_cpu: bool = lib_field(L, "offload_video_to_cpu", "keep decoded frames on the host")
    offload_state_to_cpu: bool = lib_field(L, "offload_state_to_cpu", "keep the tracking state on the host")
    max_memory_frames: int = lib_field(L, "max_memory_frames", "non-conditioning frame outputs kept per cohort")
    cycle_check: bool = lib_field(L, "cycle_check", "backward propagation agreement (masklet_cycle_iou)")
    cycle_frames: int = lib_field(L, "cycle_frames", "annotated frames the backward check covers from the last one, "
                                  "on the forward pass's features; 0: the whole video, re-encoded")
    isolate_decode: bool = lib_field(L, "isolate_decode", "decode in a subprocess (crash/hang isolation)")
    decode_timeout_s: float = lib_field(L, "decode_timeout_s", "per chunk, isolated decoding only")
    prefetch: bool = lib_field(L, "prefetch", "decode the next chunk while the current one is tracked")
    overlay_width: int = lib_field(L, "overlay_width", "sample overlay PNG width (0: no overlay)")
    writer_depth: int = lib_field(L, "writer_depth", "frames of masks queued to the host-copy / RLE thread (0: inline)")
    import_max_masklets: int = lib_field(L, "import_max_masklets", "an SA-V file with more masklets is refused")
    import_max_frames: int = lib_field(L, "import_max_frames", "an SA-V file with more annotated frames is refused")
    prompts_uri: str | None = Field(default=None, description="JSONL/CSV/JSON of point/box prompts; unset: "
                                       "the source resource's (SAV_PROMPTS_URI), else none")
    annotation_prefix: str | None = Field(default=None, description="also look for <video_id>_manual.json "
                                             "under this source prefix")
    max_videos: int | None = Field(default=None, description="label at most this many videos of the batch "
                                      "(smoke runs); unset: all")
    unit_frames: int = lib_field(run_labeling, "unit_frames", "on Ray (SAV_RAY_ADDRESS): annotated frames per "
                                 "unit of whole videos, one task each (at least one unit per worker)")

    def labeler_config(self) -> LabelerConfig:
        return to_lib(LabelerConfig, self)


def labels_code_version(spec: ModelSpec) -> str:
    """A digest of what makes the labels: the model (config, checkpoint and its pin, input size,
    precision, seed, single-mask tracking) and the labeling defaults. Built from the resource's env-resolved spec, without
    loading torch or SAM 2; a checkpoint replaced under the same path is noticed only through
    SAV_SAM2_CHECKPOINT_SHA256."""
    model = {k: v for k, v in dataclasses.asdict(spec).items() if k not in ("device", "compile", "cache_dir")}
    if model.get("multimask_tracking", True):   # sam2's default: the versions written before the field existed
        model.pop("multimask_tracking", None)
    return sha256_json({"labeler": LABELER_VERSION, "model": model,
                        "defaults": dataclasses.asdict(LabelerConfig())})[:16]


def annotation_uris(videos: list[dict], objects: list[dict], prefix: str | None) -> dict[str, dict[str, str]]:
    """``{video_id: {"manual"|"auto": uri}}``: SA-V files beside each video (named after its file stem or
    its video_id), or under ``prefix``; from the ``source_objects`` rows of any batch."""
    from sav_assets.lib.sav.annotations import find_annotation_files

    ann = {o["source_key"]: o["source_uri"] for o in objects if o["disposition"] == "annotation"}
    found: dict[str, dict[str, str]] = {}
    for v in videos:
        by_id = posixpath.join(posixpath.dirname(v["source_key"]), v["video_id"] + ".mp4")
        keys = {**find_annotation_files(by_id, list(ann), prefix),
                **find_annotation_files(v["source_key"], list(ann), prefix)}
        if keys:
            found[v["video_id"]] = {kind: ann[k] for kind, k in keys.items()}
    return found


@dg.asset(
    partitions_def=batches,
    group_name="labeling",
    kinds={"pytorch", "parquet"},
    deps=["video_quality"],
    pool="gpu",
    description="SAM 2 masklets for the batch's videos that passed quality: automatic (seeded by the mask "
                "generator, propagated by the video predictor, re-seeded for objects that enter later), "
                "prompted, and imported SA-V manual/auto annotations; reviewers' corrections (<root>/reviews/) "
                "re-propagate the corrected masklets. Tables: masklets, masklet_frames, label_runs, masklet_edits.",
)
def masklets(context: dg.AssetExecutionContext, config: LabelingConfig, lake: LakeResource,
             source: SourceResource, sam2: SAM2Resource) -> dg.MaterializeResult:
    from sav_assets.lib.store.source import SourceOpener
    from sav_assets.lib.store.tables import MASKLETS, SOURCE_OBJECTS, VIDEO_QUALITY, VIDEOS

    batch_id = context.partition_key
    lk = lake.lake()
    videos = lk.read_table("videos", batches=[batch_id], schema=VIDEOS).to_pylist()
    passed = {r["video_id"] for r in lk.read_table("video_quality", batches=[batch_id], schema=VIDEO_QUALITY).to_pylist()
              if r["passed"]}
    todo = [v for v in videos if v["status"] == "ok" and v["video_id"] in passed][: config.max_videos]
    annotations = annotation_uris(todo, lk.read_table("source_objects", schema=SOURCE_OBJECTS).to_pylist(),
                                  config.annotation_prefix)
    opener = SourceOpener(source.source)    # videos, annotations and prompts: the source's stores
    prompts = None
    prompts_uri = config.prompts_uri or source.default_prompts_uri
    if prompts_uri:
        from sav_assets.lib.label.prompts import load_prompts, resolve_batch_prompts

        with opener.local_path(prompts_uri) as p, open(p, "rb") as fh:
            prompts = load_prompts(fh.read())
        # keys may be file names, URIs or SHA-256s: to video_id; unknown/ambiguous ones are label_runs rows
        resolution = resolve_batch_prompts(lk, batch_id, prompts, todo)
        prompts = resolution.by_video
        for problem in resolution.problems:
            context.log.warning(f"prompts: {problem['error_class']}: {problem['message']}")

    def progress(i, n, vid):
        context.log.info(f"labeling {i}/{n}: {vid}")

    runner = connect_runner(lk, source)     # in-process unless SAV_RAY_ADDRESS is set
    job = LabelJob(lake.lake_factory(), source.source_factory(), batch_id, {v["video_id"]: v for v in todo},
                   annotations, sam2.spec(), config.labeler_config(), prompts, config.run_sam2)
    try:
        summary, report = run_labeling(runner, job, lk, opener, sam2.load, unit_frames=config.unit_frames,
                                       log=context.log.info, progress=progress)
    finally:
        runner.close()
    fixes = apply_review_corrections(lk, batch_id, videos, sam2.load, config.labeler_config(), opener, context.log.info)
    from sav_assets.lib.store.consolidation import consolidate_label_batch

    consolidate_label_batch(lk, batch_id, log=context.log.info)   # per-video parts -> one file per batch
    refresh_views(context, lk)
    if summary.random_weights:
        context.log.warning("SAM 2 ran with RANDOM WEIGHTS (no SAV_SAM2_CHECKPOINT): masks are meaningless, "
                            "every masklet is tagged random_weights=true — do not train on them.")
    strips = write_batch_filmstrips(lk, batch_id, todo, opener)
    tbl = lk.read_table("masklets", batches=[batch_id], schema=MASKLETS)
    return dg.MaterializeResult(metadata={
        **table_metadata("masklets", tbl, lk.uri(f"tables/masklets/{batch_id}"),
                         ["video_id", "masklet_id", "masklet_type", "masklet_size_bucket", "masklet_frame_count",
                          "masklet_visibility_changes", "masklet_first_appeared_frame"]),
        "batch_id": batch_id,
        "videos_to_label": len(todo),
        **_summary_metadata(summary),
        **runner_metadata(report),
        **correction_metadata(fixes),
        **filmstrip_metadata(lk, batch_id, strips),
    })


def apply_review_corrections(lk, batch_id: str, videos: list[dict], load_model, cfg, opener, log):
    """Corrections dropped under <root>/reviews/ (lib/label/corrections.py), applied to the batch's
    labeled videos before its parts are consolidated (so the merge takes the rewritten parts)."""
    from sav_assets.lib.label.corrections import CorrectionSummary, apply_corrections, is_correction
    from sav_assets.lib.qc.reviews import review_items
    from sav_assets.lib.store.tables import VIDEOS

    items = [i for i in review_items(lk) if is_correction(i[2])]
    if not items:                    # no correction pending: the lake's videos need not be read
        return CorrectionSummary()
    ok = [v for v in lk.read_table("videos", schema=VIDEOS).to_pylist() if v["status"] == "ok"]
    return apply_corrections(lk, batch_id, [v for v in videos if v["status"] == "ok"], items, load_model,
                             cfg, all_videos=ok, opener=opener, log=log)


def correction_metadata(fixes) -> dict:
    """Corrections applied by this run, masklets re-propagated, and the corrections refused."""
    md = {"corrections_applied": fixes.applied, "masklets_repropagated": len(fixes.masklets),
          "correction_errors": len(fixes.errors)}
    if fixes.errors:
        md["correction_error_details"] = dg.MetadataValue.md(
            "\n".join(f"- `{r['error_class']}`: {r['error_message']}" for r in fixes.errors))
    return md


def connect_runner(lk, source: SourceResource):
    """The step's runner (``SAV_RAY_ADDRESS``); a remote cluster with a local lake or source root is
    refused here unless ``SAV_SHARED_FS=1``."""
    from sav_assets.lib.cluster.runner import connect, require_shared
    from sav_assets.resources import cluster_settings

    settings = cluster_settings()
    if settings.remote:
        local = {"lake": lk.store.local_root, "source": source.source().store.local_root}
        require_shared(settings, {k: (str(v) if v is not None else None) for k, v in local.items()})
    return connect(settings)


def runner_metadata(report) -> dict:
    """Units, retries, losses and per-node throughput of a labeling run."""
    from sav_assets.lib.label.runners import node_table

    return {"units": report.units, "units_retried": report.units_retried, "units_lost": report.units_lost,
            "throughput_by_node": dg.MetadataValue.md(node_table(report))}


def write_batch_filmstrips(lk, batch_id: str, videos: list[dict], opener, qc_rows: list[dict] | None = None):
    """The batch's filmstrips (exports/previews/<batch>/, and exports/review/<batch>/ with QC rows)."""
    from sav_assets.lib.label.filmstrip import write_filmstrips
    from sav_assets.lib.store.tables import MASKLET_FRAMES

    cols = ["video_id", "masklet_id", "masklet_type", "frame_idx", "size", "counts", "visible"]
    frames = lk.read_table("masklet_frames", batches=[batch_id], schema=MASKLET_FRAMES).select(cols).to_pylist()
    return write_filmstrips(lk, batch_id, videos, frames, qc_rows, opener)


def filmstrip_metadata(lk, batch_id: str, strips) -> dict:
    """The first strips as images (Markdown with embedded PNGs), where all of them are, and what failed."""
    from sav_assets.lib.label.filmstrip import metadata_markdown

    md = {"filmstrips_written": len(strips.previews),
          "filmstrips_folder": dg.MetadataValue.path(lk.uri(f"exports/previews/{batch_id}"))}
    if strips.pngs:
        md["filmstrips"] = dg.MetadataValue.md(metadata_markdown(strips.pngs))
    if strips.failed:
        md["filmstrips_failed"] = dg.MetadataValue.md("\n".join(f"- `{k}`: {v}" for k, v in strips.failed.items()))
    return md


def _summary_metadata(summary) -> dict:
    """What a labeling run reports: videos by outcome, masklets by type, speed, memory, a sample overlay."""
    md = {
        "videos_labeled": len(summary.labeled),
        "videos_skipped_already_labeled": len(summary.skipped),
        "videos_failed": len(summary.failed),
        "videos_with_imported_annotations": len(summary.imported),
        "masklets_by_type": counts_md(summary.masklets_by_type, "masklet_type", "masklets"),
        "frames_labeled": summary.frames_labeled,
        "frames_per_second": round(summary.frames_labeled / summary.seconds, 3) if summary.seconds else 0.0,
        "peak_host_mb": round(summary.peak_host_mb, 1),
        "peak_gpu_mb": round(summary.peak_gpu_mb, 1),
        "model": summary.model_name or "",
        "random_weights": bool(summary.random_weights),
    }
    if summary.warnings:
        md["annotation_warnings"] = dg.MetadataValue.md("\n".join(f"- {w}" for w in summary.warnings))
    if summary.failed:
        md["failures"] = dg.MetadataValue.md("\n".join(f"- `{k}`: {v}" for k, v in summary.failed.items()))
    if summary.overlay_png:
        b64 = base64.b64encode(summary.overlay_png).decode()
        md["sample_overlay"] = dg.MetadataValue.md(f"masks over a frame of `{summary.overlay_video}`\n\n"
                                                   f"![overlay](data:image/png;base64,{b64})")
    return md


@dg.asset(
    partitions_def=batches,
    group_name="labeling",
    kinds={"json"},
    deps=["masklets"],
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

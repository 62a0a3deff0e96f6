"""splits (sticky, leak-free), the SA-V evaluation layout, and WebDataset training shards.

``SplitsConfig``, ``EvalLayoutConfig`` and ``ShardsConfig`` take their defaults from ``SplitConfig``
(lib/dataset/splits.py), ``eval_ground_truth`` and ``train_inputs`` (lib/dataset/selection.py) and
``ShardConfig`` (lib/dataset/shards.py).

``eval_layout`` is partitioned like the rest but describes the whole lake: a batch's new val videos
change the layout of every val video so far (``sav_val.txt`` lists them all), so each run brings the
layout up to date from every batch's splits; materializing any batch gives the same, current layout.
It is incremental: only new or changed videos are written (lib/sav/eval_layout.py keeps a signature
per video), and ``masklet_frames`` is read from DuckDB one video at a time (memory bounded by the
largest video, not the dataset). Every
masklet left out of the layout's ground truth (by the QC rule, or not scorable) is listed in its metadata
with the reason.
"""

import datetime

import dagster as dg

from sav_assets.defs.metadata import counts_md, refresh_views, table_metadata
from sav_assets.defs.partitions import batches
from sav_assets.defs.tunables import lib_field, to_lib
from sav_assets.lib.dataset.selection import accepted, eval_ground_truth, train_inputs
from sav_assets.lib.dataset.shards import ShardConfig
from sav_assets.lib.dataset.splits import SplitConfig
from sav_assets.resources import LakeResource, SourceResource

# Downstream automation only proceeds when upstream blocking checks passed (QC gate, contracts).
GATED = dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed()


class SplitsConfig(dg.Config):
    """Validation target: a fraction (< 1) or a video count (>= 1, e.g. SA-V's 155)."""

    val_target: float = lib_field(SplitConfig, "val_target", "fraction of all videos if < 1, else a video count")
    test_target: float = lib_field(SplitConfig, "test_target", "same convention as val_target; 0: no test split")
    seed: str = lib_field(SplitConfig, "seed", "hash seed of the assignment (changing it reshuffles new videos)")
    stratify_by: list[str] = lib_field(SplitConfig, "stratify_by", "strata of the val/test draw")

    def split_config(self) -> SplitConfig:
        return to_lib(SplitConfig, self)


@dg.asset(
    partitions_def=batches,
    group_name="dataset",
    kinds={"parquet"},
    deps=["masklet_qc"],
    automation_condition=GATED,
    description="Sticky, leak-free train/val(/test) assignment of the batch's accepted videos: near-duplicate "
                "clusters and sidecar source groups never straddle splits; val is stratified by size bucket, "
                "environment and occlusion; earlier assignments never move.",
)
def splits(context: dg.AssetExecutionContext, config: SplitsConfig, lake: LakeResource) -> dg.MaterializeResult:
    from sav_assets.lib.dataset.splits import assign_splits, build_candidates, group_keys, split_summary
    from sav_assets.lib.store.tables import SPLITS, to_table

    batch_id = context.partition_key
    lk = lake.lake()
    acc = accepted(lk, [batch_id])
    q = acc.quality
    groups = group_keys(list(q), {v: r.get("duplicate_of") for v, r in q.items()},
                        {v: r.get("source_group") for v, r in q.items()})
    existing = [r for r in lk.read_table("splits", schema=SPLITS).to_pylist() if r["batch_id"] != batch_id]
    cfg = config.split_config()
    new = assign_splits(build_candidates(acc.videos, acc.masklets, groups), existing, cfg, batch_id=batch_id)
    for r in new:
        r["batch_id"] = batch_id
    tbl = to_table(new, SPLITS)
    uri = lk.replace_batch("splits", batch_id, tbl)
    refresh_views(context, lk)
    return dg.MaterializeResult(metadata={
        **table_metadata("splits", tbl, uri, ["video_id", "split", "group_key", "stratum", "assignment_reason"]),
        "batch_id": batch_id,
        "new_assignments": counts_md(split_summary(new), "split", "videos"),
        "all_assignments": counts_md(split_summary(existing + new), "split", "videos"),
        "config_hash": cfg.config_hash(),
    })


class EvalLayoutConfig(dg.Config):
    """Which masklets are the evaluation ground truth."""

    exclude_failed_manual: bool = lib_field(eval_ground_truth, "exclude_failed_manual",
                                            "leave manual masklets that fail masklet QC out of the ground truth "
                                            "(off: human masks are the ground truth; QC only reports on them)")


@dg.asset(
    partitions_def=batches,
    group_name="dataset",
    kinds={"jpeg", "png"},
    deps=["splits"],
    description="SA-V val/test layout (sav_val.txt, JPEGImages_24fps/, Annotations_6fps/) of every val/test "
                "video so far, so Meta's sav_evaluator.py runs on it unchanged; every manual masklet is the "
                "ground truth where a video has any (QC does not remove them unless exclude_failed_manual), "
                "else accepted masklets; what is left out is listed with the reason. Whole lake, not per "
                "batch: any batch's run brings the layout up to date from all batches (the file list names every "
                "val video), writing only new or changed videos.",
)
def eval_layout(context: dg.AssetExecutionContext, config: EvalLayoutConfig, lake: LakeResource,
                source: SourceResource) -> dg.MaterializeResult:
    from sav_assets.lib.sav.eval_layout import check_layout, write_eval_layout
    from sav_assets.lib.store.catalog import connect
    from sav_assets.lib.store.source import SourceOpener
    from sav_assets.lib.store.tables import SPLITS

    lk = lake.lake()
    split_rows = lk.read_table("splits", schema=SPLITS).to_pylist()
    acc = accepted(lk)
    by_id = {v["video_id"]: v for v in acc.videos}
    opener = SourceOpener(source.source)
    md = {}
    con = connect(lk, read_only=False)      # masklet_frames streamed per video, never loaded whole
    try:
        for split in ("val", "test"):
            vids = sorted(r["video_id"] for r in split_rows if r["split"] == split and r["video_id"] in by_id)
            if not vids:
                continue
            gt = _GroundTruth(con, acc, config.exclude_failed_manual)
            # videos open through the source's store, only those rewritten; written in place (uploaded on S3)
            with lk.store.write_tree(f"exports/sav_{split}") as out:
                summary = write_eval_layout(out, split, [by_id[v] for v in vids], gt.rows,
                                            lambda v: opener.local_path(by_id[v]["source_uri"]))
                summary["problems"] = check_layout(out, split)      # what Meta's evaluator would trip on
            md.update(_layout_metadata(context, lk, split, vids, summary, gt.keys, gt.left_out))
    finally:
        con.close()
    return dg.MaterializeResult(metadata=md or {"note": "no val/test videos yet"})


class _GroundTruth:
    """Each video's ground-truth rows read from DuckDB when the layout asks for them; what was kept and
    left out, gathered for the metadata."""

    def __init__(self, con, acc, exclude_failed_manual: bool):
        self.con, self.acc, self.exclude = con, acc, exclude_failed_manual
        self.keys: set[tuple] = set()
        self.left_out: list[dict] = []

    def rows(self, vid: str) -> list[dict]:
        from sav_assets.lib.store.catalog import run_sql_file

        frames = run_sql_file(self.con, "masklet_frames_of_video.sql", [vid]).to_pylist()
        fb, left_out = eval_ground_truth(frames, [vid], self.acc, self.exclude)
        self.left_out += left_out
        self.keys |= {(f["video_id"], f["masklet_type"], f["masklet_id"]) for f in fb[vid]}
        return fb[vid]


def _layout_metadata(context, lk, split: str, vids: list[str], summary: dict, gt: set[tuple],
                     gt_left_out: list[dict]) -> dict:
    md = {f"{split}_videos": summary.get("videos", len(vids)), f"{split}_objects": summary.get("objects", 0),
          f"{split}_ground_truth_masklets": len(gt),
          f"{split}_layout": dg.MetadataValue.path(lk.uri(f"exports/sav_{split}")),
          f"{split}_layout_problems": dg.MetadataValue.json(summary.get("problems", []))}
    if summary.get("problems"):
        context.log.warning(f"{split} layout: {len(summary['problems'])} problem(s) for Meta's evaluator "
                            f"(see {split}_layout_problems)")
    left_out = gt_left_out + summary.get("skipped", []) + summary.get("skipped_objects", [])
    md[f"{split}_left_out"] = dg.MetadataValue.json(left_out)
    if left_out:
        context.log.warning(f"{split} layout: {len(left_out)} video(s)/masklet(s) left out (see {split}_left_out)")
    return md


class ShardsConfig(dg.Config):
    """Temporal windows of annotated frames (8-16, as SA-V's training sampler takes) per sample."""

    window: int = lib_field(ShardConfig, "window", "annotated frames per sample")
    stride: int | None = lib_field(ShardConfig, "stride", "annotated frames between window starts; unset: window")
    shard_max_bytes: int = lib_field(ShardConfig, "shard_max_bytes", "a shard is closed before it grows past this")
    shard_max_samples: int = lib_field(ShardConfig, "shard_max_samples", "samples per shard at most")
    jpeg_quality: int = lib_field(ShardConfig, "jpeg_quality", "JPEG quality of the frames")
    max_side: int | None = lib_field(ShardConfig, "max_side", "downscale frames and masks to this long side; "
                                     "unset: full size")
    include_random_weight_masklets: bool = lib_field(train_inputs, "include_random_weights",
                                                     "masklets from an unloaded (random) SAM 2 train too")

    def shard_config(self) -> ShardConfig:
        return to_lib(ShardConfig, self)


@dg.asset(
    partitions_def=batches,
    group_name="dataset",
    kinds={"webdataset"},
    deps=["splits"],
    automation_condition=GATED,
    description="WebDataset tar shards of temporal windows of the batch's train videos (JPEG frames, RLE "
                "masks, metadata), accepted masklets only; manifest.json written last and atomically.",
)
def training_shards(context: dg.AssetExecutionContext, config: ShardsConfig, lake: LakeResource,
                    source: SourceResource) -> dg.MaterializeResult:
    from sav_assets.lib.dataset.shards import write_shards
    from sav_assets.lib.store.source import SourceOpener
    from sav_assets.lib.store.tables import MASKLET_FRAMES, SHARD_SAMPLES, SHARDS, SPLITS, to_table

    batch_id = context.partition_key
    lk = lake.lake()
    train = {r["video_id"] for r in lk.read_table("splits", schema=SPLITS).to_pylist() if r["split"] == "train"}
    frames = lk.read_table("masklet_frames", batches=[batch_id], schema=MASKLET_FRAMES).to_pylist()
    videos, fb, mb = train_inputs(accepted(lk, [batch_id]), train, frames, config.include_random_weight_masklets)
    with SourceOpener(source.source).local_videos(videos) as paths:
        res = write_shards(lk, f"shards/{batch_id}", videos, fb, mb, paths, config.shard_config())
    now = datetime.datetime.now(datetime.timezone.utc)
    rows = res.get("rows", [])
    for r in rows:
        r["batch_id"] = batch_id
        r.setdefault("created_at", now)
    tbl = to_table(rows, SHARDS)
    samples_tbl = to_table([{**r, "batch_id": batch_id, "created_at": r.get("created_at") or now}
                            for r in res.get("sample_rows", [])], SHARD_SAMPLES)
    lk.replace_batch("shard_samples", batch_id, samples_tbl)
    lk.replace_batch("shards", batch_id, tbl)
    refresh_views(context, lk)
    return dg.MaterializeResult(metadata={
        **table_metadata("shards", tbl, lk.uri(f"shards/{batch_id}"), ["shard", "samples", "bytes", "sha256"]),
        "batch_id": batch_id,
        "train_videos": len(videos),
        "samples": int(sum(r.get("samples") or 0 for r in rows)),
        "bytes": int(sum(r.get("bytes") or 0 for r in rows)),
        "manifest": dg.MetadataValue.path(res.get("manifest_uri") or lk.uri(f"shards/{batch_id}/manifest.json")),
    })

"""splits (sticky, leak-free), the SA-V evaluation layout, and WebDataset training shards."""

import contextlib
import datetime
from collections import defaultdict
from typing import Optional

import dagster as dg

from sav_assets.defs.common import batches, counts_markdown, refresh_views, table_metadata
from sav_assets.defs.qc import masklet_qc
from sav_assets.resources import LakeResource

# Downstream automation only proceeds when upstream blocking checks passed (QC gate, contracts).
GATED = dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed()


class SplitsConfig(dg.Config):
    """Validation target: a fraction (< 1) or a video count (>= 1, e.g. SA-V's 155)."""

    val_target: float = 0.1
    test_target: float = 0.0
    seed: str = "sav-v1"
    stratify_by: list[str] = ["size_bucket", "environment", "occlusion"]


def _accepted(lk, batch_ids=None):
    """Accepted masklets: QC passed. Accepted videos: quality passed and at least one accepted masklet."""
    from sav_assets.lib.store.tables import MASKLET_QC, MASKLETS, VIDEO_QUALITY, VIDEOS

    qc = lk.read_table("masklet_qc", batches=batch_ids, schema=MASKLET_QC).to_pylist()
    ok_masklets = {(r["video_id"], r["masklet_type"], r["masklet_id"]) for r in qc if r["passed"]}
    quality = {r["video_id"]: r for r in lk.read_table("video_quality", schema=VIDEO_QUALITY).to_pylist()}
    videos = {v["video_id"]: v for v in lk.read_table("videos", batches=batch_ids, schema=VIDEOS).to_pylist()}
    masklets = [m for m in lk.read_table("masklets", batches=batch_ids, schema=MASKLETS).to_pylist()
                if (m["video_id"], m["masklet_type"], m["masklet_id"]) in ok_masklets]
    accepted_ids = {m["video_id"] for m in masklets}
    accepted = [{**videos[v], "video_environment": (quality.get(v) or {}).get("video_environment")}
                for v in sorted(accepted_ids) if v in videos and (quality.get(v) or {}).get("passed")]
    return accepted, masklets, ok_masklets, quality


@dg.asset(
    partitions_def=batches,
    group_name="dataset",
    kinds={"parquet"},
    deps=[masklet_qc],
    automation_condition=GATED,
    description="Sticky, leak-free train/val(/test) assignment of the batch's accepted videos: near-duplicate "
                "clusters and sidecar source groups never straddle splits; val is stratified by size bucket, "
                "environment and occlusion; earlier assignments never move.",
)
def splits(context: dg.AssetExecutionContext, config: SplitsConfig, lake: LakeResource) -> dg.MaterializeResult:
    from sav_assets.lib.dataset.splits import (SplitConfig, assign_splits, build_candidates, group_keys,
                                       split_summary)
    from sav_assets.lib.store.tables import SPLITS, to_table

    batch_id = context.partition_key
    lk = lake.lake()
    accepted, masklets, _ok, quality = _accepted(lk, [batch_id])
    groups = group_keys(list(quality), {v: r.get("duplicate_of") for v, r in quality.items()},
                        {v: r.get("source_group") for v, r in quality.items()})
    existing = [r for r in lk.read_table("splits", schema=SPLITS).to_pylist() if r["batch_id"] != batch_id]
    cfg = SplitConfig(val_target=config.val_target, test_target=config.test_target, seed=config.seed,
                      stratify_by=tuple(config.stratify_by))
    new = assign_splits(build_candidates(accepted, masklets, groups), existing, cfg, batch_id=batch_id)
    for r in new:
        r["batch_id"] = batch_id
    tbl = to_table(new, SPLITS)
    uri = lk.replace_batch("splits", batch_id, tbl)
    refresh_views(context, lk)
    total = split_summary(existing + new)
    return dg.MaterializeResult(metadata={
        **table_metadata("splits", tbl, uri, ["video_id", "split", "group_key", "stratum", "assignment_reason"]),
        "batch_id": batch_id,
        "new_assignments": dg.MetadataValue.md(counts_markdown(split_summary(new), "split", "videos")
                                               if new else "_none_"),
        "all_assignments": dg.MetadataValue.md(counts_markdown(total, "split", "videos") if total else "_none_"),
        "config_hash": cfg.config_hash(),
    })


@dg.asset(
    partitions_def=batches,
    group_name="dataset",
    kinds={"jpeg", "png"},
    deps=[splits],
    description="SA-V val/test layout (sav_val.txt, JPEGImages_24fps/, Annotations_6fps/) of every val/test "
                "video so far, so Meta's sav_evaluator.py runs on it unchanged; manual masklets are the "
                "ground truth where present, else accepted masklets.",
)
def eval_layout(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    import shutil
    import tempfile

    from sav_assets.lib.sav.eval_layout import write_eval_layout
    from sav_assets.lib.store.tables import MASKLET_FRAMES, SPLITS

    lk = lake.lake()
    split_rows = lk.read_table("splits", schema=SPLITS).to_pylist()
    accepted, _m, ok_masklets, _q = _accepted(lk)
    by_id = {v["video_id"]: v for v in accepted}
    frames = lk.read_table("masklet_frames", schema=MASKLET_FRAMES).to_pylist()
    md = {}
    for split in ("val", "test"):
        vids = sorted(r["video_id"] for r in split_rows if r["split"] == split and r["video_id"] in by_id)
        if not vids:
            continue
        fb = defaultdict(list)
        for f in frames:
            if f["video_id"] in vids and (f["video_id"], f["masklet_type"], f["masklet_id"]) in ok_masklets:
                fb[f["video_id"]].append(f)
        # Ground truth: manual masklets where a video has them, else the accepted masklets.
        for v in vids:
            if any(f["masklet_type"] == "manual" for f in fb[v]):
                fb[v] = [f for f in fb[v] if f["masklet_type"] == "manual"]
            else:
                kinds = sorted({f["masklet_type"] for f in fb[v]})
                fb[v] = [f for f in fb[v] if f["masklet_type"] == kinds[0]] if kinds else []
        out = lk.local_path(f"exports/sav_{split}") if not lk.is_s3 else tempfile.mkdtemp(prefix="sav-eval-")
        with contextlib.ExitStack() as stack:
            paths = {v: stack.enter_context(lk.local_file(by_id[v]["source_uri"]))
                     for v in vids}
            summary = write_eval_layout(out, split, [by_id[v] for v in vids], fb, paths)
        if lk.is_s3:
            import os

            for dirpath, _d, files in os.walk(out):
                for fn in files:
                    full = os.path.join(dirpath, fn)
                    lk.put_file(f"exports/sav_{split}/{os.path.relpath(full, out)}", full)
            shutil.rmtree(out, ignore_errors=True)
        md[f"{split}_videos"] = summary.get("videos", len(vids))
        md[f"{split}_objects"] = summary.get("objects", 0)
        left_out = summary.get("skipped", []) + summary.get("skipped_objects", [])
        if left_out:
            md[f"{split}_left_out"] = dg.MetadataValue.json(left_out)
            context.log.warning(f"{split} layout: {len(left_out)} video(s)/object(s) left out (see metadata)")
        md[f"{split}_layout"] = dg.MetadataValue.path(lk.uri(f"exports/sav_{split}"))
    if not md:
        md["note"] = "no val/test videos yet"
    return dg.MaterializeResult(metadata=md)


class ShardsConfig(dg.Config):
    """Temporal windows of annotated frames (8-16, as SA-V's training sampler takes) per sample."""

    window: int = 8
    stride: Optional[int] = None
    shard_max_bytes: int = 300_000_000
    shard_max_samples: int = 10_000
    jpeg_quality: int = 90
    max_side: Optional[int] = None
    include_random_weight_masklets: bool = False  # masklets from an unloaded (random) SAM 2 never train by default


@dg.asset(
    partitions_def=batches,
    group_name="dataset",
    kinds={"webdataset"},
    deps=[splits],
    automation_condition=GATED,
    description="WebDataset tar shards of temporal windows of the batch's train videos (JPEG frames, RLE "
                "masks, metadata), accepted masklets only; manifest.json written last and atomically.",
)
def training_shards(context: dg.AssetExecutionContext, config: ShardsConfig, lake: LakeResource) -> dg.MaterializeResult:
    from sav_assets.lib.dataset.shards import ShardConfig, write_shards
    from sav_assets.lib.store.tables import MASKLET_FRAMES, SHARDS, SPLITS, to_table

    batch_id = context.partition_key
    lk = lake.lake()
    train = {r["video_id"] for r in lk.read_table("splits", schema=SPLITS).to_pylist() if r["split"] == "train"}
    accepted, masklets, ok, _q = _accepted(lk, [batch_id])
    if not config.include_random_weight_masklets:
        masklets = [m for m in masklets if not m.get("random_weights")]
    keep = {(m["video_id"], m["masklet_type"], m["masklet_id"]) for m in masklets}
    videos = [v for v in accepted if v["video_id"] in train and any(k[0] == v["video_id"] for k in keep)]
    frames = [f for f in lk.read_table("masklet_frames", batches=[batch_id], schema=MASKLET_FRAMES).to_pylist()
              if (f["video_id"], f["masklet_type"], f["masklet_id"]) in keep]
    fb, mb = defaultdict(list), defaultdict(list)
    for f in frames:
        fb[f["video_id"]].append(f)
    for m in masklets:
        mb[m["video_id"]].append(m)
    cfg = ShardConfig(window=config.window, stride=config.stride, shard_max_bytes=config.shard_max_bytes,
                      shard_max_samples=config.shard_max_samples, jpeg_quality=config.jpeg_quality,
                      max_side=config.max_side)
    with contextlib.ExitStack() as stack:
        paths = {v["video_id"]: stack.enter_context(lk.local_file(v["source_uri"]))
                 for v in videos}
        res = write_shards(lk, f"shards/{batch_id}", videos, fb, mb, paths, cfg)
    now = datetime.datetime.now(datetime.timezone.utc)
    rows = res.get("rows", [])
    for r in rows:
        r["batch_id"] = batch_id
        r.setdefault("created_at", now)
    tbl = to_table(rows, SHARDS)
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

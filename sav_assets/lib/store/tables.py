"""Table names and Arrow schemas: the column contract users query with DuckDB.

Column names follow the SA-V JSON field names wherever SA-V has the field. Every table carries
``batch_id`` (the ingestion batch partition that wrote the row).
"""

from __future__ import annotations

import pyarrow as pa

TS = pa.timestamp("us", tz="UTC")

VIDEOS = pa.schema([
    ("video_id", pa.string()),
    ("batch_id", pa.string()),
    ("source_uri", pa.string()),
    ("source_key", pa.string()),
    ("source_version", pa.string()),
    ("content_sha256", pa.string()),
    ("bytes", pa.int64()),
    ("video_duration", pa.float64()),
    ("video_frame_count", pa.int64()),
    ("video_height", pa.int32()),
    ("video_width", pa.int32()),
    ("video_resolution", pa.int64()),
    ("video_fps", pa.float64()),
    ("codec", pa.string()),
    ("rotation", pa.int32()),
    ("status", pa.string()),          # ok | quarantined
    ("error_class", pa.string()),
    ("error_message", pa.string()),
    ("sidecar_json", pa.string()),    # <name>.json beside the video or S3 user metadata, verbatim
    ("ingested_at", TS),
])

SOURCE_OBJECTS = pa.schema([
    ("batch_id", pa.string()),
    ("source_uri", pa.string()),
    ("source_key", pa.string()),
    ("source_version", pa.string()),  # ETag on S3, size+mtime locally
    ("bytes", pa.int64()),
    ("content_sha256", pa.string()),
    ("disposition", pa.string()),     # video | duplicate_content | non_video | sidecar | annotation | unreadable | changed | taken_down
    ("video_id", pa.string()),
    ("duplicate_of", pa.string()),
    ("seen_at", TS),
])

VIDEO_QUALITY = pa.schema([
    ("video_id", pa.string()),
    ("batch_id", pa.string()),
    ("passed", pa.bool_()),
    ("reasons", pa.list_(pa.string())),
    ("duplicate_of", pa.string()),
    ("short_side", pa.int32()),
    ("video_duration", pa.float64()),
    ("video_fps", pa.float64()),
    ("sampled_frames", pa.int32()),
    ("sharpness", pa.float64()),
    ("brightness", pa.float64()),
    ("clipped_fraction", pa.float64()),
    ("motion", pa.float64()),
    ("camera_shake", pa.float64()),
    ("phash", pa.list_(pa.string())),
    ("licence", pa.string()),
    ("source_group", pa.string()),
    ("video_environment", pa.string()),
    ("evaluated_at", TS),
])

MASKLETS = pa.schema([
    ("video_id", pa.string()),
    ("batch_id", pa.string()),
    ("masklet_id", pa.int32()),
    ("masklet_type", pa.string()),    # auto | manual | prompted
    ("masklet_size_abs", pa.float64()),
    ("masklet_size_rel", pa.float64()),
    ("masklet_size_bucket", pa.string()),
    ("masklet_visibility_changes", pa.int32()),
    ("masklet_first_appeared_frame", pa.int64()),
    ("masklet_frame_count", pa.int32()),
    ("masklet_edited_frame_count", pa.int32()),
    ("masklet_stability_mean", pa.float64()),
    ("masklet_stability_min", pa.float64()),
    ("source", pa.string()),          # sam2_auto | sam2_prompted | sav_import | sam2_correction (a new object)
    ("model_name", pa.string()),
    ("checkpoint_sha256", pa.string()),
    ("config_sha256", pa.string()),
    ("random_weights", pa.bool_()),
    ("label_key", pa.string()),
    ("masklet_cycle_iou", pa.float64()),  # forward-vs-backward propagation agreement (no ground truth)
    ("sav_fields_json", pa.string()),  # the masklet's SA-V fields verbatim (imports), for exact export
    ("created_at", TS),
])

MASKLET_FRAMES = pa.schema([
    ("video_id", pa.string()),
    ("batch_id", pa.string()),
    ("masklet_id", pa.int32()),
    ("masklet_type", pa.string()),
    ("ann_idx", pa.int32()),          # index into the annotated-frame list (SA-V's outer list)
    ("frame_idx", pa.int64()),        # source frame index: the frame number in the video's own numbering
    ("timestamp_s", pa.float64()),    # its presentation time, seconds from the first frame (null: not known)
    ("size", pa.list_(pa.int32())),   # COCO RLE [h, w]
    ("counts", pa.string()),          # COCO RLE counts, exactly as pycocotools writes them
    ("area", pa.int64()),
    ("bbox", pa.list_(pa.float64())),  # [x, y, w, h]
    ("visible", pa.bool_()),
    ("predicted_iou", pa.float32()),
    ("stability_score", pa.float32()),
])

LABEL_RUNS = pa.schema([
    ("video_id", pa.string()),
    ("batch_id", pa.string()),
    ("label_key", pa.string()),
    ("status", pa.string()),          # labeled | failed | skipped
    ("error_class", pa.string()),
    ("error_message", pa.string()),
    ("masklets", pa.int32()),
    ("frames_labeled", pa.int32()),
    ("seconds", pa.float64()),
    ("peak_host_mb", pa.float64()),
    ("peak_gpu_mb", pa.float64()),
    ("model_name", pa.string()),
    ("random_weights", pa.bool_()),
    ("finished_at", TS),
    # what labeling the video cost (sav_assets.lib.label.labeler stats; null for imports and failures)
    ("seed_policy", pa.string()),             # LabelerConfig.seed_policy
    ("encoder_calls", pa.int32()),            # image-encoder passes, cycle check included
    ("encoder_calls_per_frame", pa.float64()),  # ... per annotated frame (1.0: each frame encoded once)
    ("decoder_passes", pa.int32()),           # SAM mask-decoder passes (tracking steps + generator batches)
    ("seed_prompts", pa.int32()),             # points given to the automatic mask generator
    ("prompts", pa.int32()),                  # seed_prompts + user prompts applied
    ("decode_wait_s", pa.float64()),          # labeling blocked waiting for decoded frames
    ("host_copy_s", pa.float64()),            # masks device -> host (off the tracking loop)
    ("rle_s", pa.float64()),                  # RLE encoding (off the tracking loop)
])

# Video-level header of an imported SA-V JSON file (for exact export).
SAV_ANNOTATIONS = pa.schema([
    ("video_id", pa.string()),
    ("batch_id", pa.string()),
    ("masklet_type", pa.string()),    # manual | auto (which file)
    ("source_uri", pa.string()),
    ("header_json", pa.string()),     # every top-level key except the per-masklet lists, verbatim
    ("imported_at", TS),
])

# --- QC schemas (masklet_qc) ---
# One row per masklet (video_id, masklet_type, masklet_id): metrics, verdict and reason codes
# (sav_assets.lib.qc.masklet_qc). Nulls mean "not applicable" (no visible pair, no manual match, no score).
MASKLET_QC = pa.schema([
    ("video_id", pa.string()),
    ("batch_id", pa.string()),
    ("masklet_id", pa.int32()),
    ("masklet_type", pa.string()),
    ("visible_frames", pa.int32()),
    ("mean_area", pa.float64()),
    ("temporal_iou_mean", pa.float64()),   # mean IoU of adjacent annotated frames, both visible
    ("max_area_jump", pa.float64()),       # max bigger/smaller area ratio over those pairs
    ("flicker_rate", pa.float64()),        # visibility changes / frames
    ("fragments_mean", pa.float64()),      # 8-connected components per visible mask
    ("stability_mean", pa.float64()),
    ("predicted_iou_mean", pa.float64()),
    ("duplicate_of", pa.int32()),          # earlier masklet_id of the same video and type
    ("duplicate_iou", pa.float64()),
    ("manual_masklet_id", pa.int32()),     # matched manual masklet of the same video
    ("manual_j", pa.float64()),
    ("manual_f", pa.float64()),
    ("manual_jf", pa.float64()),
    ("cycle_iou", pa.float64()),
    ("passed", pa.bool_()),
    ("reasons", pa.list_(pa.string())),
    ("evaluated_at", TS),
])

# Corrections (sav_assets.lib.label.corrections), append-only: one row per correction tried (applied or
# error), in the batch folder of the video it corrects (errors: of the run's batch).
MASKLET_EDITS = pa.schema([
    ("correction_id", pa.string()),        # digest of the correction's content: applied once per label_key
    ("video_id", pa.string()),
    ("batch_id", pa.string()),
    ("label_key", pa.string()),            # the labeling it was applied to (a relabel applies it again)
    ("masklet_type", pa.string()),
    ("masklet_id", pa.int32()),            # for a new object: the id it was given
    ("frame_idx", pa.int64()),             # the corrected source frame
    ("ann_idx", pa.int32()),
    ("prompt_json", pa.string()),          # {"points", "labels", "box"} in video pixels
    ("old_area", pa.int64()),              # the masklet's area on the frame before / after (null: new object)
    ("new_area", pa.int64()),
    ("frames_changed", pa.int32()),        # annotated frames whose row changed
    ("reviewer", pa.string()),
    ("note", pa.string()),
    ("corrected_at", TS),                  # the row's time, else when it was first read
    ("applied_at", TS),
    ("video_key", pa.string()),
    ("source_file", pa.string()),
    ("source_line", pa.int32()),
    ("status", pa.string()),               # applied | error
    ("error_class", pa.string()),
    ("error_message", pa.string()),
])

# Human verdicts on masklets (sav_assets.lib.qc.reviews), append-only: one row per verdict row of a
# reviews file, in the batch folder of the masklet it judges; rows that could not be used are
# status 'error' with an error class (bad_review | unresolved_video), in the folder of the run's batch.
MASKLET_REVIEWS = pa.schema([
    ("review_id", pa.string()),            # digest of (file, row): a row is recorded once
    ("video_id", pa.string()),
    ("batch_id", pa.string()),
    ("masklet_type", pa.string()),
    ("masklet_id", pa.int32()),
    ("verdict", pa.string()),              # accept | reject
    ("note", pa.string()),
    ("reviewer", pa.string()),
    ("reviewed_at", TS),                   # the row's time, else when it was first read
    ("recorded_at", TS),
    ("video_key", pa.string()),            # how the row named the video (id, file name, URI, SHA-256)
    ("source_file", pa.string()),          # reviews/<file> it came from
    ("source_line", pa.int32()),
    ("status", pa.string()),               # ok | error
    ("error_class", pa.string()),
    ("error_message", pa.string()),
])

# --- split / shard schemas ---
# One row per video, written once and never changed (sticky): a later run only appends rows for
# videos that have no assignment yet. ``split`` is train | val | test, or ``excluded`` for a new
# video whose group already straddles splits (it would leak whichever split it joined).
SPLITS = pa.schema([
    ("video_id", pa.string()),
    ("batch_id", pa.string()),            # the run / batch that made the assignment
    ("split", pa.string()),               # train | val | test | excluded
    ("group_key", pa.string()),           # near-duplicate / source group: never straddles splits
    ("stratum", pa.string()),             # size_bucket|environment|occlusion of the video
    ("assignment_reason", pa.string()),   # group_sticky | stratum_quota | global_quota | remainder | group_conflict
    ("config_hash", pa.string()),         # hash of the SplitConfig that made the assignment
    ("assigned_at", TS),
])

# One row per published WebDataset shard (the manifest, as a table).
SHARDS = pa.schema([
    ("shard", pa.string()),               # file name, e.g. train-000000.tar
    ("batch_id", pa.string()),            # dataset version / run that wrote it
    ("uri", pa.string()),
    ("split", pa.string()),
    ("samples", pa.int64()),
    ("bytes", pa.int64()),
    ("sha256", pa.string()),
    ("window", pa.int32()),
    ("stride", pa.int32()),
    ("first_key", pa.string()),
    ("last_key", pa.string()),
    ("config_hash", pa.string()),
    ("created_at", TS),
])

# One row per taken-down video (lib/dataset/takedown.py): the tombstone by content hash that keeps the
# same bytes out of every later batch, whatever their name; the video's derived rows and files are gone.
TAKEDOWNS = pa.schema([
    ("content_sha256", pa.string()),
    ("video_id", pa.string()),
    ("batch_id", pa.string()),            # the batch that ingested the video
    ("source_uri", pa.string()),
    ("source_key", pa.string()),
    ("requested_as", pa.string()),        # what the request named: video_id, source URI/key or SHA-256
    ("reason", pa.string()),
    ("requested_by", pa.string()),
    ("taken_down_at", TS),
])

# One row per fine-tuned SAM 2 checkpoint (lib/train/registry.py): where it is, what it was trained
# from and on, and whether it is the labeling model.
MODELS = pa.schema([
    ("sha256", pa.string()),              # of the checkpoint file ({"model": state_dict})
    ("checkpoint_uri", pa.string()),      # <lake>/models/checkpoints/<sha256>.pt
    ("parent_sha256", pa.string()),       # the checkpoint it was fine-tuned from; null: random weights
    ("model_config", pa.string()),        # tiny | small | base_plus | large
    ("image_size", pa.int32()),
    ("data_version", pa.string()),        # digest of the training shard manifests used
    ("config_hash", pa.string()),         # FinetuneConfig.digest()
    ("run_key", pa.string()),             # parent + config + data: a re-run with the same inputs is skipped
    ("steps", pa.int32()),
    ("multimask_tracking", pa.bool_()),   # how it was trained to track (ModelSpec.multimask_tracking); null: true
    ("metrics_json", pa.string()),        # loss curve summary, steps/s, peak memory, evaluation
    ("promoted", pa.bool_()),
    ("promoted_at", TS),
    ("created_at", TS),
])

# One row per sample (a temporal window of one video) of a published shard: which shard holds which
# video's windows (the licence ledger, takedown).
SHARD_SAMPLES = pa.schema([
    ("key", pa.string()),                 # the sample's __key__ in the tar
    ("shard", pa.string()),               # file name of the shard holding it
    ("batch_id", pa.string()),
    ("video_id", pa.string()),
    ("split", pa.string()),
    ("start_frame", pa.int64()),          # source frame index of the window's first frame
    ("frames", pa.int32()),
    ("masklets", pa.int32()),
    ("created_at", TS),
])

# Labels a relabel with another model or labeler config superseded (lib/label/batch.py): the same rows
# as masklets / masklet_frames / label_runs, one part per video and label key
# (``<video_id>.sam2.<tag>``), so two models' labels coexist; the plain tables hold the current ones.
MASKLETS_ARCHIVE = MASKLETS
MASKLET_FRAMES_ARCHIVE = MASKLET_FRAMES.append(pa.field("label_key", pa.string()))
LABEL_RUNS_ARCHIVE = LABEL_RUNS

SCHEMAS: dict[str, pa.Schema] = {
    "videos": VIDEOS,
    "source_objects": SOURCE_OBJECTS,
    "video_quality": VIDEO_QUALITY,
    "masklets": MASKLETS,
    "masklet_frames": MASKLET_FRAMES,
    "label_runs": LABEL_RUNS,
    "sav_annotations": SAV_ANNOTATIONS,
    "masklet_qc": MASKLET_QC,
    "masklet_reviews": MASKLET_REVIEWS,
    "masklet_edits": MASKLET_EDITS,
    "splits": SPLITS,
    "shards": SHARDS,
    "shard_samples": SHARD_SAMPLES,
    "takedowns": TAKEDOWNS,
    "models": MODELS,
    "masklets_archive": MASKLETS_ARCHIVE,
    "masklet_frames_archive": MASKLET_FRAMES_ARCHIVE,
    "label_runs_archive": LABEL_RUNS_ARCHIVE,
}


def to_table(rows: list[dict], schema: pa.Schema) -> pa.Table:
    """Rows (dicts) to a table with exactly the schema's columns, missing keys as nulls."""
    cols = {f.name: [r.get(f.name) for r in rows] for f in schema}
    return pa.table({f.name: pa.array(cols[f.name], type=f.type) for f in schema}, schema=schema)

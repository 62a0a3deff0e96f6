"""masklet_qc: per-masklet metrics and verdicts; failing masklets stay in the tables with reasons."""

import datetime
import json
from typing import Optional

import dagster as dg

from sav_assets.defs.common import batches, counts_markdown, refresh_views, table_metadata
from sav_assets.defs.labeling import masklets
from sav_assets.resources import LakeResource


class QCConfig(dg.Config):
    """QC thresholds; unset fields keep the library defaults (see README, "Masklet QC")."""

    min_visible_frames: Optional[int] = None
    min_mean_area: Optional[float] = None
    min_temporal_iou: Optional[float] = None
    max_area_jump: Optional[float] = None
    max_flicker_rate: Optional[float] = None
    max_fragments: Optional[float] = None
    min_stability: Optional[float] = None
    min_predicted_iou: Optional[float] = None
    duplicate_iou: Optional[float] = None
    min_manual_j: Optional[float] = None
    min_manual_f: Optional[float] = None
    min_cycle_iou: Optional[float] = None


def qc_thresholds(config: QCConfig):
    from sav_assets.lib.qc.masklet_qc import QCThresholds

    return QCThresholds(**{k: v for k, v in config.model_dump().items() if v is not None})


@dg.asset(
    partitions_def=batches,
    group_name="qc",
    kinds={"parquet"},
    deps=[masklets],
    description="Per masklet: visible frames, area, temporal IoU, area jumps / flicker, fragmentation, "
                "stability and predicted IoU, duplicates within the video, J/F agreement with a manual "
                "masklet of the same object, cycle consistency; passed + reasons. Failing masklets are "
                "kept and exported for review (exports/review/<batch>/failing_masklets.jsonl).",
)
def masklet_qc(context: dg.AssetExecutionContext, config: QCConfig, lake: LakeResource) -> dg.MaterializeResult:
    from sav_assets.lib.qc.masklet_qc import masklet_qc_rows
    from sav_assets.lib.store.tables import MASKLET_FRAMES, MASKLET_QC, MASKLETS, to_table

    batch_id = context.partition_key
    lk = lake.lake()
    m = lk.read_table("masklets", batches=[batch_id], schema=MASKLETS).to_pylist()
    f = lk.read_table("masklet_frames", batches=[batch_id], schema=MASKLET_FRAMES).to_pylist()
    rows = masklet_qc_rows(m, f, qc_thresholds(config))
    now = datetime.datetime.now(datetime.timezone.utc)
    for r in rows:
        r["batch_id"], r["evaluated_at"] = batch_id, now
    tbl = to_table(rows, MASKLET_QC)
    uri = lk.replace_batch("masklet_qc", batch_id, tbl)
    failing = [r for r in rows if not r["passed"]]
    review = "\n".join(json.dumps({k: r.get(k) for k in ("video_id", "masklet_type", "masklet_id", "reasons")},
                                  default=str) for r in failing)
    lk.put_bytes(f"exports/review/{batch_id}/failing_masklets.jsonl", (review + "\n").encode() if review else b"")
    refresh_views(context, lk)
    reasons: dict[str, int] = {}
    for r in failing:
        for code in r["reasons"]:
            reasons[code] = reasons.get(code, 0) + 1
    return dg.MaterializeResult(metadata={
        **table_metadata("masklet_qc", tbl, uri, ["video_id", "masklet_type", "masklet_id", "passed", "reasons"]),
        "batch_id": batch_id,
        "masklets_checked": len(rows),
        "masklets_passed": len(rows) - len(failing),
        "masklets_failed": len(failing),
        "pass_rate": round((len(rows) - len(failing)) / len(rows), 4) if rows else 1.0,
        "failures_by_reason": dg.MetadataValue.md(counts_markdown(reasons, "reason", "masklets") if reasons else "_none_"),
        "review_export": dg.MetadataValue.path(lk.uri(f"exports/review/{batch_id}/failing_masklets.jsonl")),
    })

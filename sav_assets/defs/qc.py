"""masklet_qc: per-masklet metrics and verdicts; failing masklets stay in the tables with reasons.

``QCConfig`` takes every default from ``QCThresholds`` (lib/qc/masklet_qc.py): the Launchpad shows
the values that run.
"""

import datetime
import json
from collections import Counter

import dagster as dg

from sav_assets.defs.label import filmstrip_metadata, write_batch_filmstrips
from sav_assets.defs.metadata import counts_md, refresh_views, table_metadata
from sav_assets.defs.partitions import batches
from sav_assets.defs.tunables import lib_field, to_lib
from sav_assets.lib.qc.masklet_qc import QCThresholds
from sav_assets.resources import LakeResource, SourceResource

Q = QCThresholds


class QCConfig(dg.Config):
    """QC thresholds (see README, "Masklet QC"); defaults calibrated on the real SA-V sample."""

    min_visible_frames: int = lib_field(Q, "min_visible_frames", "fewer visible frames: too_few_visible_frames")
    min_mean_area: float = lib_field(Q, "min_mean_area", "px; smaller mean visible area: too_small")
    min_temporal_iou: float = lib_field(Q, "min_temporal_iou", "mean IoU of adjacent visible masks; below: "
                                        "temporal_inconsistent")
    max_area_jump: float = lib_field(Q, "max_area_jump", "largest area ratio of adjacent masks; above: area_jump")
    max_flicker_rate: float = lib_field(Q, "max_flicker_rate", "visibility changes per frame; above: flicker")
    max_fragments: float = lib_field(Q, "max_fragments", "mean connected components per mask; above: fragmented")
    min_stability: float = lib_field(Q, "min_stability", "mean stability score; below: low_stability")
    min_predicted_iou: float = lib_field(Q, "min_predicted_iou", "mean predicted IoU; below: low_predicted_iou "
                                         "(skipped when null)")
    duplicate_iou: float = lib_field(Q, "duplicate_iou", "mean IoU with an earlier masklet above which it is a "
                                     "duplicate")
    min_manual_j: float = lib_field(Q, "min_manual_j", "J against the manual masklet of the same object; below: "
                                    "low_manual_agreement")
    min_manual_f: float = lib_field(Q, "min_manual_f", "F against the manual masklet of the same object; below: "
                                    "low_manual_agreement")
    min_cycle_iou: float = lib_field(Q, "min_cycle_iou", "backward-propagation IoU; below: cycle_inconsistent "
                                     "(skipped when null)")
    manual_match_iou: float = lib_field(Q, "manual_match_iou", "mean IoU at which a manual masklet counts as "
                                        "the same object")
    bound_th: float = lib_field(Q, "bound_th", "F boundary tolerance (fraction of the image diagonal)")

    def thresholds(self) -> QCThresholds:
        return to_lib(QCThresholds, self)


@dg.asset(
    partitions_def=batches,
    group_name="qc",
    kinds={"parquet"},
    deps=["masklets"],
    description="Per masklet: visible frames, area, temporal IoU, area jumps / flicker, fragmentation, "
                "stability and predicted IoU, duplicates within the video, J/F agreement with a manual "
                "masklet of the same object, cycle consistency; passed + reasons. Failing masklets are "
                "kept and exported for review (exports/review/<batch>/failing_masklets.jsonl, and a "
                "filmstrip PNG each there); the previews (exports/previews/<batch>/) get the verdicts.",
)
def masklet_qc(context: dg.AssetExecutionContext, config: QCConfig, lake: LakeResource,
               source: SourceResource) -> dg.MaterializeResult:
    from sav_assets.lib.qc.masklet_qc import masklet_qc_rows
    from sav_assets.lib.qc.review_page import write_review_page
    from sav_assets.lib.qc.reviews import read_latest_verdicts, record_reviews
    from sav_assets.lib.store.source import SourceOpener
    from sav_assets.lib.store.tables import MASKLET_FRAMES, MASKLET_QC, MASKLETS, VIDEOS, to_table

    batch_id = context.partition_key
    lk = lake.lake()
    m = lk.read_table("masklets", batches=[batch_id], schema=MASKLETS).to_pylist()
    f = lk.read_table("masklet_frames", batches=[batch_id], schema=MASKLET_FRAMES).to_pylist()
    rows = masklet_qc_rows(m, f, config.thresholds())
    now = datetime.datetime.now(datetime.timezone.utc)
    for r in rows:
        r["batch_id"], r["evaluated_at"] = batch_id, now
    tbl = to_table(rows, MASKLET_QC)
    uri = lk.replace_batch("masklet_qc", batch_id, tbl)
    failing = [r for r in rows if not r["passed"]]
    review_rel = f"exports/review/{batch_id}/failing_masklets.jsonl"
    lk.put_bytes(review_rel, "".join(json.dumps({k: r.get(k) for k in ("video_id", "masklet_type", "masklet_id",
                                                                      "reasons")}, default=str) + "\n"
                                     for r in failing).encode())
    videos = lk.read_table("videos", batches=[batch_id], schema=VIDEOS).to_pylist()
    strips = write_batch_filmstrips(lk, batch_id, videos, SourceOpener(source.source), rows)
    reviews = record_reviews(lk, batch_id)     # verdicts dropped in <root>/reviews/ since the last run
    current = {k: r["verdict"] for k, r in read_latest_verdicts(lk, [batch_id]).items()}
    page = write_review_page(lk, batch_id, rows, current)
    refresh_views(context, lk)
    return dg.MaterializeResult(metadata={
        **table_metadata("masklet_qc", tbl, uri, ["video_id", "masklet_type", "masklet_id", "passed", "reasons"]),
        "batch_id": batch_id,
        "masklets_checked": len(rows),
        "masklets_passed": len(rows) - len(failing),
        "masklets_failed": len(failing),
        "pass_rate": round((len(rows) - len(failing)) / len(rows), 4) if rows else "no masklets",
        "failures_by_reason": counts_md(dict(Counter(c for r in failing for c in r["reasons"])), "reason", "masklets"),
        "review_export": dg.MetadataValue.path(lk.uri(review_rel)),
        "review_strips": len(strips.review),
        "review_page": dg.MetadataValue.path(lk.uri(page)),
        "reviews_recorded": reviews["new"],
        "review_errors": dg.MetadataValue.md("\n".join(f"- `{r['error_class']}`: {r['error_message']}"
                                                       for r in reviews["errors"]) or "none"),
        **filmstrip_metadata(lk, batch_id, strips),
    })

"""What reaches the dataset: accepted videos and masklets, the evaluation ground truth, the shards' input.

A masklet is accepted when its ``masklet_qc`` row passed, unless a person said otherwise: the latest
``masklet_reviews`` verdict of a masklet (:mod:`sav_assets.lib.qc.reviews`) overrides QC's, an
``accept`` lets a failing masklet in and a ``reject`` keeps a passing one out (reason
``rejected_by_reviewer``; a rejected manual masklet leaves the evaluation ground truth too). QC's own
rows are not changed. A video is accepted when its quality passed and it has at least one accepted
masklet. ``splits``, ``eval_layout`` and ``training_shards`` all select through
here, so the three agree on what "accepted" means.

The evaluation ground truth is the exception: manual masklets are human ground truth, so QC reports on
them but does not remove them (unless ``exclude_failed_manual``), and every masklet left out of the
ground truth is returned with its reason (the ``eval_layout`` metadata lists them).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from sav_assets.lib.qc.reviews import read_latest_verdicts
from sav_assets.lib.store.lake import Lake
from sav_assets.lib.store.tables import MASKLET_QC, MASKLETS, VIDEO_QUALITY, VIDEOS

Key = tuple[str, str, int]  # (video_id, masklet_type, masklet_id)


def masklet_key(row: dict) -> Key:
    return row["video_id"], row["masklet_type"], row["masklet_id"]


@dataclass
class Accepted:
    videos: list[dict]              # videos rows (+ video_environment), sorted by video_id
    masklets: list[dict]            # masklets rows that passed QC
    keys: set[Key]                  # keys of the masklets that passed QC
    quality: dict[str, dict]        # video_quality rows of every batch, by video_id
    failed: dict[Key, list[str]] = field(default_factory=dict)   # QC reason codes of failed masklets
    verdicts: dict[Key, str] = field(default_factory=dict)       # latest human verdict: accept | reject


def accepted(lake: Lake, batch_ids: list[str] | None = None) -> Accepted:
    """Accepted videos and masklets of ``batch_ids`` (all batches when None)."""
    qc = lake.read_table("masklet_qc", batches=batch_ids, schema=MASKLET_QC).to_pylist()
    verdicts = {k: r["verdict"] for k, r in read_latest_verdicts(lake, batch_ids).items()}
    keys = {masklet_key(r) for r in qc if verdicts.get(masklet_key(r), "accept" if r["passed"] else "") == "accept"}
    failed = {masklet_key(r): list(r["reasons"] or []) + (["rejected_by_reviewer"] if verdicts.get(masklet_key(r))
                                                          == "reject" else [])
              for r in qc if masklet_key(r) not in keys}
    quality = {r["video_id"]: r for r in lake.read_table("video_quality", schema=VIDEO_QUALITY).to_pylist()}
    videos = {v["video_id"]: v for v in lake.read_table("videos", batches=batch_ids, schema=VIDEOS).to_pylist()}
    masklets = [m for m in lake.read_table("masklets", batches=batch_ids, schema=MASKLETS).to_pylist()
                if masklet_key(m) in keys]
    ids = sorted({m["video_id"] for m in masklets})
    rows = [{**videos[v], "video_environment": quality[v].get("video_environment")}
            for v in ids if v in videos and (quality.get(v) or {}).get("passed")]
    return Accepted(rows, masklets, keys, quality, failed, verdicts)


def eval_ground_truth(frames: list[dict], video_ids: list[str], acc: Accepted,
                      exclude_failed_manual: bool = False) -> tuple[dict[str, list[dict]], list[dict]]:
    """``(frames_by_video, left_out)``: the ``masklet_frames`` rows each video is evaluated against and the
    masklets left out of them, each ``{video_id, masklet_type, masklet_id, reason}``.

    A video with manual masklets is evaluated against all of them: human ground truth stays whatever
    masklet QC says, unless ``exclude_failed_manual`` (then those failing QC are left out). A video
    without any is evaluated against its accepted masklets of one type (the first by name); the ones
    of that type that failed QC are left out."""
    wanted = set(video_ids)
    by_video: dict[str, list[dict]] = defaultdict(list)
    for f in frames:
        if f["video_id"] in wanted:
            by_video[f["video_id"]].append(f)
    out: dict[str, list[dict]] = {}
    left_out: list[dict] = []
    for v in video_ids:
        rows = by_video[v]
        if any(f["masklet_type"] == "manual" for f in rows):
            kind = "manual"
        else:
            kinds = sorted({f["masklet_type"] for f in rows if masklet_key(f) in acc.keys})
            kind = kinds[0] if kinds else None
        # manual masklets are dropped only by the rule; pseudo-labels only count when they passed QC
        drop = {masklet_key(f) for f in rows if f["masklet_type"] == kind and (
            masklet_key(f) in acc.failed if kind == "manual" else masklet_key(f) not in acc.keys)}
        if kind == "manual" and not exclude_failed_manual:
            drop = {k for k in drop if acc.verdicts.get(k) == "reject"}    # a person's reject still counts
        for k in sorted(drop, key=lambda k: k[2]):
            left_out.append({"video_id": v, "masklet_type": k[1], "masklet_id": k[2], "reason": _left_out_reason(acc, k)})
        out[v] = [f for f in rows if f["masklet_type"] == kind and masklet_key(f) not in drop]
    return out, left_out


def _left_out_reason(acc: Accepted, k: Key) -> str:
    if k not in acc.failed:
        return "no masklet QC verdict"
    why = f"failed masklet QC: {', '.join(acc.failed[k]) or 'no reason recorded'}"
    return why + " (exclude_failed_manual is set)" if k[1] == "manual" else why


def train_inputs(acc: Accepted, train_ids: set[str], frames: list[dict], include_random_weights: bool = False):
    """``(videos, frames_by_video, masklets_by_video)`` for the shards: accepted train videos with at least
    one kept masklet; masklets from random weights are left out unless ``include_random_weights``."""
    masklets = [m for m in acc.masklets if include_random_weights or not m.get("random_weights")]
    keep = {masklet_key(m) for m in masklets}
    kept_ids = {k[0] for k in keep}
    videos = [v for v in acc.videos if v["video_id"] in train_ids and v["video_id"] in kept_ids]
    fb: dict[str, list[dict]] = defaultdict(list)
    mb: dict[str, list[dict]] = defaultdict(list)
    for f in frames:
        if masklet_key(f) in keep:
            fb[f["video_id"]].append(f)
    for m in masklets:
        mb[m["video_id"]].append(m)
    return videos, fb, mb

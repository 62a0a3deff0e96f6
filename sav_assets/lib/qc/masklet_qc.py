"""Masklet QC gate: per-masklet quality metrics, and a verdict with reason codes.

Metrics per masklet (over its annotated frames, in frame order; "visible" = non-empty mask):

* ``visible_frames``, ``mean_area`` (mean area over visible frames, 0 when never visible);
* ``temporal_iou_mean``: mean IoU of the masks of adjacent annotated frames where both are
  visible; ``max_area_jump``: the largest area ratio (bigger / smaller) over those same pairs
  (both None without such a pair);
* ``flicker_rate``: visibility changes between adjacent annotated frames / number of frames;
* ``fragments_mean``: mean number of 8-connected components per visible mask;
* ``stability_mean`` (the masklet row's ``masklet_stability_mean``, else the mean of the frames'
  ``stability_score`` over visible frames), ``predicted_iou_mean`` (frames' ``predicted_iou``
  over visible frames), ``cycle_iou`` (the masklet row's ``masklet_cycle_iou``); None when absent;
* ``duplicate_of`` / ``duplicate_iou``: among masklets of the same video and type, the
  ``duplicate_iou`` is the best mean IoU with a masklet of smaller ``masklet_id``, the mean taken
  over the shared annotated frames where at least one of the two is visible; above
  ``duplicate_iou`` that earlier masklet is ``duplicate_of``;
* ``manual_masklet_id`` / ``manual_j`` / ``manual_f`` / ``manual_jf`` (non-manual masklets): the
  manual masklet of the same video with the best mean IoU (measured as for duplicates) is the
  same object when that IoU reaches ``manual_match_iou``; J and F against it are the DAVIS/SA-V
  definitions (:mod:`sav_assets.lib.sav.jf`) averaged over all shared frames (empty vs empty = 1).

Masklets are keyed by (video_id, masklet_type, masklet_id): imported manual and auto files number
their masklets independently. Each RLE is parsed once; each visible mask is expanded once (numpy,
from the parsed runs) and only its bounding box (plus one pixel) is labelled and traced. Pairwise
IoUs run on the RLEs (pycocotools). Rows with an RLE whose runs do not cover its ``size`` raise
``ValueError``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from pycocotools import mask as mask_utils
from scipy import ndimage

from sav_assets.lib.sav import jf
from sav_assets.lib.sav.rle import parse_counts

REASONS = (
    "too_few_visible_frames", "too_small", "temporal_inconsistent", "area_jump", "flicker",
    "fragmented", "low_stability", "low_predicted_iou", "duplicate", "low_manual_agreement",
    "cycle_inconsistent",
)
_EIGHT = np.ones((3, 3), dtype=bool)


@dataclass
class QCThresholds:
    min_visible_frames: int = 2
    min_mean_area: float = 64.0
    # Defaults calibrated on real SA-V annotations (shared sample): all 14 of its manual and auto
    # masklets pass; at 6 fps adjacent-frame IoU of real masks goes down to ~0.06 and area jumps to ~20x.
    min_temporal_iou: float = 0.04     # mean IoU between adjacent visible masks
    max_area_jump: float = 30.0        # max ratio between adjacent visible areas
    max_flicker_rate: float = 0.3      # visibility changes / frames
    max_fragments: float = 6.0         # mean 8-connected components per visible mask
    min_stability: float = 0.8
    min_predicted_iou: float = 0.5     # skipped when null (manual, imported)
    duplicate_iou: float = 0.8         # later masklet_id flagged duplicate_of the earlier
    min_manual_j: float = 0.5          # applied only where a manual masklet of the same object exists
    min_manual_f: float = 0.5
    min_cycle_iou: float = 0.5         # skipped when null
    manual_match_iou: float = 0.3      # mean IoU at which a manual masklet counts as the same object
    bound_th: float = jf.BOUND_TH      # F boundary tolerance (fraction of the diagonal)


def _mean(vals: list[float]) -> float | None:
    return float(np.mean(vals)) if vals else None


class _Masklet:
    __slots__ = (
        "area",
        "coco",
        "cols",
        "fragments",
        "frames",
        "h",
        "key",
        "points",
        "row",
        "runs",
        "vis",
        "w",
    )

    def __init__(self, row: dict, frames: list[dict]):
        self.row = row
        self.key = (row.get("masklet_type"), int(row["masklet_id"]))
        self.frames = frames
        self.points: dict[int, np.ndarray] = {}


def _decode_full(runs: np.ndarray, h: int, w: int) -> np.ndarray:
    """Parsed RLE runs to an HxW bool mask (a transposed view of the column-major expansion)."""
    parity = np.zeros(runs.size, dtype=bool)
    parity[1::2] = True
    return np.repeat(parity, runs).reshape(w, h).T


def _prepare(m: _Masklet) -> None:
    n = len(m.frames)
    m.runs, m.coco = [], []
    m.area = np.zeros(n, np.int64)
    for i, fr in enumerate(m.frames):
        h, w = (int(v) for v in fr["size"])
        if i == 0:
            m.h, m.w = h, w
        elif (h, w) != (m.h, m.w):
            raise ValueError(f"masklet {m.key}: frame sizes differ ({m.h}x{m.w} vs {h}x{w})")
        runs = parse_counts(fr["counts"])
        if int(runs.sum()) != h * w or (runs < 0).any():
            raise ValueError(f"masklet {m.key} ann_idx {fr.get('ann_idx')}: RLE runs do not cover {h}x{w}")
        m.runs.append(runs)
        m.coco.append({"size": [h, w], "counts": fr["counts"].encode("ascii")})
        m.area[i] = int(runs[1::2].sum())
    m.vis = m.area > 0


def _video_qc(rows: list[dict], frame_rows: list[dict], t: QCThresholds) -> list[dict]:
    frames_by_key: dict[tuple, list[dict]] = defaultdict(list)
    for fr in frame_rows:
        frames_by_key[(fr.get("masklet_type"), int(fr["masklet_id"]))].append(fr)
    use_frame_idx = all(fr.get("frame_idx") is not None for fr in frame_rows)

    def fkey(fr):
        return int(fr["frame_idx"]) if use_frame_idx else int(fr["ann_idx"])

    ms: list[_Masklet] = []
    for row in rows:
        m = _Masklet(row, sorted(frames_by_key.get((row.get("masklet_type"), int(row["masklet_id"])), []),
                                 key=fkey))
        _prepare(m)
        ms.append(m)
    n_m = len(ms)

    # frame grid shared by the video's masklets
    grid = sorted({fkey(fr) for m in ms for fr in m.frames})
    col = {k: c for c, k in enumerate(grid)}
    for m in ms:
        m.cols = np.array([col[fkey(fr)] for fr in m.frames], dtype=np.int64)
    present = np.zeros((len(grid), n_m), bool)
    visible = np.zeros((len(grid), n_m), bool)
    where: list[dict[int, int]] = []  # column -> index into the masklet's frame list
    for j, m in enumerate(ms):
        present[m.cols, j] = True
        visible[m.cols, j] = m.vis
        where.append({int(c): i for i, c in enumerate(m.cols)})

    # pairwise IoU sums on the RLEs, frame by frame
    shared = np.zeros((n_m, n_m), np.int64)
    uvis = np.zeros((n_m, n_m), np.int64)
    iou_sum = np.zeros((n_m, n_m), np.float64)
    for c in range(len(grid)):
        p, v = present[c], visible[c]
        pp = np.outer(p, p)
        shared += pp
        uvis += pp & (v[:, None] | v[None, :])
        vi = np.flatnonzero(v)
        if vi.size > 1:
            rles = [ms[j].coco[where[j][c]] for j in vi]
            ious = np.asarray(mask_utils.iou(rles, rles, [0] * len(rles)), dtype=np.float64)
            iou_sum[np.ix_(vi, vi)] += ious
        elif vi.size == 1:
            iou_sum[vi[0], vi[0]] += 1.0
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_iou = np.where(uvis > 0, iou_sum / np.maximum(uvis, 1), np.nan)

    # duplicates (same type, earlier id) and manual matches
    dup_of: list[int | None] = [None] * n_m
    dup_iou: list[float | None] = [None] * n_m
    match: list[int | None] = [None] * n_m  # index of the matched manual masklet
    manual_idx = [j for j, m in enumerate(ms) if m.key[0] == "manual"]
    for b, mb in enumerate(ms):
        best, best_a = -1.0, None
        for a, ma in enumerate(ms):
            if a == b or ma.key[0] != mb.key[0] or ma.key[1] >= mb.key[1] or np.isnan(mean_iou[a, b]):
                continue
            if mean_iou[a, b] > best:
                best, best_a = float(mean_iou[a, b]), a
        if best_a is not None:
            dup_iou[b] = best
            if best > t.duplicate_iou:
                dup_of[b] = ms[best_a].key[1]
        if mb.key[0] != "manual" and manual_idx:
            scores = [(float(mean_iou[b, a]), -ms[a].key[1], a) for a in manual_idx if not np.isnan(mean_iou[b, a])]
            if scores:
                s, _, a = max(scores)
                if s >= t.manual_match_iou and s > 0:
                    match[b] = a
    need_points = {j for j, a in enumerate(match) if a is not None} | {a for a in match if a is not None}

    # one pass over the visible masks: fragments, boundaries
    for j, m in enumerate(ms):
        m.fragments = []
        vis_idx = np.flatnonzero(m.vis)
        if vis_idx.size == 0:
            continue
        boxes = np.asarray(mask_utils.toBbox([m.coco[i] for i in vis_idx]), dtype=np.float64)
        for i, (bx, by, bw, bh) in zip(vis_idx, boxes):
            full = _decode_full(m.runs[i], m.h, m.w)
            x0, y0 = int(bx), int(by)
            ya, yb, xa, xb = jf.boundary_window(y0, y0 + int(bh) - 1, x0, x0 + int(bw) - 1, m.h, m.w)
            win = np.ascontiguousarray(full[ya:yb, xa:xb])
            m.fragments.append(int(ndimage.label(win, structure=_EIGHT)[1]))
            if j in need_points:
                m.points[int(m.cols[i])] = jf.boundary_points_window(win, ya, xa)

    out: list[dict] = []
    no_pts = np.zeros((0, 2), np.int32)
    for j, m in enumerate(ms):
        row = m.row
        nfr = len(m.frames)
        vis = m.vis
        area = m.area
        pairs = np.flatnonzero(vis[:-1] & vis[1:]) if nfr > 1 else np.zeros(0, np.int64)
        t_ious: list[float] = []
        jumps: list[float] = []
        for i in pairs:
            t_ious.append(float(mask_utils.iou([m.coco[i]], [m.coco[i + 1]], [0])[0][0]))
            a0, a1 = float(area[i]), float(area[i + 1])
            jumps.append(max(a0, a1) / min(a0, a1))
        changes = int(np.count_nonzero(vis[1:] != vis[:-1])) if nfr > 1 else 0

        stab = row.get("masklet_stability_mean")
        if stab is None:
            stab = _mean([float(fr["stability_score"]) for fr, v in zip(m.frames, vis)
                          if v and fr.get("stability_score") is not None])
        piou = _mean([float(fr["predicted_iou"]) for fr, v in zip(m.frames, vis)
                      if v and fr.get("predicted_iou") is not None])

        man_id = man_j = man_f = man_jf = None
        a = match[j]
        if a is not None:
            ma = ms[a]
            common = np.flatnonzero(present[:, j] & present[:, a])
            man_j = float((iou_sum[j, a] + shared[j, a] - uvis[j, a]) / shared[j, a])
            r = jf.bound_pix((m.h, m.w), t.bound_th)
            fvals = [jf.f_from_points(m.points.get(int(c), no_pts), ma.points.get(int(c), no_pts), r)
                     for c in common]
            man_id, man_f = ma.key[1], float(np.mean(fvals))
            man_jf = (man_j + man_f) / 2

        res = {
            "video_id": row.get("video_id"),
            "masklet_id": m.key[1],
            "masklet_type": m.key[0],
            "visible_frames": int(vis.sum()),
            "mean_area": float(area[vis].mean()) if vis.any() else 0.0,
            "temporal_iou_mean": _mean(t_ious),
            "max_area_jump": float(max(jumps)) if jumps else None,
            "flicker_rate": changes / nfr if nfr else 0.0,
            "fragments_mean": _mean(m.fragments),
            "stability_mean": None if stab is None else float(stab),
            "predicted_iou_mean": piou,
            "duplicate_of": dup_of[j],
            "duplicate_iou": dup_iou[j],
            "manual_masklet_id": man_id,
            "manual_j": man_j,
            "manual_f": man_f,
            "manual_jf": man_jf,
            "cycle_iou": None if row.get("masklet_cycle_iou") is None else float(row["masklet_cycle_iou"]),
        }
        if "batch_id" in row:
            res["batch_id"] = row["batch_id"]
        res["reasons"] = verdict_reasons(res, t)
        res["passed"] = not res["reasons"]
        out.append(res)
    return out


def verdict_reasons(r: dict, t: QCThresholds) -> list[str]:
    """Reason codes (in :data:`REASONS` order) for a QC row's metrics; empty means passed."""
    checks = {
        "too_few_visible_frames": r["visible_frames"] < t.min_visible_frames,
        "too_small": r["mean_area"] < t.min_mean_area,
        "temporal_inconsistent": r["temporal_iou_mean"] is not None and r["temporal_iou_mean"] < t.min_temporal_iou,
        "area_jump": r["max_area_jump"] is not None and r["max_area_jump"] > t.max_area_jump,
        "flicker": r["flicker_rate"] > t.max_flicker_rate,
        "fragmented": r["fragments_mean"] is not None and r["fragments_mean"] > t.max_fragments,
        "low_stability": r["stability_mean"] is not None and r["stability_mean"] < t.min_stability,
        "low_predicted_iou": r["predicted_iou_mean"] is not None and r["predicted_iou_mean"] < t.min_predicted_iou,
        "duplicate": r["duplicate_of"] is not None,
        "low_manual_agreement": r["manual_masklet_id"] is not None
        and (r["manual_j"] < t.min_manual_j or r["manual_f"] < t.min_manual_f),
        "cycle_inconsistent": r["cycle_iou"] is not None and r["cycle_iou"] < t.min_cycle_iou,
    }
    return [code for code in REASONS if checks[code]]


def masklet_qc_rows(masklet_rows: list[dict], frame_rows: list[dict], t: QCThresholds | None = None) -> list[dict]:
    """QC rows (the ``masklet_qc`` columns except ``evaluated_at``) for every masklet row, by video."""
    t = t or QCThresholds()
    by_video_rows: dict[str, list[dict]] = defaultdict(list)
    by_video_frames: dict[str, list[dict]] = defaultdict(list)
    for r in masklet_rows:
        by_video_rows[r["video_id"]].append(r)
    for fr in frame_rows:
        by_video_frames[fr["video_id"]].append(fr)
    out: list[dict] = []
    for vid in sorted(by_video_rows):
        keys = [(r.get("masklet_type"), int(r["masklet_id"])) for r in by_video_rows[vid]]
        if len(set(keys)) != len(keys):
            raise ValueError(f"video {vid}: duplicate (masklet_type, masklet_id) among masklet rows")
        out.extend(_video_qc(by_video_rows[vid], by_video_frames.get(vid, []), t))
    return out

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
  same object when that IoU reaches ``manual_match_iou``; J and F against it are what SA-V's
  evaluator (``sav_dataset/utils/sav_benchmark.py``, mirrored by :func:`sav_assets.lib.sav.jf.evaluate_layout`)
  reports for this masklet as the prediction of that object on the evaluation layout: the frames are
  the annotated frames of the video's manual masklets (the layout's grid; a masklet without a row
  on one of them is empty there) less the first and the last, counted from the first one where
  either mask is visible; J is the IoU (empty vs empty = 1), F the DAVIS boundary F
  (:mod:`sav_assets.lib.sav.jf`). J and F are None when the manual masklet is not visible on any of
  those frames (the evaluator cannot score it, and the layout leaves it out).

Masklets are keyed by (video_id, masklet_type, masklet_id): imported manual and auto files number
their masklets independently. Each RLE is parsed once; each visible mask is expanded once (numpy,
from the parsed runs) and only its bounding box (plus one pixel) is labelled and traced. Pairwise
IoUs run on the RLEs (:mod:`sav_assets.lib.sav.rle`, one IoU matrix per frame). Rows with an RLE whose runs do not cover its ``size`` raise
``ValueError``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from sav_assets.lib.sav import jf, rle

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
    __slots__ = ("area", "cols", "fragments", "frames", "h", "key", "points", "rles", "row", "runs", "vis", "w",
                 "where")

    def __init__(self, row: dict, frames: list[dict]):
        self.row = row
        self.key = (row.get("masklet_type"), int(row["masklet_id"]))
        self.frames = frames
        self.points: dict[int, np.ndarray] = {}
        self.fragments: list[int] = []


def _decode_full(runs: np.ndarray, h: int, w: int) -> np.ndarray:
    """Parsed RLE runs to an HxW bool mask (a transposed view of the column-major expansion)."""
    parity = np.zeros(runs.size, dtype=bool)
    parity[1::2] = True
    return np.repeat(parity, runs).reshape(w, h).T


def _prepare(m: _Masklet) -> None:
    """Parse every RLE once (checked against its size), areas and visibility per frame."""
    n = len(m.frames)
    m.runs, m.rles = [], []
    m.area = np.zeros(n, np.int64)
    for i, fr in enumerate(m.frames):
        h, w = (int(v) for v in fr["size"])
        if i == 0:
            m.h, m.w = h, w
        elif (h, w) != (m.h, m.w):
            raise ValueError(f"masklet {m.key}: frame sizes differ ({m.h}x{m.w} vs {h}x{w})")
        runs = rle.parse_counts(fr["counts"])
        if int(runs.sum()) != h * w or (runs < 0).any():
            raise ValueError(f"masklet {m.key} ann_idx {fr.get('ann_idx')}: RLE runs do not cover {h}x{w}")
        m.runs.append(runs)
        m.rles.append(rle.from_row(fr))
        m.area[i] = int(runs[1::2].sum())
    m.vis = m.area > 0


class _Grid:
    """The video's masklets on their shared frame grid (frame_idx, else ann_idx), with the pairwise
    sums the duplicate and manual-match metrics need: ``shared`` frames both have, ``uvis`` of those
    where at least one is visible, ``iou_sum`` the IoUs summed over them (RLE IoUs, one matrix per
    frame); ``mean_iou`` = ``iou_sum / uvis`` (NaN without such a frame)."""

    def __init__(self, rows: list[dict], frame_rows: list[dict]):
        frames_by_key: dict[tuple, list[dict]] = defaultdict(list)
        for fr in frame_rows:
            frames_by_key[(fr.get("masklet_type"), int(fr["masklet_id"]))].append(fr)
        use_frame_idx = all(fr.get("frame_idx") is not None for fr in frame_rows)

        def fkey(fr):
            return int(fr["frame_idx"]) if use_frame_idx else int(fr["ann_idx"])

        self.ms: list[_Masklet] = []
        for row in rows:
            key = (row.get("masklet_type"), int(row["masklet_id"]))
            m = _Masklet(row, sorted(frames_by_key.get(key, []), key=fkey))
            _prepare(m)
            self.ms.append(m)
        grid = sorted({fkey(fr) for m in self.ms for fr in m.frames})
        col = {k: c for c, k in enumerate(grid)}
        self.present = np.zeros((len(grid), len(self.ms)), bool)
        self.visible = np.zeros((len(grid), len(self.ms)), bool)
        for j, m in enumerate(self.ms):
            m.cols = np.array([col[fkey(fr)] for fr in m.frames], dtype=np.int64)
            m.where = {int(c): i for i, c in enumerate(m.cols)}        # column -> frame index
            self.present[m.cols, j] = True
            self.visible[m.cols, j] = m.vis
        self._pairwise()

    def _pairwise(self) -> None:
        n_m = len(self.ms)
        where = [m.where for m in self.ms]
        self.shared = np.zeros((n_m, n_m), np.int64)
        self.uvis = np.zeros((n_m, n_m), np.int64)
        self.iou_sum = np.zeros((n_m, n_m), np.float64)
        for c, (p, v) in enumerate(zip(self.present, self.visible)):
            pp = np.outer(p, p)
            self.shared += pp
            self.uvis += pp & (v[:, None] | v[None, :])
            vi = np.flatnonzero(v)
            if vi.size:
                self.iou_sum[np.ix_(vi, vi)] += rle.iou_matrix([self.ms[j].rles[where[j][c]] for j in vi])
        with np.errstate(invalid="ignore", divide="ignore"):
            self.mean_iou = np.where(self.uvis > 0, self.iou_sum / np.maximum(self.uvis, 1), np.nan)


def _duplicate(g: _Grid, b: int, t: QCThresholds) -> tuple[int | None, float | None]:
    """(``duplicate_of``, ``duplicate_iou``) of masklet ``b``: its best mean IoU with an earlier
    masklet of the same type, a duplicate above ``t.duplicate_iou``."""
    mb = g.ms[b]
    best, best_a = -1.0, None
    for a, ma in enumerate(g.ms):
        if a == b or ma.key[0] != mb.key[0] or ma.key[1] >= mb.key[1] or np.isnan(g.mean_iou[a, b]):
            continue
        if g.mean_iou[a, b] > best:
            best, best_a = float(g.mean_iou[a, b]), a
    if best_a is None:
        return None, None
    return (g.ms[best_a].key[1] if best > t.duplicate_iou else None), best


def _manual_match(g: _Grid, b: int, manual_idx: list[int], t: QCThresholds) -> int | None:
    """Index of the manual masklet that is the same object as non-manual masklet ``b``, if any."""
    if g.ms[b].key[0] == "manual":
        return None
    scores = [(float(g.mean_iou[b, a]), -g.ms[a].key[1], a) for a in manual_idx if not np.isnan(g.mean_iou[b, a])]
    if not scores:
        return None
    s, _, a = max(scores)
    return a if s >= t.manual_match_iou and s > 0 else None


def _trace(m: _Masklet, with_points: bool) -> None:
    """Fragments (8-connected components) of every visible mask and, when asked, its boundary
    pixels; each mask is expanded once and only its bounding box (plus one pixel) is traced."""
    vis_idx = np.flatnonzero(m.vis)
    boxes = rle.bboxes([m.rles[i] for i in vis_idx])
    for i, (bx, by, bw, bh) in zip(vis_idx, boxes):
        full = _decode_full(m.runs[i], m.h, m.w)
        x0, y0 = int(bx), int(by)
        ya, yb, xa, xb = jf.boundary_window(y0, y0 + int(bh) - 1, x0, x0 + int(bw) - 1, m.h, m.w)
        win = np.ascontiguousarray(full[ya:yb, xa:xb])
        m.fragments.append(int(ndimage.label(win, structure=_EIGHT)[1]))
        if with_points:
            m.points[int(m.cols[i])] = jf.boundary_points_window(win, ya, xa)


def _temporal(m: _Masklet) -> dict:
    """Adjacent-frame metrics: IoU and area ratio where both frames are visible, flicker."""
    vis, area, nfr = m.vis, m.area, len(m.frames)
    pairs = np.flatnonzero(vis[:-1] & vis[1:]) if nfr > 1 else np.zeros(0, np.int64)
    t_ious = rle.paired_ious([m.rles[i] for i in pairs], [m.rles[i + 1] for i in pairs]).tolist()
    jumps = [max(float(area[i]), float(area[i + 1])) / min(float(area[i]), float(area[i + 1])) for i in pairs]
    changes = int(np.count_nonzero(vis[1:] != vis[:-1])) if nfr > 1 else 0
    return {
        "temporal_iou_mean": _mean(t_ious),
        "max_area_jump": float(max(jumps)) if jumps else None,
        "flicker_rate": changes / nfr if nfr else 0.0,
    }


def _scores(m: _Masklet) -> dict:
    """Model scores over the visible frames (the masklet row's stability mean when it has one)."""
    stab = m.row.get("masklet_stability_mean")
    if stab is None:
        stab = _mean([float(fr["stability_score"]) for fr, v in zip(m.frames, m.vis)
                      if v and fr.get("stability_score") is not None])
    piou = _mean([float(fr["predicted_iou"]) for fr, v in zip(m.frames, m.vis)
                  if v and fr.get("predicted_iou") is not None])
    return {"stability_mean": None if stab is None else float(stab), "predicted_iou_mean": piou}


_NO_POINTS = np.zeros((0, 2), np.int32)


def eval_columns(g: _Grid) -> np.ndarray:
    """Grid columns SA-V's evaluator scores: the frames of the video's manual masklets (the evaluation
    layout's frames) without the first and the last."""
    manual = [j for j, m in enumerate(g.ms) if m.key[0] == "manual"]
    return np.flatnonzero(g.present[:, manual].any(axis=1))[1:-1] if manual else np.zeros(0, np.int64)


def _manual_agreement(g: _Grid, j: int, a: int | None, cols: np.ndarray, t: QCThresholds) -> dict:
    """J and F of masklet ``j`` as the prediction of manual masklet ``a``, as SA-V's evaluator scores it:
    over ``cols`` from the first frame where either is visible; None when ``a`` is never visible there."""
    none = {"manual_j": None, "manual_f": None, "manual_jf": None}
    if a is None:
        return {"manual_masklet_id": None, **none}
    m, ma = g.ms[j], g.ms[a]
    gv, pv = g.visible[cols, a], g.visible[cols, j]
    if not gv.any():
        return {"manual_masklet_id": ma.key[1], **none}
    start = int(np.flatnonzero(gv | pv)[0])
    cols, gv, pv = cols[start:], gv[start:], pv[start:]
    js = np.where(gv | pv, 0.0, 1.0)                      # one visible: 0; neither: 1
    both = np.flatnonzero(gv & pv)
    if both.size:
        js[both] = rle.paired_ious([m.rles[m.where[int(c)]] for c in cols[both]],
                                   [ma.rles[ma.where[int(c)]] for c in cols[both]])
    r = jf.bound_pix((m.h, m.w), t.bound_th)
    fvals = [jf.f_from_points(m.points.get(int(c), _NO_POINTS), ma.points.get(int(c), _NO_POINTS), r)
             for c in cols]
    man_j, man_f = float(np.mean(js)), float(np.mean(fvals))
    return {"manual_masklet_id": ma.key[1], "manual_j": man_j, "manual_f": man_f, "manual_jf": (man_j + man_f) / 2}


def _video_qc(rows: list[dict], frame_rows: list[dict], t: QCThresholds) -> list[dict]:
    g = _Grid(rows, frame_rows)
    manual_idx = [j for j, m in enumerate(g.ms) if m.key[0] == "manual"]
    match = [_manual_match(g, b, manual_idx, t) for b in range(len(g.ms))]
    need_points = {j for j, a in enumerate(match) if a is not None} | {a for a in match if a is not None}
    for j, m in enumerate(g.ms):
        _trace(m, j in need_points)
    cols = eval_columns(g)
    out: list[dict] = []
    for j, m in enumerate(g.ms):
        dup_of, dup_iou = _duplicate(g, j, t)
        res = {
            "video_id": m.row.get("video_id"),
            "masklet_id": m.key[1],
            "masklet_type": m.key[0],
            "visible_frames": int(m.vis.sum()),
            "mean_area": float(m.area[m.vis].mean()) if m.vis.any() else 0.0,
            **_temporal(m),
            "fragments_mean": _mean(m.fragments),
            **_scores(m),
            "duplicate_of": dup_of,
            "duplicate_iou": dup_iou,
            **_manual_agreement(g, j, match[j], cols, t),
            "cycle_iou": None if m.row.get("masklet_cycle_iou") is None else float(m.row["masklet_cycle_iou"]),
        }
        if "batch_id" in m.row:
            res["batch_id"] = m.row["batch_id"]
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
        "low_manual_agreement": r["manual_j"] is not None
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

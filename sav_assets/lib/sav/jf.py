"""J&F, the video object segmentation score, with the definitions of DAVIS 2017 and SA-V's evaluator.

* J (region similarity) is the IoU of the predicted and ground-truth masks; two empty masks score 1.
* F (boundary measure) is the F-measure of boundary precision and recall: the boundaries are DAVIS'
  ``seg2bmap`` one-pixel maps, and a boundary pixel counts as matched when a pixel of the other
  boundary lies within ``bound_pix = ceil(bound_th * ||(h, w)||)`` (``bound_th`` = 0.008, the
  image diagonal), i.e. inside the disk ``x^2 + y^2 <= bound_pix^2`` that davis2017 /
  ``sav_benchmark.py`` dilate with (``skimage.morphology.disk`` and ``cv2.dilate``). Empty-vs-empty
  scores 1, empty-vs-non-empty 0.

Instead of dilating two full frames, the boundary is computed on the mask's bounding box grown by
one pixel (which gives exactly the full-frame ``seg2bmap`` pixels) and matched as point sets with a
k-d tree (a point is matched when its nearest neighbour in the other set is within ``bound_pix``):
the same numbers at a cost that scales with the boundary length rather than the frame size.

:func:`evaluate_layout` follows ``sav_dataset/utils/sav_benchmark.py``: SA-V layout
``<root>/<video_id>/<obj:03d>/<frame:05d>.png``, first and last annotated frames skipped, an object's
frames counted from the first one where it appears in the ground truth or the prediction, per-object
means, then the dataset J and F as the mean over all objects (SA-V's "Global score"). Scores are
fractions in [0, 1] (the SA-V script prints them times 100). Unlike the SA-V script, a missing
prediction frame counts as an empty mask instead of stopping the run.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

BOUND_TH = 0.008
ANNOTATIONS_DIR = "Annotations_6fps"


def seg2bmap(seg: np.ndarray) -> np.ndarray:
    """DAVIS' binary boundary map (1-pixel boundaries, offset half a pixel towards the origin)."""
    seg = np.asarray(seg).astype(bool)
    e = np.zeros_like(seg)
    s = np.zeros_like(seg)
    se = np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = seg ^ e | seg ^ s | seg ^ se
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = 0
    return b


def bound_pix(shape: Sequence[int], bound_th: float = BOUND_TH) -> float:
    """The match radius in pixels: ``bound_th`` itself when >= 1, else ``ceil(bound_th * diagonal)``."""
    return float(bound_th) if bound_th >= 1 else float(np.ceil(bound_th * np.linalg.norm(shape[-2:])))


def boundary_window(y0: int, y1: int, x0: int, x1: int, h: int, w: int) -> tuple[int, int, int, int]:
    """The window (ya, yb, xa, xb) around a mask bbox (inclusive y0..y1, x0..x1) whose ``seg2bmap``
    equals the full frame's: one pixel more on every side that the frame has."""
    return max(y0 - 1, 0), min(y1 + 2, h), max(x0 - 1, 0), min(x1 + 2, w)


def boundary_points_window(window_mask: np.ndarray, ya: int, xa: int) -> np.ndarray:
    """Boundary pixels (N x 2, row/col in frame coordinates) of a mask given as its boundary window."""
    ys, xs = np.nonzero(seg2bmap(window_mask))
    return np.stack([ys + ya, xs + xa], axis=1).astype(np.int32)


def boundary_points(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels (N x 2, row/col) of a full-frame binary mask, as ``seg2bmap`` marks them."""
    m = np.asarray(mask).astype(bool)
    rows = np.flatnonzero(m.any(axis=1))
    if rows.size == 0:
        return np.zeros((0, 2), np.int32)
    cols = np.flatnonzero(m.any(axis=0))
    ya, yb, xa, xb = boundary_window(int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1]), *m.shape)
    return boundary_points_window(m[ya:yb, xa:xb], ya, xa)


def _matched(a: np.ndarray, b: np.ndarray, r: float) -> int:
    """How many points of ``a`` have a point of ``b`` within Euclidean distance ``r``."""
    if len(a) == 0 or len(b) == 0:
        return 0
    d, _ = cKDTree(b).query(a, k=1, distance_upper_bound=r + 0.5)
    # squared distances are integers, so d <= r is decided well away from rounding
    return int(np.count_nonzero(d <= r + 1e-9))


def f_from_points(pred_pts: np.ndarray, gt_pts: np.ndarray, r: float) -> float:
    """Boundary F-measure from the two boundaries' pixel sets and the match radius."""
    n_fg, n_gt = len(pred_pts), len(gt_pts)
    if n_fg == 0 and n_gt > 0:
        precision, recall = 1.0, 0.0
    elif n_fg > 0 and n_gt == 0:
        precision, recall = 0.0, 1.0
    elif n_fg == 0 and n_gt == 0:
        precision, recall = 1.0, 1.0
    else:
        precision = _matched(pred_pts, gt_pts, r) / float(n_fg)
        recall = _matched(gt_pts, pred_pts, r) / float(n_gt)
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def db_eval_iou(gt: np.ndarray, pred: np.ndarray) -> float | np.ndarray:
    """Region similarity J for one frame (HxW) or per frame (TxHxW); empty vs empty is 1."""
    gt = np.asarray(gt).astype(bool)
    pred = np.asarray(pred).astype(bool)
    if gt.shape != pred.shape:
        raise ValueError(f"shape mismatch: gt {gt.shape} vs pred {pred.shape}")
    inter = np.sum(gt & pred, axis=(-2, -1))
    union = np.sum(gt | pred, axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        j = inter / union
    if np.ndim(j) == 0:
        return 1.0 if union == 0 else float(j)
    j = np.asarray(j, dtype=np.float64)
    j[union == 0] = 1.0
    return j


def db_eval_boundary(gt: np.ndarray, pred: np.ndarray, bound_th: float = BOUND_TH) -> float | np.ndarray:
    """Boundary measure F for one frame (HxW) or per frame (TxHxW), as davis2017's ``db_eval_boundary``."""
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    if gt.shape != pred.shape:
        raise ValueError(f"shape mismatch: gt {gt.shape} vs pred {pred.shape}")
    if gt.ndim == 3:
        return np.array([db_eval_boundary(g, p, bound_th) for g, p in zip(gt, pred)], dtype=np.float64)
    if gt.ndim != 2:
        raise ValueError(f"expected HxW or TxHxW masks, got shape {gt.shape}")
    r = bound_pix(gt.shape, bound_th)
    return f_from_points(boundary_points(pred), boundary_points(gt), r)


def jf_for_masklet(
    gt_masks: Iterable[np.ndarray], pred_masks: Iterable[np.ndarray], bound_th: float = BOUND_TH
) -> tuple[float, float]:
    """Mean J and mean F of a predicted masklet against a reference masklet over all given frames
    (no frames skipped; empty-vs-empty frames score 1). Masks are HxW arrays, frame by frame."""
    js: list[float] = []
    fs: list[float] = []
    for g, p in zip(gt_masks, pred_masks, strict=True):
        js.append(float(db_eval_iou(g, p)))
        fs.append(float(db_eval_boundary(g, p, bound_th)))
    if not js:
        raise ValueError("jf_for_masklet needs at least one frame")
    return float(np.mean(js)), float(np.mean(fs))


# ---------------------------------------------------------------------------------------------
# SA-V val/test layout
# ---------------------------------------------------------------------------------------------

def _read_mask(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.array(im) > 0


def _resolve_root(root: str | os.PathLike) -> Path:
    p = Path(root)
    if (p / ANNOTATIONS_DIR).is_dir():
        return p / ANNOTATIONS_DIR
    return p


def evaluate_object(
    gt_dir: Path, pred_dir: Path, bound_th: float = BOUND_TH, skip_first_and_last: bool = True
) -> tuple[float, float] | None:
    """Mean (J, F) of one object folder, or None when the object never appears in the ground truth."""
    frames = sorted(n for n in os.listdir(gt_dir) if n.endswith(".png"))
    if skip_first_and_last:
        frames = frames[1:-1]
    js: list[float] = []
    fs: list[float] = []
    seen = in_gt = False
    for name in frames:
        gt = _read_mask(gt_dir / name)
        pp = pred_dir / name
        pred = _read_mask(pp) if pp.is_file() else np.zeros_like(gt)
        if pred.shape != gt.shape:
            raise ValueError(f"shape mismatch: {gt_dir / name} is {gt.shape}, {pp} is {pred.shape}")
        g_any, p_any = bool(gt.any()), bool(pred.any())
        in_gt = in_gt or g_any
        seen = seen or g_any or p_any
        if not seen:  # SA-V counts an object from the first frame where it appears at all
            continue
        js.append(float(db_eval_iou(gt, pred)))
        fs.append(f_from_points(boundary_points(pred), boundary_points(gt), bound_pix(gt.shape, bound_th)))
    if not in_gt:
        return None
    return float(np.mean(js)), float(np.mean(fs))


def evaluate_layout(
    gt_root: str | os.PathLike,
    pred_root: str | os.PathLike,
    video_ids: list[str] | None = None,
    *,
    bound_th: float = BOUND_TH,
    skip_first_and_last: bool = True,
) -> dict:
    """J&F over an SA-V val/test style folder pair (``<root>/<video_id>/<obj>/<frame>.png``).

    ``gt_root``/``pred_root`` may be the ``Annotations_6fps`` folder or its parent. Returns
    ``{"videos": {video_id: {"J", "F", "J&F", "objects": {obj: {"J", "F", "J&F"}}}}, "J", "F",
    "J&F", "J&F_video_mean", "num_videos", "num_objects", "skipped_objects"}``; the top-level J and F
    are means over all objects (as SA-V's evaluator), ``J&F_video_mean`` the mean of per-video J&F.
    """
    groot, proot = _resolve_root(gt_root), _resolve_root(pred_root)
    if video_ids is None:
        video_ids = sorted(d.name for d in groot.iterdir() if d.is_dir())
    videos: dict[str, dict] = {}
    all_j: list[float] = []
    all_f: list[float] = []
    skipped: list[str] = []
    for vid in video_ids:
        vdir = groot / vid
        if not vdir.is_dir():
            raise FileNotFoundError(f"no ground-truth folder for video {vid!r}: {vdir}")
        objects: dict[str, dict] = {}
        for obj in sorted(d.name for d in vdir.iterdir() if d.is_dir()):
            res = evaluate_object(vdir / obj, proot / vid / obj, bound_th, skip_first_and_last)
            if res is None:
                skipped.append(f"{vid}/{obj}")
                continue
            j, f = res
            objects[obj] = {"J": j, "F": f, "J&F": (j + f) / 2}
            all_j.append(j)
            all_f.append(f)
        if objects:
            vj = float(np.mean([o["J"] for o in objects.values()]))
            vf = float(np.mean([o["F"] for o in objects.values()]))
            videos[vid] = {"J": vj, "F": vf, "J&F": (vj + vf) / 2, "objects": objects}
    gj = float(np.mean(all_j)) if all_j else math.nan
    gf = float(np.mean(all_f)) if all_f else math.nan
    return {
        "videos": videos,
        "J": gj,
        "F": gf,
        "J&F": (gj + gf) / 2,
        "J&F_video_mean": float(np.mean([v["J&F"] for v in videos.values()])) if videos else math.nan,
        "num_videos": len(videos),
        "num_objects": len(all_j),
        "skipped_objects": skipped,
    }

"""Did re-seeding find the objects that enter late? Automatic masklets scored against exact ground truth.

The automatic labeler (:mod:`sav_assets.lib.label.labeler`, mode ``auto``) seeds masklets with SAM 2's
automatic mask generator on annotated frame 0 and re-seeds every ``reseed_every`` annotated frames; a
masklet started by a re-seeding has ``masklet_first_appeared_frame > 0``. :func:`late_object_report`
takes the ``masklets`` / ``masklet_frames`` rows of such a run and the ground truth (masks per object on
the same annotated frames, e.g. a demo video's ``_manual.json`` through :func:`sav_ground_truth`) and,
for each ground-truth object:

* matches it to one automatic masklet: the highest mean IoU over the frames where the object is visible,
  one masklet per object (Hungarian assignment on the mean-IoU matrix; a pair with mean IoU 0 is no
  match);
* scores the match with our evaluator (:func:`sav_assets.lib.sav.jf.jf_for_masklet`: J, F, J&F over the
  object's visible frames);
* says whether it was ``found``: J&F >= ``threshold`` and, for a *late* object (absent from annotated
  frame 0), the masklet first appeared after frame 0, i.e. a re-seeding started it. A masklet seeded on
  frame 0 that later spreads over the late object's place does not count.

Per masklet: its first annotated frame, whether re-seeding started it, its mean area fraction over the
frames where it is visible, and ``covers_frame`` (> ``cover_frac`` of the frame on average: what random
weights give, one mask over everything). ``benchmarks/bench_reseed.py`` prints this for a random-weight
and a fine-tuned model on held-out synthetic videos.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sav_assets.lib.sav import rle
from sav_assets.lib.sav.jf import db_eval_iou, jf_for_masklet

FOUND_JF = 0.5      # default J&F a match needs to count as found
COVER_FRAC = 0.5    # a masklet covering more of the frame than this on average "covers the frame"


@dataclass
class LateObjectReport:
    objects: list[dict]     # one per ground-truth object (see late_object_report)
    masklets: list[dict]    # one per automatic masklet
    annotated_frames: int

    @property
    def late(self) -> list[dict]:
        """The ground-truth objects absent from annotated frame 0."""
        return [o for o in self.objects if o["late"]]

    def summary(self) -> dict:
        return {"annotated_frames": self.annotated_frames, "auto_masklets": len(self.masklets),
                "reseeded_masklets": sum(m["reseeded"] for m in self.masklets),
                "covering_masklets": sum(m["covers_frame"] for m in self.masklets),
                "objects": len(self.objects), "found": sum(o["found"] for o in self.objects),
                "late_objects": len(self.late), "late_found": sum(o["found"] for o in self.late)}


def sav_ground_truth(doc: Mapping | str | Path) -> dict[int, np.ndarray]:
    """``{masklet_id: [T,H,W] bool}`` of an SA-V annotation (a dict or a ``_manual.json`` path)."""
    if not isinstance(doc, Mapping):
        doc = json.loads(Path(doc).read_text())
    ids = doc["masklet_id"]
    return {int(mid): rle.decode_many([frame[j] for frame in doc["masklet"]]).astype(bool)
            for j, mid in enumerate(ids)}


def _auto_masks(masklets: Sequence[dict], frames: Sequence[dict], T: int) -> dict[int, list[np.ndarray | None]]:
    """``{masklet_id: [mask or None per annotated frame]}`` of the automatic masklets."""
    auto = {int(m["masklet_id"]) for m in masklets if m["masklet_type"] == "auto"}
    out: dict[int, list[np.ndarray | None]] = {mid: [None] * T for mid in sorted(auto)}
    for f in frames:
        mid = int(f["masklet_id"])
        if f["masklet_type"] != "auto" or mid not in out:
            continue
        a = int(f["ann_idx"])
        if a >= T:
            raise ValueError(f"masklet {mid} has annotated frame {a}; the ground truth has {T}")
        out[mid][a] = rle.decode(rle.from_row(f)).astype(bool)
    return out


def _first_visible(masks: Sequence[np.ndarray | None]) -> int:
    """Index of the first non-empty mask, -1 when none."""
    return next((a for a, m in enumerate(masks) if m is not None and m.any()), -1)


def _mean_iou(gt: np.ndarray, pred: list[np.ndarray | None], vis: np.ndarray) -> float:
    empty = np.zeros(gt.shape[1:], bool)
    return float(np.mean([db_eval_iou(gt[a], empty if pred[a] is None else pred[a]) for a in vis]))


def _assign(scores: np.ndarray) -> dict[int, int]:
    """Row -> column of the assignment maximising the summed score; pairs scoring 0 are dropped."""
    from scipy.optimize import linear_sum_assignment

    if scores.size == 0:
        return {}
    rows, cols = linear_sum_assignment(scores, maximize=True)
    return {int(r): int(c) for r, c in zip(rows, cols, strict=True) if scores[r, c] > 0}


def _masklet_row(mid: int, masks: list[np.ndarray | None], first: int, grid: Sequence[int],
                 cover_frac: float) -> dict:
    fracs = [float(m.mean()) for m in masks if m is not None and m.any()]
    frac = float(np.mean(fracs)) if fracs else 0.0
    return {"masklet_id": mid, "first_appeared": first, "first_appeared_frame": grid[first] if first >= 0 else None,
            "reseeded": first > 0, "mean_area_frac": round(frac, 4), "covers_frame": frac > cover_frac}


def _object_row(oid, gt: np.ndarray, vis: np.ndarray, grid: Sequence[int], match: tuple | None,
                threshold: float) -> dict:
    """One ground-truth object's row; ``match`` = (masklet id, its masks, its first frame, mean IoU)."""
    fv = int(vis[0]) if len(vis) else -1
    row = {"obj_id": oid, "late": fv > 0, "first_visible": fv, "first_visible_frame": grid[fv] if fv >= 0 else None,
           "masklet_id": None, "masklet_first_appeared": None, "masklet_first_appeared_frame": None,
           "mean_iou": 0.0, "J": 0.0, "F": 0.0, "J&F": 0.0, "found": False}
    if match is None or not len(vis):
        return row
    mid, masks, first, iou = match
    empty = np.zeros(gt.shape[1:], bool)
    j, f = jf_for_masklet([gt[a] for a in vis], [empty if masks[a] is None else masks[a] for a in vis])
    jf = (j + f) / 2
    row.update({"masklet_id": mid, "masklet_first_appeared": first,
                "masklet_first_appeared_frame": grid[first] if first >= 0 else None,
                "mean_iou": round(iou, 4), "J": round(j, 4), "F": round(f, 4), "J&F": round(jf, 4),
                # a late object counts only when a re-seeding started its masklet, not frame 0's seeds
                "found": bool(jf >= threshold and (not row["late"] or first > 0))})
    return row


def late_object_report(masklets: Sequence[dict], frames: Sequence[dict], gt: Mapping[int, np.ndarray],
                       grid: Sequence[int] | None = None, threshold: float = FOUND_JF,
                       cover_frac: float = COVER_FRAC) -> LateObjectReport:
    """Score a labeling run's automatic masklets against ground truth; see the module docstring.

    ``masklets`` / ``frames``: the ``masklets`` / ``masklet_frames`` rows (``LabelResult.masklets`` /
    ``.frames``); ``gt``: ``{object id: [T,H,W] bool}`` on the same T annotated frames; ``grid``: the
    source frame of each annotated frame (default: the ``frame_idx`` of ``frames``, else ``4 * a``).
    Object rows: ``obj_id``, ``late``, ``first_visible`` (annotated frame) / ``first_visible_frame``
    (source frame), ``masklet_id`` (None: no match), ``masklet_first_appeared`` / ``..._frame``,
    ``mean_iou``, ``J``, ``F``, ``J&F``, ``found``.
    """
    if not gt:
        raise ValueError("late_object_report needs ground truth for at least one object")
    gt = {k: np.asarray(v).astype(bool) for k, v in gt.items()}
    T = len(next(iter(gt.values())))
    if any(len(v) != T for v in gt.values()):
        raise ValueError("ground-truth objects disagree on the number of annotated frames")
    if grid is None:
        by_a = {int(f["ann_idx"]): int(f["frame_idx"]) for f in frames}
        grid = [by_a.get(a, 4 * a) for a in range(T)]
    pred = _auto_masks(masklets, frames, T)
    mids, oids = list(pred), list(gt)
    first = {mid: _first_visible(pred[mid]) for mid in mids}
    vis = {o: np.flatnonzero(gt[o].reshape(T, -1).any(1)) for o in oids}
    scores = np.array([[_mean_iou(gt[o], pred[m], vis[o]) if len(vis[o]) else 0.0 for m in mids]
                       for o in oids]).reshape(len(oids), len(mids))
    match = _assign(scores)
    objects = [_object_row(o, gt[o], vis[o], grid, (mids[match[i]], pred[mids[match[i]]], first[mids[match[i]]],
                                                    float(scores[i, match[i]])) if i in match else None, threshold)
               for i, o in enumerate(oids)]
    return LateObjectReport(objects=objects, annotated_frames=T,
                            masklets=[_masklet_row(m, pred[m], first[m], grid, cover_frac) for m in mids])

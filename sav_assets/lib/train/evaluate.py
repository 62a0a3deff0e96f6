"""Semi-supervised VOS evaluation of SAM 2 models, side by side, scored by our SA-V evaluator.

As SA-V val: every object is prompted by its ground-truth mask on the first annotated frame and
tracked through the video's annotated frames (SA-V's 6 fps grid) by
:func:`sav_assets.lib.train.forward.clip_forward` in eval mode. Predictions and ground truth are
written as an SA-V val layout (``<video>/<obj:03d>/<4k:05d>.png``) in a temporary folder and scored
by :func:`sav_assets.lib.sav.jf.evaluate_layout` (first and last frame skipped, objects counted from
their first appearance, exactly as ``sav_evaluator.py``).

Besides J, F and J&F, each model gets a **temporal stability** figure: per object and pair of
consecutive annotated frames, the IoU of the two predicted masks is compared with the IoU of the two
ground-truth masks; stability is ``1 - mean |IoU_pred - IoU_gt|`` (1: the prediction changes from
frame to frame exactly as much as the object does; flicker and drift lower it), and an **objects
apart** figure (:func:`objects_apart`: 0 when every tracked object gets one and the same mask, as a
foreground segmenter that ignores its memory would give, 1 for disjoint masks). Each video gets a plot
of per-frame J&F (mean over its objects, :func:`sav_assets.lib.sav.jf.db_eval_iou` and
``db_eval_boundary``) with one line per model.

:func:`compare_label_sets` compares two models' *automatic* labels on the same videos, as stored in
the lake (the current set in ``masklets``, the superseded one in ``masklets_archive``,
lib/label/batch.py): per video, masklet counts, the J&F of the previous set's masklets against their
best-matching current masklet, and, where the video has manual masklets, each set's J&F against them.

Episodes come from the lake's SA-V val layout (:func:`load_layout_episodes`, written by the
``eval_layout`` asset) or from :func:`sav_assets.lib.train.synthetic.demo_episodes`.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sav_assets.lib.sav.jf import db_eval_boundary, db_eval_iou, evaluate_layout


@dataclass
class Episode:
    video_id: str
    frames: np.ndarray     # [T,H,W,3] uint8, the annotated frames in order
    masks: np.ndarray      # [T,N,H,W] bool ground truth
    obj_ids: list[str]


def predict_episode(loaded: Any, ep: Episode) -> np.ndarray:
    """Masks ``[T,N,H,W]`` bool: every object prompted by its frame-0 mask, tracked to the end."""
    import torch
    import torch.nn.functional as F

    from sav_assets.lib.train.forward import clip_forward, prepare_clip

    model = loaded.model
    was_training = model.training
    model.eval()
    frames = torch.from_numpy(np.ascontiguousarray(ep.frames)).permute(0, 3, 1, 2)
    masks = torch.from_numpy(np.ascontiguousarray(ep.masks[:1]))
    f, m = prepare_clip(frames, masks, loaded.image_size, loaded.device)
    h, w = ep.masks.shape[-2:]
    with torch.no_grad(), loaded.autocast():
        outs = clip_forward(model, f, m)
        pred = torch.stack([o["pred_masks_high_res"][:, 0].float() for o in outs])  # [T,N,S,S]
        pred = F.interpolate(pred, size=(h, w), mode="bilinear", align_corners=False) > 0
    model.train(was_training)
    return pred.cpu().numpy()


def _write_layout(root: Path, ep: Episode, masks: np.ndarray) -> None:
    from PIL import Image

    for j, obj in enumerate(ep.obj_ids):
        d = root / ep.video_id / f"{int(obj):03d}"
        d.mkdir(parents=True, exist_ok=True)
        for t in range(masks.shape[0]):
            Image.fromarray(masks[t, j].astype(np.uint8)).save(d / f"{4 * t:05d}.png")


def stability(gt: np.ndarray, pred: np.ndarray) -> float:
    """``1 - mean |IoU(pred_t, pred_t+1) - IoU(gt_t, gt_t+1)|`` over objects and consecutive frames."""
    diffs = [abs(float(db_eval_iou(pred[t, j], pred[t + 1, j])) - float(db_eval_iou(gt[t, j], gt[t + 1, j])))
             for j in range(gt.shape[1]) for t in range(gt.shape[0] - 1)]
    return 1.0 - float(np.mean(diffs)) if diffs else 1.0


def objects_apart(pred: np.ndarray) -> float | None:
    """How differently a model segments the objects it tracks: ``1 - mean IoU`` between the predicted
    masks of two different objects on the same propagated frame (frames after the prompt frame, pairs
    where either mask is non-empty). 1: disjoint masks per object; 0: one and the same mask for every
    object (a foreground segmenter that ignores its memory). None with fewer than two objects."""
    t_len, n = pred.shape[:2]
    ious = [float(db_eval_iou(pred[t, i], pred[t, j])) for t in range(1, t_len) for i in range(n)
            for j in range(i + 1, n) if pred[t, i].any() or pred[t, j].any()]
    return 1.0 - float(np.mean(ious)) if ious else None


def per_frame_jf(gt: np.ndarray, pred: np.ndarray) -> list[float]:
    """Mean over objects of (J + F) / 2 on each frame."""
    return [float(np.mean([(db_eval_iou(gt[t, j], pred[t, j]) + db_eval_boundary(gt[t, j], pred[t, j])) / 2
                           for j in range(gt.shape[1])])) for t in range(gt.shape[0])]


def evaluate_models(models: dict[str, Any], episodes: list[Episode], plots: bool = True) -> dict:
    """Every model on every episode. Returns ``{"models": {name: {"J", "F", "J&F", "stability",
    "objects_apart" (:func:`objects_apart`), "videos": {vid: J&F}}}, "rows": [...] (one per model, for a table), "per_video": [...] (one row per
    video, a J&F column per model), "plots": {vid: png bytes}}``."""
    results: dict[str, dict] = {}
    curves: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        gt_root = Path(tmp) / "gt"
        for ep in episodes:
            _write_layout(gt_root, ep, ep.masks)
        for name, loaded in models.items():
            pred_root = Path(tmp) / f"pred_{len(results)}"
            stab, apart, curves[name] = [], [], {}
            for ep in episodes:
                pred = predict_episode(loaded, ep)
                _write_layout(pred_root, ep, pred)
                stab.append(stability(ep.masks, pred))
                apart.append(objects_apart(pred))
                if plots:            # the per-frame curves only feed the plots
                    curves[name][ep.video_id] = per_frame_jf(ep.masks, pred)
            res = evaluate_layout(gt_root, pred_root, [ep.video_id for ep in episodes])
            apart = [a for a in apart if a is not None]
            results[name] = {"J": res["J"], "F": res["F"], "J&F": res["J&F"], "stability": float(np.mean(stab)),
                             "objects_apart": float(np.mean(apart)) if apart else None,
                             "videos": {v: r["J&F"] for v, r in res["videos"].items()}}
    rows = [{"model": n, "J&F": round(r["J&F"], 4), "J": round(r["J"], 4), "F": round(r["F"], 4),
             "stability": round(r["stability"], 4),
             "objects apart": None if r["objects_apart"] is None else round(r["objects_apart"], 4)}
            for n, r in results.items()]
    per_video = [{"video_id": ep.video_id, **{n: round(results[n]["videos"].get(ep.video_id, float("nan")), 4)
                                              for n in results}} for ep in episodes]
    out = {"models": results, "rows": rows, "per_video": per_video, "plots": {}}
    if plots:
        out["plots"] = {ep.video_id: plot_video(ep.video_id, {n: c[ep.video_id] for n, c in curves.items()})
                        for ep in episodes}
    return out


def jf_scorer(episodes: list[Episode]) -> Callable[[Any], float]:
    """``score(loaded)``: a model's J&F on ``episodes`` (the ``evaluate`` of
    :func:`sav_assets.lib.train.finetune.finetune`'s early stopping)."""
    def score(loaded: Any) -> float:
        return evaluate_models({"dev": loaded}, episodes, plots=False)["models"]["dev"]["J&F"]
    return score


def plot_video(video_id: str, curves: dict[str, list[float]]) -> bytes:
    """PNG: per-frame J&F of each model on one video."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 2.6), dpi=80)
    for name, ys in curves.items():
        ax.plot(range(len(ys)), ys, marker=".", lw=1, label=name)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("annotated frame")
    ax.set_ylabel("J&F")
    ax.set_title(video_id, fontsize=9)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def load_layout_episodes(layout_dir: str | os.PathLike, split: str = "val", max_videos: int | None = None,
                         max_frames: int | None = None) -> list[Episode]:
    """Episodes from an SA-V val/test layout (``sav_<split>.txt``, ``JPEGImages_24fps``,
    ``Annotations_6fps``): the annotated frames of each listed video and every object's masks."""
    from PIL import Image

    root = Path(layout_dir)
    ids = [x.strip() for x in (root / f"sav_{split}.txt").read_text().splitlines() if x.strip()]
    out = []
    for vid in ids[:max_videos]:
        adir = root / "Annotations_6fps" / vid
        objs = sorted(d.name for d in adir.iterdir() if d.is_dir())
        if not objs:
            continue
        names = sorted(n for n in os.listdir(adir / objs[0]) if n.endswith(".png"))[:max_frames]
        frames = np.stack([np.asarray(Image.open(root / "JPEGImages_24fps" / vid / (n[:-4] + ".jpg")).convert("RGB"))
                           for n in names])
        masks = np.stack([np.stack([np.asarray(Image.open(adir / o / n)) > 0 for o in objs]) for n in names])
        out.append(Episode(video_id=vid, frames=frames, masks=masks, obj_ids=objs))
    return out


def _masklet_masks(frames: list[dict]) -> dict[tuple, dict[int, dict]]:
    """``{(masklet_type, masklet_id): {ann_idx: rle}}`` of some ``masklet_frames`` rows."""
    from sav_assets.lib.sav.rle import from_row

    out: dict[tuple, dict[int, dict]] = {}
    for f in frames:
        out.setdefault((f["masklet_type"], f["masklet_id"]), {})[f["ann_idx"]] = from_row(f)
    return out


def _best_jf(ref: dict[int, dict], cands: list[dict[int, dict]]) -> float:
    """J&F of ``ref`` against its best-matching candidate masklet over ``ref``'s annotated frames
    (a frame a candidate lacks is an empty mask); 0 with no candidate."""
    from sav_assets.lib.sav.jf import jf_for_masklet
    from sav_assets.lib.sav.rle import decode

    idx = sorted(ref)
    gt = [decode(ref[t]).astype(bool) for t in idx]
    best = 0.0
    for c in cands:
        pred = [decode(c[t]).astype(bool) if t in c else np.zeros_like(g) for t, g in zip(idx, gt, strict=True)]
        j, f = jf_for_masklet(gt, pred)
        best = max(best, (j + f) / 2)
    return best


def _mean_best(refs: list[dict[int, dict]], cands: list[dict[int, dict]]) -> float | None:
    return round(float(np.mean([_best_jf(r, cands) for r in refs])), 4) if refs else None


def _model(m: dict) -> str:
    """``model_name@<checkpoint sha256 prefix>``, or ``@random`` for random weights."""
    return f"{m['model_name']}@{(m['checkpoint_sha256'] or 'random')[:12]}"


def _by_video(rows: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(r["video_id"], []).append(r)
    return out


def compare_label_sets(lake, video_ids: list[str] | None = None) -> list[dict]:
    """One row per video that has a current label set and an archived (superseded) one: the two
    label keys and models, their automatic masklet counts, ``jf_previous_vs_current`` (mean over
    the previous set's automatic masklets of the J&F against the best-matching current one) and,
    with manual masklets, ``jf_manual_current`` / ``jf_manual_previous`` (mean over manual masklets
    of the J&F of the best-matching automatic masklet of each set). The newest archived set other
    than the current one is compared."""
    from sav_assets.lib.store.tables import MASKLET_FRAMES, MASKLET_FRAMES_ARCHIVE, MASKLETS, MASKLETS_ARCHIVE

    cur_m = lake.read_table("masklets", schema=MASKLETS).to_pylist()
    arc_m = lake.read_table("masklets_archive", schema=MASKLETS_ARCHIVE).to_pylist()
    wanted = set(video_ids) if video_ids is not None else {m["video_id"] for m in arc_m}
    cur_key = {m["video_id"]: m["label_key"] for m in cur_m if m["label_key"] and m["video_id"] in wanted}
    prev: dict[str, dict] = {}
    for m in arc_m:
        v = m["video_id"]
        if v in cur_key and m["label_key"] != cur_key[v] and (v not in prev or m["created_at"] > prev[v]["created_at"]):
            prev[v] = m
    rows = []
    if not prev:                     # no video relabeled yet: the frame tables need not be read
        return rows
    frames = _by_video(lake.read_table("masklet_frames", schema=MASKLET_FRAMES).to_pylist())
    arc_f = _by_video(lake.read_table("masklet_frames_archive", schema=MASKLET_FRAMES_ARCHIVE).to_pylist())
    for vid in sorted(prev):
        key_p = prev[vid]["label_key"]
        cur = _masklet_masks(frames.get(vid, []))
        old = _masklet_masks([f for f in arc_f.get(vid, []) if f["label_key"] == key_p])
        mine = {(m["masklet_type"], m["masklet_id"]) for m in cur_m if m["video_id"] == vid and m["label_key"]}
        auto_c = [m for k, m in cur.items() if k[0] == "auto" and k in mine]     # not an imported SA-V auto file
        auto_p = [m for (t, _), m in old.items() if t == "auto"]
        manual = [m for (t, _), m in cur.items() if t == "manual"]
        rows.append({"video_id": vid, "current_key": cur_key[vid][:16], "previous_key": key_p[:16],
                     "current_model": _model(next(m for m in cur_m if m["video_id"] == vid and m["label_key"])),
                     "previous_model": _model(prev[vid]),
                     "auto_current": len(auto_c), "auto_previous": len(auto_p),
                     "jf_previous_vs_current": _mean_best(auto_p, auto_c),
                     "jf_manual_current": _mean_best(manual, auto_c),
                     "jf_manual_previous": _mean_best(manual, auto_p)})
    return rows

"""SAM 2 pseudo-labeler: automatic and prompted masklets on a video's annotation grid.

``label_video(loaded, video_path, video, cfg, prompts)`` returns rows for the ``masklets`` and
``masklet_frames`` tables (``tables.MASKLETS`` / ``tables.MASKLET_FRAMES`` columns, minus
``batch_id`` / ``created_at``), run statistics for ``label_runs`` and a small overlay PNG.

How it works

* Only the annotated frames are decoded (``annotation_grid(frame_count, fps, cfg.target_fps)``:
  every 4th frame at 24 fps, as SA-V), as uint8, ``cfg.chunk_frames`` at a time
  (:mod:`sav_assets.lib.video.decode`, optionally in an isolated subprocess). Each frame is resized and
  normalised on the compute device when it is processed; no float copy of the video ever exists.
  The tracker sees the annotated frames as consecutive frames, which is how SAM 2 was trained on SA-V.
* Auto masklets: ``SAM2AutomaticMaskGenerator`` seeds objects on annotated frame 0 (reusing the
  tracker's backbone features for that frame) and again every ``cfg.reseed_every`` annotated frames;
  a generated mask whose area is covered by the union of the tracked masks by less than
  ``cfg.new_object_max_overlap`` starts a new masklet (see :func:`new_masklet_candidates`), so
  objects entering later get ``masklet_first_appeared_frame > 0``.
* Prompted masklets: a prompt's points/box seed a new masklet on its (snapped) annotated frame; later
  prompts for the same ``obj_id`` correct it on their frame, as a correction click in SAM 2's demo.
  Prompted masklets are tracked forward only (empty before their first prompt).
* Tracking is SAM 2's own ``track_step`` (memory attention, memory encoder, object pointers), driven
  by a batched loop: objects seeded together form a *cohort* that shares its conditioning frames and
  is tracked as one batch (SAM2VideoPredictor tracks each object separately). For the same mask
  prompts it gives SAM2VideoPredictor's masks (tests check this against ``propagate_in_video``).
* Object score logits <= 0 mean "not visible": the frame's RLE is empty and ``visible`` is False.
* Memory is bounded: non-conditioning outputs older than ``cfg.max_memory_frames`` annotated frames
  are dropped (SAM 2 reads at most 15 past frames, so the default 16 changes nothing), the decoded
  frames live one chunk at a time, and ``offload_state_to_cpu`` keeps memory features on the host.
  Because the tracking state is carried across chunks, chunking never changes the labels: identity
  is kept across chunk boundaries exactly (a re-prompting hand-over would lose objects that are
  occluded at the boundary and re-anchor drifting masks).
* Cycle check: from the last annotated frame, the forward masks of the masklets visible there are
  propagated backwards; ``masklet_cycle_iou`` is the mean IoU of backward vs forward masks over the
  masklet's frames before the last (None when it is not visible on the last frame).
* CUDA out-of-memory is retried once with offloading on and smaller chunks; every other failure is
  a :class:`LabelingFailed` with an ``error_class``.

torch / sam2 / decord are imported inside functions: importing this module is cheap.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from sav_assets.lib.sav import fields as masklet_fields
from sav_assets.lib.sav import rle
from sav_assets.lib.video.decode import FrameDecodeError, iter_frame_chunks
from sav_assets.lib.label.prompts import Prompt

log = logging.getLogger(__name__)

from sav_assets.lib.label.config import (  # noqa: E402,F401  (re-exported for callers)
    _RESULT_FIELDS, LABELER_VERSION, MODES, LabelerConfig, LabelingFailed, LabelResult, label_key,
)

_IMG_MEAN = (0.485, 0.456, 0.406)
_IMG_STD = (0.229, 0.224, 0.225)


def _file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# pure helpers (no torch)


def new_masklet_candidates(seed_masks: Sequence[np.ndarray], tracked_masks: Sequence[np.ndarray] | np.ndarray | None,
                           max_overlap: float, min_area: int = 1) -> list[int]:
    """Indices of seed masks that should start new masklets.

    A seed (HxW bool) qualifies when its area is at least ``min_area`` and the fraction of it covered
    by the union of the tracked masks is below ``max_overlap``. Using the union means a seed split
    across two tracked objects is not re-added; using the seed's own area means a part of a tracked
    object is not re-added, while a whole whose part alone is tracked is.
    """
    union = None
    if tracked_masks is not None and len(tracked_masks):
        union = np.zeros(np.asarray(tracked_masks[0]).shape, dtype=bool)
        for m in tracked_masks:
            union |= np.asarray(m, dtype=bool)
    out = []
    for i, s in enumerate(seed_masks):
        s = np.asarray(s, dtype=bool)
        a = int(s.sum())
        if a < max(1, min_area):
            continue
        cov = 0.0 if union is None else float(np.count_nonzero(s & union)) / a
        if cov < max_overlap:
            out.append(i)
    return out


def _clean_regions(mask: np.ndarray, min_area: int) -> np.ndarray:
    """Remove islands and fill holes smaller than min_area (SAM's postprocess, without OpenCV)."""
    from scipy import ndimage

    m = mask.astype(bool)
    lab, n = ndimage.label(m)
    if n:
        sizes = ndimage.sum(m, lab, range(1, n + 1))
        small = np.isin(lab, 1 + np.flatnonzero(sizes < min_area))
        if small.any() and not small.all():
            m = m & ~small
    inv = ~m
    lab, n = ndimage.label(inv)
    if n:
        sizes = ndimage.sum(inv, lab, range(1, n + 1))
        holes = np.isin(lab, 1 + np.flatnonzero(sizes < min_area))
        m = m | holes
    return m


def _encode_wh(masks_wh: np.ndarray) -> list[tuple[dict, int, list[float]]]:
    """RLE, area, bbox per mask from a bool array laid out [N, W, H] (zero-copy Fortran view)."""
    from pycocotools import mask as mu

    if masks_wh.shape[0] == 0:
        return []
    f = masks_wh.transpose(2, 1, 0).view(np.uint8)  # [H, W, N], Fortran-contiguous
    if not f.flags.f_contiguous:
        f = np.asfortranarray(f)
    rles = mu.encode(f)
    areas = mu.area(rles)
    boxes = mu.toBbox(rles)
    out = []
    for r, a, b in zip(rles, areas, boxes):
        out.append(({"size": [int(r["size"][0]), int(r["size"][1])], "counts": r["counts"].decode("ascii")},
                    int(a), [float(v) for v in b]))
    return out


def _nan_to_none(v) -> float | None:
    if v is None:
        return None
    v = float(v)
    return None if math.isnan(v) else v


# ---------------------------------------------------------------------------------------------
# frames for SAM2VideoPredictor (compatibility: the predictor's own API on in-memory frames)


class LazyFrames:
    """Indexable like SAM 2's ``images`` tensor ``[T, 3, S, S]`` but holding the uint8 frames.

    ``frames[i]`` resizes and normalises frame ``i`` on the device when SAM 2 asks for it, so a
    predictor state never holds a float copy of the video.
    """

    def __init__(self, frames_uint8: np.ndarray, image_size: int, device="cpu"):
        self.frames = frames_uint8
        self.image_size = int(image_size)
        self.device = device

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    def __getitem__(self, i):
        return _preprocess(self.frames[int(i)], self.image_size, self.device)[0]


def _preprocess(frame: np.ndarray, size: int, device):
    import torch
    import torch.nn.functional as F

    if isinstance(frame, torch.Tensor):
        x = frame.to(device, non_blocking=True)
    else:
        x = torch.from_numpy(np.ascontiguousarray(frame)).to(device, non_blocking=True)
    x = x.permute(2, 0, 1).unsqueeze(0).float().div_(255.0)
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor(_IMG_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(_IMG_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def init_video_state(predictor, frames_uint8: np.ndarray, *, offload_video_to_cpu: bool = False,
                     offload_state_to_cpu: bool = False) -> dict:
    """``SAM2VideoPredictor.init_state`` for in-memory uint8 frames ``[T, H, W, 3]`` (RGB).

    Same state layout as sam2 1.x's ``init_state``; ``images`` is a :class:`LazyFrames`. Use it with
    the predictor's ``add_new_points_or_box`` / ``add_new_mask`` / ``propagate_in_video``.
    """
    from collections import OrderedDict

    import torch

    dev = predictor.device
    frames_dev = frames_uint8
    if not offload_video_to_cpu and dev.type == "cuda":
        frames_dev = torch.from_numpy(np.ascontiguousarray(frames_uint8)).to(dev)
        frames_dev = _TensorFrames(frames_dev)
    st: dict[str, Any] = {
        "images": LazyFrames(frames_dev, predictor.image_size, dev),
        "num_frames": int(frames_uint8.shape[0]),
        "offload_video_to_cpu": offload_video_to_cpu,
        "offload_state_to_cpu": offload_state_to_cpu,
        "video_height": int(frames_uint8.shape[1]),
        "video_width": int(frames_uint8.shape[2]),
        "device": dev,
        "storage_device": torch.device("cpu") if offload_state_to_cpu else dev,
        "point_inputs_per_obj": {},
        "mask_inputs_per_obj": {},
        "cached_features": {},
        "constants": {},
        "obj_id_to_idx": OrderedDict(),
        "obj_idx_to_id": OrderedDict(),
        "obj_ids": [],
        "output_dict_per_obj": {},
        "temp_output_dict_per_obj": {},
        "frames_tracked_per_obj": {},
    }
    with torch.inference_mode():
        predictor._get_image_feature(st, frame_idx=0, batch_size=1)
    return st


class _TensorFrames:
    """uint8 frames already on the device, indexable like the numpy array."""

    def __init__(self, t):
        self.t = t
        self.shape = tuple(t.shape)

    def __getitem__(self, i):
        return self.t[i]


# ---------------------------------------------------------------------------------------------
# the batched SAM 2 tracker


class _Cohort:
    __slots__ = ("ids", "out")

    def __init__(self, ids: list[int], out: dict):
        self.ids = list(ids)
        self.out = out


class _Tracker:
    """Drives ``SAM2Base`` tracking over annotated-frame indices with cohorts of objects batched."""

    def __init__(self, loaded, num_frames: int, *, offload_state: bool, max_memory_frames: int,
                 reverse: bool = False):
        import torch

        self.torch = torch
        self.m = loaded.model
        self.S = int(loaded.image_size)
        self.device = self.m.device
        self.storage = torch.device("cpu") if offload_state else self.device
        self.num_frames = int(num_frames)
        self.reverse = reverse
        self.max_mem = max(1, int(max_memory_frames))
        self.cohorts: list[_Cohort] = []
        self.constants: dict = {}
        self.fill_hole_area = int(getattr(self.m, "fill_hole_area", 0) or 0)
        self._fill = None
        if self.fill_hole_area > 0:
            try:
                from sam2 import _C  # noqa: F401 - the CUDA extension the hole filling needs
                from sam2.utils.misc import fill_holes_in_mask_scores

                self._fill = fill_holes_in_mask_scores
            except ImportError:
                self._fill = None
        self._feat_cache: dict = {}

    # -- per-frame features --------------------------------------------------------------------
    def backbone(self, frame: np.ndarray) -> dict:
        self._feat_cache = {}
        return self.m.forward_image(_preprocess(frame, self.S, self.device))

    def feats(self, bb: dict, B: int):
        key = (id(bb), B)
        hit = self._feat_cache.get(key)
        if hit is None:
            exp = {
                "backbone_fpn": [f.expand(B, -1, -1, -1) for f in bb["backbone_fpn"]],
                "vision_pos_enc": [p.expand(B, -1, -1, -1) for p in bb["vision_pos_enc"]],
            }
            _, vf, vp, sizes = self.m._prepare_backbone_features(exp)
            hit = (vf, vp, sizes)
            self._feat_cache[key] = hit
        return hit

    def image_predictor_features(self, bb: dict) -> dict:
        """Backbone features in SAM2ImagePredictor's layout (for the automatic mask generator)."""
        _, vf, _, sizes = self.m._prepare_backbone_features(bb)
        vf = list(vf)
        if self.m.directly_add_no_mem_embed:
            vf[-1] = vf[-1] + self.m.no_mem_embed
        feats = [f.permute(1, 2, 0).view(1, -1, *s) for f, s in zip(vf[::-1], sizes[::-1])][::-1]
        return {"image_embed": feats[-1], "high_res_feats": feats[:-1]}

    # -- SAM 2 steps (mirroring SAM2VideoPredictor._run_single_frame_inference) ---------------
    def _step(self, t, is_init, feats, point_inputs, mask_inputs, output_dict, run_mem, prev_logits=None):
        vf, vp, sizes = feats
        m = self.m
        cur, sam_out, _, _ = m._track_step(t, is_init, vf, vp, sizes, point_inputs, mask_inputs, output_dict,
                                           self.num_frames, self.reverse, prev_logits)
        _, _, ious, low_res, high_res, obj_ptr, scores = sam_out
        cur["pred_masks"] = low_res
        cur["pred_masks_high_res"] = high_res
        cur["obj_ptr"] = obj_ptr
        cur["object_score_logits"] = scores
        m._encode_memory_in_output(vf, sizes, point_inputs, run_mem, high_res, scores, cur)
        return cur, ious.float().max(dim=-1).values

    def _pos_enc(self, pos):
        if pos is None:
            return None
        if "maskmem_pos_enc" not in self.constants:
            self.constants["maskmem_pos_enc"] = [x[0:1].clone() for x in pos]
        base = self.constants["maskmem_pos_enc"]
        B = pos[0].size(0)
        return [x.expand(B, -1, -1, -1) for x in base]

    def _compact(self, cur):
        torch = self.torch
        mf = cur["maskmem_features"]
        if mf is not None:
            mf = mf.to(torch.bfloat16).to(self.storage, non_blocking=True)
        pred_dev = cur["pred_masks"]
        if self._fill is not None:
            pred_dev = self._fill(pred_dev, self.fill_hole_area)
        out = {
            "maskmem_features": mf,
            "maskmem_pos_enc": self._pos_enc(cur["maskmem_pos_enc"]),
            "pred_masks": pred_dev.to(self.storage, non_blocking=True),
            "obj_ptr": cur["obj_ptr"],
            "object_score_logits": cur["object_score_logits"],
        }
        return out, pred_dev

    def _encode_prompted_memory(self, compact, feats):
        """Memory of a prompted frame, as SAM2VideoPredictor.propagate_in_video_preflight does it."""
        torch = self.torch
        vf, _, sizes = feats
        high = torch.nn.functional.interpolate(compact["pred_masks"].to(self.device), size=(self.S, self.S),
                                               mode="bilinear", align_corners=False)
        mf, mp = self.m._encode_new_memory(current_vision_feats=vf, feat_sizes=sizes, pred_masks_high_res=high,
                                           object_score_logits=compact["object_score_logits"],
                                           is_mask_from_pts=True)
        compact["maskmem_features"] = mf.to(torch.bfloat16).to(self.storage, non_blocking=True)
        compact["maskmem_pos_enc"] = self._pos_enc(mp)

    # -- operations ------------------------------------------------------------------------------
    @property
    def ids(self) -> list[int]:
        return [i for c in self.cohorts for i in c.ids]

    def track(self, t: int, bb: dict) -> dict[int, tuple]:
        """Track every cohort on frame t; {obj_id: (low-res logits [1,1,h,w], score [1], iou [1])}."""
        res: dict[int, tuple] = {}
        for c in self.cohorts:
            cond = c.out["cond_frame_outputs"].get(t)
            if cond is not None:
                pred = cond["pred_masks"].to(self.device)
                scores = cond["object_score_logits"][:, 0]
                ious = self.torch.ones_like(scores)
            else:
                out, ious = self._step(t, False, self.feats(bb, len(c.ids)), None, None, c.out, True)
                compact, pred = self._compact(out)
                c.out["non_cond_frame_outputs"][t] = compact
                scores = compact["object_score_logits"][:, 0]
            for i, oid in enumerate(c.ids):
                res[oid] = (pred[i:i + 1], scores[i:i + 1], ious[i:i + 1])
        self.prune(t)
        return res

    def add_masks(self, t: int, bb: dict, masks, ids: list[int]) -> dict[int, tuple]:
        """New cohort from binary masks ``[B, H, W]`` (any resolution) on frame t."""
        torch = self.torch
        mk = torch.as_tensor(masks).to(self.device).float()[:, None]
        if mk.shape[-2:] != (self.S, self.S):
            mk = torch.nn.functional.interpolate(mk, size=(self.S, self.S), mode="bilinear",
                                                 align_corners=False, antialias=True)
            mk = (mk >= 0.5).float()
        feats = self.feats(bb, len(ids))
        od = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
        out, ious = self._step(t, True, feats, None, mk, od, False)
        compact, pred = self._compact(out)
        self._encode_prompted_memory(compact, feats)
        od["cond_frame_outputs"][t] = compact
        self.cohorts.append(_Cohort(ids, od))
        scores = compact["object_score_logits"][:, 0]
        return {oid: (pred[i:i + 1], scores[i:i + 1], ious[i:i + 1]) for i, oid in enumerate(ids)}

    def add_points(self, t: int, bb: dict, items: list[tuple[int, dict]]) -> dict[int, tuple]:
        """New cohort from point/box prompts ``[(obj_id, point_inputs)]`` on frame t (SAM on the frame)."""
        torch = self.torch
        feats = self.feats(bb, 1)
        compacts, res = [], {}
        for oid, pin in items:
            od = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
            out, iou = self._step(t, True, feats, pin, None, od, False)
            compact, pred = self._compact(out)
            self._encode_prompted_memory(compact, feats)
            compacts.append(compact)
            res[oid] = (pred, compact["object_score_logits"][:, 0], iou)
        merged = {k: torch.cat([c[k] for c in compacts], dim=0)
                  for k in ("maskmem_features", "pred_masks", "obj_ptr", "object_score_logits")}
        merged["maskmem_pos_enc"] = self._pos_enc(
            [p.expand(len(compacts), -1, -1, -1) for p in compacts[0]["maskmem_pos_enc"]])
        self.cohorts.append(_Cohort([oid for oid, _ in items],
                                    {"cond_frame_outputs": {t: merged}, "non_cond_frame_outputs": {}}))
        return res

    def correct(self, t: int, bb: dict, obj_id: int, pin: dict) -> tuple:
        """Correction clicks for a tracked object on frame t (stored as its output on that frame)."""
        c, i = next((c, c.ids.index(obj_id)) for c in self.cohorts if obj_id in c.ids)
        stored = c.out["non_cond_frame_outputs"].get(t) or c.out["cond_frame_outputs"].get(t)
        prev = stored["pred_masks"][i:i + 1].to(self.device).clamp(-32.0, 32.0)
        od = {kind: {f: _slice_out(o, i) for f, o in frames.items()} for kind, frames in c.out.items()}
        feats = self.feats(bb, 1)
        out, iou = self._step(t, False, feats, pin, None, od, False, prev)
        compact, pred = self._compact(out)
        self._encode_prompted_memory(compact, feats)
        for k in ("maskmem_features", "pred_masks", "obj_ptr", "object_score_logits"):
            stored[k][i:i + 1] = compact[k].to(stored[k].device, stored[k].dtype)
        return pred, compact["object_score_logits"][:, 0], iou

    def prune(self, t: int) -> None:
        for c in self.cohorts:
            nc = c.out["non_cond_frame_outputs"]
            for k in list(nc):
                if (k >= t + self.max_mem) if self.reverse else (k <= t - self.max_mem):
                    del nc[k]


def _slice_out(o: dict, i: int) -> dict:
    return {
        "maskmem_features": None if o["maskmem_features"] is None else o["maskmem_features"][i:i + 1],
        "maskmem_pos_enc": None if o["maskmem_pos_enc"] is None else [p[i:i + 1] for p in o["maskmem_pos_enc"]],
        "pred_masks": o["pred_masks"][i:i + 1],
        "obj_ptr": o["obj_ptr"][i:i + 1],
        "object_score_logits": o["object_score_logits"][i:i + 1],
    }


def _to_video_res(per_obj: dict[int, tuple], ids: list[int], hw: tuple[int, int], group: int = 16):
    """Video-resolution masks [N, W, H] (bool, transposed for zero-copy RLE), stability, iou, score."""
    import torch
    import torch.nn.functional as F
    from sam2.utils.amg import calculate_stability_score

    H, W = hw
    if not ids:
        return np.zeros((0, W, H), dtype=bool), np.zeros(0), np.zeros(0)
    pred = torch.cat([per_obj[i][0] for i in ids], dim=0).float()          # [N,1,h,w]
    scores = torch.cat([per_obj[i][1] for i in ids], dim=0).float()        # [N]
    ious = torch.cat([per_obj[i][2] for i in ids], dim=0).float()          # [N]
    stab = calculate_stability_score(pred[:, 0], 0.0, 1.0).float()
    vis = scores > 0
    parts = []
    for g in range(0, pred.shape[0], group):
        up = F.interpolate(pred[g:g + group], size=(H, W), mode="bilinear", align_corners=False)[:, 0] > 0
        up &= vis[g:g + group, None, None]
        parts.append(up.transpose(1, 2).contiguous().cpu())
    masks = torch.cat(parts, dim=0).numpy()
    return masks, stab.cpu().numpy(), ious.cpu().numpy()


# ---------------------------------------------------------------------------------------------
# automatic mask generator


def _make_generator(loaded, cfg: LabelerConfig):
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    class _PresetFeaturePredictor(SAM2ImagePredictor):
        """SAM2ImagePredictor that takes the backbone features the tracker already computed."""

        preset: tuple | None = None

        def set_image(self, image):
            p = self.preset
            if p is not None and tuple(image.shape[:2]) == p[1]:
                self.preset = None
                self.reset_predictor()
                self._orig_hw = [p[1]]
                self._features = p[0]
                self._is_image_set = True
                self._is_batch = False
                return
            super().set_image(image)

    model = loaded.model
    gen = SAM2AutomaticMaskGenerator(
        model, points_per_side=cfg.points_per_side, points_per_batch=cfg.points_per_batch,
        pred_iou_thresh=cfg.pred_iou_thresh, stability_score_thresh=cfg.stability_score_thresh,
        box_nms_thresh=cfg.box_nms_thresh, min_mask_region_area=0, output_mode="binary_mask",
    )
    pred = _PresetFeaturePredictor(model)
    s = int(loaded.image_size)
    pred._bb_feat_sizes = [(s // 4, s // 4), (s // 8, s // 8), (s // 16, s // 16)]
    gen.predictor = pred
    return gen


def _generate_seeds(gen, tracker: _Tracker, bb: dict, frame: np.ndarray, cfg: LabelerConfig) -> list[dict]:
    gen.predictor.preset = (tracker.image_predictor_features(bb), tuple(frame.shape[:2]))
    anns = gen.generate(frame)
    gen.predictor.preset = None
    H, W = frame.shape[:2]
    min_area = max(1, math.ceil(cfg.min_area_frac * H * W))
    seeds = []
    for a in anns:
        m = np.asarray(a["segmentation"], dtype=bool)
        if cfg.min_mask_region_area > 0:
            m = _clean_regions(m, cfg.min_mask_region_area)
        if int(m.sum()) < min_area:
            continue
        seeds.append({"mask": m, "predicted_iou": float(a["predicted_iou"]),
                      "stability_score": float(a["stability_score"])})
    seeds.sort(key=lambda s: -(s["predicted_iou"] * s["stability_score"]))
    return seeds


# ---------------------------------------------------------------------------------------------
# prompts


def _plan_prompts(prompts: Sequence[Prompt], video_id: str, grid: list[int], n_frames: int, H: int, W: int):
    """{ann_idx: [(obj_id, Prompt, is_new)]} with frames snapped to the annotation grid."""
    plan: dict[int, list] = {}
    first: dict[int, int] = {}
    seen: set = set()
    mine = [p for p in prompts if p.video_id == video_id]
    if len(mine) != len(prompts):
        log.warning("ignoring %d prompts for other videos than %s", len(prompts) - len(mine), video_id)
    for p in sorted(mine, key=lambda p: (p.frame_idx, p.obj_id)):
        if p.frame_idx >= n_frames:
            raise LabelingFailed("bad_prompt", f"prompt for obj {p.obj_id} on frame {p.frame_idx}, "
                                               f"but the video has {n_frames} frames")
        coords = [c for pt in (p.points or []) for c in pt] + list(p.box or [])
        xs, ys = coords[0::2], coords[1::2]
        if any(x < 0 or x > W for x in xs) or any(y < 0 or y > H for y in ys):
            raise LabelingFailed("bad_prompt", f"prompt for obj {p.obj_id} on frame {p.frame_idx} has "
                                               f"coordinates outside the {W}x{H} frame")
        k = bisect.bisect_left(grid, p.frame_idx)
        cands = [j for j in (k - 1, k) if 0 <= j < len(grid)]
        a = min(cands, key=lambda j: (abs(grid[j] - p.frame_idx), j))
        if (p.obj_id, a) in seen:
            raise LabelingFailed("bad_prompt", f"two prompts for obj {p.obj_id} fall on annotated frame "
                                               f"{grid[a]} (frames are snapped to the {len(grid)}-frame grid)")
        seen.add((p.obj_id, a))
        is_new = p.obj_id not in first
        if is_new:
            first[p.obj_id] = a
        plan.setdefault(a, []).append((p.obj_id, p, is_new))
    return plan, first


def _point_inputs(p: Prompt, H: int, W: int, S: int, device) -> dict:
    import torch

    pts = [list(map(float, q)) for q in (p.points or [])]
    labs = list(p.labels or [])
    if p.box is not None:
        pts = [[p.box[0], p.box[1]], [p.box[2], p.box[3]]] + pts
        labs = [2, 3] + labs
    coords = torch.tensor(pts, dtype=torch.float32).reshape(1, -1, 2)
    coords = coords / torch.tensor([float(W), float(H)]) * S
    return {"point_coords": coords.to(device), "point_labels": torch.tensor([labs], dtype=torch.int32).to(device)}


# ---------------------------------------------------------------------------------------------
# main entry point


def label_video(loaded, video_path: str, video: dict, cfg: LabelerConfig | None = None,
                prompts: list[Prompt] | None = None, progress: Callable[[int, int], None] | None = None,
                mode: str = "auto+prompted") -> LabelResult:
    """Label one video; see the module docstring. Raises LabelingFailed(error_class, message)."""
    cfg = cfg or LabelerConfig()
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    import torch

    oom_types = tuple({getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError),
                       torch.cuda.OutOfMemoryError})
    try:
        try:
            return _label(loaded, video_path, video, cfg, prompts or [], progress, mode, retried=False)
        except oom_types as e:
            log.warning("CUDA out of memory labeling %s (%s); retrying once with offloading",
                        video.get("video_id"), str(e).splitlines()[0] if str(e) else "")
            _free_cuda()
            cfg2 = replace(cfg, offload_video_to_cpu=True, offload_state_to_cpu=True,
                           chunk_frames=max(1, min(cfg.chunk_frames, 16)),
                           points_per_batch=max(1, min(cfg.points_per_batch, 16)))
            try:
                return _label(loaded, video_path, video, cfg2, prompts or [], progress, mode, retried=True)
            except oom_types as e2:
                _free_cuda()
                raise LabelingFailed("oom", f"CUDA out of memory even with offloading: {e2}") from e2
    except LabelingFailed:
        raise
    except FrameDecodeError as e:
        raise LabelingFailed(e.error_class, str(e)) from e
    except Exception as e:
        log.exception("labeling %s failed", video.get("video_id"))
        raise LabelingFailed("internal_error", f"{type(e).__name__}: {e}") from e


def _free_cuda() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class _Recorder:
    """Per-masklet per-annotated-frame results."""

    def __init__(self, T: int):
        self.T = T
        self.rec: dict[int, list] = {}
        self.kind: dict[int, str] = {}
        self.created: dict[int, int] = {}

    def new(self, mid: int, kind: str, a: int) -> None:
        self.rec[mid] = [None] * self.T
        self.kind[mid] = kind
        self.created[mid] = a

    def put(self, mid: int, a: int, enc: tuple, iou, stab) -> None:
        r, area, box = enc
        vis = area > 0
        self.rec[mid][a] = (r["counts"], area, box, vis, _nan_to_none(iou), _nan_to_none(stab) if vis else None)


def _label(loaded, video_path: str, video: dict, cfg: LabelerConfig, prompts: list[Prompt],
           progress, mode: str, retried: bool) -> LabelResult:
    import psutil
    import torch

    t_start = time.perf_counter()
    proc = psutil.Process()
    peak_rss = proc.memory_info().rss
    cuda = str(loaded.device).startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()

    video_id = str(video["video_id"])
    n_frames = int(video["video_frame_count"] or 0)
    fps = float(video.get("video_fps") or 0.0)
    H0, W0 = int(video["video_height"]), int(video["video_width"])
    grid = masklet_fields.annotation_grid(n_frames, fps, cfg.target_fps)
    if not grid:
        raise LabelingFailed("empty_video", f"{video_id}: no frames to annotate (frame_count={n_frames})")
    T = len(grid)
    use_auto = mode in ("auto", "auto+prompted")
    use_prompts = [] if mode == "auto" else list(prompts)
    plan, first_prompt = _plan_prompts(use_prompts, video_id, grid, n_frames, H0, W0)
    content_sha = video.get("content_sha256") or _file_sha256(video_path)
    key = label_key(content_sha, loaded, cfg, prompts=use_prompts, mode=mode)

    S = int(loaded.image_size)
    dev = loaded.model.device
    tracker = _Tracker(loaded, T, offload_state=cfg.offload_state_to_cpu, max_memory_frames=cfg.max_memory_frames)
    gen = _make_generator(loaded, cfg) if use_auto else None
    recs = _Recorder(T)
    next_auto = (max(first_prompt) + 1) if first_prompt else 0
    total = T * (2 if cfg.cycle_check else 1)
    done = 0
    best = (-1, None, None)  # (visible count, ann idx, small frame)
    hw: tuple[int, int] | None = None
    decode_stats: dict = {}
    decode_kw = {"isolate": cfg.isolate_decode, "timeout_s": cfg.decode_timeout_s, "prefetch": cfg.prefetch,
                 "stats": decode_stats}
    last_masks: dict[int, np.ndarray] = {}

    def tick(n=1):
        nonlocal done, peak_rss
        done += n
        peak_rss = max(peak_rss, proc.memory_info().rss)
        if progress is not None:
            progress(min(done, total), total)

    with torch.inference_mode(), loaded.autocast():
        # ---------------- forward pass ------------------------------------------------------
        for chunk in iter_frame_chunks(video_path, grid, cfg.chunk_frames, first_chunk=8, **decode_kw):
            frames = chunk.frames
            if not cfg.offload_video_to_cpu and cuda:
                frames = torch.from_numpy(np.ascontiguousarray(frames)).to(dev, non_blocking=True)
            for j in range(len(chunk.indices)):
                a = chunk.start + j
                frame = chunk.frames[j]
                if hw is None:
                    hw = (int(frame.shape[0]), int(frame.shape[1]))
                    if hw != (H0, W0):
                        log.warning("%s: decoded frames are %dx%d but the video row says %dx%d; masks use "
                                    "the decoded size", video_id, hw[1], hw[0], W0, H0)
                H, W = hw
                seeding = use_auto and (a == 0 or (cfg.reseed_every > 0 and a % cfg.reseed_every == 0)) \
                    and len(recs.rec) < cfg.max_objects
                todo = plan.get(a, [])
                if not tracker.cohorts and not seeding and not todo:
                    tick()
                    continue
                bb = tracker.backbone(frames[j])
                per_obj = tracker.track(a, bb)
                new_items = []
                for oid, p, is_new in todo:
                    pin = _point_inputs(p, H0, W0, S, dev)
                    if is_new:
                        new_items.append((oid, pin))
                    else:
                        per_obj[oid] = tracker.correct(a, bb, oid, pin)
                if new_items:
                    per_obj.update(tracker.add_points(a, bb, new_items))
                    for oid, _ in new_items:
                        recs.new(oid, "prompted", a)
                ids = tracker.ids
                masks, stab, ious = _to_video_res(per_obj, ids, (H, W))
                encs = _encode_wh(masks)
                for k, oid in enumerate(ids):
                    recs.put(oid, a, encs[k], ious[k], stab[k])
                if seeding:
                    seeds = _generate_seeds(gen, tracker, bb, chunk.frames[j], cfg)
                    budget = cfg.max_objects - len(recs.rec)
                    tracked = [masks[k].T for k in range(len(ids))]
                    pick = new_masklet_candidates([s["mask"] for s in seeds], tracked,
                                                  cfg.new_object_max_overlap)[:max(0, budget)]
                    if pick:
                        new_ids = list(range(next_auto, next_auto + len(pick)))
                        next_auto += len(pick)
                        smasks = np.stack([seeds[i]["mask"] for i in pick])
                        tracker.add_masks(a, bb, smasks, new_ids)
                        for oid, i in zip(new_ids, pick):
                            recs.new(oid, "auto", a)
                            r = rle.encode(seeds[i]["mask"])
                            enc = (r, rle.area(r), rle.bbox(r))
                            recs.put(oid, a, enc, seeds[i]["predicted_iou"], seeds[i]["stability_score"])
                nvis = sum(1 for oid in recs.rec if recs.rec[oid][a] is not None and recs.rec[oid][a][3])
                if nvis > best[0] and cfg.overlay_width:
                    best = (nvis, a, _small(chunk.frames[j], cfg.overlay_width))
                if a == T - 1:
                    last_masks = {oid: masks[k].T for k, oid in enumerate(ids)}
                tick()
            del frames
        if hw is None:
            raise LabelingFailed("decode_error", f"{video_id}: no frames decoded")
        H, W = hw
        t_forward = time.perf_counter() - t_start

        # ---------------- cycle check (backward from the last annotated frame) ---------------
        cycle: dict[int, float | None] = {mid: None for mid in recs.rec}
        L = T - 1
        seeds_back = [mid for mid in recs.rec if recs.rec[mid][L] is not None and recs.rec[mid][L][3]]
        if cfg.cycle_check and T >= 2 and seeds_back:
            lo = min(recs.created[m] for m in seeds_back)
            if lo < L:
                cycle.update(_cycle_pass(loaded, video_path, grid, lo, L, seeds_back, recs, (H, W), cfg,
                                         decode_kw, last_masks, tick))
        tick(max(0, total - done))

    # ---------------- rows ----------------------------------------------------------------------
    masklets, frame_rows = _rows(video_id, grid, recs, (H, W), loaded, key, cycle)
    overlay_png = None
    sample_frame_idx = None
    if best[1] is not None:
        a = best[1]
        sample_frame_idx = int(grid[a])
        from sav_assets.lib.label.overlay import render_overlay

        mids = [m for m in recs.rec if recs.rec[m][a] is not None and recs.rec[m][a][3]]
        overlay_png = render_overlay(best[2], [{"size": [H, W], "counts": recs.rec[m][a][0]} for m in mids],
                                     mids, width=cfg.overlay_width)
    elapsed = time.perf_counter() - t_start
    peak_rss = max(peak_rss, proc.memory_info().rss)
    stats = {
        "frames_labeled": T,
        "seconds": elapsed,
        "forward_seconds": t_forward,
        "fps": T / elapsed if elapsed > 0 else None,
        # this process plus the isolated decoder process, which runs beside it
        "peak_host_mb": peak_rss / 2**20 + decode_stats.get("decoder_peak_mb", 0.0),
        "peak_decoder_mb": decode_stats.get("decoder_peak_mb"),
        "peak_gpu_mb": (torch.cuda.max_memory_allocated() / 2**20) if cuda else None,
        "objects": len(masklets),
        "masklets_auto": sum(1 for m in masklets if m["masklet_type"] == "auto"),
        "masklets_prompted": sum(1 for m in masklets if m["masklet_type"] == "prompted"),
        "cohorts": len(tracker.cohorts),
        "sample_frame_idx": sample_frame_idx,
        "device": str(loaded.device),
        "image_size": S,
        "model_name": loaded.model_name,
        "random_weights": bool(loaded.random_weights),
        "oom_retried": retried,
        "video_hw": [H, W],
    }
    return LabelResult(masklets=masklets, frames=frame_rows, stats=stats, sample_overlay_png=overlay_png,
                       label_key=key)


def _small(frame: np.ndarray, width: int) -> np.ndarray:
    from PIL import Image

    h, w = frame.shape[:2]
    if w <= width:
        return np.array(frame)
    return np.asarray(Image.fromarray(frame).resize((width, max(1, round(h * width / w))), Image.BILINEAR))


def _cycle_pass(loaded, video_path, grid, lo, L, seeds_back, recs: _Recorder, hw, cfg, decode_kw,
                last_masks, tick) -> dict[int, float | None]:
    from pycocotools import mask as mu

    H, W = hw
    rt = _Tracker(loaded, len(grid), offload_state=cfg.offload_state_to_cpu,
                  max_memory_frames=cfg.max_memory_frames, reverse=True)
    scores: dict[int, list[float]] = {m: [] for m in seeds_back}
    sub = grid[lo:L + 1]
    for chunk in iter_frame_chunks(video_path, sub, cfg.chunk_frames, reverse=True, **decode_kw):
        for j in reversed(range(len(chunk.indices))):
            a = lo + chunk.start + j
            bb = rt.backbone(chunk.frames[j])
            if a == L:
                ms = np.stack([last_masks[m] if m in last_masks else
                               rle.decode({"size": [H, W], "counts": recs.rec[m][L][0]}).astype(bool)
                               for m in seeds_back])
                rt.add_masks(L, bb, ms, list(seeds_back))
                tick()
                continue
            per_obj = rt.track(a, bb)
            active = [m for m in seeds_back if recs.created[m] <= a]
            if not active:
                tick()
                continue
            masks, _, _ = _to_video_res(per_obj, active, (H, W))
            encs = _encode_wh(masks)
            for k, m in enumerate(active):
                fwd = recs.rec[m][a]
                f_counts = fwd[0] if fwd is not None else None
                b_r, b_area, _ = encs[k]
                f_area = fwd[1] if fwd is not None else 0
                if b_area == 0 and f_area == 0:
                    scores[m].append(1.0)
                elif b_area == 0 or f_area == 0:
                    scores[m].append(0.0)
                else:
                    fr = {"size": [H, W], "counts": f_counts.encode("ascii")}
                    br = {"size": [H, W], "counts": b_r["counts"].encode("ascii")}
                    scores[m].append(float(mu.iou([br], [fr], [0])[0][0]))
            tick()
    return {m: (float(np.mean(v)) if v else None) for m, v in scores.items()}


def _rows(video_id, grid, recs: _Recorder, hw, loaded, key, cycle):
    H, W = hw
    empty_counts = rle.empty(H, W)["counts"]
    masklets, frames = [], []
    for mid in sorted(recs.rec):
        kind = recs.kind[mid]
        rs = recs.rec[mid]
        areas = [r[1] if r is not None else 0 for r in rs]
        f = masklet_fields.derive(areas, H, W)
        stabs = [r[5] for r in rs if r is not None and r[3] and r[5] is not None]
        masklets.append({
            "video_id": video_id,
            "masklet_id": int(mid),
            "masklet_type": kind,
            **f,
            "masklet_edited_frame_count": 0,
            "masklet_stability_mean": float(np.mean(stabs)) if stabs else None,
            "masklet_stability_min": float(np.min(stabs)) if stabs else None,
            "source": "sam2_auto" if kind == "auto" else "sam2_prompted",
            "model_name": loaded.model_name,
            "checkpoint_sha256": loaded.checkpoint_sha256,
            "config_sha256": loaded.config_sha256,
            "random_weights": bool(loaded.random_weights),
            "label_key": key,
            "masklet_cycle_iou": cycle.get(mid),
            "sav_fields_json": None,
        })
        for a, r in enumerate(rs):
            if r is None:
                counts, area, box, vis, iou, stab = empty_counts, 0, [0.0, 0.0, 0.0, 0.0], False, None, None
            else:
                counts, area, box, vis, iou, stab = r
            frames.append({
                "video_id": video_id, "masklet_id": int(mid), "masklet_type": kind, "ann_idx": a,
                "frame_idx": int(grid[a]), "size": [H, W], "counts": counts, "area": int(area),
                "bbox": list(box), "visible": bool(vis), "predicted_iou": iou, "stability_score": stab,
            })
    return masklets, frames


def result_summary(res: LabelResult) -> dict:
    """Compact, JSON-able summary (for asset metadata / logs)."""
    s = dict(res.stats)
    s["label_key"] = res.label_key
    return s


__all__ = [
    "LABELER_VERSION",
    "MODES",
    "LabelResult",
    "LabelerConfig",
    "LabelingFailed",
    "LazyFrames",
    "init_video_state",
    "label_key",
    "label_video",
    "new_masklet_candidates",
    "result_summary",
]

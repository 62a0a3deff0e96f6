"""The batched SAM 2 tracker: the only module in sav-assets that touches SAM 2's internals.

:class:`Tracker` drives ``SAM2Base`` tracking over annotated-frame indices. Objects seeded together
form a *cohort* that shares its conditioning frames and is tracked as one batch (SAM2VideoPredictor
tracks each object separately); for the same mask prompts it gives SAM2VideoPredictor's masks (the
tests check this against ``propagate_in_video``). Non-conditioning outputs older than
``max_memory_frames`` frames are pruned (SAM 2 reads at most 15 past frames), and with
``offload_state`` the memory features live on the host.

``encoder_calls`` / ``decoder_passes`` count the image-encoder and mask-decoder passes a tracker ran
(``label_runs`` reports them). A caller that needs to revise an object on frame t (a correction)
calls :meth:`Tracker.correct` with that frame's features and then :meth:`Tracker.track` on the
following frames: tracking continues from t with the corrected output as that object's memory.

Also here: :class:`HostMasks` (one frame's masks to the host off the critical path: pinned memory and
non-blocking copies on CUDA), :class:`FeatureCache` (the forward pass's backbone features of the last
frames, which the backward cycle pass reuses instead of encoding again), :func:`preprocess`
(resize + normalise one uint8 frame on the device), :class:`LazyFrames`
and :func:`init_video_state` (SAM2VideoPredictor's own API on in-memory frames, used by the tests and
benchmarks as the reference), :func:`to_video_res` (low-res logits to video-resolution masks) and
:func:`image_predictor` (a SAM2ImagePredictor that reuses the tracker's backbone features, for the
automatic mask generator in :mod:`sav_assets.lib.label.seeding`).

SAM 2 internals used (private in sam2 1.1, hence the ``sam2>=1.1,<1.2`` pin; a sam2 upgrade must
re-run ``tests/lib/label``):

* ``SAM2Base._track_step``, ``_encode_memory_in_output``, ``_encode_new_memory``,
  ``_prepare_backbone_features``, ``no_mem_embed``, ``directly_add_no_mem_embed``, ``fill_hole_area``
  (mirroring ``SAM2VideoPredictor._run_single_frame_inference`` / ``propagate_in_video_preflight``);
* ``SAM2VideoPredictor._get_image_feature`` and the layout of its inference-state dict
  (:func:`init_video_state`);
* ``SAM2ImagePredictor._features``, ``_orig_hw``, ``_is_image_set``, ``_is_batch``,
  ``_bb_feat_sizes`` (:func:`image_predictor`);
* ``sam2._C`` / ``sam2.utils.misc.fill_holes_in_mask_scores`` (hole filling, when the CUDA
  extension is built) and ``sam2.utils.amg.calculate_stability_score``.

It is over the house's ~400 lines on purpose: splitting it would spread SAM 2's internals (the
layout of ``forward_image``'s output that :class:`FeatureCache` keeps, the mask post-processing of
:class:`HostMasks`) over two files. torch / sam2 are imported inside functions: importing this module is cheap.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_IMG_MEAN = (0.485, 0.456, 0.406)
_IMG_STD = (0.229, 0.224, 0.225)
# the per-object entries of a frame output that a cohort stores batched along dim 0
_BATCHED_KEYS = ("maskmem_features", "pred_masks", "obj_ptr", "object_score_logits")


def preprocess(frame, size: int, device):
    """One uint8 ``[H, W, 3]`` RGB frame (numpy or torch) as SAM 2's normalised ``[1, 3, S, S]`` input."""
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


# ---------------------------------------------------------------------------------------------
# SAM2VideoPredictor on in-memory frames (the reference the batched tracker is tested against)


class LazyFrames:
    """Indexable like SAM 2's ``images`` tensor ``[T, 3, S, S]`` but holding the uint8 frames.

    ``frames[i]`` resizes and normalises frame ``i`` on the device when SAM 2 asks for it, so a
    predictor state never holds a float copy of the video.
    """

    def __init__(self, frames_uint8, image_size: int, device="cpu"):
        self.frames = frames_uint8
        self.image_size = int(image_size)
        self.device = device

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    def __getitem__(self, i):
        return preprocess(self.frames[int(i)], self.image_size, self.device)[0]


class _TensorFrames:
    """uint8 frames already on the device, indexable like the numpy array."""

    def __init__(self, t):
        self.t = t
        self.shape = tuple(t.shape)

    def __getitem__(self, i):
        return self.t[i]


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
        frames_dev = _TensorFrames(torch.from_numpy(np.ascontiguousarray(frames_uint8)).to(dev))
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


# ---------------------------------------------------------------------------------------------
# the batched tracker


class Cohort:
    """Objects seeded together: their ids and SAM 2's output dict (batched along dim 0)."""

    __slots__ = ("ids", "out")

    def __init__(self, ids: list[int], out: dict):
        self.ids = list(ids)
        self.out = out


def _empty_output_dict() -> dict:
    return {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}


def _hole_filler(model):
    """sam2's hole filling (needs its CUDA extension), or None."""
    if int(getattr(model, "fill_hole_area", 0) or 0) <= 0:
        return None
    try:
        from sam2 import _C  # noqa: F401 - the CUDA extension the hole filling needs
        from sam2.utils.misc import fill_holes_in_mask_scores
    except ImportError:
        return None
    return fill_holes_in_mask_scores


class Tracker:
    """Drives ``SAM2Base`` tracking over annotated-frame indices with cohorts of objects batched.

    Per frame: ``bb = backbone(frame)``, then :meth:`track` (every cohort), and new objects with
    :meth:`add_masks` / :meth:`add_points`, corrections with :meth:`correct`. Each returns
    ``{obj_id: (low-res logits [1,1,h,w], object score [1], predicted IoU [1])}``.
    """

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
        self.cohorts: list[Cohort] = []
        self.constants: dict = {}
        self.fill_hole_area = int(getattr(self.m, "fill_hole_area", 0) or 0)
        self._fill = _hole_filler(self.m)
        self._feat_bb: dict | None = None
        self._feat_cache: dict = {}
        self.encoder_calls = 0       # image-encoder passes (forward_image) this tracker ran
        self.decoder_passes = 0      # SAM mask-decoder passes (one per tracking / prompted step)

    # -- per-frame features --------------------------------------------------------------------
    def backbone(self, frame) -> dict:
        """The image encoder on one uint8 frame (SAM 2's ``forward_image``): the frame's backbone
        features ``bb``, which every other call of this frame takes."""
        self.encoder_calls += 1
        return self.m.forward_image(preprocess(frame, self.S, self.device))

    def feats(self, bb: dict, B: int):
        if bb is not self._feat_bb:    # a new frame's features (computed here or cached by the caller)
            self._feat_bb, self._feat_cache = bb, {}
        key = B
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
        self.decoder_passes += 1
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

    def _prompted(self, t, feats, point_inputs, mask_inputs, od, prev_logits=None):
        """One prompted step: its compact output (with the prompted memory), device logits, IoU.

        A first prompt (``prev_logits`` None) is an initial conditioning step; a correction passes the
        object's previous logits, as SAM2VideoPredictor does for clicks on a tracked frame."""
        out, ious = self._step(t, prev_logits is None, feats, point_inputs, mask_inputs, od, False,
                               prev_logits)
        compact, pred = self._compact(out)
        self._encode_prompted_memory(compact, feats)
        return compact, pred, ious

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
        od = _empty_output_dict()
        compact, pred, ious = self._prompted(t, self.feats(bb, len(ids)), None, mk, od)
        od["cond_frame_outputs"][t] = compact
        self.cohorts.append(Cohort(ids, od))
        scores = compact["object_score_logits"][:, 0]
        return {oid: (pred[i:i + 1], scores[i:i + 1], ious[i:i + 1]) for i, oid in enumerate(ids)}

    def add_points(self, t: int, bb: dict, items: list[tuple[int, dict]]) -> dict[int, tuple]:
        """New cohort from point/box prompts ``[(obj_id, point_inputs)]`` on frame t (SAM on the frame)."""
        torch = self.torch
        feats = self.feats(bb, 1)
        compacts, res = [], {}
        for oid, pin in items:
            compact, pred, iou = self._prompted(t, feats, pin, None, _empty_output_dict())
            compacts.append(compact)
            res[oid] = (pred, compact["object_score_logits"][:, 0], iou)
        merged = {k: torch.cat([c[k] for c in compacts], dim=0) for k in _BATCHED_KEYS}
        merged["maskmem_pos_enc"] = self._pos_enc(
            [p.expand(len(compacts), -1, -1, -1) for p in compacts[0]["maskmem_pos_enc"]])
        out = _empty_output_dict()
        out["cond_frame_outputs"][t] = merged
        self.cohorts.append(Cohort([oid for oid, _ in items], out))
        return res

    def correct(self, t: int, bb: dict, obj_id: int, pin: dict) -> tuple:
        """Correction clicks for a tracked object on frame t (stored as its output on that frame)."""
        c, i = next((c, c.ids.index(obj_id)) for c in self.cohorts if obj_id in c.ids)
        stored = c.out["non_cond_frame_outputs"].get(t) or c.out["cond_frame_outputs"].get(t)
        prev = stored["pred_masks"][i:i + 1].to(self.device).clamp(-32.0, 32.0)
        od = {kind: {f: _slice_out(o, i) for f, o in frames.items()} for kind, frames in c.out.items()}
        compact, pred, iou = self._prompted(t, self.feats(bb, 1), pin, None, od, prev)
        for k in _BATCHED_KEYS:
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


def _upsampled(per_obj: dict[int, tuple], ids: list[int], hw: tuple[int, int], group: int):
    """Device tensors: masks ``[N, W, H]`` bool (transposed for zero-copy RLE), stability, IoU."""
    import torch
    import torch.nn.functional as F
    from sam2.utils.amg import calculate_stability_score

    H, W = hw
    pred = torch.cat([per_obj[i][0] for i in ids], dim=0).float()          # [N,1,h,w]
    scores = torch.cat([per_obj[i][1] for i in ids], dim=0).float()        # [N]
    ious = torch.cat([per_obj[i][2] for i in ids], dim=0).float()          # [N]
    stab = calculate_stability_score(pred[:, 0], 0.0, 1.0).float()
    vis = scores > 0
    parts = []
    for g in range(0, pred.shape[0], group):
        up = F.interpolate(pred[g:g + group], size=(H, W), mode="bilinear", align_corners=False)[:, 0] > 0
        up &= vis[g:g + group, None, None]
        parts.append(up.transpose(1, 2))
    return torch.cat(parts, dim=0), stab, ious


def to_video_res(per_obj: dict[int, tuple], ids: list[int], hw: tuple[int, int], group: int = 16):
    """(masks ``[N, W, H]`` bool, transposed for zero-copy RLE; stability ``[N]``; predicted IoU ``[N]``).

    A mask is empty where SAM 2's object score logit is <= 0 ("not visible")."""
    H, W = hw
    if not ids:
        return np.zeros((0, W, H), dtype=bool), np.zeros(0), np.zeros(0)
    up, stab, ious = _upsampled(per_obj, ids, hw, group)
    return up.contiguous().cpu().numpy(), stab.cpu().numpy(), ious.cpu().numpy()


class HostMasks:
    """One frame's masks on their way to the host, off the critical path.

    On CUDA the masks are upsampled on the device at once and copied into pinned host memory with
    ``non_blocking`` copies behind a CUDA event, so the next frame's work is queued before the copy
    ends; on the CPU the upsampling itself is deferred. :meth:`get` (called by the record writer's
    thread, or by the driver on a seeding frame that needs the masks now) waits for the copy and
    returns what :func:`to_video_res` returns, once; ``seconds`` is the time it spent.
    """

    def __init__(self, per_obj: dict[int, tuple], ids: list[int], hw: tuple[int, int], group: int = 16):
        import torch

        self.ids, self.hw, self.seconds = list(ids), hw, 0.0
        self._res = None
        self._event = None
        self._lazy = (per_obj, group)
        dev = per_obj[ids[0]][0].device if ids else torch.device("cpu")
        if ids and dev.type == "cuda":
            up, stab, ious = _upsampled(per_obj, ids, hw, group)
            self._lazy = None
            self._host = [torch.empty(t.shape, dtype=t.dtype, pin_memory=True).copy_(t, non_blocking=True)
                          for t in (up.contiguous(), stab, ious)]
            self._event = torch.cuda.Event()
            self._event.record()

    def get(self):
        import time

        if self._res is None:
            t0 = time.perf_counter()
            if self._event is not None:
                self._event.synchronize()
                self._res = tuple(t.numpy() for t in self._host)
            else:
                per_obj, group = self._lazy
                self._res = to_video_res(per_obj, self.ids, self.hw, group)
            self._lazy = None
            self.seconds += time.perf_counter() - t0
        return self._res


class FeatureCache:
    """The backbone features of the last ``size`` encoded frames, for the backward cycle pass.

    Only ``backbone_fpn`` is kept per frame (on ``storage``: the host when state is offloaded); the
    position encodings depend on the input size alone, so one copy serves every frame. ``size`` 0
    keeps nothing."""

    def __init__(self, size: int, storage, device):
        from collections import OrderedDict

        self.size, self.storage, self.device = max(0, int(size)), storage, device
        self.frames: OrderedDict = OrderedDict()
        self.pos = None

    def put(self, a: int, bb: dict) -> None:
        if self.size == 0:
            return
        if self.pos is None:
            self.pos = bb["vision_pos_enc"]
        self.frames[a] = [f.to(self.storage, non_blocking=True) for f in bb["backbone_fpn"]]
        while len(self.frames) > self.size:
            self.frames.popitem(last=False)

    def get(self, a: int) -> dict | None:
        fpn = self.frames.get(a)
        if fpn is None:
            return None
        fpn = [f.to(self.device, non_blocking=True) for f in fpn]
        return {"vision_features": fpn[-1], "vision_pos_enc": self.pos, "backbone_fpn": fpn}


# ---------------------------------------------------------------------------------------------
# the automatic mask generator's predictor


def image_predictor(loaded):
    """A ``SAM2ImagePredictor`` over ``loaded.model`` whose next ``set_image`` can take features
    the tracker already computed: set ``predictor.preset = (image_predictor_features(bb), (H, W))``
    before the generator runs, so the seeding frame's backbone runs once."""
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    class _PresetFeaturePredictor(SAM2ImagePredictor):
        preset: tuple | None = None
        decoder_passes = 0

        def _predict(self, *args, **kwargs):
            self.decoder_passes += 1
            return super()._predict(*args, **kwargs)

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

    pred = _PresetFeaturePredictor(loaded.model)
    s = int(loaded.image_size)
    pred._bb_feat_sizes = [(s // 4, s // 4), (s // 8, s // 8), (s // 16, s // 16)]
    return pred

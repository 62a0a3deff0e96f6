"""SAM 2's train-mode forward over a clip: prompt the first frame, propagate through the window.

sam2's ``training/model/sam2.py`` (``SAM2Train``) is a subclass of ``SAM2Base`` with its own
constructor and batch type; the labeling model is a ``SAM2VideoPredictor`` built by
:mod:`sav_assets.lib.label.model`. This module runs the same steps as ``SAM2Train.forward_tracking``
on that model, through ``SAM2Base``'s pieces (``forward_image``, ``_prepare_backbone_features``,
``_track_step``, ``_encode_memory_in_output``), so the weights that are trained are exactly the ones
the labeler and ``SAV_SAM2_CHECKPOINT`` load:

* the image encoder runs once over the clip's frames (with the encoder frozen, an
  :class:`EncoderCache` runs it once per distinct frame over the whole training run);
* frame 0 is the conditioning frame, prompted by the ground-truth mask (SA-V val's semi-supervised
  protocol) or, with probability ``point_prob``, by one positive click sampled inside the mask (so
  point-prompted decoding, which the automatic mask generator uses, is trained too);
* every later frame is predicted from the memory bank, with multimask outputs and IoU / object-score
  heads, and its prediction is encoded into memory for the frames after it.

The outputs have the keys ``training/loss_fns.py``'s ``MultiStepMultiMasksAndIous`` reads
(``multistep_pred_multimasks_high_res``, ``multistep_pred_ious``, ``multistep_object_score_logits``).
With ``torch.no_grad()`` and ``model.eval()`` the same loop is the semi-supervised VOS inference that
:mod:`sav_assets.lib.train.evaluate` scores. Like :mod:`sav_assets.lib.label.tracker`, this file uses
SAM 2 internals (the underscore methods ``SAM2Train`` calls); nothing else in ``lib/train`` does.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sav_assets.lib.dataset.augment import normalize


def prepare_clip(frames, masks, image_size: int, device: str):
    """Frames ``[T,3,H,W]`` (uint8 0..255 or float 0..1) and masks ``[T,N,H,W]`` (bool / 0-1) as the
    model's input: frames resized to ``image_size`` square and normalised, masks resized (nearest) to
    the same size, as float 0/1."""
    import torch
    import torch.nn.functional as F

    f = torch.as_tensor(frames)
    f = f.float() / 255.0 if f.dtype == torch.uint8 else f.float()
    f = F.interpolate(f, size=(image_size, image_size), mode="bilinear", align_corners=False)
    f = normalize(f).to(device)
    m = torch.as_tensor(masks).float()
    m = F.interpolate(m, size=(image_size, image_size), mode="nearest").to(device)
    return f, m


class EncoderCache:
    """Outputs of a FROZEN image encoder per frame, keyed by the prepared frame's bytes.

    Training clips are cut from a fixed set of rendered frames, so with the encoder frozen every
    frame's features are computed once and reused by every later clip that contains it (the trainable
    ``conv_s0`` / ``conv_s1`` projections of the mask decoder still run, with gradients, on every
    step). Positional encodings depend only on the feature shapes and are kept once. At most
    ``max_frames`` frames are kept; later ones are computed every time."""

    def __init__(self, max_frames: int = 4096):
        self.max_frames = int(max_frames)
        self.fpn: dict[bytes, list] = {}
        self.pos: list | None = None
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(frame) -> bytes:
        import hashlib

        return hashlib.blake2b(frame.detach().cpu().contiguous().numpy().tobytes(), digest_size=16).digest()

    def encode(self, image_encoder, frames) -> dict:
        """``image_encoder(frames)``'s dict, from the cache where possible."""
        import torch

        keys = [self.key(f) for f in frames]
        missing = [i for i, k in enumerate(keys) if k not in self.fpn]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        fresh = {}
        if missing:
            with torch.no_grad():
                out = image_encoder(frames[missing])
            self.pos = self.pos or [p[:1].clone() for p in out["vision_pos_enc"]]
            for j, i in enumerate(missing):
                fresh[keys[i]] = [x[j:j + 1].clone() for x in out["backbone_fpn"]]
                if len(self.fpn) < self.max_frames:
                    self.fpn[keys[i]] = fresh[keys[i]]
        per_frame = [self.fpn.get(k) or fresh[k] for k in keys]
        fpn = [torch.cat([f[lvl] for f in per_frame]) for lvl in range(len(per_frame[0]))]
        pos = [p.expand(len(keys), -1, -1, -1) for p in self.pos]
        return {"vision_features": fpn[-1], "vision_pos_enc": pos, "backbone_fpn": fpn}


def image_features(model: Any, frames, cache: EncoderCache | None = None) -> dict:
    """``model.forward_image(frames)``; with a cache the frozen image encoder's part comes from it."""
    if cache is None:
        return model.forward_image(frames)
    out = cache.encode(model.image_encoder, frames)
    if model.use_high_res_features_in_sam:
        out["backbone_fpn"][0] = model.sam_mask_decoder.conv_s0(out["backbone_fpn"][0])
        out["backbone_fpn"][1] = model.sam_mask_decoder.conv_s1(out["backbone_fpn"][1])
    return out


def _first_click(mask0, rng: np.random.Generator):
    """One positive click per object, uniformly inside its frame-0 mask (the mask's centre pixel
    grid when it is empty): SAM 2's point_inputs dict."""
    import torch

    n, h, w = mask0.shape
    coords, labels = [], []
    for j in range(n):
        ys, xs = torch.nonzero(mask0[j] > 0.5, as_tuple=True)
        if len(ys):
            k = int(rng.integers(len(ys)))
            coords.append([float(xs[k]) + 0.5, float(ys[k]) + 0.5])
            labels.append(1)
        else:
            coords.append([w / 2.0, h / 2.0])
            labels.append(0)
    return {"point_coords": torch.tensor(coords, device=mask0.device).view(n, 1, 2),
            "point_labels": torch.tensor(labels, device=mask0.device, dtype=torch.int32).view(n, 1)}


def clip_forward(model: Any, frames, masks, *, point_prob: float = 0.0,
                 rng: np.random.Generator | None = None, cache: EncoderCache | None = None) -> list[dict]:
    """Per-frame outputs of SAM 2 tracking the clip's ``N`` objects from frame 0's prompt.

    ``frames`` ``[T,3,S,S]`` and ``masks`` ``[T,N,S,S]`` as :func:`prepare_clip` returns them. Each
    output holds ``pred_masks_high_res`` ``[N,1,S,S]`` logits, ``object_score_logits`` and the
    multistep lists the SAM 2 loss reads. ``cache``: see :class:`EncoderCache` (frozen encoder only)."""
    rng = rng or np.random.default_rng(0)
    t_len, n_obj = int(frames.shape[0]), int(masks.shape[1])
    backbone_out = image_features(model, frames, cache)
    _, vision_feats, vision_pos, feat_sizes = model._prepare_backbone_features(backbone_out)
    use_points = point_prob > 0 and rng.random() < point_prob
    point0 = _first_click(masks[0], rng) if use_points else None
    output_dict: dict = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
    outs = []
    for t in range(t_len):
        ids = [t] * n_obj
        feats = [x[:, ids] for x in vision_feats]
        pos = [x[:, ids] for x in vision_pos]
        first = t == 0
        mask_in = masks[0].unsqueeze(1) if first and point0 is None else None
        cur, sam_out, _, _ = model._track_step(
            t, first, feats, pos, feat_sizes, point0 if first else None, mask_in, output_dict, t_len, False, None)
        low_multi, high_multi, ious, low, high, obj_ptr, obj_score = sam_out
        cur.update({
            "pred_masks": low, "pred_masks_high_res": high, "obj_ptr": obj_ptr,
            "object_score_logits": obj_score,
            "multistep_pred_multimasks_high_res": [high_multi], "multistep_pred_ious": [ious],
            "multistep_object_score_logits": [obj_score],
        })
        model._encode_memory_in_output(feats, feat_sizes, point0 if first else None, True, high, obj_score, cur)
        output_dict["cond_frame_outputs" if first else "non_cond_frame_outputs"][t] = cur
        outs.append(cur)
    return outs

"""SAM 2's train-mode forward over a clip: prompt the first frame, propagate through the window.

sam2's ``training/model/sam2.py`` (``SAM2Train``) is a subclass of ``SAM2Base`` with its own
constructor and batch type; the labeling model is a ``SAM2VideoPredictor`` built by
:mod:`sav_assets.lib.label.model`. This module runs the same steps as ``SAM2Train.forward_tracking``
on that model, through ``SAM2Base``'s pieces (``forward_image``, ``_prepare_backbone_features``,
``_track_step``, ``_encode_memory_in_output``), so the weights that are trained are exactly the ones
the labeler and ``SAV_SAM2_CHECKPOINT`` load:

* the image encoder runs once over the clip's frames;
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

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def prepare_clip(frames, masks, image_size: int, device: str):
    """Frames ``[T,3,H,W]`` (uint8 0..255 or float 0..1) and masks ``[T,N,H,W]`` (bool / 0-1) as the
    model's input: frames resized to ``image_size`` square and normalised, masks resized (nearest) to
    the same size, as float 0/1."""
    import torch
    import torch.nn.functional as F

    f = torch.as_tensor(frames)
    f = f.float() / 255.0 if f.dtype == torch.uint8 else f.float()
    f = F.interpolate(f, size=(image_size, image_size), mode="bilinear", align_corners=False)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    f = ((f - mean) / std).to(device)
    m = torch.as_tensor(masks).float()
    m = F.interpolate(m, size=(image_size, image_size), mode="nearest").to(device)
    return f, m


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
                 rng: np.random.Generator | None = None) -> list[dict]:
    """Per-frame outputs of SAM 2 tracking the clip's ``N`` objects from frame 0's prompt.

    ``frames`` ``[T,3,S,S]`` and ``masks`` ``[T,N,S,S]`` as :func:`prepare_clip` returns them. Each
    output holds ``pred_masks_high_res`` ``[N,1,S,S]`` logits, ``object_score_logits`` and the
    multistep lists the SAM 2 loss reads."""
    rng = rng or np.random.default_rng(0)
    t_len, n_obj = int(frames.shape[0]), int(masks.shape[1])
    backbone_out = model.forward_image(frames)
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

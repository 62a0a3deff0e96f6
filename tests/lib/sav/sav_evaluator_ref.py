"""Meta's SA-V evaluator, re-implemented for the acceptance tests (tests install and run nothing from
the internet, and ``opencv``/``scikit-image`` are not project dependencies).

Mirrors ``sav_dataset/sav_evaluator.py`` and ``sav_dataset/utils/sav_benchmark.py`` of
facebookresearch/sam2 (sav_benchmark.py as of commit 7e1596c0b6462eb1d1ba7e1492430fed95023598, read at
main 2b90b9f): ``benchmark`` (video folders of gt_root, strict gt/pred match), ``VideoEvaluator``
(``scan_vid_folder``: SA-V format when the video folder holds object folders, each object's frames
``sorted(os.listdir(...))``, first and last dropped; ``get_gt_and_pred``: the prediction file must
exist, same shape, at most 2 values per PNG, ``> 0``), ``Evaluator.feed_frame`` (objects counted from
the first frame where the ground truth or the prediction has them; ``get_iou``; boundary F with
``_seg2bmap`` and a dilation by ``disk(ceil(0.008 * ||(h, w)||))``: ``cv2.dilate`` with that kernel
is done here with scipy's exact Euclidean distance transform, the same set for binary maps) and ``conclude``
(only objects seen in the ground truth; ``mean * 100``), then the global J and F as the mean over
all objects. Deliberately dense (full-frame dilation), unlike :mod:`sav_assets.lib.sav.jf`'s k-d tree,
so that agreement means something; ``seg2bmap`` is the project's, tested against DAVIS' in test_jf.py.
"""

from __future__ import annotations

import os
from collections import defaultdict
from os import path

import numpy as np
from PIL import Image
from scipy import ndimage

from sav_assets.lib.sav.jf import seg2bmap


def dilate_disk(b: np.ndarray, r: int) -> np.ndarray:
    """cv2.dilate(b, skimage.morphology.disk(r)) for a binary map: pixels within Euclidean distance r
    (x^2 + y^2 <= r^2) of a set pixel, via the exact Euclidean distance transform."""
    if not b.any():
        return np.zeros_like(b, dtype=bool)
    return ndimage.distance_transform_edt(~b) <= r


def get_iou(intersection, pixel_sum):
    if intersection == pixel_sum:
        assert intersection == 0
        return 1
    return intersection / (pixel_sum - intersection)


def f_measure(mask_b: np.ndarray, gt_b: np.ndarray, mask_dil: np.ndarray, gt_dil: np.ndarray) -> float:
    """The boundary F of davis2017 / ``Evaluator.feed_frame`` from the two boundary maps and their dilations."""
    n_fg, n_gt = np.sum(mask_b), np.sum(gt_b)
    if n_fg == 0 and n_gt > 0:
        precision, recall = 1, 0
    elif n_fg > 0 and n_gt == 0:
        precision, recall = 0, 1
    elif n_fg == 0 and n_gt == 0:
        precision, recall = 1, 1
    else:
        precision = np.sum(mask_b & gt_dil) / float(n_fg)
        recall = np.sum(gt_b & mask_dil) / float(n_gt)
    return 0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


class Evaluator:
    def __init__(self, boundary=0.008):
        self.boundary = boundary
        self.objects_in_gt, self.objects_in_masks = set(), set()
        self.object_iou, self.boundary_f = defaultdict(list), defaultdict(list)

    def feed_frame(self, mask: np.ndarray, gt: np.ndarray) -> None:
        gt_objects = [o for o in np.unique(gt).tolist() if o != 0]
        mask_objects = [o for o in np.unique(mask).tolist() if o != 0]
        self.objects_in_gt.update(gt_objects)
        self.objects_in_masks.update(mask_objects)
        bound_pix = int(np.ceil(self.boundary * np.linalg.norm(mask.shape)))
        for obj in self.objects_in_gt | self.objects_in_masks:
            obj_mask, obj_gt = mask == obj, gt == obj
            self.object_iou[obj].append(get_iou((obj_mask * obj_gt).sum(), obj_mask.sum() + obj_gt.sum()))
            mb, gb = seg2bmap(obj_mask), seg2bmap(obj_gt)
            self.boundary_f[obj].append(
                f_measure(mb, gb, dilate_disk(mb, bound_pix), dilate_disk(gb, bound_pix)))

    def conclude(self):
        return ({o: np.mean(self.object_iou[o]) * 100 for o in self.objects_in_gt},
                {o: np.mean(self.boundary_f[o]) * 100 for o in self.objects_in_gt})


def evaluate_video(gt_root: str, pred_root: str, vid: str, skip_first_and_last: bool = True):
    """VideoEvaluator.__call__ for an SA-V format video: ``(vid, {obj: J}, {obj: F})``, times 100."""
    entries = sorted(os.listdir(path.join(gt_root, vid)))
    assert not all(e.endswith(".png") for e in entries), "DAVIS format: not what the SA-V layout writes"
    ious, fs = {}, {}
    for obj in entries:
        frames = sorted(os.listdir(path.join(gt_root, vid, obj)))
        if skip_first_and_last:
            frames = frames[1:-1]
        ev = Evaluator()
        for name in frames:
            pred_p = path.join(pred_root, vid, obj, name)
            assert os.path.exists(pred_p), f"{pred_p} not found"
            gt = np.array(Image.open(path.join(gt_root, vid, obj, name)))
            pred = np.array(Image.open(pred_p))
            assert gt.shape[-2:] == pred.shape[-2:], f"shape mismatch: {name}"
            assert len(np.unique(gt)) <= 2 and len(np.unique(pred)) <= 2, "more than 1 object in a png"
            ev.feed_frame(mask=pred > 0, gt=gt > 0)
        iou, bf = ev.conclude()
        assert len(iou) == 1, f"{vid}/{obj}: object never in the ground truth (Meta's consolidate asserts)"
        ious[obj], fs[obj] = next(iter(iou.values())), next(iter(bf.values()))
    return vid, ious, fs


def benchmark(gt_root: str, pred_root: str, skip_first_and_last: bool = True):
    """``(global J&F, global J, global F, {vid: ({obj: J}, {obj: F})})`` as Meta's ``benchmark`` (strict)."""
    gt_videos = sorted(v for v in os.listdir(gt_root) if path.isdir(path.join(gt_root, v)))
    pred_videos = sorted(v for v in os.listdir(pred_root) if path.isdir(path.join(pred_root, v)))
    assert gt_videos == pred_videos, f"strict: gt {gt_videos} vs pred {pred_videos}"
    per_video, all_j, all_f = {}, [], []
    for vid in gt_videos:
        _, ious, fs = evaluate_video(gt_root, pred_root, vid, skip_first_and_last)
        per_video[vid] = (ious, fs)
        all_j.extend(ious.values())
        all_f.extend(fs.values())
    gj, gf = np.array(all_j).mean(), np.array(all_f).mean()
    return (gj + gf) / 2, gj, gf, per_video

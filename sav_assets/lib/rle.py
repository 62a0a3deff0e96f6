"""COCO RLE helpers over pycocotools, producing exactly what SA-V stores: {"size": [h, w], "counts": str}."""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils


def encode(mask: np.ndarray) -> dict:
    """Binary HxW mask to an SA-V/COCO RLE dict with a str ``counts``."""
    m = np.asfortranarray(np.asarray(mask, dtype=np.uint8))
    rle = mask_utils.encode(m)
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def _coco(rle: dict) -> dict:
    counts = rle["counts"]
    return {"size": list(rle["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


def decode(rle: dict) -> np.ndarray:
    """RLE dict to an HxW uint8 mask (0/1)."""
    return mask_utils.decode(_coco(rle))


def area(rle: dict) -> int:
    return int(mask_utils.area(_coco(rle)))


def bbox(rle: dict) -> list[float]:
    """[x, y, w, h] as pycocotools computes it (zeros for an empty mask)."""
    return [float(v) for v in mask_utils.toBbox(_coco(rle))]


def iou(a: dict, b: dict) -> float:
    """Region IoU of two RLEs; two empty masks count as a perfect match (1.0), as the J metric does."""
    aa, ab = area(a), area(b)
    if aa == 0 and ab == 0:
        return 1.0
    return float(mask_utils.iou([_coco(a)], [_coco(b)], [0])[0][0])


def empty(h: int, w: int) -> dict:
    return encode(np.zeros((h, w), dtype=np.uint8))

"""COCO RLE, exactly as SA-V stores it (``{"size": [h, w], "counts": str}``): the one home of every
mask encoding in sav-assets and the only module that imports pycocotools.

Single masks (:func:`encode`, :func:`decode`, :func:`area`, :func:`bbox`, :func:`iou`) and batched
ones (:func:`encode_many`, :func:`encode_many_wh` for the tracker's ``[N, W, H]`` layout,
:func:`decode_many`, :func:`areas`, :func:`bboxes`, :func:`iou_matrix`, :func:`paired_ious`) all
go through pycocotools' C code; :func:`parse_counts` decodes a ``counts`` string to its run lengths
in numpy without building the mask (validation and cheap areas on imported files); :func:`from_row`
is the RLE of a ``masklet_frames`` row, :func:`to_coco` the bytes form pycocotools takes. Nothing
else in the project converts ``counts`` by hand or imports pycocotools.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pycocotools import mask as mask_utils


def to_coco(rle: dict) -> dict:
    """An SA-V RLE (str ``counts``) as pycocotools wants it (bytes ``counts``)."""
    counts = rle["counts"]
    return {"size": list(rle["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


def from_row(row: dict) -> dict:
    """The SA-V RLE of a ``masklet_frames`` row (its ``size`` and ``counts`` columns)."""
    return {"size": [int(v) for v in row["size"]], "counts": row["counts"]}


def _from_coco(r: dict) -> dict:
    return {"size": [int(r["size"][0]), int(r["size"][1])], "counts": r["counts"].decode("ascii")}


def encode(mask: np.ndarray) -> dict:
    """Binary HxW mask to an SA-V/COCO RLE dict with a str ``counts``."""
    return _from_coco(mask_utils.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8))))


def encode_many(masks: np.ndarray) -> list[dict]:
    """``[N, H, W]`` binary masks to N RLE dicts (one pycocotools call)."""
    masks = np.asarray(masks)
    if masks.shape[0] == 0:
        return []
    f = np.asfortranarray(masks.astype(np.uint8, copy=False).transpose(1, 2, 0))
    return [_from_coco(r) for r in mask_utils.encode(f)]


def encode_many_wh(masks_wh: np.ndarray) -> list[tuple[dict, int, list[float]]]:
    """(RLE, area, bbox) per mask from a bool array laid out ``[N, W, H]`` (a zero-copy Fortran view)."""
    if masks_wh.shape[0] == 0:
        return []
    f = masks_wh.transpose(2, 1, 0).view(np.uint8)  # [H, W, N], Fortran-contiguous
    if not f.flags.f_contiguous:
        f = np.asfortranarray(f)
    rles = mask_utils.encode(f)
    return [(_from_coco(r), int(a), [float(v) for v in b])
            for r, a, b in zip(rles, mask_utils.area(rles), mask_utils.toBbox(rles))]


def decode(rle: dict) -> np.ndarray:
    """RLE dict to an HxW uint8 mask (0/1)."""
    return mask_utils.decode(to_coco(rle))


def decode_many(rles: Sequence[dict]) -> np.ndarray:
    """N RLEs of one size to an ``[N, H, W]`` uint8 array (0/1)."""
    if not rles:
        return np.zeros((0, 0, 0), np.uint8)
    return np.ascontiguousarray(mask_utils.decode([to_coco(r) for r in rles]).transpose(2, 0, 1))


def area(rle: dict) -> int:
    return int(mask_utils.area(to_coco(rle)))


def areas(rles: Sequence[dict]) -> np.ndarray:
    if not rles:
        return np.zeros(0, np.int64)
    return np.asarray(mask_utils.area([to_coco(r) for r in rles]), dtype=np.int64)


def bbox(rle: dict) -> list[float]:
    """[x, y, w, h] as pycocotools computes it (zeros for an empty mask)."""
    return [float(v) for v in mask_utils.toBbox(to_coco(rle))]


def bboxes(rles: Sequence[dict]) -> np.ndarray:
    """``[N, 4]`` float64 boxes ``[x, y, w, h]``."""
    if not rles:
        return np.zeros((0, 4), np.float64)
    return np.asarray(mask_utils.toBbox([to_coco(r) for r in rles]), dtype=np.float64).reshape(-1, 4)


def iou(a: dict, b: dict) -> float:
    """Region IoU of two RLEs; two empty masks count as a perfect match (1.0), as the J metric does."""
    if area(a) == 0 and area(b) == 0:
        return 1.0
    return float(mask_utils.iou([to_coco(a)], [to_coco(b)], [0])[0][0])


def iou_matrix(a: Sequence[dict], b: Sequence[dict] | None = None) -> np.ndarray:
    """``[len(a), len(b)]`` IoUs (``b`` defaults to ``a``); pycocotools' convention: 0 when both are empty."""
    b = a if b is None else b
    if not a or not b:
        return np.zeros((len(a), len(b)), np.float64)
    ca = [to_coco(r) for r in a]
    cb = ca if b is a else [to_coco(r) for r in b]
    return np.asarray(mask_utils.iou(ca, cb, [0] * len(cb)), dtype=np.float64).reshape(len(a), len(b))


def paired_ious(a: Sequence[dict], b: Sequence[dict], both_empty: float = 1.0) -> np.ndarray:
    """IoU of ``a[i]`` with ``b[i]`` for every i; a pair of empty masks scores ``both_empty``."""
    out = np.empty(len(a), np.float64)
    for i, (x, y) in enumerate(zip(a, b)):
        cx, cy = to_coco(x), to_coco(y)
        if mask_utils.area(cx) == 0 and mask_utils.area(cy) == 0:
            out[i] = both_empty
        else:
            out[i] = float(mask_utils.iou([cx], [cy], [0])[0][0])
    return out


def empty(h: int, w: int) -> dict:
    return encode(np.zeros((h, w), dtype=np.uint8))


def parse_counts(counts: str) -> np.ndarray:
    """A COCO compressed RLE ``counts`` string to its run lengths (int64), alternating 0-runs and 1-runs.

    Raises ``ValueError`` on characters outside the alphabet or a truncated final run. It does not
    check the runs' sum against the mask size; :func:`check_rle` does.
    """
    try:
        raw = counts.encode("ascii")
    except (UnicodeEncodeError, AttributeError) as e:
        raise ValueError(f"counts is not an ASCII string: {e}") from None
    b = np.frombuffer(raw, dtype=np.uint8).astype(np.int64) - 48
    if b.size == 0:
        return np.zeros(0, np.int64)
    if (b < 0).any() or (b > 63).any():
        bad = raw[int(np.flatnonzero((b < 0) | (b > 63))[0])]
        raise ValueError(f"counts has a character outside the RLE alphabet: {chr(bad)!r}")
    more = (b & 0x20) != 0
    if more[-1]:
        raise ValueError("counts ends inside a run (truncated string)")
    ends = np.flatnonzero(~more)
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    lengths = ends - starts + 1
    if lengths.max() > 12:
        raise ValueError("counts has a run length that does not fit in 60 bits")
    k = np.arange(b.size) - np.repeat(starts, lengths)
    x = np.add.reduceat((b & 0x1F) << (5 * k), starts)
    neg = (b[ends] & 0x10) != 0
    x[neg] -= np.left_shift(np.int64(1), 5 * lengths[neg])
    # runs after the third are stored as differences to the run two places back
    if x.size > 3:
        x[3::2] = np.cumsum(x[1::2])[1:]
    if x.size > 4:
        x[4::2] = np.cumsum(x[2::2])[1:]
    return x



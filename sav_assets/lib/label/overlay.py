"""A small PNG of masks over a frame, for asset metadata and reports."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np

# tab20-like palette; masklet ids pick a colour deterministically
_PALETTE = np.array([
    [31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189], [140, 86, 75],
    [227, 119, 194], [127, 127, 127], [188, 189, 34], [23, 190, 207], [174, 199, 232], [255, 187, 120],
    [152, 223, 138], [255, 152, 150], [197, 176, 213], [196, 156, 148], [247, 182, 210], [219, 219, 141],
    [158, 218, 229], [57, 59, 121],
], dtype=np.float32)


def color_for(obj_id: int) -> np.ndarray:
    return _PALETTE[(int(obj_id) * 7) % len(_PALETTE)]


def _to_mask(m, h: int, w: int) -> np.ndarray:
    if isinstance(m, dict):
        from sav_assets.lib.sav import rle

        m = rle.decode(m)
    m = np.asarray(m).astype(bool)
    if m.shape != (h, w):
        from PIL import Image

        m = np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize((w, h), Image.NEAREST)) > 127
    return m


def _edges(m: np.ndarray) -> np.ndarray:
    e = np.zeros_like(m)
    e[1:, :] |= m[1:, :] != m[:-1, :]
    e[:, 1:] |= m[:, 1:] != m[:, :-1]
    return e & m


def render_overlay(frame: np.ndarray, masks: Sequence, ids: Sequence[int] | None = None,
                   width: int = 512, alpha: float = 0.5) -> bytes:
    """PNG bytes of ``frame`` (HxWx3 uint8 RGB) resized to ``width`` px with the masks blended in.

    ``masks`` are HxW boolean arrays (any resolution, resized nearest) or COCO RLE dicts.
    """
    from PIL import Image

    img = Image.fromarray(np.asarray(frame, dtype=np.uint8))
    if width and img.width != width:
        h = max(1, round(img.height * width / img.width))
        img = img.resize((int(width), h), Image.BILINEAR)
    out = np.asarray(img, dtype=np.float32).copy()
    h, w = out.shape[:2]
    ids = list(ids) if ids is not None else list(range(len(masks)))
    for obj_id, m in zip(ids, masks):
        mm = _to_mask(m, h, w)
        if not mm.any():
            continue
        c = color_for(obj_id)
        out[mm] = out[mm] * (1 - alpha) + c * alpha
        out[_edges(mm)] = c
    buf = io.BytesIO()
    Image.fromarray(out.clip(0, 255).astype(np.uint8)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()

"""Small PNGs of masks over frames, for asset metadata and reports.

``render_overlay``: one frame with its masks (the labeler's sample overlay). ``render_filmstrip``: a
grid of frames (one row per masklet type, one column per frame) with the masks coloured by masklet id
(:func:`color_for`, the same colour for an id in every image) and a legend below; the legend's lines
are also stored in the PNG as a ``legend`` text chunk (JSON), so tools and tests can read them back.
"""

from __future__ import annotations

import io
import json
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
    ids = list(ids) if ids is not None else list(range(len(masks)))
    out = blend(np.asarray(img), zip(ids, masks), alpha)
    buf = io.BytesIO()
    Image.fromarray(out).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def blend(frame: np.ndarray, masks, alpha: float = 0.5) -> np.ndarray:
    """``frame`` (HxWx3 uint8) with ``(id, mask)`` pairs blended in (mask edges in full colour)."""
    out = np.asarray(frame, dtype=np.float32).copy()
    h, w = out.shape[:2]
    for obj_id, m in masks:
        mm = _to_mask(m, h, w)
        if not mm.any():
            continue
        c = color_for(obj_id)
        out[mm] = out[mm] * (1 - alpha) + c * alpha
        out[_edges(mm)] = c
    return out.clip(0, 255).astype(np.uint8)


LABEL_W = 64        # px left of each row for its label
LEGEND_COL_W = 256  # px per legend column
LEGEND_ROW_H = 14   # px per legend line


def render_filmstrip(frames: Sequence[np.ndarray], frame_labels: Sequence[str],
                     rows: Sequence[tuple[str, Sequence[Sequence[tuple[int, object]]]]],
                     legend: Sequence[tuple[int, str]], title: str = "", alpha: float = 0.5) -> bytes:
    """PNG bytes of a filmstrip.

    ``frames``: the thumbnails (HxWx3 uint8, one size); ``frame_labels``: one caption per frame;
    ``rows``: ``(row label, per frame a list of (masklet id, mask))`` with masks as in
    :func:`render_overlay`; ``legend``: ``(masklet id, text)`` lines drawn with the id's colour swatch.
    """
    from PIL import Image, ImageDraw, PngImagePlugin

    th, tw = frames[0].shape[:2]
    title_h = LEGEND_ROW_H + 4 if title else 0
    width = LABEL_W + tw * len(frames)
    per_col = max(1, width // LEGEND_COL_W)
    legend_h = (-(-len(legend) // per_col)) * LEGEND_ROW_H + 6 if legend else 0
    canvas = Image.new("RGB", (width, title_h + th * len(rows) + legend_h), (24, 24, 24))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((4, 2), title, fill=(235, 235, 235))
    for r, (row_label, per_frame) in enumerate(rows):
        y = title_h + r * th
        draw.text((4, y + 4), row_label[:10], fill=(235, 235, 235))
        for k, (frame, masks) in enumerate(zip(frames, per_frame)):
            x = LABEL_W + k * tw
            canvas.paste(Image.fromarray(blend(frame, masks, alpha)), (x, y))
            draw.text((x + 3, y + 2), frame_labels[k], fill=(255, 255, 255), stroke_width=1, stroke_fill=(0, 0, 0))
    y0 = title_h + th * len(rows) + 3
    for i, (obj_id, text) in enumerate(legend):
        x, y = (i % per_col) * LEGEND_COL_W + 4, y0 + (i // per_col) * LEGEND_ROW_H
        draw.rectangle([x, y + 2, x + 9, y + 11], fill=tuple(int(v) for v in color_for(obj_id)))
        draw.text((x + 14, y), text[:40], fill=(235, 235, 235))
    info = PngImagePlugin.PngInfo()
    info.add_text("legend", json.dumps([t for _, t in legend]))
    if title:
        info.add_text("title", title)
    buf = io.BytesIO()
    canvas.save(buf, format="PNG", optimize=True, pnginfo=info)
    return buf.getvalue()


def png_text(png: bytes) -> dict[str, str]:
    """The text chunks of a PNG (``legend``, ``title`` of a filmstrip)."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        im.load()
        return dict(getattr(im, "text", {}) or {})

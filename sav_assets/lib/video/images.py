"""Frame access for exports: decode chosen frames of an (already accepted) video, encode JPEG/PNG.

Frames are numbered in the video's own decode order from 0, which is how SA-V numbers them
(``JPEGImages_24fps/<video>/00000.jpg`` is the first frame). Decoding is sequential with PyAV:
skipping frames still needs the decoder to run over them, and a sequential pass is frame-exact,
where seeking is not on every file. Frames that are not wanted are never converted to RGB.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator

import numpy as np


class MissingFramesError(ValueError):
    """The video ended before every requested frame was decoded."""


def iter_frames(path: str, indices: Iterable[int]) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(frame_idx, HxWx3 uint8 RGB)`` for the requested indices, in increasing order.

    Raises :class:`MissingFramesError` (after yielding what exists) when the video is shorter.
    """
    import av

    wanted = sorted({int(i) for i in indices if int(i) >= 0})
    if not wanted:
        return
    pos = 0
    last = wanted[-1]
    want = set(wanted)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            if pos in want:
                yield pos, frame.to_ndarray(format="rgb24")
            pos += 1
            if pos > last:
                break
    if pos <= last:
        missing = [i for i in wanted if i >= pos]
        raise MissingFramesError(f"{path}: {len(missing)} requested frames past the end "
                                 f"(decoded {pos}, first missing {missing[0]})")


def resize_max_side(img: np.ndarray, max_side: int | None) -> np.ndarray:
    if not max_side or max(img.shape[:2]) <= max_side:
        return img
    from PIL import Image

    h, w = img.shape[:2]
    s = max_side / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return np.asarray(Image.fromarray(img).resize(size, Image.BILINEAR))


def encode_jpeg(img: np.ndarray, quality: int = 90) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=int(quality))
    return buf.getvalue()


# DAVIS/SA-V style palette: index 0 black, index 1 dark red; the rest black.
_PALETTE = [0, 0, 0, 128, 0, 0] + [0, 0, 0] * 254


def encode_mask_png(mask: np.ndarray) -> bytes:
    """A binary HxW mask as a palette PNG holding 0/1 (what sam2's tools read and write)."""
    from PIL import Image

    m = np.ascontiguousarray(np.asarray(mask) > 0, dtype=np.uint8)
    img = Image.frombytes("P", (m.shape[1], m.shape[0]), m.tobytes())
    img.putpalette(_PALETTE)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()

"""Tiny synthetic videos for the labeler tests (PyAV, H.264 or MPEG-4)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def synth_frames(n: int, w: int = 160, h: int = 120, late_square_from: int | None = None) -> np.ndarray:
    """Moving shapes on a gradient; optionally a square that only appears from frame ``late_square_from``."""
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([(xx * 255 // max(1, w - 1)), (yy * 255 // max(1, h - 1)),
                     np.full_like(xx, 60)], axis=-1).astype(np.uint8)
    out = np.empty((n, h, w, 3), dtype=np.uint8)
    for i in range(n):
        f = base.copy()
        cx = int(20 + (w - 60) * i / max(1, n - 1))
        f[30:70, cx:cx + 36] = (230, 40, 40)                       # red box moving right
        r2 = (xx - (w - 40)) ** 2 + (yy - (h // 2 + (i % 10))) ** 2
        f[r2 < 15 ** 2] = (40, 220, 60)                            # green disc bobbing
        if late_square_from is not None and i >= late_square_from:
            f[h - 40:h - 10, 10:40] = (30, 30, 230)                # blue square entering late
        out[i] = f
    return out


def make_video(path: str | Path, n: int = 48, w: int = 160, h: int = 120, fps: int = 24,
               late_square_from: int | None = None) -> dict:
    """Write an mp4 and return a ``videos``-row-like dict for it."""
    import av

    path = Path(path)
    frames = synth_frames(n, w, h, late_square_from)
    with av.open(str(path), mode="w") as c:
        try:
            s = c.add_stream("libx264", rate=fps)
            s.options = {"crf": "18", "preset": "ultrafast"}
        except Exception:  # noqa: BLE001 - fall back where libx264 is missing
            s = c.add_stream("mpeg4", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for f in frames:
            for pkt in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return {"video_id": path.stem, "video_fps": float(fps), "video_frame_count": n, "video_height": h,
            "video_width": w, "content_sha256": None}

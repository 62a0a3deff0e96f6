"""Procedural demo corpus: H.264 videos with exact SA-V ground-truth masklets, plus bad files.

``write_demo_corpus(out_dir)`` writes, for ``i = 0 .. n_videos-1``:

* ``sav_9000NN.mp4``  (NN = ``i`` on two digits) a textured background panning slowly under four
  objects with distinct colours and textures: a ball, a checkered box that passes behind a tall
  occluding bar and is fully hidden for a while, the bar itself, and a diamond that enters from
  the right edge after the first second;
* ``sav_9000NN_manual.json``  the exact visible mask of every object on the annotated frames
  (``annotation_grid`` at 6 fps: every 4th frame at 24 fps), in the SA-V manual-annotation schema
  with the same keys, key order and value types as the SA-V release (floats for the ``video_*``
  numbers and ``masklet_first_appeared_frame``, sizes rounded to 10 decimals as SA-V does);
* ``sav_9000NN.json``  a sidecar ``{"licence", "source_group", "environment"}``;

and with ``include_bad``: ``broken_empty.mp4`` (0 bytes), ``not_really.mp4`` (an HTML page) and
``notes.txt`` (not a video).

``write_synthetic_video`` is the same renderer without annotations, with knobs that make a video
fail quality checks on purpose (``blur``, ``static``, ``brightness``, ``shake``); tests and
benchmarks use it. Rendering is plain numpy slicing; encoding is PyAV/libx264.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from sav_assets.lib.sav import fields as masklet_fields
from sav_assets.lib.sav import rle
from sav_assets.lib.util import atomic_write_bytes

DEMO_ID_BASE = "sav_9000"


# ---------------------------------------------------------------- scene


@dataclass
class _Sprite:
    mask: np.ndarray   # (h, w) bool
    rgb: np.ndarray    # (h, w, 3) uint8


def _texture(rng: np.random.Generator, h: int, w: int, base: tuple, cell: int) -> np.ndarray:
    """Smooth coloured noise plus fine stripes: enough high frequencies to look sharp."""
    from PIL import Image

    small = rng.integers(0, 256, size=(max(2, h // cell + 2), max(2, w // cell + 2), 3), dtype=np.uint8)
    big = np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC), dtype=np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    stripes = 18.0 * np.sign(np.sin((xx + 0.7 * yy) * (2 * np.pi / max(6, cell // 2))))
    out = 0.4 * big + 0.6 * np.asarray(base, np.float32) + stripes[..., None]
    return np.clip(out, 0, 255).astype(np.uint8)


def _make_sprites(rng: np.random.Generator, s: int) -> list[_Sprite]:
    """Object sprites, indexed by masklet id: ball, box, diamond, bar."""
    sprites = []
    # 0: ball, radial gradient + rings, orange
    r = max(4, int(0.12 * s))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1].astype(np.float32)
    d = np.sqrt(xx ** 2 + yy ** 2)
    mask = d <= r
    shade = 1.0 - 0.5 * d / r
    rings = 30.0 * np.sign(np.sin(d * 0.9))
    rgb = np.stack([240 * shade + rings, 140 * shade + rings, 20 * shade + 0 * rings], -1)
    sprites.append(_Sprite(mask, np.clip(rgb, 0, 255).astype(np.uint8)))
    # 1: box, blue/white checker
    bh, bw = max(4, int(0.16 * s)), max(6, int(0.22 * s))
    cy, cx = np.mgrid[0:bh, 0:bw]
    cell = max(2, s // 40)
    check = ((cy // cell + cx // cell) % 2).astype(bool)
    rgb = np.where(check[..., None], np.array([30, 60, 220], np.uint8), np.array([235, 235, 250], np.uint8))
    sprites.append(_Sprite(np.ones((bh, bw), bool), rgb.astype(np.uint8)))
    # 2: diamond, green with noise
    q = max(4, int(0.10 * s))
    yy, xx = np.mgrid[-q:q + 1, -q:q + 1]
    mask = (np.abs(yy) + np.abs(xx)) <= q
    noise = rng.integers(-40, 40, size=mask.shape + (3,))
    rgb = np.clip(np.array([40, 200, 70]) + noise, 0, 255).astype(np.uint8)
    sprites.append(_Sprite(mask, rgb))
    # 3: tall bar (the occluder), magenta with horizontal bands
    oh, ow = max(8, int(0.5 * s)), max(8, int(0.36 * s))
    band = ((np.arange(oh) // max(2, s // 30)) % 2).astype(bool)[:, None]
    rgb = np.where(band[..., None], np.array([200, 40, 160], np.uint8), np.array([120, 20, 90], np.uint8))
    rgb = np.broadcast_to(rgb, (oh, ow, 3)).copy()
    sprites.append(_Sprite(np.ones((oh, ow), bool), rgb))
    return sprites


class Scene:
    """Deterministic moving-object scene; ``render(i)`` gives the frame and the visible masks."""

    Z_ORDER = (1, 0, 3, 2)  # bottom to top: box, ball, bar, diamond

    def __init__(self, width: int, height: int, fps: float, n_frames: int, seed: int = 0,
                 shake: float = 0.0, pan_px_per_s: float | None = None):
        self.w, self.h, self.fps, self.n = int(width), int(height), float(fps), int(n_frames)
        self.rng = np.random.default_rng(seed)
        s = min(self.w, self.h)
        self.s = s
        self.sprites = _make_sprites(self.rng, s)
        pan = pan_px_per_s if pan_px_per_s is not None else 0.08 * s
        self.pan_total = int(abs(pan) * self.n / self.fps) + 2
        self.shake_px = int(round(shake * s))
        pad = self.shake_px + 2
        base = tuple(int(v) for v in self.rng.integers(60, 200, size=3))
        self.bg = _texture(self.rng, self.h + 2 * pad, self.w + self.pan_total + 2 * pad, base,
                           cell=max(4, s // 12))
        self.pad = pad
        self.pan = pan
        self.jitter = (self.rng.integers(-self.shake_px, self.shake_px + 1, size=(self.n, 2))
                       if self.shake_px else np.zeros((self.n, 2), int))
        self.phase = self.rng.uniform(0, 2 * np.pi)
        self.enter_frame = int(round(1.0 * self.fps)) + 1  # the diamond enters after the first second

    def positions(self, i: int) -> list[tuple[int, int] | None]:
        """Top-left corner (y, x) of each sprite in frame ``i`` (None when not in the scene yet)."""
        w, h, n = self.w, self.h, max(1, self.n - 1)
        u = i / n
        out: list[tuple[int, int] | None] = []
        # ball: bounces in the upper half
        sp = self.sprites[0].mask.shape
        bx = (0.5 + 0.4 * np.sin(2 * np.pi * 1.3 * u + self.phase)) * (w - sp[1])
        by = (0.25 + 0.2 * abs(np.sin(2 * np.pi * 2.1 * u))) * (h - sp[0])
        out.append((int(by), int(bx)))
        # box: left to right across the frame at mid height, passing behind the bar
        sp = self.sprites[1].mask.shape
        out.append((int(0.5 * h - sp[0] / 2), int(-0.2 * sp[1] + u * (w - 0.6 * sp[1]))))
        # diamond: enters from the right edge after the first second, moves left along the bottom
        sp = self.sprites[2].mask.shape
        if i < self.enter_frame:
            out.append(None)
        else:
            v = (i - self.enter_frame) / max(1, self.n - self.enter_frame)
            out.append((int(0.78 * h - sp[0] / 2), int(w - v * 0.7 * w)))
        # bar: drifts slowly around the centre
        sp = self.sprites[3].mask.shape
        out.append((int(0.5 * h - sp[0] / 2), int(0.5 * w - sp[1] / 2 + 0.05 * w * np.sin(np.pi * u))))
        return out

    def render(self, i: int, want_masks: bool = False):
        jy, jx = (int(v) for v in self.jitter[i])
        ox = self.pad + int(self.pan * i / self.fps) % max(1, self.pan_total) + jx
        oy = self.pad + jy
        frame = self.bg[oy:oy + self.h, ox:ox + self.w].copy()
        pos = self.positions(i)
        masks = [np.zeros((self.h, self.w), bool) for _ in self.sprites] if want_masks else None
        for k in self.Z_ORDER:
            if pos[k] is None:
                continue
            y, x = pos[k][0] - jy, pos[k][1] - jx  # the camera shakes, the world does not
            sp = self.sprites[k]
            sh, sw = sp.mask.shape
            y0, x0, y1, x1 = max(0, y), max(0, x), min(self.h, y + sh), min(self.w, x + sw)
            if y0 >= y1 or x0 >= x1:
                continue
            m = sp.mask[y0 - y:y1 - y, x0 - x:x1 - x]
            region = frame[y0:y1, x0:x1]
            region[m] = sp.rgb[y0 - y:y1 - y, x0 - x:x1 - x][m]
            if want_masks:
                for j in range(len(masks)):  # what is drawn on top hides what lies below
                    masks[j][y0:y1, x0:x1] &= ~m
                masks[k][y0:y1, x0:x1] |= m
        return frame, masks


# ---------------------------------------------------------------- encoding


class _Writer:
    def __init__(self, path: str, fps: float, width: int, height: int, *, crf: int = 23,
                 preset: str = "ultrafast", gop: int | None = None, faststart: bool = True,
                 rotation: int | None = None, codec: str = "libx264", audio: bool = False,
                 fmt: str | None = None):
        import av

        mp4ish = fmt in ("mp4", "mov") or str(path).endswith((".mp4", ".mov", ".m4v"))
        opts = {"movflags": "+faststart"} if faststart and mp4ish else {}
        self.c = av.open(str(path), mode="w", format=fmt, options=opts)
        rate = Fraction(fps).limit_denominator(1001)
        self.s = self.c.add_stream(codec, rate=rate)
        self.s.width, self.s.height, self.s.pix_fmt = width, height, "yuv420p"
        o = {"preset": preset, "crf": str(crf)} if codec in ("libx264", "libx265") else {}
        if gop:
            self.s.codec_context.gop_size = int(gop)
            if codec == "libx264":
                o["x264-params"] = f"keyint={int(gop)}:min-keyint={int(gop)}:scenecut=0"
        self.s.options = o
        if rotation:
            self.s.set_display_rotation(int(rotation))
        self.audio = None
        if audio:
            self.audio = self.c.add_stream("aac", rate=48000)
            self.audio.layout = "mono"
            self._a_pts = 0
        self.fps = fps
        self.frames = 0

    def write(self, rgb: np.ndarray) -> None:
        import av

        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        for p in self.s.encode(frame):
            self.c.mux(p)
        self.frames += 1
        if self.audio is not None:
            self._write_audio(self.frames / self.fps)

    def _write_audio(self, until_s: float) -> None:
        import av

        while self._a_pts < until_s * 48000:
            t = (self._a_pts + np.arange(1024)) / 48000.0
            samples = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None, :]
            af = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            af.sample_rate = 48000
            af.pts = self._a_pts
            self._a_pts += 1024
            for p in self.audio.encode(af):
                self.c.mux(p)

    def close(self) -> None:
        for p in self.s.encode():
            self.c.mux(p)
        if self.audio is not None:
            for p in self.audio.encode():
                self.c.mux(p)
        self.c.close()


def write_synthetic_video(path, seconds: float = 2.0, fps: float = 24, width: int = 320, height: int = 240,
                          seed: int = 0, *, static: bool = False, blur: float = 0.0, brightness: float = 1.0,
                          shake: float = 0.0, crf: int = 23, preset: str = "ultrafast", gop: int | None = None,
                          faststart: bool = True, rotation: int | None = None, audio: bool = False,
                          codec: str = "libx264") -> dict:
    """Render and encode a moving-shapes video. Returns ``{"path", "frames", "fps", "width", "height"}``.

    ``static`` repeats the first frame (a still image as a video), ``blur`` is a Gaussian radius in
    pixels, ``brightness`` scales the pixel values, ``shake`` is the random per-frame camera
    translation as a fraction of the short side.
    """
    from PIL import Image, ImageFilter

    n = max(1, int(round(seconds * fps)))
    scene = Scene(width, height, fps, n, seed=seed, shake=shake)
    w = _Writer(path, fps, width, height, crf=crf, preset=preset, gop=gop, faststart=faststart,
                rotation=rotation, codec=codec, audio=audio)
    first = None
    for i in range(n):
        if static and first is not None:
            frame = first
        else:
            frame, _ = scene.render(i)
            if blur > 0:
                frame = np.asarray(Image.fromarray(frame).filter(ImageFilter.GaussianBlur(blur)))
            if brightness != 1.0:
                frame = np.clip(frame.astype(np.float32) * brightness, 0, 255).astype(np.uint8)
            first = frame
        w.write(frame)
    w.close()
    return {"path": str(path), "frames": n, "fps": fps, "width": width, "height": height}


def write_audio_only(path, seconds: float = 1.0) -> str:
    """An MP4 holding a single AAC audio stream and no video."""
    import av

    with av.open(str(path), mode="w") as c:
        s = c.add_stream("aac", rate=48000)
        s.layout = "mono"
        pts = 0
        while pts < seconds * 48000:
            t = (pts + np.arange(1024)) / 48000.0
            af = av.AudioFrame.from_ndarray((0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)[None, :],
                                            format="fltp", layout="mono")
            af.sample_rate = 48000
            af.pts = pts
            pts += 1024
            for p in s.encode(af):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return str(path)


# ---------------------------------------------------------------- SA-V corpus

_HTML = """<!DOCTYPE html>
<html><head><title>Download</title></head>
<body><p>Your download will start shortly. This page was saved instead of the video.</p></body></html>
"""


def write_demo_video(out_dir, index: int, seconds: float = 5.0, fps: float = 24, width: int = 1280,
                     height: int = 720, seed: int = 0, environment: str = "Indoor",
                     source_group: str | None = None, licence: str = "cc-by-4.0") -> dict:
    """One demo video with its SA-V manual annotation and sidecar. Returns the three paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vid = f"{DEMO_ID_BASE}{index:02d}"
    n = max(1, int(round(seconds * fps)))
    scene = Scene(width, height, fps, n, seed=seed * 1000 + index)
    grid = masklet_fields.annotation_grid(n, fps)
    grid_set = set(grid)
    writer = _Writer(out / f"{vid}.mp4.part", fps, width, height, crf=20, preset="veryfast", fmt="mp4")
    masklet = []
    for i in range(n):
        want = i in grid_set
        frame, masks = scene.render(i, want_masks=want)
        writer.write(frame)
        if want:
            masklet.append([rle.encode(m) for m in masks])
    writer.close()
    os.replace(out / f"{vid}.mp4.part", out / f"{vid}.mp4")
    ann = sav_annotation(vid, masklet, n, fps, width, height, environment=environment)
    atomic_write_bytes(out / f"{vid}_manual.json", json.dumps(ann).encode())
    sidecar = {"licence": licence, "source_group": source_group or f"demo_group_{index // 2}",
               "environment": environment}
    atomic_write_bytes(out / f"{vid}.json", json.dumps(sidecar).encode())
    return {"video_id": vid, "video": str(out / f"{vid}.mp4"), "annotation": str(out / f"{vid}_manual.json"),
            "sidecar": str(out / f"{vid}.json"), "frames": n, "annotated_frames": grid}


def sav_annotation(video_id: str, masklet: list[list[dict]], frame_count: int, fps: float, width: int,
                   height: int, *, environment: str = "Indoor", split: str = "train",
                   masklet_type: str = "manual") -> dict:
    """SA-V annotation dict (key order as in the release) from ``masklet[annotated frame][object]``."""
    n_obj = len(masklet[0]) if masklet else 0
    derived = [masklet_fields.derive([rle.area(fr[j]) for fr in masklet], height, width) for j in range(n_obj)]
    edited = [sum(1 for fr in masklet if rle.area(fr[j]) > 0) for j in range(n_obj)]
    return {
        "video_id": video_id,
        "video_duration": float(frame_count / fps),
        "video_frame_count": float(frame_count),
        "video_height": float(height),
        "video_width": float(width),
        "video_resolution": float(height * width),
        "video_environment": environment,
        "video_split": split,
        "masklet": masklet,
        "masklet_id": list(range(n_obj)),
        "masklet_size_rel": [round(d["masklet_size_rel"], 10) for d in derived],
        "masklet_size_abs": [round(d["masklet_size_abs"], 10) for d in derived],
        "masklet_size_bucket": [d["masklet_size_bucket"] for d in derived],
        "masklet_visibility_changes": [int(d["masklet_visibility_changes"]) for d in derived],
        "masklet_first_appeared_frame": [float(d["masklet_first_appeared_frame"]) for d in derived],
        "masklet_frame_count": [int(d["masklet_frame_count"]) for d in derived],
        "masklet_edited_frame_count": edited,
        "masklet_type": [masklet_type] * n_obj,
        "masklet_stability_score": [None] * n_obj,
        "masklet_num": n_obj,
    }


def write_demo_corpus(out_dir, n_videos: int = 3, seconds: float = 5.0, fps: float = 24, width: int = 1280,
                      height: int = 720, seed: int = 0, include_bad: bool = True) -> dict:
    """Write the demo corpus into ``out_dir`` (see the module docstring). Returns a summary of paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    videos = []
    for i in range(n_videos):
        videos.append(write_demo_video(out, i, seconds=seconds, fps=fps, width=width, height=height, seed=seed,
                                       environment="Indoor" if i % 2 == 0 else "Outdoor"))
    bad: list[str] = []
    others: list[str] = []
    if include_bad:
        (out / "broken_empty.mp4").write_bytes(b"")
        (out / "not_really.mp4").write_text(_HTML)
        (out / "notes.txt").write_text("Demo corpus notes: not a video, the ingest should skip it.\n")
        bad = [str(out / "broken_empty.mp4"), str(out / "not_really.mp4")]
        others = [str(out / "notes.txt")]
    return {
        "out_dir": str(out),
        "video_ids": [v["video_id"] for v in videos],
        "videos": [v["video"] for v in videos],
        "annotations": [v["annotation"] for v in videos],
        "sidecars": [v["sidecar"] for v in videos],
        "bad_videos": bad,
        "non_videos": others,
    }

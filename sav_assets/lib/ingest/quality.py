"""Video quality: metrics on a few sampled frames, a pass/fail verdict with reasons, near-duplicates.

``assess_batch`` assesses every ``videos`` row with ``status == "ok"`` and returns one dict per video
with exactly the ``video_quality`` columns (see ``tables.VIDEO_QUALITY``) except ``batch_id`` and
``evaluated_at``. Frames are decoded by :func:`sav_assets.lib.video.sample.sample_frames` in the
sandbox (an isolated, resource-limited child process); a video that cannot be sampled gets the
``decode_failed`` reason (its :class:`~sav_assets.lib.video.errors.VideoError` class, e.g.
``decoder_timeout`` or ``decoder_crash``, is not a column). Frames are downscaled so that the long side
is at most ``max_side`` (512) px.

Sampling: ``QualityThresholds.sample_frames`` anchor frames evenly spread over the video; for the shake estimate each
anchor also brings the two frames ``step`` and ``2*step`` later, ``step = round(fps / 15)`` (at least
1), so the triplets are ~1/15 s apart.

Metrics (on luma ``Y = 0.299 R + 0.587 G + 0.114 B`` unless said otherwise):

* ``sharpness``  median over anchors of the variance of the 4-neighbour Laplacian, on the frame
  resized so that its short side is 256 px (independent of the source resolution);
* ``brightness`` mean luma over anchors (0..255);
* ``clipped_fraction`` fraction of anchor pixels that are clipped: a channel at 255 (blown
  highlight; tolerance 1) or all channels at 0 (crushed black; tolerance 1);
* ``motion``     mean absolute luma difference between consecutive anchors, divided by 255
  (a still image encoded as a video is ~0);
* ``camera_shake`` median over triplets of the change of the global translation (phase correlation
  of frames ``a -> a+step`` against ``a+step -> a+2*step``), as a fraction of the short side. A
  smooth pan or a tripod shot gives ~0; handheld jitter gives a large value;
* ``phash``      64-bit DCT perceptual hash of every anchor (16 hex digits).

Reason codes (stable strings, in this order): ``low_resolution``, ``too_short``, ``too_long``,
``fps_out_of_range``, ``decode_failed``, ``blurry``, ``too_dark``, ``too_bright``, ``clipped``,
``static``, ``shaky``, ``near_duplicate``, ``licence_unknown`` (only when ``unknown_licence_ok`` is
False), ``licence_not_allowed``. ``passed`` is True exactly when ``reasons`` is empty.

Near-duplicates (:mod:`sav_assets.lib.ingest.near_duplicates`): videos whose anchor hashes lie within
``dup_max_hamming`` bits of each other form a group, across this batch and the ``prior`` rows of
other batches; the group keeps its best member that passes every other check (an earlier batch's
kept video stays kept), the others get ``near_duplicate`` and ``duplicate_of`` = the kept one, and a
group with no member to keep rejects no one as a duplicate. A video never matches its own id, so
re-running a batch with its previous rows among ``prior`` is harmless.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from sav_assets.lib.ingest.near_duplicates import resolve_near_duplicates
from sav_assets.lib.video.errors import DECODE_ERROR, UNREADABLE, VideoError
from sav_assets.lib.video.sample import evenly_spaced, sample_frames

REASONS = (
    "low_resolution", "too_short", "too_long", "fps_out_of_range", "decode_failed", "blurry", "too_dark",
    "too_bright", "clipped", "static", "shaky", "near_duplicate", "licence_unknown", "licence_not_allowed",
)

DEFAULT_LICENCES = ("cc-by-4.0", "cc-by-sa-4.0", "cc0-1.0", "apache-2.0", "mit", "public-domain",
                    "proprietary-owned")


@dataclass
class QualityThresholds:
    """Defaults accept every video of SA-V itself (its sample ``sav_000001`` is 480x848, 24 fps, 20 s):
    ``min_short_side = 480``. ``min_short_side = 720`` is the documented stricter (HD) profile."""

    min_short_side: int = 480           # SA-V's own videos go down to 480 px; 720: the stricter HD profile
    min_duration_s: float = 5.0
    max_duration_s: float = 60.0
    min_fps: float = 15.0
    max_fps: float = 120.0
    min_sharpness: float = 30.0
    min_brightness: float = 25.0
    max_brightness: float = 230.0
    max_clipped_fraction: float = 0.25
    max_camera_shake: float = 0.03
    min_motion: float = 0.004
    dup_max_hamming: int = 10
    sample_frames: int = 8
    decode_timeout_s: float = 120.0
    decode_memory_mb: int = 4096
    max_side: int = 512
    licence_allowlist: tuple = field(default_factory=lambda: DEFAULT_LICENCES)
    unknown_licence_ok: bool = True


# ---------------------------------------------------------------- which frames to sample


def shake_step(fps: float | None) -> int:
    """Frames between the members of a shake triplet (~1/15 s)."""
    return max(1, int(round((fps or 15.0) / 15.0)))


def anchor_indices(frame_count: int, n: int, step: int = 0) -> list[int]:
    """``n`` anchors evenly spread over ``[0, frame_count - 1 - 2*step]``."""
    if frame_count <= 0 or n <= 0:
        return []
    return evenly_spaced(max(1, frame_count - 2 * step), n)


def sample_indices(frame_count: int, n: int, fps: float | None = None, triplets: bool = False) -> list[int]:
    """``n`` anchor indices evenly spread over ``[0, frame_count)``; with ``triplets`` each anchor also
    brings ``a+step`` and ``a+2*step`` (anchors are shifted left so that the triplet fits)."""
    step = shake_step(fps) if triplets else 0
    anchors = anchor_indices(frame_count, n, step)
    out = set(anchors)
    if triplets:
        for a in anchors:
            out.update(i for i in (a + step, a + 2 * step) if i < frame_count)
    return sorted(out)


# ---------------------------------------------------------------- metrics


def luma(frame: np.ndarray) -> np.ndarray:
    f = frame.astype(np.float32)
    if f.ndim == 2:
        return f
    return 0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]


def _resize_gray(gray: np.ndarray, short: int) -> np.ndarray:
    from PIL import Image

    h, w = gray.shape
    s = short / float(min(h, w))
    size = (max(1, int(round(w * s))), max(1, int(round(h * s))))
    return np.asarray(Image.fromarray(gray.astype(np.float32), mode="F").resize(size, Image.BILINEAR))


def sharpness(frame: np.ndarray, short_side: int = 256) -> float:
    """Variance of the 4-neighbour Laplacian of the luma resized to a ``short_side`` px short side."""
    g = _resize_gray(luma(frame), short_side)
    lap = g[1:-1, :-2] + g[1:-1, 2:] + g[:-2, 1:-1] + g[2:, 1:-1] - 4.0 * g[1:-1, 1:-1]
    return float(lap.var())


def phase_shift(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Translation (dy, dx) in pixels that maps ``a`` onto ``b`` (phase correlation, whole frame)."""
    d = _block_shifts(a[None], b[None])[0]
    return float(d[0]), float(d[1])


def _block_shifts(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-block phase-correlation shifts of two stacks of equally sized blocks, ``(B, 2)``."""
    _, h, w = a.shape
    win = np.outer(np.hanning(h), np.hanning(w)).astype(np.float32)
    fa = np.fft.rfft2((a - a.mean(axis=(1, 2), keepdims=True)) * win)
    fb = np.fft.rfft2((b - b.mean(axis=(1, 2), keepdims=True)) * win)
    r = fb * np.conj(fa)
    r /= np.abs(r) + 1e-9
    c = np.fft.irfft2(r, s=(h, w))
    flat = c.reshape(len(c), -1).argmax(axis=1)
    dy, dx = np.unravel_index(flat, (h, w))
    dy = np.where(dy > h // 2, dy - h, dy)
    dx = np.where(dx > w // 2, dx - w, dx)
    return np.stack([dy, dx], axis=1).astype(np.float64)


def global_shift(a: np.ndarray, b: np.ndarray, block: int = 32) -> np.ndarray:
    """Camera translation (dy, dx) between two grey frames: the median of per-block phase
    correlations, so objects moving over a minority of the blocks do not count."""
    h, w = a.shape
    ny, nx = h // block, w // block
    if ny < 2 or nx < 2:
        return np.array(phase_shift(a, b))

    def blocks(g):
        g = g[:ny * block, :nx * block]
        return g.reshape(ny, block, nx, block).transpose(0, 2, 1, 3).reshape(-1, block, block)

    return np.median(_block_shifts(blocks(a), blocks(b)), axis=0)


def phash(frame: np.ndarray) -> str:
    """64-bit DCT perceptual hash (32x32 luma, 8x8 low frequencies against their median), 16 hex digits."""
    from PIL import Image
    from scipy.fft import dctn

    g = luma(frame)
    small = np.asarray(Image.fromarray(g.astype(np.float32), mode="F").resize((32, 32), Image.BILINEAR,
                                                                              reducing_gap=2.0))
    low = dctn(small.astype(np.float64), type=2, norm="ortho")[:8, :8]
    bits = (low > np.median(low)).flatten()
    value = 0
    for bit in bits:
        value = (value << 1) | int(bit)
    return f"{value:016x}"


def frame_metrics(frames: np.ndarray, anchor_pos: list[int], triplets: list[tuple[int, int, int]]) -> dict:
    """Metrics from decoded frames: ``anchor_pos`` index the anchors, ``triplets`` index (a, a+s, a+2s)."""
    grays = [luma(frames[i]) for i in anchor_pos]
    sharp = float(np.median([sharpness(frames[i]) for i in anchor_pos]))
    bright = float(np.mean([g.mean() for g in grays]))
    peaks = [frames[i].max(axis=-1) for i in anchor_pos]
    clipped = float(np.mean([np.mean((p >= 254) | (p <= 1)) for p in peaks]))
    small = [_resize_gray(g, 128) for g in grays]
    motion = (float(np.mean([np.abs(b - a).mean() / 255.0 for a, b in zip(small, small[1:])]))
              if len(small) > 1 else 0.0)
    shakes = []
    for a, b, c in triplets:
        ga, gb, gc = (_resize_gray(luma(frames[i]), 128) for i in (a, b, c))
        d1, d2 = global_shift(ga, gb), global_shift(gb, gc)
        shakes.append(float(np.hypot(*(d2 - d1))) / 128.0)
    shake = float(np.median(shakes)) if shakes else 0.0
    return {"sharpness": sharp, "brightness": bright, "clipped_fraction": clipped, "motion": motion,
            "camera_shake": shake, "phash": [phash(frames[i]) for i in anchor_pos]}


def measure_video(path: str, frame_count: int, fps: float, t: QualityThresholds) -> dict:
    """Sample ``path`` and compute its frame metrics (plus ``sampled_frames``). Raises VideoError."""
    idx = sample_indices(int(frame_count), t.sample_frames, fps, triplets=True)
    if not idx:
        raise VideoError(DECODE_ERROR, "no frames to sample")
    frames = sample_frames(path, t.sample_frames, t.decode_timeout_s, t.max_side, indices=idx,
                           memory_mb=t.decode_memory_mb)
    if frames.shape[0] != len(idx):
        raise VideoError(DECODE_ERROR, f"decoded {frames.shape[0]} of {len(idx)} sampled frames")
    pos = {f: k for k, f in enumerate(idx)}
    step = shake_step(fps)
    anchors = anchor_indices(int(frame_count), t.sample_frames, step)
    trip = [(pos[a], pos[a + step], pos[a + 2 * step]) for a in anchors
            if a + step in pos and a + 2 * step in pos]
    m = frame_metrics(frames, [pos[a] for a in anchors], trip)
    m["sampled_frames"] = int(frames.shape[0])
    return m


# ---------------------------------------------------------------- verdicts


def _sidecar_get(sidecar: dict | None, *keys: str):
    if not sidecar:
        return None
    for k in keys:
        v = sidecar.get(k)
        if v not in (None, ""):
            return v
    return None


def normalize_licence(value) -> str | None:
    if value is None:
        return None
    s = str(value).strip().lower().replace("_", "-").replace(" ", "-")
    return s or None


def header_reasons(video: dict, t: QualityThresholds) -> list[str]:
    reasons = []
    h, w = video.get("video_height"), video.get("video_width")
    if not h or not w or min(int(h), int(w)) < t.min_short_side:
        reasons.append("low_resolution")
    dur = video.get("video_duration")
    if dur is None or float(dur) < t.min_duration_s:
        reasons.append("too_short")
    elif float(dur) > t.max_duration_s:
        reasons.append("too_long")
    fps = video.get("video_fps")
    if fps is None or not (t.min_fps <= float(fps) <= t.max_fps):
        reasons.append("fps_out_of_range")
    return reasons


def metric_reasons(m: dict, t: QualityThresholds) -> list[str]:
    reasons = []
    if m["sharpness"] < t.min_sharpness:
        reasons.append("blurry")
    if m["brightness"] < t.min_brightness:
        reasons.append("too_dark")
    if m["brightness"] > t.max_brightness:
        reasons.append("too_bright")
    if m["clipped_fraction"] > t.max_clipped_fraction:
        reasons.append("clipped")
    if m["motion"] < t.min_motion:
        reasons.append("static")
    if m["camera_shake"] > t.max_camera_shake:
        reasons.append("shaky")
    return reasons


def _assess_one(v: dict, path: str | None, sidecar: dict | None, t: QualityThresholds, allow: set) -> dict:
    """One ``video_quality`` row with every reason except ``near_duplicate`` (unordered)."""
    vid = str(v["video_id"])
    reasons = header_reasons(v, t)
    h, w = v.get("video_height"), v.get("video_width")
    row = {"video_id": vid, "passed": False, "reasons": reasons, "duplicate_of": None,
           "short_side": int(min(h, w)) if h and w else None,
           "video_duration": _f(v.get("video_duration")), "video_fps": _f(v.get("video_fps")),
           "sampled_frames": 0, "sharpness": None, "brightness": None, "clipped_fraction": None,
           "motion": None, "camera_shake": None, "phash": []}
    try:
        if not path:
            raise VideoError(UNREADABLE, "no local path for this video")
        m = measure_video(path, int(v.get("video_frame_count") or 0), float(v.get("video_fps") or 0), t)
    except VideoError:
        reasons.append("decode_failed")
    else:
        row.update({k: m[k] for k in ("sampled_frames", "sharpness", "brightness", "clipped_fraction",
                                      "motion", "camera_shake", "phash")})
        reasons.extend(metric_reasons(m, t))
    lic = normalize_licence(_sidecar_get(sidecar, "licence", "license"))
    if lic is None:
        if not t.unknown_licence_ok:
            reasons.append("licence_unknown")
    elif lic not in allow:
        reasons.append("licence_not_allowed")
    grp = _sidecar_get(sidecar, "source_group", "group")
    env = _sidecar_get(sidecar, "environment", "video_environment")
    row.update({"licence": lic, "source_group": None if grp is None else str(grp),
                "video_environment": None if env is None else str(env)})
    return row


def assess_batch(videos: list[dict], paths: dict[str, str], sidecars: dict[str, dict | None],
                 prior: Iterable[dict] = (), t: QualityThresholds | None = None) -> list[dict]:
    """Assess the ``status == "ok"`` rows of ``videos``; one ``video_quality`` row (dict) per video,
    in ``video_id`` order. Never raises for a video that cannot be decoded (``decode_failed``).

    ``prior`` are the ``video_quality`` rows of the other batches (at least ``video_id``, ``batch_id``,
    ``phash``, ``passed``, ``duplicate_of``, ``short_side``, ``video_duration``): near-duplicate groups
    span them (:mod:`sav_assets.lib.ingest.near_duplicates`)."""
    t = t or QualityThresholds()
    return finish_assessment(assess_videos(videos, paths, sidecars, t), prior, t)


def assess_videos(videos: list[dict], paths: dict[str, str], sidecars: dict[str, dict | None],
                  t: QualityThresholds) -> list[dict]:
    """The per-video part of :func:`assess_batch` (metrics, header and licence reasons), ``video_id``
    order; independent per video, so it can run in units on the cluster runner (``lib/ingest/fanout.py``)."""
    allow = {normalize_licence(x) for x in t.licence_allowlist}
    return [_assess_one(v, paths.get(str(v["video_id"])), sidecars.get(str(v["video_id"])), t, allow)
            for v in sorted((v for v in videos if v.get("status") == "ok"), key=lambda r: str(r["video_id"]))]


def finish_assessment(rows: list[dict], prior: Iterable[dict], t: QualityThresholds) -> list[dict]:
    """Near-duplicates across the batch and ``prior``, reasons in canonical order, the verdict."""
    rows = sorted(rows, key=lambda r: r["video_id"])
    resolve_near_duplicates(rows, prior, t.dup_max_hamming)
    for row in rows:
        row["reasons"] = [r for r in REASONS if r in row["reasons"]]
        row["passed"] = not row["reasons"]
    return rows


def _f(x):
    return None if x is None else float(x)


def reason_counts(rows: list[dict]) -> dict[str, int]:
    """How many rows carry each reason code (codes in their canonical order, zero counts left out)."""
    counts = {r: 0 for r in REASONS}
    for row in rows:
        for r in row.get("reasons") or []:
            counts[r] = counts.get(r, 0) + 1
    return {k: v for k, v in counts.items() if v}

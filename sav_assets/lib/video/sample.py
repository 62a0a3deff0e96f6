"""Decode a few sampled frames of an untrusted video, in the sandbox, fast.

``sample_frames(path, n, timeout_s)`` decodes ``n`` evenly spaced frames (or exactly ``indices``) in
an isolated child process (:func:`sav_assets.lib.video.sandbox.run_isolated`) and returns them as
``(k, H, W, 3) uint8`` RGB with the long side at most ``max_side`` px. A failure raises
:class:`~sav_assets.lib.video.errors.VideoError` (``decode_error``, ``decoder_timeout`` or
``decoder_crash``) instead of crashing the caller. Ingestion's quality metrics
(:mod:`sav_assets.lib.ingest.quality`) are computed on these frames.

The child decodes only what the sampled frames need: PyAV with key-frame-aware forward seeking and
non-reference frames dropped. The frames are bit-identical to decord's ``get_batch`` (a test checks
it), but decord re-seeks to the key frame for every index that is not the next frame, which made it
slower than decoding the whole file (``benchmarks/bench_ingest.py``).
"""

from __future__ import annotations

import os

import numpy as np

from sav_assets.lib.video.errors import DECODE_ERROR, VideoError
from sav_assets.lib.video.sandbox import run_isolated


def evenly_spaced(count: int, n: int) -> list[int]:
    """``n`` frame indices evenly spread over ``[0, count)`` (fewer when the video is shorter)."""
    if count <= 0 or n <= 0:
        return []
    last = count - 1
    return sorted({int(round(x)) for x in np.linspace(0, last, num=min(n, last + 1))})


def sample_frames(path: str, n: int, timeout_s: float, max_side: int = 512, *,
                  indices: list[int] | None = None, memory_mb: int = 4096) -> np.ndarray:
    """Decode ``n`` evenly spaced frames (or exactly ``indices``) in an isolated subprocess.

    Returns ``(k, H, W, 3) uint8`` with ``max(H, W) <= max_side``. Raises :class:`VideoError`
    (``decode_error``, ``decoder_timeout`` or ``decoder_crash``) instead of crashing the caller.
    """
    res = run_isolated("sav_assets.lib.video.sample:_sample_child",
                       {"path": os.path.abspath(os.fspath(path)), "n": int(n), "max_side": int(max_side),
                        "indices": None if indices is None else [int(i) for i in indices]},
                       timeout_s=timeout_s, memory_mb=memory_mb)
    if res.status != "ok":
        raise res.error(memory_mb=memory_mb, unexpected=DECODE_ERROR)
    frames = res.arrays.get("frames")
    if frames is None or frames.ndim != 4 or frames.shape[0] == 0:
        raise VideoError(DECODE_ERROR, "no frames decoded")
    return frames


# ---------------------------------------------------------------- child side


def _bad(msg: str) -> VideoError:
    return VideoError(DECODE_ERROR, msg[:500])


def _sample_child(path: str, n: int, max_side: int, indices: list[int] | None) -> tuple:
    """Runs in the isolated subprocess: decode only what the sampled frames need.

    Frame ``i`` is the ``i``-th frame in presentation order (as decord numbers them). The packet
    table (demuxed, not decoded) maps indices to timestamps and key frames; for each sampled frame
    the decoder either continues forward from where it is, or seeks to the sampled frame's key frame
    when that key frame lies ahead, so no GOP is decoded twice and nothing is decoded after the last
    sampled frame. Frames that no other frame references (``skip_frame=NONREF``: most B-frames) are
    dropped unless sampled. Only sampled frames are converted (scaled and converted to RGB in one
    swscale pass) and the display rotation is applied, so shapes match ``probe_file``'s sizes.
    """
    import av

    path = os.path.abspath(path)
    try:
        av.logging.set_level(av.logging.PANIC)
    except Exception:  # noqa: BLE001 - logging control is best effort
        pass
    errors = (av.error.FFmpegError, OSError, ValueError, EOFError)
    try:
        container = av.open(path, metadata_errors="ignore", container_options={"protocol_whitelist": "file"})
    except MemoryError:  # PyAV's ENOMEM under the sandbox's memory limit: decoder_crash, not the file's fault
        raise
    except errors as e:
        raise _bad(f"open: {type(e).__name__}: {e}") from None
    with container:
        if not container.streams.video:
            raise _bad("no video stream")
        vs = container.streams.video[0]
        try:
            pts, keys = _packet_table(container, vs)
        except errors as e:
            raise _bad(f"demux: {type(e).__name__}: {e}") from None
        order = sorted(pts) if pts else []
        count = len(order)
        if pts is not None and count == 0:
            raise _bad("no frames")
        idx = _wanted(count, n, indices)
        try:
            got = _decode_wanted(container, vs, idx, order, keys, pts is None, max_side)
        except errors as e:
            raise _bad(f"decoding sampled frames: {type(e).__name__}: {e}") from None
    missing = [i for i in idx if i not in got]
    if missing:
        raise _bad(f"{len(missing)} of {len(idx)} sampled frames could not be decoded (e.g. {missing[:3]})")
    frames = np.stack([got[i] for i in idx])
    return {"indices": idx, "frame_count": count}, {"frames": np.ascontiguousarray(frames, dtype=np.uint8)}


def _packet_table(container, vs) -> tuple[list[int] | None, list[int]]:
    """Presentation timestamps of the video packets (``None`` when one lacks it) and key frames'."""
    pts, keys = [], []
    for pkt in container.demux(vs):
        if pkt.size == 0:
            continue
        if pkt.pts is None:
            return None, keys
        pts.append(int(pkt.pts))
        if pkt.is_keyframe:
            keys.append(int(pkt.pts))
    return pts, keys


def _wanted(count: int, n: int, indices: list[int] | None) -> list[int]:
    """The frames to decode: ``n`` evenly spaced, or ``indices`` clamped into the video."""
    if indices is None:
        return evenly_spaced(count, n)
    if count:
        return sorted({min(max(0, int(i)), count - 1) for i in indices})
    return sorted({max(0, int(i)) for i in indices})


def _decode_wanted(container, vs, idx: list[int], order: list[int], keys: list[int], no_pts: bool,
                   max_side: int) -> dict:
    if no_pts:  # no timestamps: plain sequential decode, numbering frames as they come
        got = {}
        container.seek(0)
        for k, frame in enumerate(container.decode(vs)):
            if k in idx:
                got[k] = _to_rgb(frame, max_side)
            if k >= idx[-1]:
                break
        return got
    index_of = {p: k for k, p in enumerate(order)}
    key_idx = sorted(index_of[k] for k in set(keys) if k in index_of) or [0]
    got = _decode_plan(container, vs, idx, order, index_of, key_idx, max_side, skip_nonref=True)
    if len(got) < len(idx):  # e.g. packed B-frames: retry decoding every frame
        got = _decode_plan(container, vs, idx, order, index_of, key_idx, max_side, skip_nonref=False)
    return got


def _decode_plan(container, vs, idx, order, index_of, key_idx, max_side, skip_nonref: bool) -> dict:
    """Decode the frames ``idx`` (presentation indices), seeking only forward to key frames."""
    cc = vs.codec_context
    want = {order[i] for i in idx}
    targets = set(idx)
    got: dict[int, np.ndarray] = {}
    pos = -1  # presentation index of the last frame the decoder returned
    frames = None

    def run_from(key: int):
        container.seek(order[key], stream=vs, backward=True, any_frame=False)
        cc.flush_buffers()
        for pkt in container.demux(vs):
            # frames nothing refers to can be dropped unless they are sampled (or the final flush)
            cc.skip_frame = "NONREF" if skip_nonref and pkt.size and pkt.pts not in want else "DEFAULT"
            yield from cc.decode(pkt)

    try:
        for t in idx:
            if t in got:
                continue
            key = key_idx[max(0, int(np.searchsorted(key_idx, t, side="right")) - 1)]
            if frames is None or t <= pos or key > pos + 1:
                frames = run_from(key)
            for frame in frames:
                k = index_of.get(frame.pts)
                if k is None:
                    continue
                pos = max(pos, k)
                if k in targets and k not in got:
                    got[k] = _to_rgb(frame, max_side)
                if k >= t:
                    break
    finally:
        cc.skip_frame = "DEFAULT"
    return got


def _to_rgb(frame, max_side: int) -> np.ndarray:
    w, h = frame.width, frame.height
    s = min(1.0, max_side / float(max(w, h)))
    if s < 1.0:
        a = frame.reformat(width=max(2, int(round(w * s))), height=max(2, int(round(h * s))),
                           format="rgb24", interpolation="AREA").to_ndarray()
    else:
        a = frame.to_ndarray(format="rgb24")
    rot = int(getattr(frame, "rotation", 0) or 0) % 360
    return np.ascontiguousarray(np.rot90(a, rot // 90)) if rot else a

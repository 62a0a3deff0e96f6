"""Probe one untrusted video file: metadata, limits and a decode check, isolated in a subprocess.

``probe_file(path, limits)`` never raises for bad input. A good file gives ``status == "ok"`` with
the SA-V metadata (``video_frame_count``, ``video_fps``, ``video_duration``, ``video_height``,
``video_width``) plus ``codec`` and ``rotation``; a bad one gives ``status == "quarantined"`` with one
of these stable ``error_class`` strings and a human-readable ``error_message``:

=================  ===========================================================================
``empty_file``     a regular file of 0 bytes
``unreadable``     the path does not exist or cannot be stat'ed / opened (permissions)
``not_a_container`` not a media container at all: random bytes, HTML or text saved as ``.mp4``
``no_video_stream`` a valid container without a video stream (e.g. audio only)
``truncated``      recognisably a video file (container signature at the start, or a headerless
                   fragment: MP4/Matroska boxes or a chain of H.264/H.265 NAL units) that the
                   demuxer cannot open: header damaged, ``moov`` missing, file cut short
``decode_error``   the container opens and has a video stream, but indexing or decoding frames
                   fails (file cut mid-stream, corrupt packets, zero decodable frames)
``unsupported_codec`` a valid video whose codec the frame reader (decord) has no decoder for (AV1):
                   the message and the ``codec`` column name the codec
``over_limits``    header exceeds :class:`ProbeLimits`; the message names the limit
                   (``resolution``, ``duration`` or ``bytes``); checked before any frame is decoded
``decoder_timeout`` the decoder process ran past ``timeout_s`` (a hang) and was killed
``decoder_crash``  the decoder process died (signal, out of memory under ``memory_mb``, CPU limit)
                   or failed unexpectedly
=================  ===========================================================================

Order of checks: ``stat`` in the parent (missing, 0 bytes and over ``max_bytes`` for regular files
only: a FIFO or device goes to the isolated child, where a blocking ``open`` is caught by the
timeout); then in the child: open the container with PyAV (header only) and check resolution and
duration limits; then decord indexes the file (frame count, average fps, display size after
rotation) and decodes the first frame, the key frame nearest the middle, the last key frame and
the final frame (the final frame only when it lies within 4 s of its key frame, so that long-GOP
files are not decoded whole); PyAV gives the codec name and the display rotation of the first frame.
A file cut mid-stream already fails decord's indexing pass, which reads every packet.

``video_duration`` is ``video_frame_count / video_fps`` as in SA-V; ``video_height`` /
``video_width`` are the displayed size (decord applies the rotation), like SA-V's portrait videos.
"""

from __future__ import annotations

import os
import stat
from dataclasses import asdict, dataclass

from sav_assets.lib.video.errors import (
    DECODE_ERROR,
    DECODER_CRASH,
    DECODER_TIMEOUT,
    EMPTY_FILE,
    NO_VIDEO_STREAM,
    NOT_A_CONTAINER,
    OVER_LIMITS,
    TRUNCATED,
    UNREADABLE,
    UNSUPPORTED_CODEC,
    VideoError,
)
from sav_assets.lib.video.sandbox import run_isolated
from sav_assets.lib.video.sniff import classify_unopenable

VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v"})

# the classes a probe can give (a subset of the one vocabulary, sav_assets.lib.video.errors)
PROBE_ERROR_CLASSES = (
    EMPTY_FILE, UNREADABLE, NOT_A_CONTAINER, NO_VIDEO_STREAM, TRUNCATED, DECODE_ERROR, UNSUPPORTED_CODEC,
    OVER_LIMITS, DECODER_TIMEOUT, DECODER_CRASH,
)


def is_video_name(name: str) -> bool:
    """True when the file name carries a video extension (case-insensitive)."""
    return os.path.splitext(str(name))[1].lower() in VIDEO_EXTENSIONS


@dataclass
class ProbeLimits:
    """Header limits (checked before decoding) and the decoder process's limits.

    ``memory_mb`` is the child's ``RLIMIT_AS`` (virtual address space, including the ~0.4 GB the
    preloaded decoders map); ``timeout_s`` is wall-clock time, after which the child is killed.
    """

    max_width: int = 7680
    max_height: int = 4320
    max_duration_s: float = 3600.0
    max_bytes: int = 20 * 1024 ** 3
    timeout_s: float = 60.0
    memory_mb: int = 4096


@dataclass
class ProbeResult:
    status: str                      # ok | quarantined
    error_class: str | None = None
    error_message: str | None = None
    video_frame_count: int | None = None
    video_fps: float | None = None
    video_duration: float | None = None
    video_height: int | None = None
    video_width: int | None = None
    codec: str | None = None
    rotation: int | None = None

    def as_row(self) -> dict:
        return asdict(self)

    @classmethod
    def bad(cls, error_class: str, message: str) -> ProbeResult:
        return cls(status="quarantined", error_class=error_class, error_message=message[:1000])


def probe_file(path: str, limits: ProbeLimits | None = None) -> ProbeResult:
    """Probe ``path`` in an isolated subprocess; bad input becomes a quarantined result."""
    limits = limits or ProbeLimits()
    path = os.path.abspath(os.fspath(path))
    try:
        st = os.stat(path)
    except OSError as e:
        return ProbeResult.bad(UNREADABLE, f"{type(e).__name__}: {e}")
    if stat.S_ISDIR(st.st_mode):
        return ProbeResult.bad(UNREADABLE, "is a directory")
    if stat.S_ISREG(st.st_mode):
        if st.st_size == 0:
            return ProbeResult.bad(EMPTY_FILE, "file is 0 bytes")
        if st.st_size > limits.max_bytes:
            return ProbeResult.bad(OVER_LIMITS, f"bytes: {st.st_size} > max_bytes {limits.max_bytes}")
    res = run_isolated(
        "sav_assets.lib.video.probe:_probe_child",
        {"path": path, "max_width": limits.max_width, "max_height": limits.max_height,
         "max_duration_s": limits.max_duration_s},
        timeout_s=limits.timeout_s, memory_mb=limits.memory_mb)
    if res.status != "ok":
        err = res.error(memory_mb=limits.memory_mb)  # an unexpected exception counts as a crash
        return ProbeResult.bad(err.error_class, err.message)
    v = res.value
    if v.get("error_class"):  # a classified failure that still knows the codec (unsupported_codec)
        return ProbeResult(status="quarantined", error_class=v["error_class"],
                           error_message=v["error_message"][:1000], codec=v.get("codec"))
    return ProbeResult(status="ok", **{k: v.get(k) for k in (
        "video_frame_count", "video_fps", "video_duration", "video_height", "video_width",
        "codec", "rotation")})


# ---------------------------------------------------------------- child side


# demuxers that reference other files or URLs, or render text: never handed to decord
_DENIED_FORMATS = frozenset({"hls", "applehttp", "concat", "ffconcat", "dash", "image2", "tty", "sdp",
                             "rtsp", "rtp", "subfile", "data", "lavfi", "mpjpeg"})


def _bad(error_class: str, msg: str) -> VideoError:
    return VideoError(error_class, msg[:1000])


def _probe_child(path: str, max_width: int, max_height: int, max_duration_s: float,
                 tail_seconds: float = 4.0) -> dict:
    """Runs inside the isolated subprocess: the metadata dict, or :class:`VideoError` for bad input."""
    path = os.path.abspath(path)  # never let FFmpeg read "proto:..." as a protocol URL
    header = _check_header(path, max_width, max_height, max_duration_s)
    try:
        frames = _check_frames(path, header, max_duration_s, tail_seconds)
    except VideoError as e:
        if e.error_class != UNSUPPORTED_CODEC:
            raise
        return {"error_class": e.error_class, "error_message": e.message, "codec": header["codec"]}
    return {**frames, "codec": header["codec"], "rotation": header["rotation"]}


def _open_container(path: str):
    import av

    try:
        av.logging.set_level(av.logging.PANIC)
    except Exception:  # noqa: BLE001 - logging control is best effort
        pass
    try:
        return av.open(path, mode="r", metadata_errors="ignore", container_options={"protocol_whitelist": "file"})
    except MemoryError:
        raise
    except PermissionError as e:
        raise _bad(UNREADABLE, f"{type(e).__name__}: {e}") from None
    except (av.error.FFmpegError, OSError, ValueError, EOFError) as e:
        raise _bad(*classify_unopenable(path, f"{type(e).__name__}: {e}")) from None


def _check_header(path: str, max_width: int, max_height: int, max_duration_s: float) -> dict:
    """PyAV, header only (plus the first frame's rotation): the limits, before anything is decoded."""
    with _open_container(path) as container:
        fmt = set((container.format.name or "").split(","))
        if fmt & _DENIED_FORMATS:
            raise _bad(NOT_A_CONTAINER, f"{container.format.name} is a playlist/multi-file format, "
                       "not a video container")
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["none"]
            raise _bad(NO_VIDEO_STREAM, f"container {container.format.name} has streams: {', '.join(kinds)}")
        vs = container.streams.video[0]
        cc = vs.codec_context
        cw, ch = int(cc.width or 0), int(cc.height or 0)
        # resolution, orientation-independent: the long side against the larger limit
        if cw and ch and (max(cw, ch) > max(max_width, max_height) or min(cw, ch) > min(max_width, max_height)):
            raise _bad(OVER_LIMITS, f"resolution: {cw}x{ch} exceeds {max_width}x{max_height}")
        dur, dur_is_video = _declared_duration(container, vs)
        if dur is not None and dur > max_duration_s:
            raise _bad(OVER_LIMITS, f"duration: {dur:.3f} s exceeds max_duration_s {max_duration_s:g}")
        if not cw or not ch:
            raise _bad(DECODE_ERROR, "video stream has no frame size (no decodable parameters)")
        missing = _missing_data(path, vs)
        if missing:
            raise _bad(DECODE_ERROR, missing)
        return {"codec": _codec_name(cc), "declared_frames": int(vs.frames or 0),
                "duration": dur, "duration_is_video": dur_is_video, "rotation": _first_rotation(container, vs)}


def _first_rotation(container, vs) -> int:
    import av

    try:
        for frame in container.decode(vs):
            return int(getattr(frame, "rotation", 0) or 0) % 360
    except (av.error.FFmpegError, OSError, ValueError, EOFError) as e:
        raise _bad(DECODE_ERROR, f"first frame: {type(e).__name__}: {e}") from None
    return 0


def _check_frames(path: str, header: dict, max_duration_s: float, tail_seconds: float) -> dict:
    """decord indexes the file and decodes a few frames: count, fps, displayed size."""
    import decord

    try:
        vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
    except (decord.DECORDError, RuntimeError) as e:
        if _no_decoder(e):
            raise _bad(UNSUPPORTED_CODEC, f"codec {header['codec']}: the frame reader (decord) has no decoder "
                       f"for it; re-encode the video (e.g. to H.264) to ingest it") from None
        raise _bad(DECODE_ERROR, f"indexing failed: {_short(e)}") from None
    n = len(vr)
    if n <= 0:
        raise _bad(DECODE_ERROR, "no decodable frames")
    declared = header["declared_frames"]
    if declared and n < declared:
        raise _bad(DECODE_ERROR, f"only {n} of the {declared} frames the header declares are present")
    fps = float(vr.get_avg_fps() or 0.0)
    if not fps or fps != fps:
        raise _bad(DECODE_ERROR, "no frame rate")
    if n / fps > max_duration_s:
        raise _bad(OVER_LIMITS, f"duration: {n / fps:.3f} s exceeds max_duration_s {max_duration_s:g}")
    dur = header["duration"]
    if dur:
        # frames must cover the declared duration (containers without a frame count, e.g. Matroska)
        slack = max(2.5 / fps, 0.02 * dur) if header["duration_is_video"] else max(1.0, 0.1 * dur)
        if n / fps < dur - slack:
            raise _bad(DECODE_ERROR, f"frames cover only {n / fps:.3f} s of the declared {dur:.3f} s")
    idx = _check_indices(vr, n, fps, tail_seconds)
    try:
        frames = vr.get_batch(idx).asnumpy()
    except (decord.DECORDError, RuntimeError, IndexError) as e:
        raise _bad(DECODE_ERROR, f"decoding frames {idx} of {n}: {_short(e)}") from None
    if frames.ndim != 4 or frames.shape[0] != len(idx):
        raise _bad(DECODE_ERROR, f"decoded {frames.shape} for frames {idx}")
    return {"video_frame_count": int(n), "video_fps": fps, "video_duration": n / fps,
            "video_height": int(frames.shape[1]), "video_width": int(frames.shape[2])}


# FFmpeg's AVERROR_DECODER_NOT_FOUND (-FFERRTAG(0xF8, 'D', 'E', 'C')): decord's stream lookup fails with it
# when the container's video stream is fine but its FFmpeg build has no decoder for the codec
_AVERROR_DECODER_NOT_FOUND = -(0xF8 | ord("D") << 8 | ord("E") << 16 | ord("C") << 24)


def _no_decoder(e: BaseException) -> bool:
    return str(_AVERROR_DECODER_NOT_FOUND) in str(e)


def _codec_name(cc) -> str | None:
    """The codec's canonical name (``av1``, not the decoder's ``libdav1d``)."""
    if cc is None:
        return None
    codec = getattr(cc, "codec", None)
    return getattr(codec, "canonical_name", None) or cc.name


def _check_indices(vr, n: int, fps: float, tail_seconds: float) -> list[int]:
    """First frame, the key frame nearest the middle, the last key frame, and the final frame when
    it lies within ``tail_seconds`` of its key frame (long-GOP files would otherwise decode almost
    entirely: key frames are cheap, the final frame costs a decode from its key frame)."""
    try:
        keys = list(vr.get_key_indices())
    except Exception:  # noqa: BLE001
        keys = []
    keys = [int(k) for k in keys if 0 <= k < n] or [0]
    mid = min(keys, key=lambda k: abs(k - n // 2))
    idx = {0, mid, keys[-1]}
    if n - 1 - keys[-1] <= max(8.0, tail_seconds * fps):
        idx.add(n - 1)
    return sorted(idx)


def _declared_duration(container, vs) -> tuple[float | None, bool]:
    """(seconds, whether the figure is the video stream's own) from the container header."""
    if vs.duration is not None and vs.time_base is not None and vs.duration > 0:
        return float(vs.duration * vs.time_base), True
    tag = (vs.metadata or {}).get("DURATION") or (vs.metadata or {}).get("duration")
    if tag:  # Matroska per-track tag, "HH:MM:SS.nnnnnnnnn"
        try:
            h, m, sec = str(tag).split(":")
            return int(h) * 3600 + int(m) * 60 + float(sec), True
        except ValueError:
            pass
    if container.duration is not None and container.duration > 0:
        return container.duration / 1_000_000.0, False
    return None, False


def _missing_data(path: str, stream) -> str | None:
    """For containers with a sample index (MP4/MOV), the bytes the index points past end of file."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            return None
        entries = stream.index_entries
        end = max((int(e.pos) + int(e.size) for e in entries if e.pos >= 0), default=0)
    except Exception:  # noqa: BLE001 - formats without a usable index are checked by decoding
        return None
    if end > st.st_size:
        return (f"file cut mid-stream: the video index references byte {end} but the file has "
                f"{st.st_size} bytes")
    return None


def _short(e: BaseException) -> str:
    s = str(e).strip().splitlines()
    s = [ln for ln in s if ln.strip() and not ln.startswith("Stack trace")]
    return f"{type(e).__name__}: {' '.join(s[:2])[:500]}"

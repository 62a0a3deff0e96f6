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

from sav_assets.lib.video.sandbox import run_isolated

VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v"})

ERROR_CLASSES = (
    "empty_file", "unreadable", "not_a_container", "no_video_stream", "truncated", "decode_error",
    "over_limits", "decoder_timeout", "decoder_crash",
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
    def bad(cls, error_class: str, message: str) -> "ProbeResult":
        return cls(status="quarantined", error_class=error_class, error_message=message[:1000])


def probe_file(path: str, limits: ProbeLimits | None = None) -> ProbeResult:
    """Probe ``path`` in an isolated subprocess; bad input becomes a quarantined result."""
    limits = limits or ProbeLimits()
    path = os.path.abspath(os.fspath(path))
    try:
        st = os.stat(path)
    except OSError as e:
        return ProbeResult.bad("unreadable", f"{type(e).__name__}: {e}")
    if stat.S_ISDIR(st.st_mode):
        return ProbeResult.bad("unreadable", "is a directory")
    if stat.S_ISREG(st.st_mode):
        if st.st_size == 0:
            return ProbeResult.bad("empty_file", "file is 0 bytes")
        if st.st_size > limits.max_bytes:
            return ProbeResult.bad("over_limits", f"bytes: {st.st_size} > max_bytes {limits.max_bytes}")
    res = run_isolated(
        "sav_assets.lib.video.probe:_probe_child",
        {"path": path, "max_width": limits.max_width, "max_height": limits.max_height,
         "max_duration_s": limits.max_duration_s},
        timeout_s=limits.timeout_s, memory_mb=limits.memory_mb)
    if res.status == "timeout":
        return ProbeResult.bad("decoder_timeout", f"decoder did not finish: {res.message}")
    if res.status == "crashed":
        return ProbeResult.bad("decoder_crash", _crash_message(res))
    if res.status == "error":
        if res.exc_type == "MemoryError" or "bad_alloc" in (res.message or ""):
            return ProbeResult.bad("decoder_crash", f"out of memory (memory_mb={limits.memory_mb}): "
                                   f"{res.exc_type}: {res.message}")
        return ProbeResult.bad("decoder_crash", f"{res.exc_type}: {res.message}")
    v = res.value
    if v.get("error_class"):
        return ProbeResult.bad(v["error_class"], v.get("error_message") or "")
    return ProbeResult(status="ok", **{k: v.get(k) for k in (
        "video_frame_count", "video_fps", "video_duration", "video_height", "video_width",
        "codec", "rotation")})


def _crash_message(res) -> str:
    msg = res.message or "decoder process died"
    tail = (res.stderr_tail or "").strip().splitlines()
    if res.signal in ("SIGKILL", "SIGABRT", "SIGSEGV") and any("alloc" in ln for ln in tail[-5:]):
        msg += " (out of memory)"
    if res.signal == "SIGXCPU":
        msg += " (CPU time limit)"
    if tail:
        msg += " | " + " / ".join(tail[-3:])
    return msg


# ---------------------------------------------------------------- content sniffing (pure Python)

_MP4_TOP_BOXES = {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"moof", b"styp",
                  b"sidx", b"uuid"}
_MP4_INNER = (b"moov", b"mvhd", b"trak", b"tkhd", b"mdia", b"minf", b"stbl", b"stsd", b"moof",
              b"mdat", b"ftyp", b"avcC", b"hvcC")


def has_container_signature(head: bytes) -> bool:
    """A known video container magic at the start of the file."""
    if len(head) >= 8 and head[4:8] in _MP4_TOP_BOXES:
        return True
    return (head.startswith(b"\x1a\x45\xdf\xa3")               # EBML: Matroska / WebM
            or (head[:4] == b"RIFF" and head[8:12] in (b"AVI ", b"AVIX"))
            or head.startswith(b"FLV\x01") or head.startswith(b"OggS")
            or head.startswith(b"\x00\x00\x01\xba")            # MPEG program stream
            or (len(head) > 376 and head[0] == 0x47 and head[188] == 0x47 and head[376] == 0x47))


def looks_like_video_fragment(data: bytes) -> bool:
    """Headerless piece of a video file: nested MP4/Matroska boxes, or a length-prefixed NAL chain.

    Random bytes essentially never pass (a box needs a matching 4-byte type *and* a plausible
    size; the NAL test needs 6 consecutive plausible length-prefixed units); text and HTML never do.
    """
    import struct

    n = len(data)
    for box in _MP4_INNER:
        start = 0
        while True:
            i = data.find(box, start)
            if i < 0:
                break
            if i >= 4:
                size = struct.unpack(">I", data[i - 4:i])[0]
                if size == 1 or 8 <= size <= (1 << 34):
                    return True
            start = i + 1
    idx = data.find(b"\x1f\x43\xb6\x75")  # Matroska Cluster element id
    if 0 <= idx and idx + 5 < n and data[idx + 4] != 0:  # followed by an EBML size varint
        return True
    return _ebml_block_chain(data) or _nal_chain(data)


def _ebml_block_chain(data: bytes, hops: int = 4) -> bool:
    """Consecutive Matroska/WebM SimpleBlocks (id 0xA3, size, track, timecode, flags)."""

    def block_end(i: int) -> int:
        if i + 2 >= len(data) or data[i] != 0xA3:
            return -1
        first = data[i + 1]
        if first == 0:
            return -1
        n = 8 - first.bit_length() + 1  # EBML varint length from the leading zero bits
        if i + 1 + n + 4 > len(data):
            return -1
        size = first & (0xFF >> n)
        for b in data[i + 2:i + 1 + n]:
            size = (size << 8) | b
        body = i + 1 + n
        track = data[body]
        if not 0x81 <= track <= 0x8F or data[body + 3] & 0x06 or size < 5 or size > (16 << 20):
            return -1  # one-byte track number 1..15, reserved flag bits clear
        return body + size

    start = data.find(b"\xa3")
    while start >= 0:
        pos, k = start, 0
        while k < hops:
            end = block_end(pos)
            if end < 0:
                break
            pos, k = end, k + 1
        if k >= hops:
            return True
        start = data.find(b"\xa3", start + 1)
    return False


def _nal_chain(data: bytes, hops: int = 8, gap: int = 2048, max_nal: int = 8 << 20) -> bool:
    """A chain of ``hops`` length-prefixed H.264/H.265 NAL units, as MP4/MOV ``mdat`` stores them.

    Each unit must have a plausible 4-byte length and a strict NAL header (slice with
    first_mb_in_slice == 0, SEI/AUD/SPS/PPS with consistent nal_ref_idc, or HEVC with layer 0 and
    temporal id 1); the next unit may start up to ``gap`` bytes after the previous one ends, which
    skips interleaved audio samples. On random bytes chains die after 2-3 hops.
    """
    import numpy as np

    a = np.frombuffer(data, dtype=np.uint8)
    m = len(a) - 8
    if m <= 0:
        return False
    b = a.astype(np.uint32)
    length = (b[0:m] << 24) | (b[1:m + 1] << 16) | (b[2:m + 2] << 8) | b[3:m + 3]
    h0, h1, h2 = a[4:m + 4], a[5:m + 5], a[6:m + 6]
    ok = (length >= 2) & (length <= max_nal) & ((h0 & 0x80) == 0)
    t, ref = h0 & 0x1F, (h0 >> 5) & 3
    s264 = ((((t == 1) | ((t == 5) & (ref > 0))) & ((h1 & 0x80) != 0))
            | (((t == 6) | (t == 9)) & (ref == 0)) | (((t == 7) | (t == 8)) & (ref > 0)))
    t5 = (h0 >> 1) & 0x3F
    s265 = (h1 == 1) & (((t5 <= 21) & ((h2 & 0x80) != 0)) | ((t5 >= 32) & (t5 <= 40)))
    starts = np.nonzero(ok & (s264 | s265))[0].astype(np.int64)
    pos = starts
    for _ in range(hops):
        if pos.size == 0:
            return False
        end = pos + 4 + length[pos].astype(np.int64)
        j = np.searchsorted(starts, end)
        found = j < len(starts)
        nxt = starts[np.minimum(j, len(starts) - 1)]
        pos = np.unique(nxt[found & (nxt - end <= gap)])
    return bool(pos.size)


def _looks_like_text(head: bytes) -> bool:
    if not head:
        return False
    printable = sum(1 for c in head if 32 <= c < 127 or c in (9, 10, 13))
    return printable / len(head) > 0.95


def classify_unopenable(path: str, reason: str, scan_bytes: int = 4 << 20) -> tuple[str, str]:
    """``truncated`` or ``not_a_container`` for a file the demuxer refused."""
    with open(path, "rb") as f:
        data = f.read(scan_bytes)
        try:
            size = os.fstat(f.fileno()).st_size
            if size > 2 * scan_bytes:  # the moov of a non-faststart file sits at the end
                f.seek(size - scan_bytes)
                data_tail = f.read(scan_bytes)
            else:
                data_tail = b""
        except OSError:
            data_tail = b""
    if has_container_signature(data[:512]):
        return "truncated", f"container header found but it cannot be opened: {reason}"
    if _looks_like_text(data[:4096]):
        kind = "HTML" if b"<html" in data[:4096].lower() or b"<!doctype" in data[:4096].lower() else "text"
        return "not_a_container", f"{kind} content, not a media container: {reason}"
    if looks_like_video_fragment(data) or (data_tail and looks_like_video_fragment(data_tail)):
        return "truncated", f"headerless fragment of a video file (start of file missing): {reason}"
    return "not_a_container", f"unrecognised content, not a media container: {reason}"


# ---------------------------------------------------------------- child side


# demuxers that reference other files or URLs, or render text: never handed to decord
_DENIED_FORMATS = frozenset({"hls", "applehttp", "concat", "ffconcat", "dash", "image2", "tty", "sdp",
                             "rtsp", "rtp", "subfile", "data", "lavfi", "mpjpeg"})


def _probe_child(path: str, max_width: int, max_height: int, max_duration_s: float,
                 tail_seconds: float = 4.0) -> dict:
    """Runs inside the isolated subprocess. Returns a JSON-able dict."""
    import av

    path = os.path.abspath(path)  # never let FFmpeg read "proto:..." as a protocol URL

    def bad(cls: str, msg: str) -> dict:
        return {"error_class": cls, "error_message": msg[:1000]}

    try:
        av.logging.set_level(av.logging.PANIC)
    except Exception:  # noqa: BLE001 - logging control is best effort
        pass
    try:
        container = av.open(path, mode="r", metadata_errors="ignore",
                            container_options={"protocol_whitelist": "file"})
    except MemoryError:
        raise
    except PermissionError as e:
        return bad("unreadable", f"{type(e).__name__}: {e}")
    except (av.error.FFmpegError, OSError, ValueError, EOFError) as e:
        cls, msg = classify_unopenable(path, f"{type(e).__name__}: {e}")
        return bad(cls, msg)
    with container:
        fmt = set((container.format.name or "").split(","))
        if fmt & _DENIED_FORMATS:
            return bad("not_a_container", f"{container.format.name} is a playlist/multi-file format, "
                       "not a video container")
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["none"]
            return bad("no_video_stream", f"container {container.format.name} has streams: {', '.join(kinds)}")
        vs = container.streams.video[0]
        cc = vs.codec_context
        codec = cc.name if cc is not None else None
        cw, ch = int(cc.width or 0), int(cc.height or 0)
        # resolution, orientation-independent: the long side against the larger limit
        if cw and ch and (max(cw, ch) > max(max_width, max_height) or min(cw, ch) > min(max_width, max_height)):
            return bad("over_limits", f"resolution: {cw}x{ch} exceeds {max_width}x{max_height}")
        dur, dur_is_video = _declared_duration(container, vs)
        if dur is not None and dur > max_duration_s:
            return bad("over_limits", f"duration: {dur:.3f} s exceeds max_duration_s {max_duration_s:g}")
        if not cw or not ch:
            return bad("decode_error", "video stream has no frame size (no decodable parameters)")
        declared_frames = int(vs.frames or 0)
        missing = _missing_data(path, vs)
        if missing:
            return bad("decode_error", missing)
        rotation = 0
        try:
            for frame in container.decode(vs):
                rotation = int(getattr(frame, "rotation", 0) or 0) % 360
                break
        except (av.error.FFmpegError, OSError, ValueError, EOFError) as e:
            return bad("decode_error", f"first frame: {type(e).__name__}: {e}")

    import decord

    try:
        vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
    except (decord.DECORDError, RuntimeError) as e:
        return bad("decode_error", f"indexing failed: {_short(e)}")
    n = len(vr)
    if n <= 0:
        return bad("decode_error", "no decodable frames")
    if declared_frames and n < declared_frames:
        return bad("decode_error", f"only {n} of the {declared_frames} frames the header declares are present")
    fps = float(vr.get_avg_fps() or 0.0)
    if not fps or fps != fps:
        return bad("decode_error", "no frame rate")
    if n / fps > max_duration_s:
        return bad("over_limits", f"duration: {n / fps:.3f} s exceeds max_duration_s {max_duration_s:g}")
    if dur:
        # frames must cover the declared duration (containers without a frame count, e.g. Matroska)
        slack = max(2.5 / fps, 0.02 * dur) if dur_is_video else max(1.0, 0.1 * dur)
        if n / fps < dur - slack:
            return bad("decode_error", f"frames cover only {n / fps:.3f} s of the declared {dur:.3f} s")
    try:
        keys = list(vr.get_key_indices())
    except Exception:  # noqa: BLE001
        keys = []
    keys = [int(k) for k in keys if 0 <= k < n] or [0]
    mid = min(keys, key=lambda k: abs(k - n // 2))
    # key frames are cheap to decode; the final frame costs a decode from its key frame, so it is
    # checked only when that run is short (long-GOP files would otherwise decode almost entirely)
    idx = {0, mid, keys[-1]}
    if n - 1 - keys[-1] <= max(8.0, tail_seconds * fps):
        idx.add(n - 1)
    idx = sorted(idx)
    try:
        frames = vr.get_batch(idx).asnumpy()
    except (decord.DECORDError, RuntimeError, IndexError) as e:
        return bad("decode_error", f"decoding frames {idx} of {n}: {_short(e)}")
    if frames.ndim != 4 or frames.shape[0] != len(idx):
        return bad("decode_error", f"decoded {frames.shape} for frames {idx}")
    h, w = int(frames.shape[1]), int(frames.shape[2])
    return {"video_frame_count": int(n), "video_fps": fps, "video_duration": n / fps,
            "video_height": h, "video_width": w, "codec": codec, "rotation": rotation}


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

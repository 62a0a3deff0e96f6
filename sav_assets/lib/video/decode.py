"""Decode only the frames to annotate, as uint8, in bounded chunks.

``iter_frame_chunks(path, indices, chunk_frames)`` yields ``FrameChunk(indices, frames)`` where
``frames`` is a ``uint8`` array ``[n, H, W, 3]`` (RGB) holding at most ``chunk_frames`` frames: a
whole video is never materialised, and never as float. decord's ``get_batch`` decodes each chunk of
the annotation grid (it still has to decode the GOP in between, but hands back only the frames
asked for). ``size=(h, w)`` makes decord resize while decoding.

``isolate=True`` runs the decoder in the sandbox's streaming mode
(:func:`sav_assets.lib.video.sandbox.stream_isolated`): a child process with the same limits as
probing (``RLIMIT_AS`` of ``memory_mb``, a CPU budget per chunk, no core file, a wall-clock timeout
per chunk, its process group killed at the end), answering one message per decoded chunk. A decoder
that crashes (a segfault in FFmpeg), runs out of memory or hangs on an untrusted file then becomes a
:class:`~sav_assets.lib.video.errors.VideoError` instead of taking the interpreter down; the child
decodes the next chunk while the caller works on the current one. ``memory_mb`` defaults to
:data:`DECODE_MEMORY_MB` (6 GiB of address space; decoding 1080p in 16-frame chunks peaks at ~1.1 GB
of it with 32 decoder threads, see the constant). Every decode problem, isolated or not, is raised as ``VideoError``
with ``error_class`` one of ``decode_error`` (the decoder reported an error / wrong frame count),
``decoder_timeout`` and ``decoder_crash`` (the ingestion spellings).

Chunks in increasing order at the video's own size (the labeler's forward pass) are decoded in
**one sequential pass** (:class:`_Sequential`: PyAV's decoder kept open across chunks, each frame
decoded once, converted to RGB only when requested), in the same child when isolated. decord's
``get_batch`` would seek from the chunk's key frame every time (and must park on frame 0 after each
batch, see :func:`_decode_batch`): on a long single-key-frame video every chunk re-decoded the video
from its start, 2.0-5.4x a single pass (``benchmarks/bench_long_video.py --decode``). Reversed
chunks and resized decoding keep decord (``size`` uses its scaler, whose pixels PyAV's does not
reproduce). Both give the same RGB frames at the video's size (tests/lib/video/test_decode_sequential.py);
``stats["decoded_frames"]`` counts the frames the sequential pass decoded.

``prefetch=True`` decodes the next chunk in a background thread while the caller works on the
current one (one extra chunk in memory).

``presentation_times(path)`` returns each frame's presentation timestamp in seconds (decord's
``get_frame_timestamp``: the container's pts in stream time base, frames in presentation order, the
same numbering as the decoded indices; no frame is decoded). It is what maps a video, variable
frame rate included, onto SA-V's 24 fps timeline (:func:`sav_assets.lib.sav.fields.sav_timeline`).
With ``isolate=True`` it runs in the sandbox like probing, with the same error classes.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from sav_assets.lib.util import first_line
from sav_assets.lib.video.errors import DECODE_ERROR, VideoError
from sav_assets.lib.video.sandbox import stream_isolated

# RLIMIT_AS of the isolated decoder: address space, not RSS. Measured VmPeak decoding a 1080p H.264
# video in 16-frame chunks (the labeler's default): 0.6 GB with FFmpeg on 2 threads, 0.9 GB on 16,
# 1.1 GB on 32 (decord's num_threads=0 means one per core); a 4K chunk holds 4x the pixels. 6 GiB
# leaves room for 4K on a many-core host; a video past it fails as decoder_crash (out of memory).
DECODE_MEMORY_MB = 6144


@dataclass
class FrameChunk:
    indices: list[int]      # frame numbers in the video's own numbering
    frames: np.ndarray      # uint8 [n, H, W, 3] RGB
    start: int = 0          # position of indices[0] in the full requested index list


def _chunks(indices: Sequence[int], chunk_frames: int, first: int | None = None) -> list[tuple[int, list[int]]]:
    n = max(1, int(chunk_frames))
    idx = [int(i) for i in indices]
    out, s = [], 0
    if first and 0 < first < n and len(idx) > first:
        out.append((0, idx[:first]))
        s = first
    out += [(k, idx[k:k + n]) for k in range(s, len(idx), n)]
    return out


def _open(path: str, size: tuple[int, int] | None):
    try:
        import decord
    except ImportError as e:  # pragma: no cover
        raise VideoError(DECODE_ERROR, f"decord is not installed: {e}") from e
    kw = {}
    if size is not None:
        kw = {"height": int(size[0]), "width": int(size[1])}
    try:
        return decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=0, **kw)
    except Exception as e:
        raise VideoError(DECODE_ERROR, f"cannot open video {path}: {_describe(e)}") from e


def _describe(e: BaseException) -> str:
    return f"{type(e).__name__}: {first_line(e, 500) or type(e).__name__}"


def _decode_batch(vr, idx: list[int], path: str) -> np.ndarray:
    n = len(vr)
    bad = [i for i in idx if i < 0 or i >= n]
    if bad:
        raise VideoError(DECODE_ERROR, f"{path}: frame indices {bad[:5]} outside the {n} decodable frames")
    try:
        arr = vr.get_batch(idx).asnumpy()
    except Exception as e:
        raise VideoError(DECODE_ERROR, f"{path}: decoding frames {idx[0]}..{idx[-1]} failed: {_describe(e)}") from e
    # After get_batch, decord keeps decoding the rest of the video in the background and holds every
    # frame (dmlc/decord#157, #208): 7.6 GB for a 60 s 1080p video while a slow consumer works. Parking
    # the reader on frame 0 stops that (1.0 GB peak, 32-frame chunks). Not seek(idx[-1]) nor
    # seek_accurate: the first makes the next get_batch return wrong frames, the second still reads ahead.
    with contextlib.suppress(Exception):
        vr.seek(0)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[0] != len(idx) or arr.shape[-1] != 3:
        raise VideoError(DECODE_ERROR, f"{path}: decoder returned {arr.dtype} {arr.shape} for {len(idx)} frames")
    return arr


class _Sequential:
    """One forward pass over the video with PyAV: frames are decoded once, in presentation order,
    and only the requested ones are converted to RGB (no read-ahead: memory stays one chunk)."""

    def __init__(self, path: str):
        import av

        self.path = path
        try:
            self._container = av.open(str(path))
            stream = self._container.streams.video[0]
            stream.thread_type = "AUTO"
            self._frames = self._container.decode(stream)
        except (MemoryError, BlockingIOError):   # out of address space (no thread stack): decoder_crash
            raise
        except Exception as e:
            raise VideoError(DECODE_ERROR, f"cannot open video {path}: {_describe(e)}") from e
        self.decoded = 0             # frames decoded so far (the next frame's index)

    def take(self, idx: list[int]) -> np.ndarray:
        out = []
        for i in idx:
            frame = None
            while self.decoded <= i:
                frame = self._next(i, idx)
            if frame is None:        # asked again for a frame already passed: the caller's bug
                raise ValueError(f"sequential decoding goes forward only ({i} < {self.decoded})")
            out.append(frame.to_ndarray(format="rgb24"))
        return np.stack(out)

    def _next(self, i: int, idx: list[int]):
        try:
            frame = next(self._frames)
        except StopIteration:
            bad = [j for j in idx if j >= self.decoded]
            raise VideoError(DECODE_ERROR, f"{self.path}: frame indices {bad[:5]} outside the {self.decoded} "
                                           "decodable frames") from None
        except (MemoryError, BlockingIOError):
            raise
        except Exception as e:
            raise VideoError(DECODE_ERROR, f"{self.path}: decoding frame {i} failed: {_describe(e)}") from e
        self.decoded += 1
        return frame

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._container.close()


def _sequential(chunks: list, size) -> bool:
    """Decode ``chunks`` in one pass: forward, every index after the previous, at the video's size."""
    flat = [i for _, idx in chunks for i in idx]
    return size is None and len(flat) > 0 and flat[0] >= 0 and all(a < b for a, b in zip(flat, flat[1:]))


def _iter_sequential(path, chunks) -> Iterator[tuple[int, list[int], np.ndarray, int]]:
    dec = _Sequential(path)
    try:
        for start, idx in chunks:
            yield start, idx, dec.take(idx), dec.decoded
    finally:
        dec.close()


def _iter_inprocess(path, chunks, size, stats: dict | None = None) -> Iterator[FrameChunk]:
    if _sequential(chunks, size):
        for start, idx, frames, decoded in _iter_sequential(path, chunks):
            if stats is not None:
                stats["decoded_frames"] = decoded
            yield FrameChunk(idx, frames, start)
        return
    vr = _open(path, size)
    for start, idx in chunks:
        yield FrameChunk(idx, _decode_batch(vr, idx, path), start)


# ---- isolated decoding: the sandbox's streaming mode ------------------------------------------


def _decode_chunks(path: str, chunks: list, size: list | None) -> Iterator[tuple]:
    """Runs in the sandbox child: one message per chunk (each dropped before the next decodes)."""
    if _sequential(chunks, size):
        for start, idx, frames, decoded in _iter_sequential(path, chunks):
            yield {"start": start, "idx": idx, "decoded": decoded}, {"frames": frames}
        return
    vr = _open(path, tuple(size) if size else None)
    for start, idx in chunks:
        yield {"start": start, "idx": idx}, {"frames": _decode_batch(vr, idx, path)}


def _iter_isolated(path, chunks, size, timeout_s: float, memory_mb: int | None, stats: dict | None,
                   test_fault: str | None) -> Iterator[FrameChunk]:
    results = stream_isolated("sav_assets.lib.video.decode:_decode_chunks",
                              {"path": str(path), "chunks": chunks, "size": list(size) if size else None},
                              timeout_s=timeout_s, memory_mb=memory_mb, test_fault=test_fault)
    try:
        for res in results:
            if res.status == "ok":
                if stats is not None and "decoded" in res.value:
                    stats["decoded_frames"] = int(res.value["decoded"])
                yield FrameChunk(list(res.value["idx"]), res.arrays["frames"], int(res.value["start"]))
            elif res.status == "done":
                if stats is not None and res.peak_rss_mb is not None:
                    stats["decoder_peak_mb"] = max(stats.get("decoder_peak_mb", 0.0), float(res.peak_rss_mb))
                return
            else:
                err = res.error(memory_mb=memory_mb, unexpected=DECODE_ERROR)
                raise err if res.error_class else VideoError(err.error_class, f"{path}: {err.message}")
    finally:
        results.close()  # an early stop kills the decoder


# ---- public -----------------------------------------------------------------------------------


def _prefetched(it: Iterator[FrameChunk], depth: int = 1) -> Iterator[FrameChunk]:
    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()
    sentinel = object()

    def run():
        try:
            for item in it:
                while not stop.is_set():
                    try:
                        q.put(("ok", item), timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    break
            q.put(("end", sentinel))
        except BaseException as e:  # noqa: BLE001 - re-raised in the consumer
            q.put(("err", e))
        finally:
            close = getattr(it, "close", None)
            if close is not None and stop.is_set():
                with contextlib.suppress(Exception):
                    close()

    th = threading.Thread(target=run, name="frame-prefetch", daemon=True)
    th.start()
    try:
        while True:
            kind, item = q.get()
            if kind == "ok":
                yield item
            elif kind == "err":
                raise item
            else:
                return
    finally:
        stop.set()
        while th.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                th.join(0.2)


def iter_frame_chunks(
    path: str,
    indices: Sequence[int],
    chunk_frames: int = 64,
    *,
    size: tuple[int, int] | None = None,
    reverse: bool = False,
    isolate: bool = False,
    timeout_s: float = 300.0,
    prefetch: bool = False,
    first_chunk: int | None = None,
    stats: dict | None = None,
    memory_mb: int | None = DECODE_MEMORY_MB,
    test_fault: str | None = None,
) -> Iterator[FrameChunk]:
    """Yield the requested frames (uint8 RGB) chunk by chunk, in order (or chunks in reverse order).

    Within a chunk frames are always in increasing order; with ``reverse=True`` the chunks come last
    first, so a caller walking backwards iterates each chunk's frames reversed. ``first_chunk``
    makes the first chunk smaller, so work can start while the rest is decoded. With ``isolate``,
    ``timeout_s`` applies to each chunk, ``memory_mb`` is the decoder's address-space limit (``None``:
    none) and ``stats["decoder_peak_mb"]`` receives the decoder process's peak RSS once it finishes;
    ``test_fault`` (``"segv"`` / ``"hang"``, tests only) makes the decoder crash or hang.
    """
    chunks = _chunks(indices, chunk_frames, first_chunk)
    if reverse:
        chunks = chunks[::-1]
    if not chunks:
        return iter(())
    if isolate:
        it = _iter_isolated(path, chunks, size, timeout_s, memory_mb, stats, test_fault)
    else:
        it = _iter_inprocess(path, chunks, size, stats)
    return _prefetched(it) if prefetch else it


def _timestamps(path: str) -> list[float]:
    vr = _open(path, None)
    n = len(vr)
    if n == 0:
        return []
    try:
        ts = np.asarray(vr.get_frame_timestamp(list(range(n))), dtype=np.float64)
    except Exception as e:
        raise VideoError(DECODE_ERROR, f"{path}: reading frame timestamps failed: {_describe(e)}") from e
    if ts.ndim != 2 or ts.shape[0] != n:
        raise VideoError(DECODE_ERROR, f"{path}: decoder returned timestamps of shape {ts.shape} for {n} frames")
    return [float(t) for t in ts[:, 0]]


def presentation_times(path: str, *, isolate: bool = False, timeout_s: float = 120.0,
                       memory_mb: int | None = DECODE_MEMORY_MB) -> list[float]:
    """Presentation timestamp (seconds) of every frame, in decode-index order; see the module docstring."""
    if not isolate:
        return _timestamps(str(path))
    from sav_assets.lib.video.sandbox import run_isolated

    res = run_isolated("sav_assets.lib.video.decode:_timestamps", {"path": str(path)},
                       timeout_s=timeout_s, memory_mb=memory_mb)
    if res.status != "ok":
        err = res.error(memory_mb=memory_mb, unexpected=DECODE_ERROR)
        raise err if res.error_class else VideoError(err.error_class, f"{path}: {err.message}")
    return [float(t) for t in res.value]


def read_frames(path: str, indices: Sequence[int], *, size: tuple[int, int] | None = None,
                isolate: bool = False) -> np.ndarray:
    """All requested frames as one uint8 array (for small requests: previews, tests)."""
    parts = [c.frames for c in iter_frame_chunks(path, indices, max(1, len(indices)), size=size,
                                                 isolate=isolate)]
    if not parts:
        return np.zeros((0, 0, 0, 3), dtype=np.uint8)
    return np.concatenate(parts, axis=0)

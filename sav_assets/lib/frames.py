"""Decode only the frames to annotate, as uint8, in bounded chunks.

``iter_frame_chunks(path, indices, chunk_frames)`` yields ``FrameChunk(indices, frames)`` where
``frames`` is a ``uint8`` array ``[n, H, W, 3]`` (RGB) holding at most ``chunk_frames`` frames: a
whole video is never materialised, and never as float. decord's ``get_batch`` decodes each chunk of
the annotation grid (it still has to decode the GOP in between, but hands back only the frames
asked for). ``size=(h, w)`` makes decord resize while decoding.

``isolate=True`` runs the decoder in a separate (spawned) process with a per-chunk timeout: a
decoder that crashes (a segfault in FFmpeg) or hangs on an untrusted file then becomes a
:class:`FrameDecodeError` instead of taking the interpreter down. Chunks come back through a pipe.
Every decode problem is raised as ``FrameDecodeError`` with an ``error_class`` one of
``decode_error`` (the decoder reported an error / wrong frame count), ``decode_timeout`` and
``decoder_crashed``.

``prefetch=True`` decodes the next chunk in a background thread while the caller works on the
current one (one extra chunk in memory).
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np


class FrameDecodeError(Exception):
    def __init__(self, message: str, error_class: str = "decode_error"):
        super().__init__(message)
        self.error_class = error_class


@dataclass
class FrameChunk:
    indices: list[int]      # frame numbers in the video's own numbering
    frames: np.ndarray      # uint8 [n, H, W, 3] RGB
    start: int = 0          # position of indices[0] in the full requested index list


def _chunks(indices: Sequence[int], chunk_frames: int) -> list[tuple[int, list[int]]]:
    n = max(1, int(chunk_frames))
    idx = [int(i) for i in indices]
    return [(s, idx[s:s + n]) for s in range(0, len(idx), n)]


def video_length(path: str) -> int:
    """Frame count as decord sees it."""
    vr = _open(path, None)
    return len(vr)


def _open(path: str, size: tuple[int, int] | None):
    try:
        import decord
    except ImportError as e:  # pragma: no cover
        raise FrameDecodeError(f"decord is not installed: {e}") from e
    kw = {}
    if size is not None:
        kw = {"height": int(size[0]), "width": int(size[1])}
    try:
        return decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=0, **kw)
    except Exception as e:
        raise FrameDecodeError(f"cannot open video {path}: {type(e).__name__}: {_first_line(e)}") from e


def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    return s.splitlines()[0][:500] if s else type(e).__name__


def _decode_batch(vr, idx: list[int], path: str) -> np.ndarray:
    n = len(vr)
    bad = [i for i in idx if i < 0 or i >= n]
    if bad:
        raise FrameDecodeError(f"{path}: frame indices {bad[:5]} outside the {n} decodable frames")
    try:
        arr = vr.get_batch(idx).asnumpy()
    except Exception as e:
        raise FrameDecodeError(f"{path}: decoding frames {idx[0]}..{idx[-1]} failed: "
                               f"{type(e).__name__}: {_first_line(e)}") from e
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[0] != len(idx) or arr.shape[-1] != 3:
        raise FrameDecodeError(f"{path}: decoder returned {arr.dtype} {arr.shape} for {len(idx)} frames")
    return arr


def _iter_inprocess(path, chunks, size) -> Iterator[FrameChunk]:
    vr = _open(path, size)
    for start, idx in chunks:
        yield FrameChunk(idx, _decode_batch(vr, idx, path), start)


# ---- isolated decoding ------------------------------------------------------------------------


def _worker(path, chunks, size, conn) -> None:  # runs in the child process
    try:
        vr = _open(path, size)
        for start, idx in chunks:
            arr = np.ascontiguousarray(_decode_batch(vr, idx, path))
            conn.send(("chunk", start, idx, arr.shape))
            conn.send_bytes(memoryview(arr).cast("B"))
        conn.send(("done",))
    except FrameDecodeError as e:
        conn.send(("error", e.error_class, str(e)))
    except BaseException as e:  # noqa: BLE001
        conn.send(("error", "decode_error", f"{type(e).__name__}: {_first_line(e)}"))
    finally:
        conn.close()


def _iter_isolated(path, chunks, size, timeout_s: float) -> Iterator[FrameChunk]:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_worker, args=(str(path), chunks, size, child), daemon=True)
    proc.start()
    child.close()
    try:
        while True:
            if not parent.poll(timeout_s):
                raise FrameDecodeError(f"{path}: decoder produced nothing for {timeout_s:.0f}s", "decode_timeout")
            try:
                msg = parent.recv()
                if msg[0] == "chunk":
                    _, start, idx, shape = msg
                    if not parent.poll(timeout_s):
                        raise FrameDecodeError(f"{path}: decoder stalled mid-chunk", "decode_timeout")
                    arr = np.empty(shape, dtype=np.uint8)
                    parent.recv_bytes_into(memoryview(arr.reshape(-1)))
            except (EOFError, ConnectionError, OSError) as e:
                proc.join(5)
                raise FrameDecodeError(
                    f"{path}: decoder process died (exit code {proc.exitcode})", "decoder_crashed") from e
            if msg[0] == "done":
                return
            if msg[0] == "error":
                raise FrameDecodeError(msg[2], msg[1])
            yield FrameChunk(list(idx), arr, start)
    finally:
        parent.close()
        if proc.is_alive():
            proc.kill()
        proc.join(5)


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
) -> Iterator[FrameChunk]:
    """Yield the requested frames (uint8 RGB) chunk by chunk, in order (or chunks in reverse order).

    Within a chunk frames are always in increasing order; with ``reverse=True`` the chunks come last
    first, so a caller walking backwards iterates each chunk's frames reversed.
    """
    chunks = _chunks(indices, chunk_frames)
    if reverse:
        chunks = chunks[::-1]
    if not chunks:
        return iter(())
    it = _iter_isolated(path, chunks, size, timeout_s) if isolate else _iter_inprocess(path, chunks, size)
    return _prefetched(it) if prefetch else it


def read_frames(path: str, indices: Sequence[int], *, size: tuple[int, int] | None = None,
                isolate: bool = False) -> np.ndarray:
    """All requested frames as one uint8 array (for small requests: previews, tests)."""
    parts = [c.frames for c in iter_frame_chunks(path, indices, max(1, len(indices)), size=size,
                                                 isolate=isolate)]
    if not parts:
        return np.zeros((0, 0, 0, 3), dtype=np.uint8)
    return np.concatenate(parts, axis=0)

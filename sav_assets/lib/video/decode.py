"""Decode only the frames to annotate, as uint8, in bounded chunks.

``iter_frame_chunks(path, indices, chunk_frames)`` yields ``FrameChunk(indices, frames)`` where
``frames`` is a ``uint8`` array ``[n, H, W, 3]`` (RGB) holding at most ``chunk_frames`` frames: a
whole video is never materialised, and never as float. decord's ``get_batch`` decodes each chunk of
the annotation grid (it still has to decode the GOP in between, but hands back only the frames
asked for). ``size=(h, w)`` makes decord resize while decoding.

``isolate=True`` runs the decoder in a separate interpreter (``python -m sav_assets.lib.video.decode``)
with a per-chunk timeout: a decoder that crashes (a segfault in FFmpeg) or hangs on an untrusted
file then becomes a :class:`FrameDecodeError` instead of taking the interpreter down. Chunks come
back through a pipe (the child decodes the next chunk while the parent works on the current one).
Every decode problem is raised as ``FrameDecodeError`` with an ``error_class`` one of
``decode_error`` (the decoder reported an error / wrong frame count), ``decode_timeout`` and
``decoder_crashed``.

``prefetch=True`` decodes the next chunk in a background thread while the caller works on the
current one (one extra chunk in memory).
"""

from __future__ import annotations

import contextlib
import os
import queue
import sys
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


def _chunks(indices: Sequence[int], chunk_frames: int, first: int | None = None) -> list[tuple[int, list[int]]]:
    n = max(1, int(chunk_frames))
    idx = [int(i) for i in indices]
    out, s = [], 0
    if first and 0 < first < n and len(idx) > first:
        out.append((0, idx[:first]))
        s = first
    out += [(k, idx[k:k + n]) for k in range(s, len(idx), n)]
    return out


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
    # After get_batch, decord keeps decoding the rest of the video in the background and holds every
    # frame (dmlc/decord#157, #208): 7.6 GB for a 60 s 1080p video while a slow consumer works. Parking
    # the reader on frame 0 stops that (1.0 GB peak, 32-frame chunks). Not seek(idx[-1]) nor
    # seek_accurate: the first makes the next get_batch return wrong frames, the second still reads ahead.
    with contextlib.suppress(Exception):
        vr.seek(0)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[0] != len(idx) or arr.shape[-1] != 3:
        raise FrameDecodeError(f"{path}: decoder returned {arr.dtype} {arr.shape} for {len(idx)} frames")
    return arr


def _iter_inprocess(path, chunks, size) -> Iterator[FrameChunk]:
    vr = _open(path, size)
    for start, idx in chunks:
        yield FrameChunk(idx, _decode_batch(vr, idx, path), start)


# ---- isolated decoding ------------------------------------------------------------------------
# ``python -m sav_assets.lib.video.decode --decode-worker`` reads one JSON request on stdin and writes, per
# chunk, a JSON header line followed by the raw uint8 bytes on stdout. A fresh interpreter (not
# multiprocessing) so that nothing of the caller's ``__main__`` is re-imported in the child.


def _worker_main() -> int:  # runs in the child process
    import json

    out = sys.stdout.buffer
    req = json.loads(sys.stdin.buffer.readline())
    fault = os.environ.get("SAV_DECODE_WORKER_FAULT")  # test hook: simulate a decoder crash / hang
    if fault == "segv":
        import signal

        os.kill(os.getpid(), signal.SIGSEGV)
    elif fault == "hang":
        import time

        time.sleep(3600)

    def send(obj: dict, payload: memoryview | None = None) -> None:
        out.write(json.dumps(obj).encode() + b"\n")
        if payload is not None:
            out.write(payload)
        out.flush()

    try:
        size = tuple(req["size"]) if req.get("size") else None
        vr = _open(req["path"], size)
        for start, idx in req["chunks"]:
            arr = np.ascontiguousarray(_decode_batch(vr, idx, req["path"]))
            send({"kind": "chunk", "start": start, "idx": idx, "shape": list(arr.shape)},
                 memoryview(arr).cast("B"))
            del arr  # not alive while the next chunk decodes
        import resource

        send({"kind": "done", "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})
    except FrameDecodeError as e:
        send({"kind": "error", "error_class": e.error_class, "message": str(e)})
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which classifies it
        send({"kind": "error", "error_class": "decode_error", "message": f"{type(e).__name__}: {_first_line(e)}"})
    return 0


class _Reader:
    """Reads lines / exact byte counts from a pipe with a deadline (select on the raw fd)."""

    def __init__(self, fd: int, path: str):
        self.fd, self.path, self.buf = fd, path, bytearray()

    def _fill(self, timeout_s: float) -> None:
        import select

        r, _, _ = select.select([self.fd], [], [], timeout_s)
        if not r:
            raise FrameDecodeError(f"{self.path}: decoder produced nothing for {timeout_s:.0f}s", "decode_timeout")
        data = os.read(self.fd, 1 << 20)
        if not data:
            raise EOFError
        self.buf += data

    def line(self, timeout_s: float) -> bytes:
        while b"\n" not in self.buf:
            self._fill(timeout_s)
        i = self.buf.index(b"\n")
        line = bytes(self.buf[:i])
        del self.buf[:i + 1]
        return line

    def into(self, arr: np.ndarray, timeout_s: float) -> None:
        view = memoryview(arr.reshape(-1))
        n, got = view.nbytes, 0
        take = min(len(self.buf), n)
        view[:take] = self.buf[:take]
        del self.buf[:take]
        got = take
        while got < n:
            import select

            r, _, _ = select.select([self.fd], [], [], timeout_s)
            if not r:
                raise FrameDecodeError(f"{self.path}: decoder stalled mid-chunk", "decode_timeout")
            k = os.readv(self.fd, [view[got:]])
            if k == 0:
                raise EOFError
            got += k


def _iter_isolated(path, chunks, size, timeout_s: float, stats: dict | None = None) -> Iterator[FrameChunk]:
    import json
    import subprocess
    import tempfile

    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    err = tempfile.TemporaryFile()
    proc = subprocess.Popen([sys.executable, "-m", "sav_assets.lib.video.decode", "--decode-worker"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, env=env, close_fds=True)
    try:
        proc.stdin.write(json.dumps({"path": str(path), "chunks": chunks, "size": size}).encode() + b"\n")
        proc.stdin.close()
        rd = _Reader(proc.stdout.fileno(), str(path))
        while True:
            try:
                msg = json.loads(rd.line(timeout_s))
                if msg["kind"] == "chunk":
                    arr = np.empty(msg["shape"], dtype=np.uint8)
                    rd.into(arr, timeout_s)
            except (EOFError, BrokenPipeError, json.JSONDecodeError) as e:
                code = proc.wait(5)
                err.seek(0)
                tail = err.read()[-400:].decode("utf-8", "replace").strip()
                raise FrameDecodeError(f"{path}: decoder process died (exit code {code})"
                                       + (f": {tail.splitlines()[-1]}" if tail else ""), "decoder_crashed") from e
            if msg["kind"] == "done":
                if stats is not None and msg.get("peak_rss_mb") is not None:
                    stats["decoder_peak_mb"] = max(stats.get("decoder_peak_mb", 0.0), float(msg["peak_rss_mb"]))
                return
            if msg["kind"] == "error":
                raise FrameDecodeError(msg["message"], msg["error_class"])
            yield FrameChunk(list(msg["idx"]), arr, int(msg["start"]))
    finally:
        if proc.poll() is None:
            proc.kill()
        with contextlib.suppress(Exception):
            proc.wait(5)
        with contextlib.suppress(Exception):
            proc.stdout.close()
        err.close()


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
) -> Iterator[FrameChunk]:
    """Yield the requested frames (uint8 RGB) chunk by chunk, in order (or chunks in reverse order).

    Within a chunk frames are always in increasing order; with ``reverse=True`` the chunks come last
    first, so a caller walking backwards iterates each chunk's frames reversed. ``first_chunk``
    makes the first chunk smaller, so work can start while the rest is decoded. With ``isolate``,
    ``stats["decoder_peak_mb"]`` receives the decoder process's peak RSS once it finishes.
    """
    chunks = _chunks(indices, chunk_frames, first_chunk)
    if reverse:
        chunks = chunks[::-1]
    if not chunks:
        return iter(())
    it = _iter_isolated(path, chunks, size, timeout_s, stats) if isolate else _iter_inprocess(path, chunks, size)
    return _prefetched(it) if prefetch else it


def read_frames(path: str, indices: Sequence[int], *, size: tuple[int, int] | None = None,
                isolate: bool = False) -> np.ndarray:
    """All requested frames as one uint8 array (for small requests: previews, tests)."""
    parts = [c.frames for c in iter_frame_chunks(path, indices, max(1, len(indices)), size=size,
                                                 isolate=isolate)]
    if not parts:
        return np.zeros((0, 0, 0, 3), dtype=np.uint8)
    return np.concatenate(parts, axis=0)


if __name__ == "__main__" and "--decode-worker" in sys.argv:
    raise SystemExit(_worker_main())

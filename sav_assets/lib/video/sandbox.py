"""Run a function in a fresh, resource-limited child process: the one child-process protocol.

Decoders (FFmpeg under decord and PyAV) can hang, abort or exhaust memory on hostile input, so
every untrusted decode runs here (probing, frame sampling for quality, decoding for labeling), in a
child process of its own session with ``RLIMIT_AS`` (address space), ``RLIMIT_CPU`` and
``RLIMIT_CORE=0`` set before the target runs, and a wall-clock timeout after which the child's
process group is SIGKILLed. Nothing is unpickled on the way back: the child answers with JSON lines,
each optionally followed by raw ``numpy`` array bytes described in that line (dtype, shape), so a
compromised decoder cannot make the parent run code (the framing and the child side live in
:mod:`sav_assets.lib.video.sandbox_child`). The child's stdout/stderr go to a temporary file (native
libraries' output can neither corrupt the answer nor flood the caller's logs); its tail is kept for
error messages.

Two calls:

* :func:`run_isolated` calls ``module:function(**kwargs)`` once and returns one
  :class:`IsolatedResult`.
* :func:`stream_isolated` calls a generator function and yields one result per item it yields
  (e.g. one per decoded chunk of frames), with the same limits; the timeout applies to each message
  and the CPU limit is a budget per message. The child writes the next message while the caller
  works on the current one (the pipe holds back a child that runs ahead).

Two ways to start the child (``mode`` of :func:`run_isolated`):

* ``"zygote"`` (default where ``os.fork`` exists): a helper process
  (:mod:`sav_assets.lib.video.zygote`), started once per calling process, preloads numpy, PyAV,
  decord and the probe/sampling modules, then forks one brand-new child per call. A call then starts
  in milliseconds instead of paying interpreter start-up and imports (~0.2-0.3 s, more on a loaded
  machine) for every file.
* ``"subprocess"``: a fresh ``python -m sav_assets.lib.video.sandbox_child`` per call (used when
  ``env`` is given, or when the zygote cannot run). Streaming always uses it: the answer flows through
  a pipe while it is produced, and a labeling decode lasts long enough for start-up not to matter.

An :class:`IsolatedResult`'s ``status`` is one of

* ``ok``        the target returned (or yielded); ``value`` is its JSON-able value, ``arrays`` its arrays
* ``done``      (streaming only, last) the generator finished; ``peak_rss_mb`` is the child's peak RSS
* ``error``     the target raised; ``exc_type`` / ``message`` describe it (``MemoryError`` included),
  ``error_class`` is set when it raised :class:`~sav_assets.lib.video.errors.VideoError`
* ``timeout``   killed after ``timeout_s`` seconds of wall time without an answer
* ``crashed``   the process died (``signal`` set when killed by a signal, e.g. SIGSEGV, SIGABRT,
  SIGXCPU from the CPU limit) or exited without an answer

:meth:`IsolatedResult.error` turns any status but ``ok``/``done`` into a
:class:`~sav_assets.lib.video.errors.VideoError` of the one vocabulary (``decoder_timeout``,
``decoder_crash``, or the class the target raised).
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sav_assets.lib.video.errors import DECODER_CRASH, DECODER_TIMEOUT, VideoError
from sav_assets.lib.video.sandbox_child import MAGIC
from sav_assets.lib.video.zygote import Zygote, child_env, kill_tree, log_tail

_CHILD = "sav_assets.lib.video.sandbox_child"
_MAX_LINE = 1 << 20
# what running out of address space looks like when it is not a MemoryError (C++, the dynamic loader,
# FFmpeg's frame threads: pthread_create answers EAGAIN when no thread stack can be mapped)
_OOM_HINTS = ("bad_alloc", "failed to map segment", "Cannot allocate memory", "Resource temporarily unavailable")


@dataclass
class IsolatedResult:
    status: str                      # ok | done | error | timeout | crashed
    value: Any = None
    arrays: dict = field(default_factory=dict)
    exc_type: str | None = None
    message: str | None = None
    error_class: str | None = None
    returncode: int | None = None
    signal: str | None = None
    stderr_tail: str = ""
    wall_s: float = 0.0
    peak_rss_mb: float | None = None

    def error(self, *, memory_mb: int | None = None, unexpected: str = DECODER_CRASH) -> VideoError:
        """The failure as a :class:`VideoError`; ``unexpected`` classes an exception the target did
        not classify itself (the probe calls it a crash, decoding calls it a decode error)."""
        if self.status == "timeout":
            return VideoError(DECODER_TIMEOUT, f"decoder did not finish: {self.message}")
        if self.status == "crashed":
            return VideoError(DECODER_CRASH, _crash_message(self))
        if self.error_class:
            return VideoError(self.error_class, self.message or "")
        if self.exc_type == "MemoryError" or any(h in (self.message or "") for h in _OOM_HINTS):
            return VideoError(DECODER_CRASH, f"out of memory (memory_mb={memory_mb}): "
                                             f"{self.exc_type}: {self.message}")
        return VideoError(unexpected, f"{self.exc_type}: {self.message}")


def _crash_message(res: IsolatedResult) -> str:
    msg = res.message or "decoder process died"
    tail = (res.stderr_tail or "").strip().splitlines()
    if res.signal in ("SIGKILL", "SIGABRT", "SIGSEGV") and any("alloc" in ln for ln in tail[-5:]):
        msg += " (out of memory)"
    if res.signal == "SIGXCPU":
        msg += " (CPU time limit)"
    if tail:
        msg += " | " + " / ".join(tail[-3:])
    return msg


def _signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


def _request(target: str, kwargs: dict | None, timeout_s: float, memory_mb: int | None,
             cpu_s: float | None, test_fault: str | None, stream: bool) -> dict:
    if cpu_s is None:  # a backstop: the wall-clock timeout is the primary limit
        cpu_s = timeout_s * max(1, os.cpu_count() or 1) + 5
    req = {"target": target, "kwargs": kwargs or {}, "memory_mb": memory_mb, "cpu_s": cpu_s, "stream": stream}
    if test_fault:
        req["test_fault"] = test_fault
    return req


def run_isolated(target: str, kwargs: dict | None = None, *, timeout_s: float = 60.0,
                 memory_mb: int | None = 4096, cpu_s: float | None = None,
                 env: dict | None = None, mode: str | None = None,
                 test_fault: str | None = None) -> IsolatedResult:
    """Call ``module:function(**kwargs)`` in a limited child process and return what happened.

    ``kwargs`` must be JSON-serialisable. ``cpu_s`` defaults to a backstop of
    ``timeout_s * cpu_count + 5`` CPU seconds. ``mode`` is ``"zygote"`` (default) or
    ``"subprocess"`` (forced when ``env`` is given). ``test_fault`` (``"segv"`` / ``"hang"``) is
    for tests only: the child crashes or hangs once its limits are set.
    """
    request = _request(target, kwargs, timeout_s, memory_mb, cpu_s, test_fault, stream=False)
    mode = mode or ("subprocess" if env or not hasattr(os, "fork") else "zygote")
    if mode == "zygote":
        z = Zygote.get()
        answer = z.run(request, timeout_s) if z is not None else None
        if answer is not None:
            return _zygote_result(timeout_s, *answer)
    results = _subprocess_results(request, timeout_s, env)
    try:
        return next(results)
    finally:
        results.close()


def stream_isolated(target: str, kwargs: dict | None = None, *, timeout_s: float = 60.0,
                    memory_mb: int | None = 4096, cpu_s: float | None = None, env: dict | None = None,
                    test_fault: str | None = None) -> Iterator[IsolatedResult]:
    """Call the generator function ``module:function(**kwargs)`` in a limited child process.

    Yields an ``ok`` result per item the generator yields, then one last result: ``done``, or the
    failure (``error`` / ``timeout`` / ``crashed``). ``timeout_s`` and ``cpu_s`` apply to each
    message. Closing the iterator early kills the child.
    """
    request = _request(target, kwargs, timeout_s, memory_mb, cpu_s, test_fault, stream=True)
    return _subprocess_results(request, timeout_s, env)


# ---------------------------------------------------------------- reading the answer


class _BytesSource:
    """An answer already in memory (the zygote's children write it to a file)."""

    def __init__(self, raw: bytes):
        self.raw, self.pos = raw, 0

    def start(self, timeout_s: float | None = None) -> None:
        pass

    def line(self) -> bytes:
        nl = self.raw.find(b"\n", self.pos)
        if nl < 0:
            raise EOFError
        line, self.pos = self.raw[self.pos:nl], nl + 1
        return line

    def read_into(self, view: memoryview) -> None:
        n = view.nbytes
        if self.pos + n > len(self.raw):
            raise EOFError
        view[:] = self.raw[self.pos:self.pos + n]
        self.pos += n


class _PipeSource:
    """An answer read from a pipe as it comes, with a deadline per message (``start``)."""

    def __init__(self, fd: int):
        self.fd, self.buf, self.deadline = fd, bytearray(), 0.0

    def start(self, timeout_s: float) -> None:
        self.deadline = time.monotonic() + timeout_s

    def _wait(self) -> None:
        left = self.deadline - time.monotonic()
        if left <= 0 or not select.select([self.fd], [], [], left)[0]:
            raise TimeoutError

    def line(self) -> bytes:
        while b"\n" not in self.buf:
            if len(self.buf) > _MAX_LINE:
                raise ValueError("answer line too long")
            self._wait()
            data = os.read(self.fd, 1 << 16)
            if not data:
                raise EOFError
            self.buf += data
        i = self.buf.index(b"\n")
        line = bytes(self.buf[:i])
        del self.buf[:i + 1]
        return line

    def read_into(self, view: memoryview) -> None:
        take = min(len(self.buf), view.nbytes)
        view[:take] = self.buf[:take]
        del self.buf[:take]
        got = take
        while got < view.nbytes:
            self._wait()
            k = os.readv(self.fd, [view[got:]])
            if k == 0:
                raise EOFError
            got += k


def _read_magic(src) -> None:
    magic = bytearray(len(MAGIC))
    src.read_into(memoryview(magic))
    if bytes(magic) != MAGIC:
        raise ValueError("not a sandbox answer")


def _read_message(src) -> tuple[dict, dict]:
    """One message: the JSON head and its arrays (raises EOFError, TimeoutError or ValueError)."""
    import numpy as np

    head = json.loads(src.line())
    if not isinstance(head, dict):
        raise ValueError("answer head is not an object")
    arrays = {}
    for spec in head.get("arrays", []):
        try:
            dtype = np.dtype(spec["dtype"])
            shape = tuple(int(s) for s in spec["shape"])
        except (KeyError, TypeError) as e:
            raise ValueError(f"bad array description: {e}") from e
        if dtype.hasobject:
            raise ValueError("object arrays are refused")
        try:
            arr = np.empty(shape, dtype=dtype)
        except MemoryError as e:  # a size no decoder answer has
            raise ValueError(f"array of shape {shape} refused: {e}") from e
        src.read_into(memoryview(arr.reshape(-1)).cast("B"))
        arrays[str(spec["name"])] = arr
    return head, arrays


def _from_head(head: dict, arrays: dict, **info) -> IsolatedResult:
    if head.get("ok"):
        return IsolatedResult("done" if head.get("done") else "ok", value=head.get("value"), arrays=arrays,
                              peak_rss_mb=head.get("peak_rss_mb"), **info)
    return IsolatedResult("error", exc_type=head.get("exc_type"), message=head.get("message"),
                          error_class=head.get("error_class"), **info)


def _died(rc: int | None, **info) -> IsolatedResult:
    if rc is not None and rc < 0:
        return IsolatedResult("crashed", returncode=rc, signal=_signal_name(-rc),
                              message=f"decoder process killed by {_signal_name(-rc)}", **info)
    return IsolatedResult("crashed", returncode=rc,
                          message=f"decoder process exited with code {rc} without an answer", **info)


def _timed_out(timeout_s: float, rc: int | None, **info) -> IsolatedResult:
    return IsolatedResult("timeout", message=f"killed after {timeout_s:g} s wall time", returncode=rc, **info)


# ---------------------------------------------------------------- one subprocess per call


def _subprocess_results(request: dict, timeout_s: float, env: dict | None) -> Iterator[IsolatedResult]:
    """Start ``python -m sandbox_child`` and yield its messages as results, up to the last one."""
    t0 = time.monotonic()
    with tempfile.TemporaryFile() as fin, tempfile.TemporaryFile() as ferr:
        fin.write(json.dumps(request).encode())
        fin.seek(0)
        try:
            proc = subprocess.Popen([sys.executable, "-m", _CHILD], stdin=fin, stdout=subprocess.PIPE,
                                    stderr=ferr, env=child_env(env), start_new_session=True, close_fds=True)
        except OSError as e:  # cannot even start the interpreter
            yield IsolatedResult("crashed", exc_type=type(e).__name__, message=str(e))
            return
        try:
            src = _PipeSource(proc.stdout.fileno())
            first, last = True, False
            while not last:
                res, last = _next_result(src, proc, ferr, timeout_s, first, t0)
                first = False
                yield res
            _reap(proc, 5.0)
        finally:
            _kill_group(proc)
            proc.stdout.close()


def _next_result(src: _PipeSource, proc: subprocess.Popen, ferr, timeout_s: float, first: bool,
                 t0: float) -> tuple[IsolatedResult, bool]:
    """The next message as a result, and whether it is the last one."""
    src.start(timeout_s)
    try:
        if first:
            _read_magic(src)
        head, arrays = _read_message(src)
    except TimeoutError:
        _kill_group(proc)
        return _timed_out(timeout_s, proc.returncode, stderr_tail=log_tail(ferr), wall_s=time.monotonic() - t0), True
    except (EOFError, ValueError):
        rc = _reap(proc, 5.0)
        return _died(rc, stderr_tail=log_tail(ferr), wall_s=time.monotonic() - t0), True
    res = _from_head(head, arrays, wall_s=time.monotonic() - t0)
    return res, bool(head.get("end"))


def _reap(proc: subprocess.Popen, grace_s: float) -> int | None:
    """The child's exit status, killing its group if it has not exited within ``grace_s``."""
    try:
        return proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        return proc.returncode


def _kill_group(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        kill_tree(proc.pid)  # the child leads its own session: only ours die
    proc.wait()


def _zygote_result(timeout_s: float, rc: int | None, raw: bytes, tail: str, timed_out: bool,
                   wall_s: float) -> IsolatedResult:
    """The result of a zygote child, from its exit status and the answer it left in its file."""
    info = {"stderr_tail": tail, "wall_s": wall_s}
    if timed_out:
        return _timed_out(timeout_s, rc, **info)
    try:
        src = _BytesSource(raw)
        _read_magic(src)
        head, arrays = _read_message(src)
    except (EOFError, ValueError):
        return _died(rc, **info)
    return _from_head(head, arrays, returncode=rc, **info)

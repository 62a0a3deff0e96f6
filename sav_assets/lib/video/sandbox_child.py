"""The child side of the sandbox (:mod:`sav_assets.lib.video.sandbox`): limits, the call, the answer.

``python -m sav_assets.lib.video.sandbox_child`` reads one JSON request on stdin, sets the limits
(``RLIMIT_AS``, ``RLIMIT_CPU``, ``RLIMIT_CORE=0``), calls ``module:function(**kwargs)`` and writes the
answer on its original stdout (fd 1 and 2 then go to stderr, so native libraries' output cannot
corrupt the answer). The zygote (:mod:`sav_assets.lib.video.zygote`) runs :func:`serve` in the
children it forks instead.

The answer (the one framing both modes and both call styles use): :data:`MAGIC`, then messages, each
one JSON line followed by the raw bytes of the ``numpy`` arrays that line describes (name, dtype,
shape; object dtypes are refused by the reader). Nothing is pickled. A plain call answers one
message; a streaming call (``"stream": true``; the target is a generator) answers one message per
item the generator yields (``{"ok": true, "value": ...}``), then ``{"ok": true, "done": true}``.
Every last message carries ``"end": true`` and the child's peak RSS; a failure is
``{"ok": false, "exc_type", "message", "error_class"}`` where ``error_class`` is set when the target
raised :class:`~sav_assets.lib.video.errors.VideoError`. A target returns (or yields) either a JSON-able
value or ``(value, {name: ndarray})``.

In streaming mode the CPU limit is a budget per message: after each message the soft limit moves to
the CPU time used so far plus ``cpu_s`` (the hard limit stays unlimited so that it can move).

``test_fault`` in a request is a test-only hook: ``"segv"`` kills the child with SIGSEGV and
``"hang"`` makes it sleep, right after the limits are set, so tests can check how a crashing or
hanging decoder is classified without a hostile file.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys

from sav_assets.lib.util import peak_rss_mb
from sav_assets.lib.video.errors import VideoError

MAGIC = b"SAVISO2\n"


# ---------------------------------------------------------------- the answer


def write_message(out, head: dict, arrays: dict | None = None) -> None:
    """One message: the JSON head line, then each array's raw bytes, in order."""
    import numpy as np

    # made contiguous before anything is written: a failure here must not leave half a message
    arrays = {k: np.ascontiguousarray(a) for k, a in (arrays or {}).items()}
    specs = [{"name": k, "dtype": a.dtype.str, "shape": list(a.shape)} for k, a in arrays.items()]
    line = json.dumps({**head, "arrays": specs}).encode() + b"\n"
    out.write(line)
    for arr in arrays.values():
        out.write(memoryview(arr.reshape(-1)).cast("B"))
    out.flush()


def _split(item) -> tuple:
    """``(value, arrays)`` from what a target returned or yielded."""
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], dict):
        return item
    return item, {}


def _error_head(e: BaseException) -> dict:
    cls = e.error_class if isinstance(e, VideoError) else None
    msg = e.message if isinstance(e, VideoError) else str(e)
    return {"ok": False, "end": True, "exc_type": type(e).__name__, "message": msg[:2000], "error_class": cls}


# ---------------------------------------------------------------- limits and the call


def _set_limits(memory_mb: int | None, cpu_s: float | None, stream: bool) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if memory_mb:
        lim = int(memory_mb) * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
    if cpu_s:
        soft = max(1, int(math.ceil(cpu_s)))
        resource.setrlimit(resource.RLIMIT_CPU, (soft, resource.RLIM_INFINITY if stream else soft + 2))


def _extend_cpu(cpu_s: float | None) -> None:
    """Streaming: the next message gets ``cpu_s`` CPU seconds on top of what is used so far."""
    import resource

    if not cpu_s:
        return
    ru = resource.getrusage(resource.RUSAGE_SELF)
    soft = int(math.ceil(ru.ru_utime + ru.ru_stime + cpu_s))
    resource.setrlimit(resource.RLIMIT_CPU, (soft, resource.RLIM_INFINITY))


def _test_fault(fault: str | None) -> None:
    """Test-only: simulate a decoder that crashes (``"segv"``) or hangs (``"hang"``)."""
    if fault == "segv":
        os.kill(os.getpid(), signal.SIGSEGV)
    elif fault == "hang":
        import time

        time.sleep(3600)


def _stream(gen, out, cpu_s: float | None):
    """Write one message per item of ``gen``; return the generator's return value."""
    while True:
        try:
            item = next(gen)
        except StopIteration as stop:
            return stop.value
        value, arrays = _split(item)
        item = None  # nothing of this message stays alive while the next one is produced
        write_message(out, {"ok": True, "value": value}, arrays)
        value = arrays = None
        _extend_cpu(cpu_s)


def serve(request: dict, out) -> None:
    """Set the limits, import and call the target, write the answer to ``out``."""
    import importlib

    out.write(MAGIC)
    stream = bool(request.get("stream"))
    try:
        _set_limits(request.get("memory_mb"), request.get("cpu_s"), stream)
        _test_fault(request.get("test_fault"))
        mod_name, func_name = request["target"].split(":", 1)
        func = getattr(importlib.import_module(mod_name), func_name)
        result = func(**request.get("kwargs", {}))
        if stream:
            value, arrays = _stream(result, out, request.get("cpu_s")), {}
        else:
            value, arrays = _split(result)
        result = None
        write_message(out, {"ok": True, "done": stream, "end": True, "value": value,
                            "peak_rss_mb": peak_rss_mb()}, arrays)
    except BaseException as e:  # noqa: BLE001 - report everything, including MemoryError
        write_message(out, _error_head(e))


# ---------------------------------------------------------------- one subprocess per call


def _child_main() -> int:
    request = json.loads(sys.stdin.buffer.read())
    # keep the real stdout for the answer; native code printing to fd 1 lands on stderr
    out_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    with os.fdopen(out_fd, "wb") as out:
        serve(request, out)
    return 0


if __name__ == "__main__":
    sys.exit(_child_main())

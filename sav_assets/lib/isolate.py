"""Run one function in a fresh, resource-limited Python subprocess.

Decoders (FFmpeg under decord and PyAV) can hang, abort or exhaust memory on hostile input, so
every untrusted decode runs here: ``python -m sav_assets.lib.isolate`` in its own session, with
``RLIMIT_AS`` (address space), ``RLIMIT_CPU`` and ``RLIMIT_CORE=0`` set before the target module is
imported, a wall-clock timeout after which the whole process group is SIGKILLed, and no pickle on
the way back: the child answers with one JSON line, optionally followed by raw ``numpy`` array
bytes described in that line (dtype, shape), so a compromised decoder cannot make the parent
unpickle anything.

The child's file descriptor 1 is pointed at stderr before the target runs, so whatever native
libraries print cannot corrupt the answer; stderr goes to a temporary file whose tail is kept for
error messages.

``run_isolated`` returns an :class:`IsolatedResult` whose ``status`` is one of

* ``ok``        the target returned; ``value`` is its JSON-able return value, ``arrays`` its arrays
* ``error``     the target raised; ``exc_type`` / ``message`` describe it (``MemoryError`` included)
* ``timeout``   killed after ``timeout_s`` seconds of wall time
* ``crashed``   the process died (``signal`` set when killed by a signal, e.g. SIGSEGV, SIGABRT,
  SIGXCPU from the CPU limit) or exited without an answer
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_PKG_ROOT = str(Path(__file__).resolve().parents[2])
_MAGIC = b"SAVISO1\n"
_STDERR_TAIL = 4000


@dataclass
class IsolatedResult:
    status: str                      # ok | error | timeout | crashed
    value: Any = None
    arrays: dict = field(default_factory=dict)
    exc_type: str | None = None
    message: str | None = None
    returncode: int | None = None
    signal: str | None = None
    stderr_tail: str = ""
    wall_s: float = 0.0


def _signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


def run_isolated(target: str, kwargs: dict | None = None, *, timeout_s: float = 60.0,
                 memory_mb: int | None = 4096, cpu_s: float | None = None,
                 env: dict | None = None) -> IsolatedResult:
    """Call ``module:function(**kwargs)`` in a limited subprocess and return what happened.

    ``kwargs`` must be JSON-serialisable. ``cpu_s`` defaults to a backstop of
    ``timeout_s * cpu_count + 5`` CPU seconds (the wall timeout is the primary limit).
    """
    if cpu_s is None:
        cpu_s = timeout_s * max(1, os.cpu_count() or 1) + 5
    request = json.dumps({"target": target, "kwargs": kwargs or {},
                          "memory_mb": memory_mb, "cpu_s": cpu_s}).encode()
    child_env = dict(os.environ)
    child_env.update(env or {})
    child_env["PYTHONPATH"] = os.pathsep.join(
        [_PKG_ROOT] + ([child_env["PYTHONPATH"]] if child_env.get("PYTHONPATH") else []))
    # fewer glibc malloc arenas: threads otherwise reserve 64 MiB of address space each
    child_env.setdefault("MALLOC_ARENA_MAX", "2")
    child_env.setdefault("AV_LOG_FORCE_NOCOLOR", "1")
    t0 = time.monotonic()
    with tempfile.TemporaryFile() as fin, tempfile.TemporaryFile() as fout, \
            tempfile.TemporaryFile() as ferr:
        fin.write(request)
        fin.seek(0)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "sav_assets.lib.isolate"], stdin=fin, stdout=fout,
                stderr=ferr, env=child_env, start_new_session=True, close_fds=True)
        except OSError as e:  # cannot even start the interpreter
            return IsolatedResult("crashed", exc_type=type(e).__name__, message=str(e))
        timed_out = False
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc)
        wall = time.monotonic() - t0
        ferr.seek(0, os.SEEK_END)
        size = ferr.tell()
        ferr.seek(max(0, size - _STDERR_TAIL))
        tail = ferr.read().decode("utf-8", "replace")
        if timed_out:
            return IsolatedResult("timeout", message=f"killed after {timeout_s:g} s wall time",
                                  returncode=proc.returncode, stderr_tail=tail, wall_s=wall)
        fout.seek(0)
        raw = fout.read()
    rc = proc.returncode
    parsed = _parse_answer(raw)
    if rc < 0:
        return IsolatedResult("crashed", returncode=rc, signal=_signal_name(-rc),
                              message=f"decoder process killed by {_signal_name(-rc)}",
                              stderr_tail=tail, wall_s=wall)
    if parsed is None:
        return IsolatedResult("crashed", returncode=rc,
                              message=f"decoder process exited with code {rc} without an answer",
                              stderr_tail=tail, wall_s=wall)
    head, arrays = parsed
    if head.get("ok"):
        return IsolatedResult("ok", value=head.get("value"), arrays=arrays, returncode=rc,
                              stderr_tail=tail, wall_s=wall)
    return IsolatedResult("error", exc_type=head.get("exc_type"), message=head.get("message"),
                          returncode=rc, stderr_tail=tail, wall_s=wall)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the child leads its own session: only ours die
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.kill()
    except ProcessLookupError:
        pass
    proc.wait()


def _parse_answer(raw: bytes):
    import numpy as np

    if not raw.startswith(_MAGIC):
        return None
    nl = raw.find(b"\n", len(_MAGIC))
    if nl < 0:
        return None
    try:
        head = json.loads(raw[len(_MAGIC):nl])
    except ValueError:
        return None
    arrays = {}
    pos = nl + 1
    for spec in head.get("arrays", []):
        dtype = np.dtype(spec["dtype"])
        if dtype.hasobject:
            return None
        shape = tuple(int(s) for s in spec["shape"])
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if pos + nbytes > len(raw):
            return None
        arrays[spec["name"]] = np.frombuffer(raw, dtype=dtype, count=nbytes // max(1, dtype.itemsize),
                                             offset=pos).reshape(shape).copy()
        pos += nbytes
    return head, arrays


# ---------------------------------------------------------------- child side

def _set_limits(memory_mb: int | None, cpu_s: float | None) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if memory_mb:
        lim = int(memory_mb) * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
    if cpu_s:
        soft = max(1, int(math.ceil(cpu_s)))
        resource.setrlimit(resource.RLIMIT_CPU, (soft, soft + 2))


def _child_main() -> int:
    import importlib

    request = json.loads(sys.stdin.buffer.read())
    # keep the real stdout for the answer; native code printing to fd 1 lands on stderr
    out_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    out = os.fdopen(out_fd, "wb")
    try:
        _set_limits(request.get("memory_mb"), request.get("cpu_s"))
        mod_name, func_name = request["target"].split(":", 1)
        func = getattr(importlib.import_module(mod_name), func_name)
        value = func(**request.get("kwargs", {}))
        arrays = {}
        if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], dict):
            value, arrays = value
        specs, blobs = [], []
        for name, arr in arrays.items():
            specs.append({"name": name, "dtype": arr.dtype.str, "shape": list(arr.shape)})
            blobs.append(arr)
        head = json.dumps({"ok": True, "value": value, "arrays": specs}).encode()
        out.write(_MAGIC + head + b"\n")
        if blobs:
            import numpy as np
        for arr in blobs:
            out.write(memoryview(np.ascontiguousarray(arr)).cast("B"))
    except BaseException as e:  # noqa: BLE001 - report everything, including MemoryError
        msg = str(e)[:2000]
        head = json.dumps({"ok": False, "exc_type": type(e).__name__, "message": msg}).encode()
        out.write(_MAGIC + head + b"\n")
    out.flush()
    out.close()
    return 0


if __name__ == "__main__":
    sys.exit(_child_main())

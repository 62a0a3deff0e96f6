"""Run one function in a fresh, resource-limited child process.

Decoders (FFmpeg under decord and PyAV) can hang, abort or exhaust memory on hostile input, so
every untrusted decode runs here, in a child process of its own session with ``RLIMIT_AS``
(address space), ``RLIMIT_CPU`` and ``RLIMIT_CORE=0`` set before the target runs, and a wall-clock
timeout after which the child's process group is SIGKILLed. Nothing is unpickled on the way back:
the child answers with one JSON line, optionally followed by raw ``numpy`` array bytes described in
that line (dtype, shape), so a compromised decoder cannot make the parent run code. The child's
file descriptors 1 and 2 go to a temporary log file (native libraries' output can neither corrupt
the answer nor flood the caller's logs); its tail is kept for error messages.

Two ways to start the child (``mode``):

* ``"zygote"`` (default where ``os.fork`` exists): a helper process, started once per calling
  process with ``python -m sav_assets.lib.video.sandbox --zygote``, imports numpy, Pillow, PyAV, decord
  and the probe/quality modules, then forks one brand-new child per call. The zygote never opens an
  untrusted file, is single-threaded (BLAS/OpenMP pools pinned to one thread) and exits when its
  caller goes away. A call then starts in milliseconds instead of paying interpreter start-up and
  imports (~0.2-0.3 s, more on a loaded machine) for every file.
* ``"subprocess"``: a fresh ``python -m sav_assets.lib.video.sandbox`` per call (used when ``env`` is
  given, or when the zygote cannot run).

``run_isolated`` returns an :class:`IsolatedResult` whose ``status`` is one of

* ``ok``        the target returned; ``value`` is its JSON-able return value, ``arrays`` its arrays
* ``error``     the target raised; ``exc_type`` / ``message`` describe it (``MemoryError`` included)
* ``timeout``   killed after ``timeout_s`` seconds of wall time
* ``crashed``   the process died (``signal`` set when killed by a signal, e.g. SIGSEGV, SIGABRT,
  SIGXCPU from the CPU limit) or exited without an answer
"""

from __future__ import annotations

import atexit
import itertools
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_PKG_ROOT = str(Path(__file__).resolve().parents[3])
_MAGIC = b"SAVISO1\n"
_STDERR_TAIL = 4000
PRELOAD = ("numpy", "PIL.Image", "scipy.fft", "av", "decord", "sav_assets.lib.video.probe",
           "sav_assets.lib.ingest.quality")


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
                 env: dict | None = None, mode: str | None = None) -> IsolatedResult:
    """Call ``module:function(**kwargs)`` in a limited child process and return what happened.

    ``kwargs`` must be JSON-serialisable. ``cpu_s`` defaults to a backstop of
    ``timeout_s * cpu_count + 5`` CPU seconds (the wall timeout is the primary limit). ``mode`` is
    ``"zygote"`` (default) or ``"subprocess"`` (forced when ``env`` is given).
    """
    if cpu_s is None:
        cpu_s = timeout_s * max(1, os.cpu_count() or 1) + 5
    request = {"target": target, "kwargs": kwargs or {}, "memory_mb": memory_mb, "cpu_s": cpu_s}
    mode = mode or ("subprocess" if env or not hasattr(os, "fork") else "zygote")
    if mode == "zygote":
        z = _Zygote.get()
        if z is not None:
            res = z.run(request, timeout_s)
            if res is not None:
                return res
    return _run_subprocess(request, timeout_s, env)


# ---------------------------------------------------------------- zygote (parent side)


class _Zygote:
    """The caller's handle on its zygote: send requests, learn child pids and exit statuses."""

    _instance: _Zygote | None = None
    _broken_until = 0.0
    _lock = threading.Lock()

    @classmethod
    def get(cls) -> _Zygote | None:
        with cls._lock:
            inst = cls._instance
            if inst is not None and inst.alive and inst.owner_pid == os.getpid():
                return inst
            if time.monotonic() < cls._broken_until:
                return None
            try:
                cls._instance = cls()
            except OSError:
                cls._broken_until = time.monotonic() + 60.0
                cls._instance = None
            return cls._instance

    def __init__(self):
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([_PKG_ROOT] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = "1"  # keep the zygote single-threaded, so fork() is safe
        env.setdefault("MALLOC_ARENA_MAX", "2")
        self.owner_pid = os.getpid()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sav_assets.lib.video.sandbox", "--zygote"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, close_fds=True,
            start_new_session=True)
        self.alive = True
        self.cond = threading.Condition()
        self.started: dict[int, int] = {}     # request id -> child pid (or -1: fork failed)
        self.exited: dict[int, int] = {}      # child pid -> returncode (negative: signal)
        self.ids = itertools.count(1)
        self.send_lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, name="sav-isolate-zygote", daemon=True)
        self.reader.start()
        with self.cond:  # wait for "ready" (imports done)
            if not self.cond.wait_for(lambda: self.ready or not self.alive, timeout=120):
                self.alive = False
        if not self.alive:
            self._close()
            raise OSError("isolation zygote did not start")
        atexit.register(self._close)

    ready = False

    def _read(self) -> None:
        for line in self.proc.stdout:
            parts = line.decode("ascii", "replace").split()
            with self.cond:
                if parts[:1] == ["ready"]:
                    self.ready = True
                elif len(parts) == 3 and parts[0] == "started":
                    self.started[int(parts[1])] = int(parts[2])
                elif len(parts) == 3 and parts[0] == "exit":
                    self.exited[int(parts[1])] = int(parts[2])
                self.cond.notify_all()
        with self.cond:
            self.alive = False
            self.cond.notify_all()

    def _send(self, obj: dict) -> bool:
        try:
            with self.send_lock:
                self.proc.stdin.write(json.dumps(obj).encode() + b"\n")
                self.proc.stdin.flush()
            return True
        except (OSError, ValueError):
            with self.cond:
                self.alive = False
            return False

    def _close(self) -> None:
        try:
            self.proc.stdin.close()  # the zygote kills its remaining children and exits
        except (OSError, ValueError):
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def run(self, request: dict, timeout_s: float) -> IsolatedResult | None:
        """Run one request; ``None`` when the zygote itself failed (the caller falls back)."""
        t0 = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="sav_iso_") as tmp:
            out_path, log_path = os.path.join(tmp, "answer"), os.path.join(tmp, "log")
            rid = next(self.ids)
            if not self._send({"id": rid, "out": out_path, "log": log_path, **request}):
                return None
            with self.cond:
                if not self.cond.wait_for(lambda: rid in self.started or not self.alive, timeout=30):
                    return None
                pid = self.started.pop(rid, None)
            if pid is None or pid < 0:
                return None
            deadline = t0 + timeout_s
            with self.cond:
                self.cond.wait_for(lambda: pid in self.exited or not self.alive,
                                   timeout=max(0.0, deadline - time.monotonic()))
                done = pid in self.exited
            timed_out = not done
            if timed_out:
                self._send({"kill": pid})
                with self.cond:
                    self.cond.wait_for(lambda: pid in self.exited or not self.alive, timeout=10)
            with self.cond:
                rc = self.exited.pop(pid, None)
            wall = time.monotonic() - t0
            tail = _tail(log_path)
            if timed_out:
                return IsolatedResult("timeout", message=f"killed after {timeout_s:g} s wall time",
                                      returncode=rc, stderr_tail=tail, wall_s=wall)
            if rc is None:
                return None
            try:
                with open(out_path, "rb") as f:
                    raw = f.read()
            except OSError:
                raw = b""
        return _result(rc, raw, tail, wall)


def _tail(path: str) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - _STDERR_TAIL))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


# ---------------------------------------------------------------- zygote (its own process)


def _zygote_main() -> int:
    import importlib
    import selectors

    for mod in PRELOAD:
        try:
            importlib.import_module(mod)
        except Exception:  # noqa: BLE001 - a missing optional module only costs speed
            pass
    out = sys.stdout.buffer
    stdin_fd = sys.stdin.buffer.fileno()
    sig_r, sig_w = os.pipe()
    os.set_blocking(sig_r, False)
    os.set_blocking(sig_w, False)
    signal.set_wakeup_fd(sig_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    children: set[int] = set()
    sel = selectors.DefaultSelector()
    sel.register(stdin_fd, selectors.EVENT_READ)
    sel.register(sig_r, selectors.EVENT_READ)
    buf = b""
    out.write(b"ready\n")
    out.flush()

    def reap() -> None:
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            children.discard(pid)
            rc = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
            out.write(f"exit {pid} {rc}\n".encode())
        out.flush()

    eof = False
    while not eof:
        for key, _ in sel.select():
            if key.fd == sig_r:
                try:
                    os.read(sig_r, 4096)
                except BlockingIOError:
                    pass
                reap()
                continue
            data = os.read(stdin_fd, 65536)
            if not data:
                eof = True
                break
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                req = json.loads(line)
                if "kill" in req:
                    if req["kill"] in children:  # only our own, not yet reaped, children
                        _kill_tree(req["kill"])
                    continue
                try:
                    pid = os.fork()
                except OSError:
                    out.write(f"started {req['id']} -1\n".encode())
                    out.flush()
                    continue
                if pid == 0:  # the child: never returns into the zygote loop
                    code = 0
                    try:
                        signal.set_wakeup_fd(-1)
                        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                        signal.signal(signal.SIGINT, signal.SIG_DFL)
                        os.setsid()
                        _forked_child(req)
                    except BaseException:  # noqa: BLE001
                        code = 1
                    finally:
                        os._exit(code)
                children.add(pid)
                out.write(f"started {req['id']} {pid}\n".encode())
                out.flush()
        reap()
    for pid in list(children):  # the caller is gone: so are its decoders
        _kill_tree(pid)
    return 0


def _kill_tree(pid: int) -> None:
    """SIGKILL a child (a zombie until reaped, so the pid cannot have been reused) and its group."""
    for kill in (os.killpg, os.kill):
        try:
            kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _forked_child(req: dict) -> None:
    for fd in (0,):
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, fd)
        os.close(devnull)
    log_fd = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    with open(req["out"], "wb") as out:
        _serve(req, out)


# ---------------------------------------------------------------- one subprocess per call


def _run_subprocess(request: dict, timeout_s: float, env: dict | None) -> IsolatedResult:
    child_env = dict(os.environ)
    child_env.update(env or {})
    child_env["PYTHONPATH"] = os.pathsep.join(
        [_PKG_ROOT] + ([child_env["PYTHONPATH"]] if child_env.get("PYTHONPATH") else []))
    child_env.setdefault("MALLOC_ARENA_MAX", "2")  # threads otherwise reserve 64 MiB of address space each
    t0 = time.monotonic()
    with tempfile.TemporaryFile() as fin, tempfile.TemporaryFile() as fout, \
            tempfile.TemporaryFile() as ferr:
        fin.write(json.dumps(request).encode())
        fin.seek(0)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "sav_assets.lib.video.sandbox"], stdin=fin, stdout=fout,
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
    return _result(proc.returncode, raw, tail, wall)


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


# ---------------------------------------------------------------- answer protocol


def _result(rc: int | None, raw: bytes, tail: str, wall: float) -> IsolatedResult:
    parsed = _parse_answer(raw)
    if rc is not None and rc < 0:
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


# ---------------------------------------------------------------- child side (both modes)


def _set_limits(memory_mb: int | None, cpu_s: float | None) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if memory_mb:
        lim = int(memory_mb) * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
    if cpu_s:
        soft = max(1, int(math.ceil(cpu_s)))
        resource.setrlimit(resource.RLIMIT_CPU, (soft, soft + 2))


def _serve(request: dict, out) -> None:
    """Set the limits, import and call the target, write the answer to ``out``."""
    import importlib

    try:
        _set_limits(request.get("memory_mb"), request.get("cpu_s"))
        mod_name, func_name = request["target"].split(":", 1)
        func = getattr(importlib.import_module(mod_name), func_name)
        value = func(**request.get("kwargs", {}))
        arrays = {}
        if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], dict):
            value, arrays = value
        specs = [{"name": k, "dtype": a.dtype.str, "shape": list(a.shape)} for k, a in arrays.items()]
        head = json.dumps({"ok": True, "value": value, "arrays": specs}).encode()
        out.write(_MAGIC + head + b"\n")
        if arrays:
            import numpy as np

            for arr in arrays.values():
                out.write(memoryview(np.ascontiguousarray(arr)).cast("B"))
    except BaseException as e:  # noqa: BLE001 - report everything, including MemoryError
        head = json.dumps({"ok": False, "exc_type": type(e).__name__, "message": str(e)[:2000]}).encode()
        out.write(_MAGIC + head + b"\n")
    out.flush()


def _child_main() -> int:
    request = json.loads(sys.stdin.buffer.read())
    # keep the real stdout for the answer; native code printing to fd 1 lands on stderr
    out_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    with os.fdopen(out_fd, "wb") as out:
        _serve(request, out)
    return 0


if __name__ == "__main__":
    sys.exit(_zygote_main() if sys.argv[1:] == ["--zygote"] else _child_main())

"""The zygote: a helper that preloads the decoders once and forks one fresh sandbox child per call.

Started once per calling process (``python -m sav_assets.lib.video.zygote``) by :class:`Zygote`,
it imports :data:`PRELOAD` (numpy, PyAV, decord and the video modules whose functions run in the
sandbox: the video layer only), then forks a brand-new child per request, which sets its own
session, sends fd 1 and 2 to a log file and runs :func:`sav_assets.lib.video.sandbox_child.serve`
(limits, call, answer written to a file). The zygote never opens an untrusted file, is
single-threaded (BLAS/OpenMP pools pinned to one thread, so ``fork`` is safe) and, at the end of its
input (its caller went away), kills its remaining children and exits.

Line protocol. Requests, one JSON object a line: ``{"id", "out", "log", ...request}`` (fork a child
for a :mod:`~sav_assets.lib.video.sandbox_child` request) or ``{"kill": pid}`` (SIGKILL that child's
process group). Answers, one line each: ``ready`` (imports done), ``started <id> <pid>`` (``-1``
when fork failed), ``exit <pid> <returncode>`` (negative: killed by that signal).
"""

from __future__ import annotations

import atexit
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from sav_assets.lib.video.sandbox_child import serve

PRELOAD = ("numpy", "av", "decord", "sav_assets.lib.video.probe", "sav_assets.lib.video.sample")


def child_env(env: dict | None = None) -> dict:
    """The environment of a sandbox child: ours, ``env``, the package on ``PYTHONPATH``."""
    child_env = dict(os.environ)
    child_env.update(env or {})
    root = str(Path(__file__).resolve().parents[3])
    child_env["PYTHONPATH"] = os.pathsep.join(
        [root] + ([child_env["PYTHONPATH"]] if child_env.get("PYTHONPATH") else []))
    child_env.setdefault("MALLOC_ARENA_MAX", "2")  # threads otherwise reserve 64 MiB of address space each
    return child_env


def kill_tree(pid: int) -> None:
    """SIGKILL a child (a zombie until reaped, so the pid cannot have been reused) and its group."""
    for kill in (os.killpg, os.kill):
        try:
            kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass



def log_tail(f, size: int = 4000) -> str:
    """The last ``size`` bytes of a child's log (an open binary file)."""
    try:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - size))
        return f.read().decode("utf-8", "replace")
    except (OSError, ValueError):
        return ""


# ---------------------------------------------------------------- parent side


class Zygote:
    """The caller's handle on its zygote: send requests, learn child pids and exit statuses."""

    _instance: Zygote | None = None
    _broken_until = 0.0
    _lock = threading.Lock()
    ready = False

    @classmethod
    def get(cls) -> Zygote | None:
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
        env = child_env(None)
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = "1"  # keep the zygote single-threaded, so fork() is safe
        self.owner_pid = os.getpid()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sav_assets.lib.video.zygote"], stdin=subprocess.PIPE,
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

    def _start(self, request: dict, out_path: str, log_path: str) -> int | None:
        """Ask for a child; its pid, or ``None`` when the zygote failed."""
        rid = next(self.ids)
        if not self._send({"id": rid, "out": out_path, "log": log_path, **request}):
            return None
        with self.cond:
            if not self.cond.wait_for(lambda: rid in self.started or not self.alive, timeout=30):
                return None
            pid = self.started.pop(rid, None)
        return None if pid is None or pid < 0 else pid

    def _wait_exit(self, pid: int, timeout_s: float) -> tuple[int | None, bool]:
        """(return code, timed out): kills the child when it outlives ``timeout_s``."""
        with self.cond:
            done = self.cond.wait_for(lambda: pid in self.exited or not self.alive, timeout=max(0.0, timeout_s))
            done = done and pid in self.exited
        if not done:
            self._send({"kill": pid})
            with self.cond:
                self.cond.wait_for(lambda: pid in self.exited or not self.alive, timeout=10)
        with self.cond:
            return self.exited.pop(pid, None), not done

    def run(self, request: dict, timeout_s: float) -> tuple | None:
        """Run one request: ``(returncode, answer bytes, log tail, timed out, wall s)``, or ``None`` when the
        zygote itself failed (the caller falls back to a subprocess)."""
        t0 = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="sav_iso_") as tmp:
            out_path, log_path = os.path.join(tmp, "answer"), os.path.join(tmp, "log")
            pid = self._start(request, out_path, log_path)
            if pid is None:
                return None
            rc, timed_out = self._wait_exit(pid, t0 + timeout_s - time.monotonic())
            if rc is None and not timed_out:
                return None
            with open(log_path, "ab+") as log:
                tail = log_tail(log)
            try:
                with open(out_path, "rb") as f:
                    raw = f.read()
            except OSError:
                raw = b""
        return rc, raw, tail, timed_out, time.monotonic() - t0


# ---------------------------------------------------------------- the zygote process


class _ZygoteServer:
    """Preloads :data:`PRELOAD`, then forks one child per request line on stdin.

    Answers on stdout, one line each: ``ready`` (imports done), ``started <id> <pid>`` (``-1`` when
    fork failed), ``exit <pid> <returncode>`` (negative: killed by that signal). ``{"kill": pid}``
    SIGKILLs a child's process group. At end of input it kills its remaining children and exits.
    """

    def __init__(self):
        import selectors

        self.out = sys.stdout.buffer
        self.stdin_fd = sys.stdin.buffer.fileno()
        self.children: set[int] = set()
        self.buf = b""
        self.sig_r, sig_w = os.pipe()
        os.set_blocking(self.sig_r, False)
        os.set_blocking(sig_w, False)
        signal.set_wakeup_fd(sig_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.stdin_fd, selectors.EVENT_READ)
        self.sel.register(self.sig_r, selectors.EVENT_READ)

    def say(self, line: str) -> None:
        self.out.write(line.encode() + b"\n")
        self.out.flush()

    def run(self) -> int:
        _preload()
        self.say("ready")
        eof = False
        while not eof:
            for key, _ in self.sel.select():
                if key.fd == self.sig_r:
                    self._drain_signals()
                elif not self._read_requests():
                    eof = True
                    break
            self._reap()
        for pid in list(self.children):  # the caller is gone: so are its decoders
            kill_tree(pid)
        return 0

    def _drain_signals(self) -> None:
        try:
            os.read(self.sig_r, 4096)
        except BlockingIOError:
            pass

    def _read_requests(self) -> bool:
        data = os.read(self.stdin_fd, 65536)
        if not data:
            return False
        self.buf += data
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            self._handle(json.loads(line))
        return True

    def _handle(self, req: dict) -> None:
        if "kill" in req:
            if req["kill"] in self.children:  # only our own, not yet reaped, children
                kill_tree(req["kill"])
            return
        try:
            pid = os.fork()
        except OSError:
            self.say(f"started {req['id']} -1")
            return
        if pid == 0:  # the child: never returns into the zygote loop
            _forked_child(req)
        self.children.add(pid)
        self.say(f"started {req['id']} {pid}")

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.children.discard(pid)
            rc = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
            self.say(f"exit {pid} {rc}")


def _preload() -> None:
    import importlib

    for mod in PRELOAD:
        try:
            importlib.import_module(mod)
        except Exception:  # noqa: BLE001 - a missing optional module only costs speed
            pass


def _forked_child(req: dict) -> None:
    """In the fresh fork: own session, stdin from /dev/null, fd 1 and 2 to the log, answer to a file."""
    code = 0
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        log_fd = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(log_fd)
        with open(req["out"], "wb") as out:
            serve(req, out)
    except BaseException:  # noqa: BLE001
        code = 1
    finally:
        os._exit(code)


if __name__ == "__main__":
    sys.exit(_ZygoteServer().run())

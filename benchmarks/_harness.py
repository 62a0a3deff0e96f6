"""What every benchmark script needs, written once: timing with repeats, peak RSS, a Markdown table.

* :class:`Timings` records named timed runs (``with timings.time("ours"): ...``); :func:`alternate`
  runs several callables in turn, round after round, so that ours and the baseline see the same
  machine load; :func:`measure` repeats one callable. Each :class:`Timing` gives the ``best``, the
  ``median``, the ``first`` run and the ``warm_median`` (the median after the first run).
* :class:`PeakRSS` samples resident memory in a thread (every 10 ms): of this process, or of any
  process and, with ``tree=True``, all its descendants summed (a worker and the decoder it spawns).
* :func:`spawn_worker` / :func:`worker_main`: a measurement in a fresh process of its own (so that its
  peak RSS is its own), the parent sampling the worker's process tree, the worker answering with one
  ``RESULT {json}`` line.
* :func:`print_table` prints rows as Markdown through ``sav_assets.lib.util.markdown_table``;
  :func:`machine` is the one-line description of the machine that every results header carries.

Plain Python plus psutil (torch only in a worker given ``--threads``), so the GPU scripts can use it
on a box without Dagster.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:          # run as `python benchmarks/x.py` from a checkout
    sys.path.insert(0, str(REPO))

from sav_assets.lib.util import markdown_table  # noqa: E402

MB = 2**20


# --- timing -----------------------------------------------------------------------------------------


@dataclass
class Timing:
    """Seconds of each run of one measurement, and the result of the last run."""

    times: list[float] = field(default_factory=list)
    result: Any = None

    @property
    def best(self) -> float:
        return min(self.times)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def first(self) -> float:
        return self.times[0]

    @property
    def warm_median(self) -> float:
        """The median of the runs after the first (the first when there is only one)."""
        return statistics.median(self.times[1:]) if len(self.times) > 1 else self.times[0]


class Timings(dict):
    """``name -> Timing``; ``with timings.time(name): ...`` adds one run."""

    def __missing__(self, name: str) -> Timing:
        self[name] = t = Timing()
        return t

    @contextmanager
    def time(self, name: str, sync: Callable[[], None] | None = None) -> Iterator[Timing]:
        t = self[name]
        t0 = time.perf_counter()
        yield t
        if sync is not None:
            sync()
        t.times.append(time.perf_counter() - t0)


def alternate(fns: Mapping[str, Callable[[], Any]], rounds: int,
              sync: Callable[[], None] | None = None) -> Timings:
    """Each callable once per round, in order, for ``rounds`` rounds (at least one)."""
    out = Timings()
    for _ in range(max(1, rounds)):
        for name, fn in fns.items():
            with out.time(name, sync) as t:
                t.result = fn()
    return out


def measure(fn: Callable[[], Any], repeat: int, sync: Callable[[], None] | None = None) -> Timing:
    """``repeat`` timed runs of one callable (at least one)."""
    return alternate({"run": fn}, repeat, sync)["run"]


def paired_ratio(baseline: Timing, ours: Timing) -> float:
    """The median over rounds of baseline time / our time, each round's two runs back to back: robust
    to the machine's load drifting between rounds."""
    return statistics.median(b / o for o, b in zip(ours.times, baseline.times))


# --- memory -----------------------------------------------------------------------------------------


def rss_mb(pid: int | None = None) -> float:
    import psutil

    return psutil.Process(pid).memory_info().rss / MB


class PeakRSS:
    """Peak resident memory, sampled every ``every_s`` in a thread while the block (or
    ``start()``..``stop()``) runs: of process ``pid`` (default: this one) and, with ``tree=True``, of
    its descendants too (summed RSS, so shared pages count twice: an upper bound)."""

    def __init__(self, pid: int | None = None, tree: bool = False, every_s: float = 0.01):
        import psutil

        self.proc = psutil.Process(pid)
        self.tree = tree
        self.every = every_s
        self.peak = 0
        self.children_peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        import psutil

        try:
            own = self.proc.memory_info().rss
            kids = self.proc.children(recursive=True) if self.tree else []
        except psutil.Error:          # the process has ended
            return
        rest = 0
        for p in kids:
            try:
                rest += p.memory_info().rss
            except psutil.Error:
                pass
        self.peak = max(self.peak, own + rest)
        self.children_peak = max(self.children_peak, rest)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.every)

    def start(self) -> PeakRSS:
        self._sample()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def __enter__(self) -> PeakRSS:
        return self.start()

    def __exit__(self, *_exc) -> None:
        self.stop()

    @property
    def peak_mb(self) -> float:
        return self.peak / MB

    @property
    def children_peak_mb(self) -> float:
        return self.children_peak / MB


# --- worker processes -------------------------------------------------------------------------------

RESULT = "RESULT "


def add_worker_args(ap) -> None:
    """The options of the worker protocol: ``--threads`` (torch CPU threads) and the hidden ``--worker``."""
    import argparse

    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads in the workers (0 = default)")
    ap.add_argument("--worker", choices=["ours", "baseline"], help=argparse.SUPPRESS)


def worker_main(fn: Callable[[Any], Mapping], args: Any) -> int:
    """The worker side: quiet logs, ``args.threads`` torch threads (when set), ``fn(args)`` printed as the
    one result line."""
    import logging

    logging.basicConfig(level=logging.ERROR)
    if getattr(args, "threads", 0):
        import torch

        torch.set_num_threads(args.threads)
    print(RESULT + json.dumps(fn(args)), flush=True)
    return 0


def spawn_worker(cmd: Sequence[str], kind: str, env: Mapping[str, str] | None = None) -> tuple[dict, PeakRSS]:
    """Run ``cmd`` (a script called with ``--worker``) in the repository, sampling the peak RSS of its
    process tree; (its result, the sampler). A worker that prints no result ends the benchmark with
    the tail of its output."""
    with tempfile.TemporaryFile() as so, tempfile.TemporaryFile() as se:
        p = subprocess.Popen(list(cmd), stdout=so, stderr=se, cwd=str(REPO), env=env)
        tree = PeakRSS(p.pid, tree=True).start()
        rc = p.wait()
        tree.stop()
        so.seek(0)
        se.seek(0)
        out, err = so.read().decode(errors="replace"), se.read().decode(errors="replace")
    for line in out.splitlines():
        if line.startswith(RESULT):
            return json.loads(line[len(RESULT):]), tree
    sys.stderr.write(out[-4000:] + err[-4000:])
    raise SystemExit(f"{kind} worker failed (exit {rc})")


# --- reporting --------------------------------------------------------------------------------------


def machine() -> str:
    """``x86_64, 2 CPUs, Python 3.11.7`` (the CPU count is what this process may see)."""
    return f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def print_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> None:
    """Rows (cells formatted by the caller) as one Markdown table, every row shown, then a blank line."""
    print(markdown_table(rows, columns, max_rows=max(1, len(rows))))
    print()

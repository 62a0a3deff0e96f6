"""Targets the sandbox tests run in a child process (imported there through ``PYTHONPATH``)."""

from __future__ import annotations

import os
import time

import numpy as np

from sav_assets.lib.video.errors import DECODE_ERROR, VideoError


def counting(n: int, size: int):
    """Streams ``n`` arrays, then returns a summary."""
    for i in range(n):
        yield {"i": i, "pid": os.getpid()}, {"a": np.full((size, 3), i, dtype=np.int16)}
    return {"sent": n}


def failing(after: int, classified: bool):
    yield from ({"i": i} for i in range(after))
    if classified:
        raise VideoError(DECODE_ERROR, f"frame {after} is corrupt")
    raise ValueError("a bug in the target")


def sleepy(pauses: list[float]):
    for i, p in enumerate(pauses):
        time.sleep(p)
        yield {"i": i, "pid": os.getpid()}


def busy(cpu_seconds: list[float]):
    for i, s in enumerate(cpu_seconds):
        t0 = time.process_time()
        while time.process_time() - t0 < s:
            pass
        yield {"i": i}


def hungry(mb: int):
    yield {"before": True}
    block = np.ones(mb * 1024 * 1024, dtype=np.uint8)
    yield {"sum": int(block[::4096].sum())}

"""Chunked frame decoding for labeling, in-process and in the sandbox's streaming mode."""

from __future__ import annotations

import os
import time

import numpy as np
import psutil
import pytest

from sav_assets.lib.video.decode import DECODE_MEMORY_MB, iter_frame_chunks, read_frames
from sav_assets.lib.video.errors import DECODE_ERROR, DECODER_CRASH, DECODER_TIMEOUT, VideoError


@pytest.fixture(scope="module")
def gops(make_video):
    """A video with several GOPs (a wrong seek after a batch would shift frames across them)."""
    return str(make_video(None, seconds=3.0, fps=24, width=160, height=120, gop=12, seed=5))


def _decoders() -> list:
    return [p for p in psutil.Process().children(recursive=True)
            if "sav_assets.lib.video.sandbox_child" in " ".join(p.cmdline())]


@pytest.mark.parametrize("fault,error_class,old", [("segv", DECODER_CRASH, "decoder_crashed"),
                                                   ("hang", DECODER_TIMEOUT, "decode_timeout")])
def test_crash_and_hang_use_the_ingestion_spellings(gops, fault, error_class, old):
    t0 = time.monotonic()
    with pytest.raises(VideoError) as ei:
        list(iter_frame_chunks(gops, [0, 4, 8], 2, isolate=True, timeout_s=2, test_fault=fault))
    assert ei.value.error_class == error_class and ei.value.error_class != old
    assert gops in ei.value.message
    assert time.monotonic() - t0 < 20
    assert not _decoders()


def test_isolated_chunks_are_the_inprocess_chunks(gops):
    grid = list(range(0, 72, 3))
    ref = read_frames(gops, grid)
    stats: dict = {}
    for kw in ({}, {"reverse": True}, {"prefetch": True, "first_chunk": 2}):
        chunks = list(iter_frame_chunks(gops, grid, 5, isolate=True, stats=stats, **kw))
        for c in chunks:
            assert c.frames.dtype == np.uint8 and np.array_equal(c.frames, ref[c.start:c.start + len(c.indices)])
            assert c.indices == grid[c.start:c.start + len(c.indices)]
        assert sorted(i for c in chunks for i in c.indices) == grid
    assert 10 < stats["decoder_peak_mb"] < DECODE_MEMORY_MB


def test_decode_failures_are_video_errors(gops, tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(os.urandom(4096))
    for isolate in (False, True):
        with pytest.raises(VideoError) as ei:
            read_frames(gops, [0, 500], isolate=isolate)
        assert ei.value.error_class == DECODE_ERROR and "outside" in ei.value.message
        with pytest.raises(VideoError) as ei:
            read_frames(str(junk), [0], isolate=isolate)
        assert ei.value.error_class == DECODE_ERROR and "junk.mp4" in ei.value.message


def test_stopping_early_kills_the_decoder(gops):
    it = iter_frame_chunks(gops, list(range(72)), 4, isolate=True)
    next(it)
    assert len(_decoders()) == 1
    it.close()
    assert not _decoders()


def test_decoder_peak_memory_is_the_decoders_own_not_its_parents(make_video):
    """The decoder child's peak RSS must not include the calling process's: Linux carries the RSS
    high-water mark of the process that forks/vforks a child across its exec (``ru_maxrss``), so a
    large caller (a pytest run after the SAM 2 tests, a labeling worker) made a small decode report
    the caller's peak (3468 MB in a CI run where the decode itself took ~360 MB)."""
    path = str(make_video(None, seconds=0.5, fps=24, width=320, height=240, seed=3))
    ballast = np.ones(1_500_000_000, np.uint8)      # this process now peaks at >= 1.5 GB of RSS
    try:
        stats: dict = {}
        list(iter_frame_chunks(path, list(range(8)), 8, isolate=True, stats=stats))
    finally:
        del ballast
    assert 0 < stats["decoder_peak_mb"] < 1000


def test_1080p_16_frame_chunks_fit_the_default_memory_limit(make_video):
    """The labeler's default (16-frame chunks) on 1080p decodes under the decoder's memory limit;
    a limit far below it is a decoder crash, not a dead interpreter."""
    path = str(make_video(None, seconds=1.5, fps=24, width=1920, height=1080, gop=24, seed=9))
    stats: dict = {}
    chunks = list(iter_frame_chunks(path, list(range(36)), 16, isolate=True, stats=stats))
    assert [c.frames.shape for c in chunks] == [(16, 1080, 1920, 3), (16, 1080, 1920, 3), (4, 1080, 1920, 3)]
    assert stats["decoder_peak_mb"] < DECODE_MEMORY_MB / 2
    with pytest.raises(VideoError) as ei:
        list(iter_frame_chunks(path, list(range(36)), 16, isolate=True, memory_mb=300))
    assert ei.value.error_class == DECODER_CRASH

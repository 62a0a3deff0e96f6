"""Sampling a few frames of an untrusted video in the sandbox (what the quality metrics look at)."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from sav_assets.lib.video.errors import VideoError
from sav_assets.lib.video.sample import evenly_spaced, sample_frames


def test_evenly_spaced():
    assert evenly_spaced(289, 5) == [0, 72, 144, 216, 288]
    assert evenly_spaced(3, 8) == [0, 1, 2] and evenly_spaced(1, 4) == [0]
    assert evenly_spaced(0, 4) == [] and evenly_spaced(10, 0) == []


def test_sample_frames_shape_and_downscale(shared_data):
    frames = sample_frames(str(shared_data / "videos" / "01_dog.mp4"), 5, timeout_s=60, max_side=256)
    assert frames.shape == (5, 144, 256, 3) and frames.dtype == np.uint8
    assert frames.std() > 10  # real picture content, not zeros


def test_sample_frames_equal_decord_get_batch(shared_data):
    """Our key-frame-aware, B-frame-skipping decode returns exactly decord's frames (real B-frames)."""
    import decord

    path = str(shared_data / "videos" / "03_blocks.mp4")
    idx = [0, 1, 5, 6, 120, 122, 124, 251, 252, 291]
    ours = sample_frames(path, len(idx), timeout_s=60, max_side=4096, indices=idx)
    ref = decord.VideoReader(path, num_threads=1).get_batch(idx).asnumpy()
    assert ours.shape == ref.shape and np.array_equal(ours, ref)


def test_sample_frames_failures_raise_video_errors(tmp_path, shared_data):
    bad = tmp_path / "junk.mp4"
    bad.write_bytes(os.urandom(20000))
    with pytest.raises(VideoError) as e:
        sample_frames(str(bad), 4, timeout_s=30)
    assert e.value.error_class == "decode_error"
    fifo = tmp_path / "hang.mp4"
    os.mkfifo(fifo)
    t0 = time.monotonic()
    with pytest.raises(VideoError) as e:
        sample_frames(str(fifo), 4, timeout_s=1.0)
    assert e.value.error_class == "decoder_timeout" and time.monotonic() - t0 < 4.0
    with pytest.raises(VideoError) as e:
        sample_frames(str(shared_data / "videos" / "01_dog.mp4"), 4, timeout_s=30, memory_mb=64)
    assert e.value.error_class == "decoder_crash"

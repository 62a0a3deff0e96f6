"""Chunked decoding of a long single-key-frame video costs one pass, not one seek from frame 0 per chunk."""

from __future__ import annotations

import decord
import numpy as np
import pytest

from sav_assets.lib.video.decode import iter_frame_chunks, read_frames
from sav_assets.lib.video.errors import DECODE_ERROR, VideoError


@pytest.fixture(scope="module")
def single_gop(make_video):
    """One key frame for 120 frames (x264 with a GOP longer than the video), B-frames on (preset medium)."""
    return str(make_video(None, seconds=5.0, fps=24, width=160, height=96, gop=1000, seed=7, preset="medium"))


def _key_frames(path: str) -> list[int]:
    return list(decord.VideoReader(path, ctx=decord.cpu(0)).get_key_indices())


def test_the_video_has_one_key_frame(single_gop):
    assert _key_frames(single_gop) == [0]


@pytest.mark.parametrize("isolate", [False, True])
def test_chunks_are_the_single_pass_and_each_frame_is_decoded_once(single_gop, isolate):
    grid = list(range(2, 120, 3))
    # the reference: decord asked for every frame at once (one pass from the key frame)
    ref = decord.VideoReader(single_gop, ctx=decord.cpu(0), num_threads=0).get_batch(grid).asnumpy()
    stats: dict = {}
    chunks = list(iter_frame_chunks(single_gop, grid, 4, isolate=isolate, stats=stats, first_chunk=2))
    assert [i for c in chunks for i in c.indices] == grid
    got = np.concatenate([c.frames for c in chunks])
    assert got.dtype == np.uint8 and got.shape == ref.shape and np.array_equal(got, ref)
    # 10 chunks: seeking from the only key frame per chunk would decode 2+5+...; one pass decodes up to the last
    assert stats["decoded_frames"] == grid[-1] + 1


def test_reverse_and_resized_chunks_keep_the_reference_frames(single_gop):
    grid = list(range(0, 120, 7))
    for kw in ({"reverse": True}, {"size": (48, 80)}):
        ref = read_frames(single_gop, grid, size=kw.get("size"))
        chunks = list(iter_frame_chunks(single_gop, grid, 3, **kw))
        for c in chunks:
            assert np.array_equal(c.frames, ref[c.start:c.start + len(c.indices)])
        assert sorted(i for c in chunks for i in c.indices) == grid


@pytest.mark.parametrize("isolate", [False, True])
def test_indices_past_the_end_are_a_decode_error(single_gop, isolate):
    with pytest.raises(VideoError) as ei:
        list(iter_frame_chunks(single_gop, [0, 50, 119, 130], 2, isolate=isolate))
    assert ei.value.error_class == DECODE_ERROR and "outside" in ei.value.message and "130" in ei.value.message

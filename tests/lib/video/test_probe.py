"""probe_file on real and generated videos, and on every class of bad input (real decoders, no mocks)."""

from __future__ import annotations

import errno
import os
import time

import pytest

from sav_assets.lib.ingest.demo import write_audio_only
from sav_assets.lib.video.errors import ERROR_CLASSES
from sav_assets.lib.video.probe import (
    PROBE_ERROR_CLASSES,
    ProbeLimits,
    ProbeResult,
    is_video_name,
    probe_file,
)
from sav_assets.lib.video.sniff import classify_unopenable

REAL = {
    # name: (frames, fps, height, width)
    "01_dog.mp4": (289, 30000 / 1001, 720, 1280),
    "03_blocks.mp4": (292, 30000 / 1001, 720, 1280),
    "bedroom.mp4": (200, 30.0, 540, 960),
}


def _bad(r: ProbeResult, cls: str) -> None:
    assert r.status == "quarantined", r
    assert r.error_class == cls, r
    assert r.error_class in PROBE_ERROR_CLASSES and r.error_class in ERROR_CLASSES
    assert r.error_message
    assert r.video_frame_count is None and r.video_width is None


def test_is_video_name():
    assert is_video_name("a/b/clip.MP4") and is_video_name("x.webm") and is_video_name("x.m4v")
    assert not is_video_name("notes.txt") and not is_video_name("clip.json") and not is_video_name("mp4")


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_videos_exact_metadata(shared_data, name):
    frames, fps, h, w = REAL[name]
    r = probe_file(str(shared_data / "videos" / name), ProbeLimits())
    assert r.status == "ok" and r.error_class is None, r
    assert r.video_frame_count == frames
    assert r.video_fps == pytest.approx(fps, rel=1e-9)
    assert (r.video_height, r.video_width) == (h, w)
    assert r.video_duration == pytest.approx(frames / fps)
    assert r.codec == "h264" and r.rotation == 0
    row = r.as_row()
    assert set(row) == {"status", "error_class", "error_message", "video_frame_count", "video_fps",
                        "video_duration", "video_height", "video_width", "codec", "rotation"}


def test_generated_videos(make_video, tmp_path):
    r = probe_file(make_video(tmp_path / "a.mp4", seconds=2, fps=12, width=320, height=240))
    assert (r.status, r.video_frame_count, r.video_fps, r.video_width, r.video_height) == ("ok", 24, 12.0, 320, 240)
    assert r.video_duration == pytest.approx(2.0)
    # Matroska container, long GOP, no faststart
    r = probe_file(make_video(tmp_path / "b.mkv", seconds=1.5, fps=10, width=160, height=128, gop=100))
    assert (r.status, r.video_frame_count, r.video_width, r.video_height, r.codec) == ("ok", 15, 160, 128, "h264")
    # display rotation: reported, and the size is the displayed (portrait) one, as SA-V stores it
    r = probe_file(make_video(tmp_path / "c.mp4", seconds=1, fps=8, width=192, height=128, rotation=90))
    assert (r.status, r.rotation, r.video_width, r.video_height) == ("ok", 90, 128, 192)
    # with an audio track
    r = probe_file(make_video(tmp_path / "d.mp4", seconds=1, fps=10, width=128, height=96, audio=True))
    assert (r.status, r.video_frame_count) == ("ok", 10)


def test_empty_missing_and_directory(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    _bad(probe_file(str(tmp_path / "empty.mp4")), "empty_file")
    _bad(probe_file(str(tmp_path / "missing.mp4")), "unreadable")
    _bad(probe_file(str(tmp_path)), "unreadable")


def test_not_a_container(tmp_path):
    html = tmp_path / "page.mp4"
    html.write_text("<!DOCTYPE html><html><head><title>x</title></head><body>saved page</body></html>\n")
    r = probe_file(str(html))
    _bad(r, "not_a_container")
    assert "HTML" in r.error_message
    (tmp_path / "notes.mov").write_text("just some notes\n" * 50)
    _bad(probe_file(str(tmp_path / "notes.mov")), "not_a_container")
    for seed in range(3):  # random bytes must never look like a cut video
        p = tmp_path / f"rand{seed}.mp4"
        p.write_bytes(os.urandom(64 * 1024 * (seed + 1)))
        _bad(probe_file(str(p)), "not_a_container")


def test_random_bytes_are_not_fragments(tmp_path):
    # the sniffing that separates "headerless piece of a video" from noise, on more noise (no subprocess)
    for _ in range(20):
        p = tmp_path / "r.bin"
        p.write_bytes(os.urandom(512 * 1024))
        assert classify_unopenable(str(p), "x")[0] == "not_a_container"


def test_audio_only(tmp_path):
    p = write_audio_only(tmp_path / "voice.mp4", seconds=1.0)
    r = probe_file(p)
    _bad(r, "no_video_stream")
    assert "audio" in r.error_message


def _cut(src, dst, head: float | None = None, tail: float | None = None, nbytes: int | None = None):
    data = src.read_bytes()
    if nbytes is not None:
        data = data[:nbytes]
    elif head is not None:
        data = data[: int(len(data) * head)]
    else:
        data = data[int(len(data) * (1 - tail)):]
    dst.write_bytes(data)
    return str(dst)


# (video, which end is kept, fraction kept, class): 01_dog / 03_blocks are faststart (moov at the
# front: a head opens and the frames run out); any tail lacks the header (a headerless fragment);
# bedroom.mp4 keeps its moov at the end, so any head cut loses it and the container cannot open
CUTS = ([(n, "head", f, "decode_error") for n in ("01_dog.mp4", "03_blocks.mp4") for f in (0.3, 0.6, 0.95)]
        + [(n, "tail", f, "truncated") for n in sorted(REAL) for f in (0.3, 0.7, 0.9)]
        + [("bedroom.mp4", "head", f, "truncated") for f in (0.3, 0.95)])


@pytest.mark.parametrize("name,end,fraction,error_class", CUTS)
def test_real_video_cut(shared_data, tmp_path, name, end, fraction, error_class):
    r = probe_file(_cut(shared_data / "videos" / name, tmp_path / "cut.mp4", **{end: fraction}))
    _bad(r, error_class)


@pytest.mark.parametrize("head", [0.3, 0.9])
def test_matroska_cut_is_decode_error_and_its_tail_truncated(make_video, tmp_path, head):
    # no frame count in a Matroska header: the per-track duration tag gives the cut away
    src = make_video(tmp_path / "m.mkv", seconds=3, fps=12, width=192, height=144, seed=5)
    _bad(probe_file(_cut(src, tmp_path / "head.mkv", head=head)), "decode_error")
    _bad(probe_file(_cut(src, tmp_path / "tail.mkv", tail=head)), "truncated")


def test_damaged_header_is_truncated(shared_data, tmp_path):
    r = probe_file(_cut(shared_data / "videos" / "01_dog.mp4", tmp_path / "h.mp4", nbytes=1000))
    _bad(r, "truncated")  # moov itself is cut
    (tmp_path / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64)
    _bad(probe_file(str(tmp_path / "clip.mp4")), "truncated")


def test_over_limits_names_the_limit(make_video, tmp_path):
    p = str(make_video(tmp_path / "v.mp4", seconds=2, fps=12, width=320, height=240))
    r = probe_file(p, ProbeLimits(max_width=200, max_height=200))
    _bad(r, "over_limits")
    assert r.error_message.startswith("resolution")
    r = probe_file(p, ProbeLimits(max_duration_s=1.0))
    _bad(r, "over_limits")
    assert r.error_message.startswith("duration")
    r = probe_file(p, ProbeLimits(max_bytes=1000))
    _bad(r, "over_limits")
    assert r.error_message.startswith("bytes")
    # portrait video under landscape limits: the limit does not depend on orientation
    assert probe_file(p, ProbeLimits(max_width=240, max_height=320)).status == "ok"


def test_hanging_decoder_is_killed(tmp_path):
    fifo = tmp_path / "stuck.mp4"
    os.mkfifo(fifo)  # no writer: open() blocks forever inside the decoder process
    t0 = time.monotonic()
    r = probe_file(str(fifo), ProbeLimits(timeout_s=1.5))
    elapsed = time.monotonic() - t0
    _bad(r, "decoder_timeout")
    assert elapsed < 1.5 + 3.0
    # the reader is gone: opening the FIFO for writing without a reader fails with ENXIO
    with pytest.raises(OSError) as exc:
        os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    assert exc.value.errno == errno.ENXIO


def test_out_of_memory_is_a_crash(shared_data):
    r = probe_file(str(shared_data / "videos" / "01_dog.mp4"), ProbeLimits(memory_mb=64))
    _bad(r, "decoder_crash")


def _av1_encoder() -> str | None:
    import av

    return next((c for c in ("libsvtav1", "libaom-av1", "librav1e") if c in av.codecs_available), None)


def test_codec_the_frame_reader_cannot_decode_is_unsupported_codec(make_video, tmp_path):
    # AV1 is a valid, playable video that PyAV opens but decord (the frame reader) has no decoder for:
    # it is the codec that is unsupported, not the file that is damaged
    enc = _av1_encoder()
    if enc is None:
        pytest.skip("this PyAV has no AV1 encoder")
    p = make_video(tmp_path / "av1.mp4", seconds=1, fps=12, width=128, height=96, codec=enc)
    r = probe_file(str(p))
    _bad(r, "unsupported_codec")
    assert "av1" in r.error_message and "decord" in r.error_message, r.error_message
    assert r.codec == "av1"  # the codec is named in its column too, for SQL
    # the same file cut short is a damaged file, not an unsupported codec
    r = probe_file(_cut(p, tmp_path / "head.mp4", head=0.5))
    assert r.error_class in ("decode_error", "truncated"), r

"""Content sniffing (pure Python): is a file the demuxer refused a cut video, or not a video at all?

:func:`classify_unopenable` answers ``truncated`` (recognisably a video file: a container signature
at the start, or a headerless fragment: MP4/Matroska boxes or a chain of H.264/H.265 NAL units) or
``not_a_container`` (random bytes, HTML or text saved as ``.mp4``). The probe calls it, inside the
sandbox, when PyAV cannot open a file. Random bytes essentially never pass as a fragment (tests feed
it noise).
"""

from __future__ import annotations

import os

from sav_assets.lib.video.errors import NOT_A_CONTAINER, TRUNCATED

_MP4_TOP_BOXES = {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"moof", b"styp",
                  b"sidx", b"uuid"}
_MP4_INNER = (b"moov", b"mvhd", b"trak", b"tkhd", b"mdia", b"minf", b"stbl", b"stsd", b"moof",
              b"mdat", b"ftyp", b"avcC", b"hvcC")


def has_container_signature(head: bytes) -> bool:
    """A known video container magic at the start of the file."""
    if len(head) >= 8 and head[4:8] in _MP4_TOP_BOXES:
        return True
    return (head.startswith(b"\x1a\x45\xdf\xa3")               # EBML: Matroska / WebM
            or (head[:4] == b"RIFF" and head[8:12] in (b"AVI ", b"AVIX"))
            or head.startswith(b"FLV\x01") or head.startswith(b"OggS")
            or head.startswith(b"\x00\x00\x01\xba")            # MPEG program stream
            or (len(head) > 376 and head[0] == 0x47 and head[188] == 0x47 and head[376] == 0x47))


def looks_like_video_fragment(data: bytes, room: int | None = None) -> bool:
    """Headerless piece of a video file: nested MP4/Matroska boxes, or a length-prefixed NAL chain.

    ``room`` is the number of bytes from the start of ``data`` to the end of the file: a box whose
    header survived a cut is whole, so its size must fit in what follows it (random bytes then pass
    as a box about once in 8,000 files of 512 KB, instead of once in 600 without the bound). The NAL
    test needs 8 consecutive plausible length-prefixed units; text and HTML never pass.
    """
    n = len(data)
    for box in _MP4_INNER:
        start = 0
        while True:
            i = data.find(box, start)
            if i < 0:
                break
            if i >= 4 and _box_fits(data, i, None if room is None else room - (i - 4)):
                return True
            start = i + 1
    idx = data.find(b"\x1f\x43\xb6\x75")  # Matroska Cluster element id
    if 0 <= idx and idx + 5 < n and data[idx + 4] != 0:  # followed by an EBML size varint
        return True
    return _ebml_block_chain(data) or _nal_chain(data)


def _box_fits(data: bytes, i: int, room: int | None) -> bool:
    """The box whose type sits at ``data[i:i+4]`` has a plausible size (within ``room`` when known)."""
    import struct

    size = struct.unpack(">I", data[i - 4:i])[0]
    if size == 1:  # 64-bit "largesize" after the type
        if room is None:
            return True
        if i + 12 > len(data):
            return False
        size = struct.unpack(">Q", data[i + 4:i + 12])[0]
    return 8 <= size <= (1 << 34 if room is None else room)


def _ebml_block_chain(data: bytes, hops: int = 4) -> bool:
    """Consecutive Matroska/WebM SimpleBlocks (id 0xA3, size, track, timecode, flags)."""

    def block_end(i: int) -> int:
        if i + 2 >= len(data) or data[i] != 0xA3:
            return -1
        first = data[i + 1]
        if first == 0:
            return -1
        n = 8 - first.bit_length() + 1  # EBML varint length from the leading zero bits
        if i + 1 + n + 4 > len(data):
            return -1
        size = first & (0xFF >> n)
        for b in data[i + 2:i + 1 + n]:
            size = (size << 8) | b
        body = i + 1 + n
        track = data[body]
        if not 0x81 <= track <= 0x8F or data[body + 3] & 0x06 or size < 5 or size > (16 << 20):
            return -1  # one-byte track number 1..15, reserved flag bits clear
        return body + size

    start = data.find(b"\xa3")
    while start >= 0:
        pos, k = start, 0
        while k < hops:
            end = block_end(pos)
            if end < 0:
                break
            pos, k = end, k + 1
        if k >= hops:
            return True
        start = data.find(b"\xa3", start + 1)
    return False


def _nal_chain(data: bytes, hops: int = 8, gap: int = 2048, max_nal: int = 8 << 20) -> bool:
    """A chain of ``hops`` length-prefixed H.264/H.265 NAL units, as MP4/MOV ``mdat`` stores them.

    Each unit must have a plausible 4-byte length and a strict NAL header (slice with
    first_mb_in_slice == 0, SEI/AUD/SPS/PPS with consistent nal_ref_idc, or HEVC with layer 0 and
    temporal id 1); the next unit may start up to ``gap`` bytes after the previous one ends, which
    skips interleaved audio samples. On random bytes chains die after 2-3 hops.
    """
    import numpy as np

    a = np.frombuffer(data, dtype=np.uint8)
    m = len(a) - 8
    if m <= 0:
        return False
    b = a.astype(np.uint32)
    length = (b[0:m] << 24) | (b[1:m + 1] << 16) | (b[2:m + 2] << 8) | b[3:m + 3]
    h0, h1, h2 = a[4:m + 4], a[5:m + 5], a[6:m + 6]
    ok = (length >= 2) & (length <= max_nal) & ((h0 & 0x80) == 0)
    t, ref = h0 & 0x1F, (h0 >> 5) & 3
    s264 = ((((t == 1) | ((t == 5) & (ref > 0))) & ((h1 & 0x80) != 0))
            | (((t == 6) | (t == 9)) & (ref == 0)) | (((t == 7) | (t == 8)) & (ref > 0)))
    t5 = (h0 >> 1) & 0x3F
    s265 = (h1 == 1) & (((t5 <= 21) & ((h2 & 0x80) != 0)) | ((t5 >= 32) & (t5 <= 40)))
    starts = np.nonzero(ok & (s264 | s265))[0].astype(np.int64)
    pos = starts
    for _ in range(hops):
        if pos.size == 0:
            return False
        end = pos + 4 + length[pos].astype(np.int64)
        j = np.searchsorted(starts, end)
        found = j < len(starts)
        nxt = starts[np.minimum(j, len(starts) - 1)]
        pos = np.unique(nxt[found & (nxt - end <= gap)])
    return bool(pos.size)


def _looks_like_text(head: bytes) -> bool:
    if not head:
        return False
    printable = sum(1 for c in head if 32 <= c < 127 or c in (9, 10, 13))
    return printable / len(head) > 0.95


def classify_unopenable(path: str, reason: str, scan_bytes: int = 4 << 20) -> tuple[str, str]:
    """``truncated`` or ``not_a_container`` for a file the demuxer refused."""
    with open(path, "rb") as f:
        data = f.read(scan_bytes)
        try:
            size = os.fstat(f.fileno()).st_size
        except OSError:
            size = None
        data_tail = b""
        if size and size > 2 * scan_bytes:  # the moov of a non-faststart file sits at the end
            f.seek(size - scan_bytes)
            data_tail = f.read(scan_bytes)
    if has_container_signature(data[:512]):
        return TRUNCATED, f"container header found but it cannot be opened: {reason}"
    if _looks_like_text(data[:4096]):
        kind = "HTML" if b"<html" in data[:4096].lower() or b"<!doctype" in data[:4096].lower() else "text"
        return NOT_A_CONTAINER, f"{kind} content, not a media container: {reason}"
    if looks_like_video_fragment(data, size) or (data_tail and looks_like_video_fragment(data_tail, len(data_tail))):
        return TRUNCATED, f"headerless fragment of a video file (start of file missing): {reason}"
    return NOT_A_CONTAINER, f"unrecognised content, not a media container: {reason}"

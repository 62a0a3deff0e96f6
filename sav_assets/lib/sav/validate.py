"""Validation of an SA-V annotation document, one named step per part, each with located messages.

:func:`sav_assets.lib.sav.annotations.import_sav` runs these steps in this order: :func:`read_header`
(required keys, ``video_id``, frame size) -> :func:`bounds` (masklet and frame counts against the
caps) -> :func:`frame_size_matches` (against the probed video, when given) -> :func:`masklet_ids` ->
:func:`masklet_grid` (the
``masklet`` list is ``[annotated frame][object]``, not ragged) -> :func:`per_masklet_lists` (every
per-masklet list has one entry per masklet) -> :func:`stability_by_frame` -> :func:`check_rles` (every
RLE against the frame size) -> :func:`file_kind`. A bad document raises :class:`SavFormatError` (a
``ValueError``) naming the key, frame and object (``RLE size at masklet[3][1] is ...``), before
anything is decoded: RLE counts are parsed with :func:`sav_assets.lib.sav.rle.parse_counts` and their
runs checked against ``video_height x video_width`` here, because pycocotools' decoder does not
bounds-check and would write past its buffer on a corrupt string. With the video given, the annotated
frames must also land inside it (:func:`frames_within_video`, after the grid). The cheap checks come
first, so an oversized or mismatched file is refused before any RLE is parsed.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from sav_assets.lib.sav.rle import parse_counts

REQUIRED_KEYS = ("video_id", "video_height", "video_width", "masklet", "masklet_id")
STABILITY_KEY = "masklet_stability_score"


class SavFormatError(ValueError):
    """A malformed SA-V annotation document (the message says what and where)."""


def as_int(v: Any, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or int(v) != v:
        raise SavFormatError(f"{what} is {v!r}, expected a whole number")
    return int(v)


def as_float(v: Any, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise SavFormatError(f"{what} is {v!r}, expected a number")
    return float(v)


def _int_dim(doc: dict, key: str) -> int:
    v = doc[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or int(v) != v or v <= 0:
        raise SavFormatError(f"{key} is {v!r}, expected a positive whole number")
    return int(v)


def read_header(doc: Any) -> tuple[str, int, int]:
    """``(video_id, height, width)`` of a document that has every required key."""
    if not isinstance(doc, dict):
        raise SavFormatError(f"SA-V document is {type(doc).__name__}, expected a JSON object")
    missing = [k for k in REQUIRED_KEYS if k not in doc]
    if missing:
        raise SavFormatError(f"SA-V document lacks required key(s) {missing}")
    video_id = doc["video_id"]
    if not isinstance(video_id, str) or not video_id:
        raise SavFormatError(f"video_id is {video_id!r}, expected a non-empty string")
    return video_id, _int_dim(doc, "video_height"), _int_dim(doc, "video_width")


def bounds(doc: dict, max_masklets: int | None, max_frames: int | None) -> None:
    """What one file may add, counted before anything is parsed: at most ``max_masklets`` masklets
    and ``max_frames`` annotated frames (per masklet). The caps are the labeling settings
    ``import_max_masklets`` / ``import_max_frames``, named in the message."""
    n = len(doc["masklet_id"]) if isinstance(doc["masklet_id"], list) else 0
    nf = len(doc["masklet"]) if isinstance(doc["masklet"], list) else 0
    if max_masklets is not None and n > max_masklets:
        raise SavFormatError(f"the file has {n} masklets; at most {max_masklets} per video are imported "
                             f"(setting import_max_masklets)")
    if max_frames is not None and nf > max_frames:
        raise SavFormatError(f"the file has {nf} annotated frames per masklet; at most {max_frames} are "
                             f"imported (setting import_max_frames)")


def frame_size_matches(h: int, w: int, video: dict) -> None:
    """The document's ``video_height x video_width`` is the probed video's displayed size."""
    vh, vw = video.get("video_height"), video.get("video_width")
    if not vh or not vw:
        raise SavFormatError(f"the video {video.get('video_id')!r} has no probed frame size to check the file against")
    if (h, w) != (int(vh), int(vw)):
        raise SavFormatError(f"the file's masks are {h}x{w} (video_height x video_width) but the video "
                             f"{video.get('video_id')!r} is {int(vh)}x{int(vw)}")


def frames_within_video(fidx: list[int], video: dict, step: int) -> None:
    """The annotated frames land inside the video (one annotation ``step`` of slack for a frame
    count that the container rounds)."""
    frame_count = int(video.get("video_frame_count") or 0)
    if frame_count and fidx and fidx[-1] >= frame_count + step:
        raise SavFormatError(f"the file has {len(fidx)} annotated frames; the last maps to video frame "
                             f"{fidx[-1]} but the video {video.get('video_id')!r} has {frame_count} frames")


def masklet_ids(doc: dict) -> list[int]:
    """``masklet_id`` as ints: whole numbers, no duplicates, as many as ``masklet_num`` says."""
    ids = doc["masklet_id"]
    if not isinstance(ids, list):
        raise SavFormatError("masklet_id is not a list")
    n = len(ids)
    mids = [as_int(v, f"masklet_id[{j}]") for j, v in enumerate(ids)]
    if len(set(mids)) != n:
        raise SavFormatError(f"masklet_id has duplicates: {ids}")
    if "masklet_num" in doc and (isinstance(doc["masklet_num"], bool) or doc["masklet_num"] != n):
        raise SavFormatError(f"masklet_num is {doc['masklet_num']!r} but masklet_id lists {n} masklets")
    return mids


def masklet_grid(doc: dict, n: int) -> list[list]:
    """``masklet``: a list over annotated frames of ``n`` RLEs each."""
    frames = doc["masklet"]
    if not isinstance(frames, list):
        raise SavFormatError("masklet is not a list over annotated frames")
    for k, fr in enumerate(frames):
        if not isinstance(fr, list) or len(fr) != n:
            got = len(fr) if isinstance(fr, list) else type(fr).__name__
            raise SavFormatError(f"masklet[{k}] has {got} objects, expected {n} (ragged masklet list)")
    return frames


def per_masklet_lists(doc: dict, per_keys: list[str], n: int) -> None:
    """Every per-masklet list (except the stability score, checked apart) has ``n`` entries."""
    for key in per_keys:
        if key != STABILITY_KEY and len(doc[key]) != n:
            raise SavFormatError(f"{key} has {len(doc[key])} entries, expected {n} (one per masklet)")


def _stability_grid(stab: list, n: int) -> list[list]:
    for k, row in enumerate(stab):
        if len(row) != n:
            raise SavFormatError(
                f"{STABILITY_KEY}[{k}] has {len(row)} values, expected {n} (ragged [frame][object] list)")
        for j, v in enumerate(row):
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise SavFormatError(f"{STABILITY_KEY}[{k}][{j}] is {v!r}, expected a number")
    return stab


def stability_by_frame(doc: dict, per_keys: list[str], n: int, nf: int) -> list[list] | None:
    """``masklet_stability_score`` as ``[frame][object]`` (auto files), or None when it is one value
    per masklet (manual files: ``null``) or absent."""
    if STABILITY_KEY not in per_keys:
        if STABILITY_KEY in doc and doc[STABILITY_KEY] is not None:
            raise SavFormatError(f"{STABILITY_KEY} is {doc[STABILITY_KEY]!r}, expected a list")
        return None
    stab = doc[STABILITY_KEY]
    if n and all(v is None or not isinstance(v, list) for v in stab) and len(stab) == n:
        return None
    if len(stab) == nf and all(isinstance(v, list) for v in stab):
        return _stability_grid(stab, n)
    if n == 0 and len(stab) == 0:
        return None
    raise SavFormatError(
        f"{STABILITY_KEY} has {len(stab)} entries: expected {nf} per-frame lists of {n} "
        f"([frame][object], auto) or {n} per-masklet values (manual)")


def check_rle(rle: Any, h: int, w: int, where: str = "") -> np.ndarray:
    """Validate an SA-V RLE dict against the frame size; returns its run lengths."""
    at = f" at {where}" if where else ""
    if not isinstance(rle, dict):
        raise SavFormatError(f"RLE{at} is {type(rle).__name__}, expected a dict with 'size' and 'counts'")
    if set(rle) != {"size", "counts"}:
        raise SavFormatError(f"RLE{at} has keys {sorted(rle)}, expected exactly ['counts', 'size']")
    size = rle["size"]
    if (not isinstance(size, list) or len(size) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in size)):
        raise SavFormatError(f"RLE size{at} is {size!r}, expected [height, width] as two ints")
    if size != [h, w]:
        raise SavFormatError(f"RLE size{at} is {size} but the video is {h}x{w} (video_height, video_width)")
    counts = rle["counts"]
    if not isinstance(counts, str):
        raise SavFormatError(f"RLE counts{at} is {type(counts).__name__}, expected a compressed string")
    try:
        runs = parse_counts(counts)
    except ValueError as e:
        raise SavFormatError(f"bad RLE counts{at}: {e}") from None
    if (runs < 0).any():
        raise SavFormatError(f"bad RLE counts{at}: negative run length")
    total = int(runs.sum())
    if total != h * w:
        raise SavFormatError(f"bad RLE counts{at}: runs cover {total} pixels, the frame has {h * w}")
    return runs


def check_rles(frames: list[list], h: int, w: int) -> np.ndarray:
    """Check every RLE of the ``[frame][object]`` grid; returns the ``[frames, objects]`` areas."""
    n = len(frames[0]) if frames else 0
    areas = np.zeros((len(frames), n), np.int64)
    for k, fr in enumerate(frames):
        for j, rle in enumerate(fr):
            areas[k, j] = int(check_rle(rle, h, w, f"masklet[{k}][{j}]")[1::2].sum())
    return areas


def file_kind(doc: dict, fallback: str | None) -> tuple[list | None, str]:
    """``(per-masklet types or None, the file's kind)``: SA-V files hold one kind (manual | auto);
    ``fallback`` names it when the document has no ``masklet_type`` list to take it from."""
    types = doc.get("masklet_type") if isinstance(doc.get("masklet_type"), list) else None
    kinds = sorted({t for t in types if isinstance(t, str)}) if types else []
    if types and any(not isinstance(t, str) for t in types):
        raise SavFormatError(f"masklet_type has non-string entries: {types}")
    if len(kinds) == 1:
        return types, kinds[0]
    if len(kinds) > 1:
        raise SavFormatError(f"masklet_type mixes {kinds} in one file; SA-V files hold one kind")
    if fallback is not None:
        return types, fallback
    raise SavFormatError("masklet_type is missing and no masklet_type fallback was given")

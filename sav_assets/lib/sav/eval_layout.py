"""SA-V val/test folder layout, so Meta's ``sav_evaluator.py`` and ``tools/vos_inference.py`` run unchanged.

::

    <out_dir>/
      sav_<split>.txt                          video ids, one per line
      JPEGImages_24fps/<video_id>/<frame:05d>.jpg
      Annotations_6fps/<video_id>/<obj:03d>/<frame:05d>.png

Frame numbers are positions on SA-V's 24 fps timeline (:func:`sav_assets.lib.sav.fields.sav_timeline`):
annotated frame ``k`` (``ann_idx``) is ``{4k:05d}``, and JPEG ``j`` is the source frame nearest to the
instant ``j / 24`` by presentation timestamp, so a 25, 29.97, 30 fps or variable-rate video gives the
same layout as SA-V's own 24 fps videos (at exactly 24 fps the names are the video's own frame
indices, 00000, 00004, ..., as before). JPEGs cover every 24 fps frame from the first to the last
annotated one, so the first JPEG of a video is annotated for every object, as ``vos_inference.py``
expects (it prompts with the first frame's masks). Each object folder (``int()``-parsable, ``{masklet_id:03d}``) has one
binary palette PNG (values 0/1) per annotated frame, empty where the object is not visible; the
evaluator scans these folders, drops the first and last frame, and reads ``png > 0``.

Pass ``--gt_root <out_dir>/Annotations_6fps`` to ``sav_evaluator.py``. :func:`check_layout` checks a
written layout against what those tools read (names, formats, the evaluator's asserts) and returns
the problems it finds.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections import defaultdict
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from sav_assets.lib.sav import rle as rle_lib
from sav_assets.lib.sav.fields import SAV_ANN_EVERY, SAV_FPS, sav_timeline
from sav_assets.lib.store.lake import safe_relpath
from sav_assets.lib.util import atomic_write_bytes, sha256_json
from sav_assets.lib.video.decode import presentation_times
from sav_assets.lib.video.images import MissingFramesError, encode_jpeg, encode_mask_png, iter_frames

JPEG_DIR = "JPEGImages_24fps"
ANN_DIR = "Annotations_6fps"
STATE_DIR = ".layout_state"     # <video_id>.json: signature of what was last written (not read by Meta's tools)
NOT_VISIBLE = "no object visible between the first and last annotated frames"
LAYOUT_VERSION = 1              # bump when the written files change for the same inputs: every video is rewritten


def _write(path: Path, data: bytes) -> None:
    # a rewritten video's folders are rewritten whole, its signature last: atomic per file, no fsync per frame
    atomic_write_bytes(path, data, fsync=False)


def _by_object(vid: str, rows: list[dict]) -> dict[int, dict[int, dict]]:
    """masklet_id -> frame_idx -> row; one masklet type per id (object folders are masklet ids)."""
    by_obj: dict[int, dict[int, dict]] = defaultdict(dict)
    type_of: dict[int, str | None] = {}
    for r in rows:
        mid = int(r["masklet_id"])
        if type_of.setdefault(mid, r.get("masklet_type")) != r.get("masklet_type"):
            raise ValueError(f"{vid}: masklet_id {mid} is both {type_of[mid]} and {r.get('masklet_type')}; "
                             "pass masklet_types= to choose one kind (object folders are masklet ids)")
        by_obj[mid][_position(r)] = r
    return by_obj


def _position(row: dict) -> int:
    """A row's frame on the 24 fps timeline: ``4 * ann_idx`` (rows without ``ann_idx``: ``frame_idx``)."""
    a = row.get("ann_idx")
    return SAV_ANN_EVERY * int(a) if a is not None else int(row["frame_idx"])


def _timeline(video: dict, path: str) -> list[int]:
    """Source frame of every 24 fps position of the video (presentation timestamps, read in the sandbox)."""
    pts = presentation_times(path, isolate=True)
    return sav_timeline(len(pts), float(video.get("video_fps") or SAV_FPS), pts)


def _write_masks(out: Path, vid: str, by_obj: dict[int, dict[int, dict]], ann_frames: list[int],
                 summary: dict) -> int:
    """One PNG per object and annotated frame; returns the number of objects written.

    The evaluators score frames strictly between the first and the last annotated one; an object
    absent from all of them has no score (Meta's sav_evaluator.py stops on an assert): left out."""
    n_objects = 0
    for obj_id in sorted(by_obj):
        obj = by_obj[obj_id]
        size = next(iter(obj.values()))["size"]
        masks = {f: rle_lib.decode(rle_lib.from_row(obj[f])) if f in obj else
                 np.zeros((int(size[0]), int(size[1])), dtype=np.uint8) for f in ann_frames}
        if not any(masks[f].any() for f in ann_frames[1:-1]):
            summary["skipped_objects"].append({"video_id": vid, "masklet_id": obj_id,
                                               "reason": "not visible between the first and last "
                                                         "annotated frames"})
            continue
        for f in ann_frames:
            _write(out / ANN_DIR / vid / f"{obj_id:03d}" / f"{f:05d}.png", encode_mask_png(masks[f]))
            summary["pngs"] += 1
        n_objects += 1
    return n_objects


def _write_jpegs(out: Path, vid: str, path: str, positions: range, timeline: list[int], mask_hw: tuple,
                 jpeg_quality: int, summary: dict) -> int:
    """Every 24 fps frame from the first to the last annotated one (each source frame decoded once);
    notes a frame size unlike the masks'."""
    if positions and positions[-1] >= len(timeline):
        raise MissingFramesError(f"annotated 24 fps frame {positions[-1]} is past the video's end "
                         f"({len(timeline)} frames on the 24 fps timeline)")
    by_source: dict[int, list[int]] = defaultdict(list)
    for j in positions:
        by_source[timeline[j]].append(j)
    n_jpegs = 0
    for idx, img in iter_frames(path, by_source):
        if img.shape[:2] != mask_hw and vid not in summary["size_mismatch"]:
            summary["size_mismatch"].append(vid)
        data = encode_jpeg(img, jpeg_quality)
        for j in by_source[idx]:
            _write(out / JPEG_DIR / vid / f"{j:05d}.jpg", data)
            n_jpegs += 1
    return n_jpegs


def _write_video(out: Path, video: dict, rows: list[dict], path: str, jpeg_quality: int, summary: dict) -> bool:
    """Masks first (no decoding, fail fast on bad RLE), then the JPEGs; whether the video was written."""
    vid = video["video_id"]
    by_obj = _by_object(vid, rows)
    ann_frames = sorted({f for o in by_obj.values() for f in o})
    for d in (JPEG_DIR, ANN_DIR):                 # a re-run replaces the video's folders whole
        shutil.rmtree(out / d / vid, ignore_errors=True)
    n_objects = _write_masks(out, vid, by_obj, ann_frames, summary)
    summary["objects"] += n_objects
    if not n_objects:
        shutil.rmtree(out / ANN_DIR / vid, ignore_errors=True)
        summary["skipped"].append({"video_id": vid, "reason": NOT_VISIBLE})
        return False
    mask_hw = tuple(int(x) for x in rows[0]["size"])
    try:
        n_jpegs = _write_jpegs(out, vid, path, range(ann_frames[0], ann_frames[-1] + 1), _timeline(video, path),
                               mask_hw, jpeg_quality, summary)
    except Exception as e:  # undecodable or too short: leave the video out entirely, go on
        shutil.rmtree(out / JPEG_DIR / vid, ignore_errors=True)
        shutil.rmtree(out / ANN_DIR / vid, ignore_errors=True)
        summary["skipped"].append({"video_id": vid, "reason": f"{type(e).__name__}: {e}"})
        summary["objects"] -= n_objects
        summary["pngs"] -= n_objects * len(ann_frames)
        return False
    summary["jpegs"] += n_jpegs
    return True


def _remove_stale(out: Path, keep: set[str], listed: set[str], summary: dict) -> None:
    """Folders of videos no longer in the split would break the evaluator's strict gt/pred match; their
    recorded signatures go too (a video that comes back is written again)."""
    for d in (JPEG_DIR, ANN_DIR):
        if (out / d).is_dir():
            for child in (out / d).iterdir():
                if child.is_dir() and child.name not in keep:
                    shutil.rmtree(child)
                    summary.setdefault("removed", []).append(f"{d}/{child.name}")
    state = out / STATE_DIR
    if state.is_dir():
        for f in state.rglob("*.json"):
            if f.relative_to(state).as_posix()[:-5] not in listed:
                f.unlink()


def _rows_digest(rows: list[dict]) -> str:
    """What the layout of a video's masks depends on, order-independent."""
    key = sorted((int(r["masklet_id"]), str(r.get("masklet_type")), _position(r), [int(x) for x in r["size"]],
                  str(r["counts"])) for r in rows)
    return sha256_json(key)


def _video_identity(video: dict) -> dict | None:
    """The video file as the layout sees it (content hash, rate, length: its timeline); None without a hash."""
    if not video.get("content_sha256"):
        return None
    return {k: video.get(k) for k in ("content_sha256", "video_fps", "video_frame_count")}


def _file_identity(path: str | None) -> dict | None:
    """Without a content hash, the file's size and modification time stand for it."""
    try:
        st = os.stat(path) if path is not None else None
    except FileNotFoundError:       # written as if new: the decoder reports it as a skipped video
        return None
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns} if st else None


def _state_path(out: Path, vid: str) -> Path:
    return out / STATE_DIR / f"{vid}.json"


def _read_state(out: Path, vid: str) -> dict | None:
    p = _state_path(out, vid)
    try:
        return json.loads(p.read_text())
    except (FileNotFoundError, json.JSONDecodeError):   # none yet, or a torn file from a crash: rewrite
        return None


def _new_part() -> dict:
    return {"objects": 0, "jpegs": 0, "pngs": 0, "skipped": [], "skipped_objects": [], "size_mismatch": []}


def _merge(summary: dict, part: dict) -> None:
    for k, v in part.items():
        summary[k] = summary[k] + v if k in summary else v


def _as_opener(video_paths) -> Callable[[str], contextlib.AbstractContextManager[str | None]]:
    if callable(video_paths):
        return video_paths
    return lambda vid: contextlib.nullcontext(video_paths.get(vid))


def _up_to_date(out: Path, vid: str, state: dict | None, signature: str) -> bool:
    if not state or state.get("signature") != signature:
        return False
    return not state["written"] or ((out / JPEG_DIR / vid).is_dir() and (out / ANN_DIR / vid).is_dir())


def _layout_video(out: Path, split: str, video: dict, rows: list[dict], open_video, jpeg_quality: int,
                  summary: dict) -> bool:
    """One video, written only when its signature changed; whether it is in the layout."""
    vid = video["video_id"]
    with contextlib.ExitStack() as stack:
        ident, path = _video_identity(video), None
        if ident is None:
            path = stack.enter_context(open_video(vid))
            ident = _file_identity(path)
        signature = sha256_json({"layout": LAYOUT_VERSION, "split": split, "jpeg_quality": jpeg_quality,
                                 "video": ident, "rows": _rows_digest(rows)})
        state = _read_state(out, vid)
        if _up_to_date(out, vid, state, signature):
            _merge(summary, state["part"])
            summary["unchanged"].append(vid)
            return state["written"]
        _state_path(out, vid).unlink(missing_ok=True)       # first: a crash mid-write leaves no stale claim
        if path is None:
            path = stack.enter_context(open_video(vid))
        if path is None:
            summary["skipped"].append({"video_id": vid, "reason": "no video file"})
            return False
        part = _new_part()
        written = _write_video(out, video, rows, path, jpeg_quality, part)
    _merge(summary, part)
    summary["rewritten"].append(vid)
    if written or [x["reason"] for x in part["skipped"]] == [NOT_VISIBLE]:
        # a video that failed to decode is not recorded: tried again next run (a timeout may pass)
        _write(_state_path(out, vid), json.dumps({"signature": signature, "written": written, "part": part}).encode())
    return written


def write_eval_layout(out_dir: str | os.PathLike, split_name: str, videos: list[dict],
                      frames_by_video: Mapping[str, list[dict]] | Callable[[str], list[dict]],
                      video_paths: Mapping[str, str] | Callable[[str], contextlib.AbstractContextManager[str | None]],
                      jpeg_quality: int = 95, masklet_types: tuple[str, ...] | None = None) -> dict:
    """Write the SA-V val/test layout for ``videos`` (dicts with ``video_id``; ``content_sha256``,
    ``video_fps``, ``video_frame_count`` when known) under ``out_dir``, incrementally.

    ``frames_by_video``: masklet_frames rows (``masklet_id``, ``frame_idx``, ``size``, ``counts``,
    optional ``masklet_type``) per video, as a mapping or a callable ``video_id -> rows`` called once
    per video in turn (so a caller can stream them, one video in memory at a time);
    ``masklet_types`` keeps only those types (SA-V val/test hold manual masklets only).
    ``video_paths``: ``{video_id: local path}`` or a callable ``video_id -> context manager`` yielding
    the path (None: no file), entered only for a video that is written.

    A video is written only when its signature (its rows, its file: content hash, rate and length, or
    size and mtime without a hash, the split, the JPEG quality, the layout version) differs from the one
    recorded in ``<out_dir>/.layout_state/<video_id>.json`` at its last write, or its folders are gone;
    a re-run with nothing new replaces no file. ``out_dir`` belongs to this split: folders of videos no
    longer listed are removed. Returns a summary dict (counts and lists over all listed videos as if
    all were written; ``rewritten`` / ``unchanged`` say which were).
    """
    out = Path(out_dir)
    split = safe_relpath(split_name)
    summary = {"split": split, "videos": 0, **_new_part(), "rewritten": [], "unchanged": [],
               "gt_root": str(out / ANN_DIR), "jpeg_root": str(out / JPEG_DIR),
               "list_file": str(out / f"sav_{split}.txt")}
    rows_for = frames_by_video if callable(frames_by_video) else (lambda v: frames_by_video.get(v, []))
    open_video = _as_opener(video_paths)
    written: list[str] = []
    by_id = {v["video_id"]: v for v in videos}
    for vid in sorted(by_id):
        safe_relpath(vid)
        rows = [r for r in rows_for(vid) if masklet_types is None or r.get("masklet_type") in masklet_types]
        if not rows:
            summary["skipped"].append({"video_id": vid, "reason": "no annotated frames"})
        elif _layout_video(out, split, by_id[vid], rows, open_video, jpeg_quality, summary):
            written.append(vid)
            summary["videos"] += 1
    listing = "".join(f"{v}\n" for v in written).encode()
    list_file = out / f"sav_{split}.txt"
    if not list_file.is_file() or list_file.read_bytes() != listing:
        _write(list_file, listing)
    _remove_stale(out, set(written), set(by_id), summary)
    summary["video_ids"] = written
    return summary


_JPG = re.compile(r"^\d{5}\.jpg$")
_PNG = re.compile(r"^\d{5}\.png$")
_OBJ = re.compile(r"^\d{3,}$")


def _check_png(p: Path, size: tuple[int, int] | None) -> tuple[bool, str | None]:
    """(visible, problem) of one mask PNG: a palette ("P") PNG holding 0/1 at the frames' size."""
    from PIL import Image

    with Image.open(p) as im:
        if im.format != "PNG" or im.mode != "P":
            return False, f"{p}: {im.format} mode {im.mode}, expected a palette (P) PNG"
        if size is not None and im.size != size:
            return False, f"{p}: {im.size[0]}x{im.size[1]}, the frames are {size[0]}x{size[1]}"
        a = np.asarray(im)
    values = set(np.unique(a).tolist())
    if not values <= {0, 1}:
        return False, f"{p}: values {sorted(values)}, expected 0/1 (one object per PNG)"
    return 1 in values, None


def _jpeg_size(d: Path, names: list[str]) -> tuple[tuple[int, int] | None, list[str]]:
    from PIL import Image

    bad = [f"{d / n}: not named %05d.jpg" for n in names if not _JPG.match(n)]
    if not names:
        return None, [f"{d}: no frames"]
    with Image.open(d / names[0]) as im:
        if im.format != "JPEG" or im.mode != "RGB":
            bad.append(f"{d / names[0]}: {im.format} {im.mode}, expected an RGB JPEG")
        return im.size, bad


def _check_object(d: Path, jpegs: set[str], size) -> tuple[list[str], list[str]]:
    """(frame names, problems) of one object folder."""
    names = sorted(os.listdir(d))
    problems = [f"{d / n}: not named %05d.png" for n in names if not _PNG.match(n)]
    problems += [f"{d / n}: no {n[:-4]}.jpg in JPEGImages_24fps" for n in names if n[:-4] + ".jpg" not in jpegs]
    seen = False
    for i, n in enumerate(names):
        visible, problem = _check_png(d / n, size)
        problems += [problem] if problem else []
        seen = seen or (visible and 0 < i < len(names) - 1)
    if not seen:
        problems.append(f"{d}: not visible between the first and last frames (the evaluator asserts)")
    return names, problems


def _check_video(out: Path, vid: str) -> list[str]:
    jdir, adir = out / JPEG_DIR / vid, out / ANN_DIR / vid
    if not jdir.is_dir() or not adir.is_dir():
        return [f"{vid}: listed but {jdir if not jdir.is_dir() else adir} is missing"]
    jnames = sorted(os.listdir(jdir))
    size, problems = _jpeg_size(jdir, jnames)
    objects = sorted(os.listdir(adir))
    if not objects:
        problems.append(f"{adir}: no object folders")
    frame_lists = set()
    for obj in objects:
        if not _OBJ.match(obj) or not (adir / obj).is_dir():
            problems.append(f"{adir / obj}: not an object folder named %03d")
            continue
        names, obj_problems = _check_object(adir / obj, set(jnames), size)
        problems += obj_problems
        frame_lists.add(tuple(names))
    if len(frame_lists) > 1:
        problems.append(f"{adir}: object folders hold different frames")
    first = min((f[0] for f in frame_lists if f), default=None)
    if first is not None and jnames and jnames[0] != first[:-4] + ".jpg":
        problems.append(f"{jdir}: first JPEG {jnames[0]} is not the first annotated frame {first[:-4]}.jpg")
    return problems


def check_layout(out_dir: str | os.PathLike, split_name: str) -> list[str]:
    """Problems (empty: none) of an evaluation layout as Meta's tools read it.

    Mirrors what ``sav_dataset/sav_evaluator.py`` + ``utils/sav_benchmark.py`` (facebookresearch/sam2,
    sav_benchmark.py at commit 7e1596c) and ``tools/vos_inference.py`` open: ``sav_<split>.txt`` names
    exactly the video folders of ``Annotations_6fps`` and ``JPEGImages_24fps``; frames are ``%05d.jpg``
    (RGB JPEG); each video folder holds only object folders (``%03d``, so the evaluator takes the SA-V
    branch and ``int()`` parses them) with the same ``%05d.png`` frames, each a palette PNG of 0/1 at
    the frames' size with a JPEG of the same number, the first of them the video's first JPEG (the
    inference prompt); every object is visible between its first and last frame (else the evaluator's
    ``consolidate`` asserts).
    """
    out = Path(out_dir)
    lst = out / f"sav_{safe_relpath(split_name)}.txt"
    if not lst.is_file():
        return [f"{lst}: missing"]
    vids = lst.read_text().split()
    problems = [f"{lst}: {v!r} listed twice" for v in sorted({v for v in vids if vids.count(v) > 1})]
    for d in (ANN_DIR, JPEG_DIR):
        found = sorted(c.name for c in (out / d).iterdir() if c.is_dir()) if (out / d).is_dir() else []
        if found != sorted(set(vids)):
            problems.append(f"{out / d}: video folders {found} are not the list file's {sorted(set(vids))}")
    for vid in sorted(set(vids)):
        problems += _check_video(out, vid)
    return problems

"""SA-V annotation JSON (``<video>_manual.json`` / ``<video>_auto.json``): import to rows, export back.

The round trip is exact: ``json.loads(dumps_sav(export_sav(*import_sav(doc, ...), masklet_type=t)))``
equals ``doc`` with identical types (floats stay floats, ints stay ints), identical key order and
identical RLE strings, and for files written the way SA-V writes them (``json.dumps`` defaults) the
text is byte-identical. Three things make that work:

* ``sav_annotations.header_json`` keeps every top-level key that is not a per-masklet list
  (``video_id``, ``video_duration``, ..., ``video_split``, ``masklet_num``) verbatim, in order;
  on export ``video_id`` is the row's (the pipeline's id for the matched video, which a file's own
  ``video_id`` never replaces: it may be anything, even a path);
* ``masklets.sav_fields_json`` keeps the masklet's own per-masklet values verbatim (for an auto file
  that includes its column of ``masklet_stability_score``, a list over annotated frames);
* ``masklet_frames`` keeps each RLE's ``counts`` string and ``size`` unchanged.

Top-level key order on export: header keys that do not start with ``masklet``, then ``masklet``, then
the per-masklet lists in the order they were imported, then header keys that start with ``masklet``
(``masklet_num``). That is the layout of every SA-V file.

Both directions are named steps. Import: the document checks of :mod:`sav_assets.lib.sav.validate`
(header -> masklet ids -> masklet grid -> per-masklet lists -> stability -> every RLE -> file kind),
then frame numbering, derived fields and rows. Export: header -> masklet grid (frame rows per
masklet) -> per-masklet fields -> serialised document.

Frame numbering: annotated frame ``k`` is frame ``4k`` of SA-V's 24 fps timeline
(:mod:`sav_assets.lib.sav.fields`); the labeling batch passes ``frame_indices`` (the video's
``annotation_grid``, by presentation timestamp) and ``frame_times`` (their ``timestamp_s``), so a
file for a 25 / 29.97 / 30 fps or variable-frame-rate video lands on the frames SA-V's loader pairs
it with. Without them annotated frame ``k`` is video frame ``k * frame_step`` (default 4: a 24 fps
video) and its ``timestamp_s`` that over the video row's ``video_fps`` (null without one).

Both directions share one module (over 400 lines) so the round-trip rules stay in one place.

Bad documents raise :class:`SavFormatError` (a ``ValueError``) with a message naming the key, frame
and object, before anything is decoded (see :mod:`sav_assets.lib.sav.validate`).
"""

from __future__ import annotations

import json
import posixpath
from typing import Any

import numpy as np

from sav_assets.lib.sav import fields as masklet_fields
from sav_assets.lib.sav import rle, validate
from sav_assets.lib.sav.validate import STABILITY_KEY, SavFormatError, as_float, as_int, check_rle

__all__ = ["PER_MASKLET_KEYS", "SAV_FRAME_STEP", "STABILITY_KEY", "SavFormatError", "check_rle", "dumps_sav",
           "export_sav", "find_annotation_files", "import_sav"]

SAV_FRAME_STEP = 4  # 24 fps -> 6 fps

# Per-masklet keys of a SAM 2-labeled export, in the order of the SA-V sample files.
PER_MASKLET_KEYS = (
    "masklet_id", "masklet_size_rel", "masklet_size_abs", "masklet_size_bucket",
    "masklet_visibility_changes", "masklet_first_appeared_frame", "masklet_frame_count",
    "masklet_edited_frame_count", "masklet_type", STABILITY_KEY,
)
_INT_FIELDS = ("masklet_visibility_changes", "masklet_first_appeared_frame", "masklet_frame_count",
               "masklet_edited_frame_count")
_FLOAT_FIELDS = ("masklet_size_abs", "masklet_size_rel")


# ---------------------------------------------------------------------------------------------
# import
# ---------------------------------------------------------------------------------------------

def _frame_indices(nf: int, frame_step: int | None, frame_indices: list[int] | None) -> list[int]:
    if frame_indices is not None:
        if len(frame_indices) != nf:
            raise ValueError(f"frame_indices has {len(frame_indices)} entries for {nf} annotated frames")
        return [int(v) for v in frame_indices]
    step = SAV_FRAME_STEP if frame_step is None else int(frame_step)
    if step <= 0:
        raise ValueError(f"frame_step must be positive, got {frame_step}")
    return [k * step for k in range(nf)]


def _frame_times(fidx: list[int], frame_times: list[float] | None, video: dict | None) -> list[float | None]:
    if frame_times is not None:
        if len(frame_times) != len(fidx):
            raise ValueError(f"frame_times has {len(frame_times)} entries for {len(fidx)} annotated frames")
        return [float(t) for t in frame_times]
    fps = float((video or {}).get("video_fps") or 0.0)
    return [i / fps if fps > 0 else None for i in fidx]


def _split_top_level(doc: dict) -> tuple[dict, list[str]]:
    """(header: top-level keys that are not per-masklet lists, verbatim; per-masklet list keys)."""
    header: dict[str, Any] = {}
    per_keys: list[str] = []
    for key, value in doc.items():
        if key == "masklet":
            continue
        if key.startswith("masklet_") and isinstance(value, list):
            per_keys.append(key)
        else:
            header[key] = value
    return header, per_keys


def _typed_fields(fields: dict, derived: dict, j: int) -> dict:
    """The typed ``masklets`` columns: the document's value where it has one, else the derived one."""
    typed: dict[str, Any] = {}
    for key in _FLOAT_FIELDS:
        v = fields.get(key)
        typed[key] = derived[key] if v is None else as_float(v, f"{key}[{j}]")
    for key in _INT_FIELDS:
        v = fields.get(key)
        typed[key] = derived.get(key) if v is None else as_int(v, f"{key}[{j}]")
    bucket = fields.get("masklet_size_bucket")
    if bucket is not None and not isinstance(bucket, str):
        raise SavFormatError(f"masklet_size_bucket[{j}] is {bucket!r}, expected a string")
    typed["masklet_size_bucket"] = derived["masklet_size_bucket"] if bucket is None else bucket
    return typed


def _stability_stats(stab_vals: list | None, vis: np.ndarray) -> tuple[float | None, float | None]:
    """Mean and min stability over the visible frames (every frame when never visible)."""
    if stab_vals is None:
        return None, None
    pick = [float(s) for s, v in zip(stab_vals, vis) if s is not None and v]
    if not pick:
        pick = [float(s) for s in stab_vals if s is not None]
    if not pick:
        return None, None
    return float(np.mean(pick)), float(np.min(pick))


def _masklet_row(video_id: str, mid: int, mtype: str, fields: dict, typed: dict,
                 stab: tuple[float | None, float | None]) -> dict:
    return {
        "video_id": video_id,
        "masklet_id": mid,
        "masklet_type": mtype,
        **typed,
        "masklet_stability_mean": stab[0],
        "masklet_stability_min": stab[1],
        "source": "sav_import",
        "model_name": None,
        "checkpoint_sha256": None,
        "config_sha256": None,
        "random_weights": None,
        "label_key": None,
        "masklet_cycle_iou": None,
        "sav_fields_json": json.dumps(fields),
    }


def _frame_rows(video_id: str, mid: int, mtype: str, column: list[dict], fidx: list[int],
                areas: np.ndarray, bboxes: np.ndarray, stab_vals: list | None,
                times: list[float | None]) -> list[dict]:
    """``masklet_frames`` rows of one masklet (its column of the ``[frame][object]`` grid)."""
    return [{
        "video_id": video_id,
        "masklet_id": mid,
        "masklet_type": mtype,
        "ann_idx": k,
        "frame_idx": fidx[k],
        "timestamp_s": times[k],
        "size": list(r["size"]),
        "counts": r["counts"],
        "area": int(areas[k]),
        "bbox": [float(v) for v in bboxes[k]],
        "visible": bool(areas[k] > 0),
        "predicted_iou": None,
        "stability_score": None if stab_vals is None or stab_vals[k] is None else float(stab_vals[k]),
    } for k, r in enumerate(column)]


def import_sav(
    doc: dict,
    *,
    source_uri: str,
    frame_step: int | None = None,
    frame_indices: list[int] | None = None,
    masklet_type: str | None = None,
    video: dict | None = None,
    max_masklets: int | None = None,
    max_frames: int | None = None,
    frame_times: list[float] | None = None,
) -> tuple[dict, list[dict], list[dict]]:
    """One SA-V annotation document to (``sav_annotations`` row, ``masklets`` rows, ``masklet_frames`` rows).

    Rows carry the table columns except ``batch_id`` and the timestamps (the caller adds those).
    ``frame_idx`` of annotated frame ``k`` is ``frame_indices[k]``, else ``k * frame_step``, else
    ``k * 4`` (SA-V: 24 fps videos annotated at 6 fps); its ``timestamp_s`` is ``frame_times[k]``,
    else ``frame_idx / video_fps`` when ``video`` has a frame rate, else null. ``masklet_type`` is only a fallback for
    the file kind when the document has no masklets to take it from. ``video`` (a probed ``videos``
    row) makes the frame size and frame count checked against the video; ``max_masklets`` /
    ``max_frames`` cap what one file may add. Both are checked before any RLE is parsed.
    """
    video_id, h, w = validate.read_header(doc)
    validate.bounds(doc, max_masklets, max_frames)
    if video is not None:
        validate.frame_size_matches(h, w, video)
    mids = validate.masklet_ids(doc)
    n = len(mids)
    frames = validate.masklet_grid(doc, n)
    nf = len(frames)
    fidx = _frame_indices(nf, frame_step, frame_indices)
    if video is not None:
        validate.frames_within_video(fidx, video, frame_step or SAV_FRAME_STEP)
    times = _frame_times(fidx, frame_times, video)
    header, per_keys = _split_top_level(doc)
    validate.per_masklet_lists(doc, per_keys, n)
    stab_by_frame = validate.stability_by_frame(doc, per_keys, n, nf)
    areas = validate.check_rles(frames, h, w)
    bboxes = rle.bboxes([r for fr in frames for r in fr]).reshape(nf, n, 4)
    types, file_type = validate.file_kind(doc, masklet_type)

    header_row = {"video_id": video_id, "masklet_type": file_type, "source_uri": source_uri,
                  "header_json": json.dumps(header)}
    masklet_rows: list[dict] = []
    frame_rows: list[dict] = []
    for j, mid in enumerate(mids):
        mtype = types[j] if types else file_type
        stab_vals = None if stab_by_frame is None else [stab_by_frame[k][j] for k in range(nf)]
        fields = {key: stab_vals if key == STABILITY_KEY and stab_vals is not None else doc[key][j]
                  for key in per_keys}
        typed = _typed_fields(fields, masklet_fields.derive(areas[:, j].tolist(), h, w), j)
        stab = _stability_stats(stab_vals, areas[:, j] > 0)
        masklet_rows.append(_masklet_row(video_id, mid, mtype, fields, typed, stab))
        frame_rows += _frame_rows(video_id, mid, mtype, [fr[j] for fr in frames], fidx, areas[:, j],
                                  bboxes[:, j], stab_vals, times)
    return header_row, masklet_rows, frame_rows


# ---------------------------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------------------------

def _fresh_fields(row: dict, areas: list[int], h: int, w: int, masklet_type: str) -> dict:
    """SA-V per-masklet values for a masklet that was not imported (SAM 2 labeled), sample key order."""
    derived = masklet_fields.derive(areas, h, w) if h and w else {}

    def pick(key):
        v = row.get(key)
        return derived.get(key) if v is None else v

    first = pick("masklet_first_appeared_frame")
    first = int(first) if first is not None else -1
    return {
        "masklet_id": int(row["masklet_id"]),
        "masklet_size_rel": float(pick("masklet_size_rel") or 0.0),
        "masklet_size_abs": float(pick("masklet_size_abs") or 0.0),
        "masklet_size_bucket": pick("masklet_size_bucket") or "small",
        "masklet_visibility_changes": int(pick("masklet_visibility_changes") or 0),
        # the manual sample stores this one as a float, the auto sample as an int
        "masklet_first_appeared_frame": float(first) if masklet_type == "manual" else first,
        "masklet_frame_count": int(pick("masklet_frame_count") or len(areas)),
        "masklet_edited_frame_count": int(row.get("masklet_edited_frame_count") or 0),
        "masklet_type": masklet_type,
        STABILITY_KEY: None,
    }


def _export_header(header_row: dict | None, video: dict | None) -> dict:
    """The document's top-level values: the imported header verbatim, else from a ``videos`` row
    (SA-V stores its numbers as floats)."""
    if header_row is not None:
        header = json.loads(header_row["header_json"])
        if header_row.get("video_id") and "video_id" in header:   # the pipeline's id, never the file's
            header["video_id"] = header_row["video_id"]
        return header
    if video is None:
        raise ValueError("export_sav needs the imported header_row or a videos row (video=...)")
    hh, ww = int(video["video_height"]), int(video["video_width"])

    def opt_float(key):
        return None if video.get(key) is None else float(video[key])

    return {
        "video_id": video["video_id"],
        "video_duration": opt_float("video_duration"),
        "video_frame_count": opt_float("video_frame_count"),
        "video_height": float(hh),
        "video_width": float(ww),
        "video_resolution": float(video.get("video_resolution") or hh * ww),
        "video_environment": video.get("video_environment"),
        "video_split": video.get("video_split"),
    }


def _frames_by_masklet(masklet_rows: list[dict],
                       frame_rows: list[dict]) -> tuple[list[dict], list[dict[int, dict]]]:
    """Masklet rows in ``masklet_id`` order and, for each, its frame rows by ``ann_idx``.

    Frame rows are matched by (type, id), or by id alone when they carry no type; rows of another
    video (the rows' own ``video_id``; the document's may differ) are left out.
    """
    vids = {r.get("video_id") for r in masklet_rows} - {None}
    if len(vids) > 1:
        raise ValueError(f"masklet rows span several videos: {sorted(vids)}")
    video_id = next(iter(vids)) if vids else None
    rows = sorted(masklet_rows, key=lambda r: int(r["masklet_id"]))
    keys = [(r.get("masklet_type"), int(r["masklet_id"])) for r in rows]
    if len(set(keys)) != len(keys):
        raise ValueError("duplicate (masklet_type, masklet_id) among masklet rows")
    slot = {key: j for j, key in enumerate(keys)}
    by_mid = {int(r["masklet_id"]): j for j, r in enumerate(rows)}
    frames_of: list[dict[int, dict]] = [{} for _ in rows]
    for fr in frame_rows:
        if video_id is not None and fr.get("video_id") not in (None, video_id):
            continue
        mid, t = int(fr["masklet_id"]), fr.get("masklet_type")
        j = slot.get((t, mid)) if t is not None else by_mid.get(mid)
        if j is not None:
            frames_of[j][int(fr["ann_idx"])] = fr
    return rows, frames_of


def _masklet_column(frames: dict[int, dict], nf: int, h: int, w: int) -> tuple[list[dict], list[int]]:
    """One masklet's RLE per annotated frame (empty where it has no row) and their areas."""
    column, areas = [], []
    for k in range(nf):
        fr = frames.get(k)
        if fr is None:
            column.append(rle.empty(h, w))
            areas.append(0)
        else:
            column.append(rle.from_row(fr))
            areas.append(int(fr["area"]) if fr.get("area") is not None else
                         int(rle.parse_counts(fr["counts"])[1::2].sum()))
    return column, areas


def _masklet_fields(row: dict, frames: dict[int, dict], areas: list[int], h: int, w: int,
                    masklet_type: str) -> dict:
    """Per-masklet values: the imported ones verbatim, else fresh (auto: stability per frame)."""
    if row.get("sav_fields_json"):
        return json.loads(row["sav_fields_json"])
    fields = _fresh_fields(row, areas, h, w, masklet_type)
    if masklet_type == "auto":
        scores = [frames[k].get("stability_score") if k in frames else None for k in range(len(areas))]
        fields[STABILITY_KEY] = [None if s is None else float(s) for s in scores]
    return fields


def _serialise(header: dict, masklet: list[list[dict]], per_fields: list[dict], nf: int) -> dict:
    """The document in SA-V key order (see the module docstring)."""
    per_keys: list[str] = []
    for f in per_fields:
        per_keys += [key for key in f if key not in per_keys]
    if not per_fields:
        per_keys = list(PER_MASKLET_KEYS)
    n = len(per_fields)
    doc: dict[str, Any] = {k: v for k, v in header.items() if not k.startswith("masklet")}
    doc["masklet"] = masklet
    for key in per_keys:
        vals = [f.get(key) for f in per_fields]
        if key == STABILITY_KEY and vals and all(isinstance(v, list) for v in vals):
            doc[key] = [[vals[j][k] if k < len(vals[j]) else None for j in range(n)] for k in range(nf)]
        else:
            doc[key] = vals
    tail = {k: v for k, v in header.items() if k.startswith("masklet")}
    if "masklet_num" not in tail:
        tail["masklet_num"] = n
    elif tail["masklet_num"] != n:
        tail["masklet_num"] = float(n) if isinstance(tail["masklet_num"], float) else n
    doc.update(tail)
    return doc


def export_sav(
    header_row: dict | None,
    masklet_rows: list[dict],
    frame_rows: list[dict],
    *,
    video: dict | None = None,
    masklet_type: str,
) -> dict:
    """Rows back to an SA-V annotation document (``masklet_type`` is the file kind: manual | auto).

    Imported data (``header_row`` and ``sav_fields_json`` present) gives back the original document.
    SAM 2-labeled data is built from ``video`` (a ``videos`` row; SA-V stores its numbers as
    floats) and the rows; an ``auto`` file carries ``masklet_stability_score`` as
    ``[frame][object]`` from the frame rows' ``stability_score``, other kinds ``null`` per masklet.
    Masklets are written in ``masklet_id`` order; a masklet without a row for some annotated frame
    gets an empty mask there.
    """
    header = _export_header(header_row, video)
    h = int(header["video_height"]) if header.get("video_height") is not None else 0
    w = int(header["video_width"]) if header.get("video_width") is not None else 0
    rows, frames_of = _frames_by_masklet(masklet_rows, frame_rows)
    nf = max((k + 1 for f in frames_of for k in f), default=0)
    if not (h and w):
        sizes = [fr["size"] for f in frames_of for fr in f.values()]
        if sizes:
            h, w = int(sizes[0][0]), int(sizes[0][1])
    columns, per_fields = [], []
    for row, frames in zip(rows, frames_of):
        column, areas = _masklet_column(frames, nf, h, w)
        columns.append(column)
        per_fields.append(_masklet_fields(row, frames, areas, h, w, masklet_type))
    masklet = [[column[k] for column in columns] for k in range(nf)]
    return _serialise(header, masklet, per_fields, nf)


def dumps_sav(doc: dict) -> str:
    """The document as SA-V writes it: ``json.dumps`` defaults (", " and ": "), no trailing newline."""
    return json.dumps(doc)


# ---------------------------------------------------------------------------------------------
# finding the annotation files of a video
# ---------------------------------------------------------------------------------------------

def find_annotation_files(
    video_key: str, keys: list[str], annotation_prefix: str | None = None
) -> dict[str, str]:
    """``{"manual": key, "auto": key}`` for the SA-V files of ``video_key`` that exist in ``keys``.

    Looks for ``<stem>_manual.json`` / ``<stem>_auto.json`` beside the video first, then under
    ``annotation_prefix`` (flat, then mirroring the video's folder). Only kinds found are returned.
    """
    present = set(keys)
    folder, name = posixpath.split(video_key.replace("\\", "/"))
    stem = posixpath.splitext(name)[0]
    prefix = (annotation_prefix or "").replace("\\", "/").strip("/")
    out: dict[str, str] = {}
    for kind in ("manual", "auto"):
        fname = f"{stem}_{kind}.json"
        candidates = [posixpath.join(folder, fname) if folder else fname]
        if annotation_prefix is not None:
            candidates.append(posixpath.join(prefix, fname) if prefix else fname)
            if folder:
                candidates.append(posixpath.join(prefix, folder, fname) if prefix else posixpath.join(folder, fname))
        for c in candidates:
            if c in present:
                out[kind] = c
                break
    return out

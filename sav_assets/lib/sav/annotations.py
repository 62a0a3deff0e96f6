"""SA-V annotation JSON (``<video>_manual.json`` / ``<video>_auto.json``): import to rows, export back.

The round trip is exact: ``json.loads(dumps_sav(export_sav(*import_sav(doc, ...), masklet_type=t)))``
equals ``doc`` with identical types (floats stay floats, ints stay ints), identical key order and
identical RLE strings, and for files written the way SA-V writes them (``json.dumps`` defaults) the
text is byte-identical. Three things make that work:

* ``sav_annotations.header_json`` keeps every top-level key that is not a per-masklet list
  (``video_id``, ``video_duration``, ..., ``video_split``, ``masklet_num``) verbatim, in order;
* ``masklets.sav_fields_json`` keeps the masklet's own per-masklet values verbatim (for an auto file
  that includes its column of ``masklet_stability_score``, a list over annotated frames);
* ``masklet_frames`` keeps each RLE's ``counts`` string and ``size`` unchanged.

Top-level key order on export: header keys that do not start with ``masklet``, then ``masklet``, then
the per-masklet lists in the order they were imported, then header keys that start with ``masklet``
(``masklet_num``). That is the layout of every SA-V file.

Frame numbering: SA-V annotates 24 fps videos at 6 fps, every 4th frame, so annotated frame ``k`` is
video frame ``4 * k`` unless the caller passes ``frame_indices`` (explicit) or ``frame_step``.

Bad documents raise :class:`SavFormatError` (a ``ValueError``) with a message naming the key, frame
and object, before anything is decoded: RLE counts are parsed and checked here (pycocotools'
decoder does not bounds-check and would write past its buffer on a corrupt string).
"""

from __future__ import annotations

import json
import math
import posixpath
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from sav_assets.lib.sav import fields as masklet_fields
from sav_assets.lib.sav.rle import parse_counts

SAV_FPS = 24.0
SAV_ANNOTATION_FPS = 6.0
SAV_FRAME_STEP = 4  # 24 fps -> 6 fps

REQUIRED_KEYS = ("video_id", "video_height", "video_width", "masklet", "masklet_id")
STABILITY_KEY = "masklet_stability_score"
# Per-masklet keys of a SAM 2-labeled export, in the order of the SA-V sample files.
PER_MASKLET_KEYS = (
    "masklet_id", "masklet_size_rel", "masklet_size_abs", "masklet_size_bucket",
    "masklet_visibility_changes", "masklet_first_appeared_frame", "masklet_frame_count",
    "masklet_edited_frame_count", "masklet_type", STABILITY_KEY,
)
VIDEO_KEYS = ("video_id", "video_duration", "video_frame_count", "video_height", "video_width",
              "video_resolution", "video_environment", "video_split")
_INT_FIELDS = ("masklet_visibility_changes", "masklet_first_appeared_frame", "masklet_frame_count",
               "masklet_edited_frame_count")
_FLOAT_FIELDS = ("masklet_size_abs", "masklet_size_rel")


class SavFormatError(ValueError):
    """A malformed SA-V annotation document (the message says what and where)."""


# ---------------------------------------------------------------------------------------------
# RLE counts: parse and check (COCO compressed string, as pycocotools' rleFrString reads it)
# ---------------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------------
# import
# ---------------------------------------------------------------------------------------------

def _int_dim(doc: dict, key: str) -> int:
    v = doc[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or int(v) != v or v <= 0:
        raise SavFormatError(f"{key} is {v!r}, expected a positive whole number")
    return int(v)


def _as_int(v: Any, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or int(v) != v:
        raise SavFormatError(f"{what} is {v!r}, expected a whole number")
    return int(v)


def _as_float(v: Any, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise SavFormatError(f"{what} is {v!r}, expected a number")
    return float(v)


def _is_per_masklet(key: str, value: Any) -> bool:
    return key == "masklet" or (key.startswith("masklet_") and isinstance(value, list))


def import_sav(
    doc: dict,
    *,
    source_uri: str,
    frame_step: int | None = None,
    frame_indices: list[int] | None = None,
    masklet_type: str | None = None,
) -> tuple[dict, list[dict], list[dict]]:
    """One SA-V annotation document to (``sav_annotations`` row, ``masklets`` rows, ``masklet_frames`` rows).

    Rows carry the table columns except ``batch_id`` and the timestamps (the caller adds those).
    ``frame_idx`` of annotated frame ``k`` is ``frame_indices[k]``, else ``k * frame_step``, else
    ``k * 4`` (SA-V: 24 fps videos annotated at 6 fps). ``masklet_type`` is only a fallback for
    the file kind when the document has no masklets to take it from.
    """
    if not isinstance(doc, dict):
        raise SavFormatError(f"SA-V document is {type(doc).__name__}, expected a JSON object")
    missing = [k for k in REQUIRED_KEYS if k not in doc]
    if missing:
        raise SavFormatError(f"SA-V document lacks required key(s) {missing}")
    video_id = doc["video_id"]
    if not isinstance(video_id, str) or not video_id:
        raise SavFormatError(f"video_id is {video_id!r}, expected a non-empty string")
    h, w = _int_dim(doc, "video_height"), _int_dim(doc, "video_width")

    ids = doc["masklet_id"]
    if not isinstance(ids, list):
        raise SavFormatError("masklet_id is not a list")
    n = len(ids)
    mids = [_as_int(v, f"masklet_id[{j}]") for j, v in enumerate(ids)]
    if len(set(mids)) != n:
        raise SavFormatError(f"masklet_id has duplicates: {ids}")
    if "masklet_num" in doc and (isinstance(doc["masklet_num"], bool) or doc["masklet_num"] != n):
        raise SavFormatError(f"masklet_num is {doc['masklet_num']!r} but masklet_id lists {n} masklets")

    frames = doc["masklet"]
    if not isinstance(frames, list):
        raise SavFormatError("masklet is not a list over annotated frames")
    nf = len(frames)
    for k, fr in enumerate(frames):
        if not isinstance(fr, list) or len(fr) != n:
            got = len(fr) if isinstance(fr, list) else type(fr).__name__
            raise SavFormatError(f"masklet[{k}] has {got} objects, expected {n} (ragged masklet list)")

    if frame_indices is not None:
        if len(frame_indices) != nf:
            raise ValueError(f"frame_indices has {len(frame_indices)} entries for {nf} annotated frames")
        fidx = [int(v) for v in frame_indices]
    else:
        step = SAV_FRAME_STEP if frame_step is None else int(frame_step)
        if step <= 0:
            raise ValueError(f"frame_step must be positive, got {frame_step}")
        fidx = [k * step for k in range(nf)]

    # top level: header (verbatim) vs per-masklet lists
    header: dict[str, Any] = {}
    per_keys: list[str] = []
    for key, value in doc.items():
        if _is_per_masklet(key, value):
            if key != "masklet":
                per_keys.append(key)
        else:
            header[key] = value
    for key in per_keys:
        if key == STABILITY_KEY:
            continue
        if len(doc[key]) != n:
            raise SavFormatError(f"{key} has {len(doc[key])} entries, expected {n} (one per masklet)")

    # masklet_stability_score: [frame][object] (auto) or one value per masklet (manual: null)
    stab_by_frame: list[list] | None = None
    if STABILITY_KEY in per_keys:
        stab = doc[STABILITY_KEY]
        if n and all(v is None or not isinstance(v, list) for v in stab) and len(stab) == n:
            stab_by_frame = None
        elif len(stab) == nf and all(isinstance(v, list) for v in stab):
            for k, row in enumerate(stab):
                if len(row) != n:
                    raise SavFormatError(
                        f"{STABILITY_KEY}[{k}] has {len(row)} values, expected {n} (ragged [frame][object] list)")
                for j, v in enumerate(row):
                    if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                        raise SavFormatError(f"{STABILITY_KEY}[{k}][{j}] is {v!r}, expected a number")
            stab_by_frame = stab
        elif n == 0 and len(stab) == 0:
            stab_by_frame = None
        else:
            raise SavFormatError(
                f"{STABILITY_KEY} has {len(stab)} entries: expected {nf} per-frame lists of {n} "
                f"([frame][object], auto) or {n} per-masklet values (manual)")
    elif STABILITY_KEY in doc and doc[STABILITY_KEY] is not None:
        raise SavFormatError(f"{STABILITY_KEY} is {doc[STABILITY_KEY]!r}, expected a list")

    # RLEs: check every one, then area and bbox
    runs_all: list[list[np.ndarray]] = [[None] * n for _ in range(nf)]  # type: ignore[list-item]
    for k, fr in enumerate(frames):
        for j, rle in enumerate(fr):
            runs_all[k][j] = check_rle(rle, h, w, f"masklet[{k}][{j}]")
    areas = np.zeros((nf, n), np.int64)
    for k in range(nf):
        for j in range(n):
            areas[k, j] = int(runs_all[k][j][1::2].sum())
    bboxes = np.zeros((nf, n, 4), np.float64)
    if nf and n:
        coco = [{"size": [h, w], "counts": frames[k][j]["counts"].encode("ascii")}
                for k in range(nf) for j in range(n)]
        bboxes = np.asarray(mask_utils.toBbox(coco), dtype=np.float64).reshape(nf, n, 4)

    types = doc.get("masklet_type") if isinstance(doc.get("masklet_type"), list) else None
    kinds = sorted({t for t in types if isinstance(t, str)}) if types else []
    if types and any(not isinstance(t, str) for t in types):
        raise SavFormatError(f"masklet_type has non-string entries: {types}")
    if len(kinds) == 1:
        file_type = kinds[0]
    elif len(kinds) > 1:
        raise SavFormatError(f"masklet_type mixes {kinds} in one file; SA-V files hold one kind")
    elif masklet_type is not None:
        file_type = masklet_type
    else:
        raise SavFormatError("masklet_type is missing and no masklet_type fallback was given")

    header_row = {
        "video_id": video_id,
        "masklet_type": file_type,
        "source_uri": source_uri,
        "header_json": json.dumps(header),
    }

    masklet_rows: list[dict] = []
    frame_rows: list[dict] = []
    for j in range(n):
        mid = mids[j]
        mtype = types[j] if types else file_type
        fields: dict[str, Any] = {}
        for key in per_keys:
            if key == STABILITY_KEY and stab_by_frame is not None:
                fields[key] = [stab_by_frame[k][j] for k in range(nf)]
            else:
                fields[key] = doc[key][j]
        derived = masklet_fields.derive(areas[:, j].tolist(), h, w)
        typed: dict[str, Any] = {}
        for key in _FLOAT_FIELDS:
            v = fields.get(key)
            typed[key] = derived[key] if v is None else _as_float(v, f"{key}[{j}]")
        for key in _INT_FIELDS:
            v = fields.get(key)
            if v is None:
                typed[key] = derived.get(key)
            else:
                typed[key] = _as_int(v, f"{key}[{j}]")
        bucket = fields.get("masklet_size_bucket")
        if bucket is not None and not isinstance(bucket, str):
            raise SavFormatError(f"masklet_size_bucket[{j}] is {bucket!r}, expected a string")
        typed["masklet_size_bucket"] = derived["masklet_size_bucket"] if bucket is None else bucket

        stab_vals = None
        if stab_by_frame is not None:
            stab_vals = [stab_by_frame[k][j] for k in range(nf)]
        vis = areas[:, j] > 0
        smean = smin = None
        if stab_vals is not None:
            pick = [float(s) for s, v in zip(stab_vals, vis) if s is not None and v]
            if not pick:  # never visible: fall back to every frame's score
                pick = [float(s) for s in stab_vals if s is not None]
            if pick:
                smean, smin = float(np.mean(pick)), float(np.min(pick))

        masklet_rows.append({
            "video_id": video_id,
            "masklet_id": mid,
            "masklet_type": mtype,
            **typed,
            "masklet_stability_mean": smean,
            "masklet_stability_min": smin,
            "source": "sav_import",
            "model_name": None,
            "checkpoint_sha256": None,
            "config_sha256": None,
            "random_weights": None,
            "label_key": None,
            "masklet_cycle_iou": None,
            "sav_fields_json": json.dumps(fields),
        })
        for k in range(nf):
            s = stab_vals[k] if stab_vals is not None else None
            frame_rows.append({
                "video_id": video_id,
                "masklet_id": mid,
                "masklet_type": mtype,
                "ann_idx": k,
                "frame_idx": fidx[k],
                "size": [h, w],
                "counts": frames[k][j]["counts"],
                "area": int(areas[k, j]),
                "bbox": [float(v) for v in bboxes[k, j]],
                "visible": bool(areas[k, j] > 0),
                "predicted_iou": None,
                "stability_score": None if s is None else float(s),
            })
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
    if header_row is None and video is None:
        raise ValueError("export_sav needs the imported header_row or a videos row (video=...)")
    header: dict[str, Any]
    if header_row is not None:
        header = json.loads(header_row["header_json"])
    else:
        assert video is not None
        hh, ww = int(video["video_height"]), int(video["video_width"])
        header = {
            "video_id": video["video_id"],
            "video_duration": None if video.get("video_duration") is None else float(video["video_duration"]),
            "video_frame_count": (None if video.get("video_frame_count") is None
                                  else float(video["video_frame_count"])),
            "video_height": float(hh),
            "video_width": float(ww),
            "video_resolution": float(video.get("video_resolution") or hh * ww),
            "video_environment": video.get("video_environment"),
            "video_split": video.get("video_split"),
        }
    h = int(header["video_height"]) if header.get("video_height") is not None else 0
    w = int(header["video_width"]) if header.get("video_width") is not None else 0

    # the rows' own video_id (the pipeline's id may differ from the document's verbatim video_id)
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
        if j is None:
            continue
        frames_of[j][int(fr["ann_idx"])] = fr
    nf = max((k + 1 for f in frames_of for k in f), default=0)
    if not (h and w):
        sizes = [fr["size"] for f in frames_of for fr in f.values()]
        if sizes:
            h, w = int(sizes[0][0]), int(sizes[0][1])
    empty = None

    masklet: list[list[dict]] = [[None] * len(rows) for _ in range(nf)]  # type: ignore[list-item]
    per_fields: list[dict] = []
    for j, row in enumerate(rows):
        areas = []
        for k in range(nf):
            fr = frames_of[j].get(k)
            if fr is None:
                if empty is None:
                    empty = mask_utils.encode(np.zeros((h, w), np.uint8, order="F"))["counts"].decode("ascii")
                masklet[k][j] = {"size": [h, w], "counts": empty}
                areas.append(0)
            else:
                masklet[k][j] = {"size": [int(v) for v in fr["size"]], "counts": fr["counts"]}
                areas.append(int(fr["area"]) if fr.get("area") is not None else
                             int(parse_counts(fr["counts"])[1::2].sum()))
        if row.get("sav_fields_json"):
            fields = json.loads(row["sav_fields_json"])
        else:
            fields = _fresh_fields(row, areas, h, w, masklet_type)
            if masklet_type == "auto":
                fields[STABILITY_KEY] = [
                    None if frames_of[j].get(k) is None or frames_of[j][k].get("stability_score") is None
                    else float(frames_of[j][k]["stability_score"]) for k in range(nf)]
        per_fields.append(fields)

    per_keys: list[str] = []
    for f in per_fields:
        for key in f:
            if key not in per_keys:
                per_keys.append(key)
    if not per_fields:
        per_keys = list(PER_MASKLET_KEYS)

    doc: dict[str, Any] = {k: v for k, v in header.items() if not k.startswith("masklet")}
    doc["masklet"] = masklet
    for key in per_keys:
        vals = [f.get(key) for f in per_fields]
        if key == STABILITY_KEY and vals and all(isinstance(v, list) for v in vals):
            doc[key] = [[vals[j][k] if k < len(vals[j]) else None for j in range(len(vals))]
                        for k in range(nf)]
        else:
            doc[key] = vals
    tail = {k: v for k, v in header.items() if k.startswith("masklet")}
    if "masklet_num" not in tail:
        tail["masklet_num"] = len(rows)
    elif tail["masklet_num"] != len(rows):
        orig = tail["masklet_num"]
        tail["masklet_num"] = float(len(rows)) if isinstance(orig, float) else len(rows)
    doc.update(tail)
    return doc


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

"""Point / box prompts that turn into "prompted" masklets.

A prompt says: on frame ``frame_idx`` (the video's own frame numbering, 0-based) of video
``video_id``, object ``obj_id`` is where these points / this box say. Coordinates are pixels of the
original video resolution (x to the right, y down). Points carry labels ``1`` (on the object) or
``0`` (background); a box is ``[x0, y0, x1, y1]``. A prompt needs points, a box, or both.

Several prompts may share an ``obj_id``: the earliest one starts the masklet, later ones correct it
on their frame (as an annotator's correction clicks). The labeler snaps ``frame_idx`` to the nearest
annotated frame of the video's annotation grid.

Accepted formats (``load_prompts`` takes a path or the content as str/bytes; the format is taken
from the extension ``.jsonl`` / ``.json`` / ``.csv`` or sniffed from the content):

JSON Lines -- one object per line (blank lines and lines starting with ``#`` are skipped)::

    {"video_id": "v1", "frame_idx": 0, "obj_id": 1, "points": [[410, 220], [300, 100]], "labels": [1, 0]}
    {"video_id": "v1", "frame_idx": 12, "obj_id": 2, "box": [100, 80, 260, 300]}

JSON -- a list of such objects (or ``{"prompts": [...]}``).

CSV -- with a header. Either one prompt per row with JSON cells::

    video_id,frame_idx,obj_id,points,labels,box
    v1,0,1,"[[410,220],[300,100]]","[1,0]",
    v1,12,2,,,"[100,80,260,300]"

or one point per row (rows with the same video_id, frame_idx, obj_id are merged, in order), with
optional box columns ``x0,y0,x1,y1``::

    video_id,frame_idx,obj_id,x,y,label
    v1,0,1,410,220,1
    v1,0,1,300,100,0

``labels`` may be omitted, meaning all points are positive. Invalid prompts raise ``ValueError``
naming the line (JSON Lines, CSV) or item (JSON list) at fault. The result maps the video key as
written to that video's prompts, ordered by ``(frame_idx, obj_id)``.

Naming the video: instead of ``video_id`` (the pipeline's id, which for a non-SA-V file name is
``<slug>_<hash>`` and only known after ingestion) a prompt may name it by ``file_name``,
``source_uri`` or ``content_sha256`` (or ``video``: any of these, or the id). :func:`resolve_prompts`
maps the keys to ``video_id`` at labeling time against the batch's videos (:func:`resolve_video`: the
id first, then the SHA-256, the URI / source key, the file name); a key that matches no video of the
lake, or more than one video of the batch, becomes a problem row (``unresolved_video``) and the other
videos go on. A key that matches a video of another batch is left for that batch's run.

Past ~400 lines because parsing a prompts file and naming its videos are one contract (the
verdicts files of :mod:`sav_assets.lib.qc.reviews` name videos with the same helpers).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import posixpath
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from sav_assets.lib.util import sha256_text
from sav_assets.lib.video.errors import BAD_PROMPT, UNRESOLVED_VIDEO

# the fields that may name a prompt's (or a review verdict's) video; exactly one per row
VIDEO_KEY_FIELDS = ("video_id", "video", "file_name", "source_uri", "content_sha256")


@dataclass
class Prompt:
    video_id: str
    frame_idx: int
    obj_id: int
    points: list[list[float]] | None = None
    labels: list[int] | None = None
    box: list[float] | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _num(v: Any, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"{what} must be a number, got {v!r}")  # noqa: TRY004 - ValueError is the contract
    f = float(v)
    if not math.isfinite(f):
        raise ValueError(f"{what} must be finite, got {v!r}")
    return f


def _int(v: Any, what: str) -> int:
    if isinstance(v, str):
        v = v.strip()
        if not v.lstrip("-").isdigit():
            raise ValueError(f"{what} must be an integer, got {v!r}")
        v = int(v)
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"{what} must be an integer, got {v!r}")  # noqa: TRY004
    if v < 0:
        raise ValueError(f"{what} must be >= 0, got {v}")
    return v


def _points(points: Any, labels: Any) -> tuple[list[list[float]] | None, list[int] | None]:
    """Validated ``points`` and ``labels`` (all positive when omitted), or ValueError."""
    if points is None:
        if labels is not None:
            raise ValueError("labels given without points")
        return None, None
    if not isinstance(points, list) or not points:
        raise ValueError("points must be a non-empty list of [x, y]")
    pts = []
    for i, p in enumerate(points):
        if not isinstance(p, (list, tuple)) or len(p) != 2:
            raise ValueError(f"points[{i}] must be [x, y], got {p!r}")
        x, y = _num(p[0], f"points[{i}][0]"), _num(p[1], f"points[{i}][1]")
        if x < 0 or y < 0:
            raise ValueError(f"points[{i}] has negative coordinates {p!r}")
        pts.append([x, y])
    if labels is None:
        labels = [1] * len(pts)
    if not isinstance(labels, list) or len(labels) != len(pts):
        raise ValueError(f"labels must be a list with one 0/1 label per point ({len(pts)})")
    for i, lab in enumerate(labels):
        if isinstance(lab, bool) or lab not in (0, 1):
            raise ValueError(f"labels[{i}] must be 0 or 1, got {lab!r}")
    return pts, [int(v) for v in labels]


def _box(box: Any) -> list[float] | None:
    """A validated ``[x0, y0, x1, y1]`` box, or ValueError."""
    if box is None:
        return None
    if not isinstance(box, (list, tuple)) or len(box) != 4:
        raise ValueError(f"box must be [x0, y0, x1, y1], got {box!r}")
    b = [_num(v, f"box[{i}]") for i, v in enumerate(box)]
    if b[0] < 0 or b[1] < 0 or b[2] <= b[0] or b[3] <= b[1]:
        raise ValueError(f"box must satisfy 0 <= x0 < x1 and 0 <= y0 < y1, got {box!r}")
    return b


def validate_prompt(d: dict) -> Prompt:
    """A Prompt from a dict, or ValueError saying what is wrong."""
    if not isinstance(d, dict):
        raise ValueError(f"a prompt must be an object, got {type(d).__name__}")  # noqa: TRY004
    unknown = set(d) - {*VIDEO_KEY_FIELDS, "frame_idx", "obj_id", "points", "labels", "box"}
    if unknown:
        raise ValueError(f"unknown prompt fields {sorted(unknown)}")
    vid = video_key_of(d)
    frame_idx = _int(d.get("frame_idx"), "frame_idx")
    obj_id = _int(d.get("obj_id"), "obj_id")
    if obj_id > 2**31 - 1:
        raise ValueError("obj_id must fit in int32")
    points, labels = _points(d.get("points"), d.get("labels"))
    box = _box(d.get("box"))
    if points is None and box is None:
        raise ValueError("a prompt needs points or a box")
    return Prompt(vid.strip(), frame_idx, obj_id, points, labels, box)


def _json_cell(s: str | None, what: str):
    if s is None or not str(s).strip():
        return None
    try:
        return json.loads(s)
    except json.JSONDecodeError as e:
        raise ValueError(f"{what} is not valid JSON: {s!r}") from e


def _parse_jsonl(text: str) -> list[tuple[str, dict]]:
    out = []
    for n, line in enumerate(text.splitlines(), start=1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        try:
            out.append((f"line {n}", json.loads(s)))
        except json.JSONDecodeError as e:
            raise ValueError(f"prompts line {n}: invalid JSON ({e.msg})") from e
    return out


def _parse_json(text: str) -> list[tuple[str, dict]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"prompts: invalid JSON at line {e.lineno} ({e.msg})") from e
    if isinstance(data, dict) and isinstance(data.get("prompts"), list):
        data = data["prompts"]
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise ValueError("prompts JSON must be a list of prompt objects")  # noqa: TRY004
    return [(f"item {i}", d) for i, d in enumerate(data)]


def _parse_csv(text: str) -> list[tuple[str, dict]]:
    reader = csv.DictReader(io.StringIO(text))
    cols = set(reader.fieldnames or [])
    need = {"frame_idx", "obj_id"}
    key_col = next((k for k in VIDEO_KEY_FIELDS if k in cols), None)
    if not need <= cols or key_col is None:
        raise ValueError(f"prompts CSV needs columns {sorted(need)} and one of {list(VIDEO_KEY_FIELDS)}, "
                         f"got {sorted(cols)}")
    per_point = "points" not in cols and ({"x", "y"} <= cols or {"x0", "y0", "x1", "y1"} <= cols)
    out: list[tuple[str, dict]] = []
    merged: dict[tuple, tuple[str, dict]] = {}
    for row in reader:
        n = reader.line_num
        where = f"line {n}"
        try:
            base = {key_col: (row.get(key_col) or "").strip(),
                    "frame_idx": _int(row.get("frame_idx") or "", "frame_idx"),
                    "obj_id": _int(row.get("obj_id") or "", "obj_id")}
            if not per_point:
                d = dict(base)
                for k in ("points", "labels", "box"):
                    v = _json_cell(row.get(k), k)
                    if v is not None:
                        d[k] = v
                out.append((where, d))
                continue
            key = (base[key_col], base["frame_idx"], base["obj_id"])
            if key not in merged:
                merged[key] = (where, dict(base))
                out.append(merged[key])
            d = merged[key][1]
            xs, ys = (row.get("x") or "").strip(), (row.get("y") or "").strip()
            if xs or ys:
                d.setdefault("points", []).append([float(xs), float(ys)])
                lab = (row.get("label") or "1").strip()
                d.setdefault("labels", []).append(_int(lab, "label"))
            if all((row.get(k) or "").strip() for k in ("x0", "y0", "x1", "y1")):
                box = [float(row[k]) for k in ("x0", "y0", "x1", "y1")]
                if "box" in d and d["box"] != box:
                    raise ValueError("two different boxes for the same prompt")
                d["box"] = box
        except ValueError as e:
            raise ValueError(f"prompts {where}: {e}") from e
    return out


def _read_source(source: str | bytes | os.PathLike) -> tuple[str, str | None]:
    if isinstance(source, bytes):
        return source.decode("utf-8-sig"), None
    s = os.fspath(source)
    looks_like_content = "\n" in s or s.lstrip().startswith(("[", "{"))
    if not looks_like_content and os.path.isfile(s):
        with open(s, encoding="utf-8-sig") as f:
            return f.read(), os.path.splitext(s)[1].lower()
    if not looks_like_content and s.lower().endswith((".jsonl", ".json", ".csv")):
        raise ValueError(f"prompts file not found: {s}")
    return s, None


def parse_prompts(items: Iterable[tuple[str, dict]]) -> dict[str, list[Prompt]]:
    out: dict[str, list[Prompt]] = {}
    seen: dict[tuple, str] = {}
    for where, d in items:
        try:
            p = validate_prompt(d)
        except ValueError as e:
            raise ValueError(f"prompts {where}: {e}") from e
        key = (p.video_id, p.frame_idx, p.obj_id)
        if key in seen:
            raise ValueError(f"prompts {where}: duplicate prompt for video {p.video_id!r} frame {p.frame_idx} "
                             f"obj {p.obj_id} (first at {seen[key]}); put all its points in one prompt")
        seen[key] = where
        out.setdefault(p.video_id, []).append(p)
    for v in out.values():
        v.sort(key=lambda p: (p.frame_idx, p.obj_id))
    return out


def load_prompts(source: str | bytes | os.PathLike) -> dict[str, list[Prompt]]:
    """Read and validate prompts (JSON Lines, JSON list or CSV; see module docstring)."""
    text, ext = _read_source(source)
    if ext == ".csv":
        items = _parse_csv(text)
    elif ext == ".jsonl":
        items = _parse_jsonl(text)
    elif ext == ".json":
        items = _parse_json(text)
    else:
        head = text.lstrip()
        if not head:
            return {}
        if head.startswith("["):
            items = _parse_json(text)
        elif head.startswith("{"):
            first = head.splitlines()[0].strip()
            try:
                json.loads(first)
                items = _parse_jsonl(text)
            except json.JSONDecodeError:
                items = _parse_json(text)  # a pretty-printed {"prompts": [...]} object
        else:
            items = _parse_csv(text)
    return parse_prompts(items)


# ---- naming a video by file name, URI or content SHA-256 ----------------------------------------

def video_key_of(d: dict) -> str:
    """The one video key a prompt or verdict row gives (``video_id``, ``video``, ``file_name``,
    ``source_uri`` or ``content_sha256``), or ValueError."""
    given = [k for k in VIDEO_KEY_FIELDS if d.get(k) not in (None, "")]
    if len(given) != 1:
        raise ValueError(f"name the video by exactly one of {list(VIDEO_KEY_FIELDS)}, got {given or 'none'}")
    key = d[given[0]]
    if not isinstance(key, str) or not key.strip():
        raise ValueError(f"{given[0]} must be a non-empty string")
    return key.strip()


def _match_levels(key: str) -> list:
    """Predicates over a videos row, tried in order: the first one that matches anything decides."""
    low = key.lower()
    name = posixpath.basename(key.rstrip("/"))
    return [
        lambda v: v.get("video_id") == key,
        lambda v: (v.get("content_sha256") or "").lower() == low,
        lambda v: key in (v.get("source_uri"), v.get("source_key")),
        lambda v: name and posixpath.basename(v.get("source_key") or v.get("source_uri") or "") == name,
    ]


def resolve_video(key: str, videos: list[dict]) -> tuple[str | None, list[str]]:
    """``(video_id, candidates)``: the one video ``key`` names among ``videos`` rows (its ``video_id``,
    content SHA-256, source URI / key, or file name, in that order of precedence), or ``(None, [])``
    when none matches, ``(None, [ids...])`` when several do."""
    for matches in _match_levels(key):
        ids = sorted({v["video_id"] for v in videos if matches(v)})
        if len(ids) == 1:
            return ids[0], ids
        if ids:
            return None, ids
    return None, []


@dataclass
class PromptResolution:
    by_video: dict[str, list[Prompt]] = field(default_factory=dict)   # video_id -> prompts, video_id set
    problems: list[dict] = field(default_factory=list)                # {key, error_class, message}
    elsewhere: list[str] = field(default_factory=list)               # keys of videos of other batches


def resolve_prompts(prompts: dict[str, list[Prompt]], batch_videos: list[dict],
                    lake_videos: list[dict] | None = None) -> PromptResolution:
    """Prompts keyed as written (``load_prompts``) keyed by the batch's ``video_id`` instead.

    A key naming no video of the batch is left alone when it names one of ``lake_videos`` (another
    batch's) and a problem (``unresolved_video``) when it names none; a key naming several videos of
    the batch is a problem too, and none of them gets its prompts. Two keys of one video (say its file
    name and its id) that prompt the same ``(frame_idx, obj_id)`` are a ``bad_prompt`` problem: the
    first key's prompt is kept."""
    out = PromptResolution()
    seen: dict[tuple, str] = {}
    for key in sorted(prompts):
        vid, cands = resolve_video(key, batch_videos)
        if vid is None and not cands:
            if resolve_video(key, lake_videos or [])[1]:
                out.elsewhere.append(key)
                continue
            out.problems.append({"key": key, "error_class": UNRESOLVED_VIDEO,
                                 "message": f"prompts name video {key!r}: no ingested video has this id, "
                                            "SHA-256, URI or file name"})
            continue
        if vid is None:
            out.problems.append({"key": key, "error_class": UNRESOLVED_VIDEO,
                                 "message": f"prompts name video {key!r}: ambiguous, {len(cands)} videos of the "
                                            f"batch match ({', '.join(cands[:5])}); name it by video_id or "
                                            "content_sha256"})
            continue
        for p in prompts[key]:
            k = (vid, p.frame_idx, p.obj_id)
            if k in seen:
                out.problems.append({"key": key, "video_id": vid, "error_class": BAD_PROMPT,
                                     "message": f"prompts {key!r} and {seen[k]!r} both prompt video {vid} frame "
                                                f"{p.frame_idx} obj {p.obj_id}; the one of {seen[k]!r} is kept"})
                continue
            seen[k] = key
            out.by_video.setdefault(vid, []).append(replace(p, video_id=vid))
    for v in out.by_video.values():
        v.sort(key=lambda p: (p.frame_idx, p.obj_id))
    return out


def problem_part(key: str) -> str:
    """The ``label_runs`` part name of a prompts problem (one per key, so a re-run replaces it)."""
    return f"_prompts.{sha256_text(key)[:16]}"


def resolve_batch_prompts(lake, batch_id: str, prompts: dict[str, list[Prompt]],
                          batch_videos: list[dict]) -> PromptResolution:
    """:func:`resolve_prompts` against the batch's videos (and the lake's ``videos`` for keys of other
    batches); each problem becomes a failed ``label_runs`` row (part ``_prompts.<digest of the key>``),
    and problem rows of an earlier run of the batch that are solved now are removed."""
    import datetime as dt

    from sav_assets.lib.store.tables import LABEL_RUNS, VIDEOS, to_table

    res = resolve_prompts(prompts, batch_videos, lake.read_table("videos", schema=VIDEOS).to_pylist())
    now = dt.datetime.now(dt.timezone.utc)
    parts = set()
    for p in res.problems:
        row = {"video_id": p.get("video_id"), "batch_id": batch_id, "status": "failed",
               "error_class": p["error_class"], "error_message": p["message"][:2000], "masklets": 0,
               "frames_labeled": 0, "finished_at": now}
        part = problem_part(p["key"])
        parts.add(part)
        lake.write_part("label_runs", batch_id, part, to_table([row], LABEL_RUNS))
    for name in lake.part_names("label_runs", batch_id):     # merged into a consolidated part too
        if name.startswith("_prompts.") and name not in parts:
            lake.clear_part("label_runs", batch_id, name, LABEL_RUNS)
    return res

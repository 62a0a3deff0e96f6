"""Filmstrips: what a labeled video's masklets look like, as small PNGs next to the exports.

For every video with masklets in a batch, :func:`write_filmstrips` writes
``exports/previews/<batch>/<video_id>.png``: ``STRIP_FRAMES`` (8) annotated frames evenly spread over
the video's annotated frames, one row per masklet type (manual, auto, prompted), the masks coloured by
masklet id (:func:`sav_assets.lib.label.overlay.color_for`) and a legend line per masklet: type, id and
QC verdict (``not checked yet`` before ``masklet_qc`` has run; ``passed`` / ``FAILED <reasons>``
after). Given QC rows it also writes, for every failing masklet, its own strip
``exports/review/<batch>/<video_id>.<type>.<masklet_id>.png`` (that masklet alone, on frames where it
is visible) and removes review strips of earlier runs of the batch.

Cheap by construction: only the frames shown are decoded, already downscaled to ``width`` px
(``thumb_width``) by the decoder, in the sandboxed decoder (:func:`sav_assets.lib.video.decode.iter_frame_chunks`
with ``isolate=True``); one decode per video covers the preview and its review strips. A video that
cannot be opened or decoded gets no strip: its ``error_class: message`` is in ``Filmstrips.failed``
(the run goes on). Frames are the masklet rows' ``frame_idx`` in the source video's numbering.
"""

from __future__ import annotations

import posixpath
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from sav_assets.lib.store.lake import Lake
from sav_assets.lib.store.source import SourceOpener
from sav_assets.lib.video.errors import UNREADABLE, VideoError

STRIP_FRAMES = 8
THUMB_WIDTH = 128
PENDING = "not checked yet"
TYPE_ORDER = ("manual", "auto", "prompted")


@dataclass
class Filmstrips:
    previews: dict[str, str] = field(default_factory=dict)    # video_id -> lake-relative PNG path
    review: list[str] = field(default_factory=list)           # lake-relative PNG paths of failing masklets
    failed: dict[str, str] = field(default_factory=dict)      # video_id -> "error_class: message"
    pngs: list[tuple[str, bytes]] = field(default_factory=list)  # (video_id, preview PNG), first few only


def preview_path(batch_id: str, video_id: str) -> str:
    return f"exports/previews/{batch_id}/{video_id}.png"


def review_path(batch_id: str, video_id: str, masklet_type: str, masklet_id: int) -> str:
    return f"exports/review/{batch_id}/{video_id}.{masklet_type}.{int(masklet_id)}.png"


def pick_frames(frame_idxs: Iterable[int], n: int = STRIP_FRAMES) -> list[int]:
    """``n`` of the distinct frame numbers, evenly spread (first and last included)."""
    from sav_assets.lib.video.sample import evenly_spaced

    u = sorted({int(i) for i in frame_idxs})
    return [u[k] for k in evenly_spaced(len(u), n)]


def verdict(qc: dict | None) -> str:
    if qc is None:
        return PENDING
    return "passed" if qc["passed"] else "FAILED " + ",".join(qc.get("reasons") or [])


def _key(r: dict) -> tuple[str, int]:
    return r["masklet_type"], int(r["masklet_id"])


def _type_rank(t: str) -> tuple[int, str]:
    return (TYPE_ORDER.index(t) if t in TYPE_ORDER else len(TYPE_ORDER), t)


def legend_lines(keys: Iterable[tuple[str, int]], qc: dict[tuple[str, int], dict]) -> list[tuple[int, str]]:
    """One ``(masklet id, "type #id: verdict")`` line per masklet, types in TYPE_ORDER, ids ascending."""
    ks = sorted(set(keys), key=lambda k: (_type_rank(k[0]), k[1]))
    return [(mid, f"{t} #{mid}: {verdict(qc.get((t, mid)))}") for t, mid in ks]


def _rows(frames: list[dict], shown: list[int], only: tuple[str, int] | None = None) -> list[tuple[str, list]]:
    """Per masklet type, per shown frame: the ``(id, rle)`` pairs of visible masks."""
    from sav_assets.lib.sav import rle

    col = {f: k for k, f in enumerate(shown)}
    by_type: dict[str, list[list]] = {}
    for r in frames:
        if only is not None and _key(r) != only:
            continue
        cells = by_type.setdefault(r["masklet_type"], [[] for _ in shown])
        if r["visible"] and int(r["frame_idx"]) in col:
            cells[col[int(r["frame_idx"])]].append((int(r["masklet_id"]), rle.from_row(r)))
    return [(t, by_type[t]) for t in sorted(by_type, key=_type_rank)]


def render_video_strip(video_id: str, thumbs: dict[int, np.ndarray], shown: list[int], frames: list[dict],
                       qc: dict[tuple[str, int], dict], only: tuple[str, int] | None = None) -> bytes:
    """The PNG of one video (every masklet) or, with ``only``, of one masklet."""
    from sav_assets.lib.label.overlay import render_filmstrip

    keys = [only] if only else [_key(r) for r in frames]
    title = video_id if only is None else f"{video_id}  {only[0]} #{only[1]}: {verdict(qc.get(only))}"
    return render_filmstrip([thumbs[f] for f in shown], [f"f{f}" for f in shown], _rows(frames, shown, only),
                            legend_lines(keys, qc), title=title)


def _decode(opener: SourceOpener, video: dict, idx: list[int], width: int, timeout_s: float) -> dict[int, np.ndarray]:
    """``{frame number: thumbnail}`` through the sandboxed decoder; open/decode failures are VideoError."""
    from sav_assets.lib.video.decode import iter_frame_chunks

    h, w = int(video.get("video_height") or 0), int(video.get("video_width") or 0)
    size = (max(2, round(h * width / w)), int(width)) if h and w else None
    out: dict[int, np.ndarray] = {}
    try:
        with opener.local_path(video["source_uri"]) as path:
            with open(path, "rb"):
                pass
            for chunk in iter_frame_chunks(path, idx, len(idx), size=size, isolate=True, timeout_s=timeout_s):
                out.update(zip(chunk.indices, chunk.frames))
    except OSError as e:
        raise VideoError(UNREADABLE, f"cannot open {video['source_uri']}: {type(e).__name__}: {e}") from e
    return out


def _failing(frames: list[dict], qc: dict[tuple[str, int], dict]) -> dict[tuple[str, int], list[int]]:
    """Failing masklets of the video -> the frames of their strip (visible ones, else all)."""
    vis: dict[tuple[str, int], list[int]] = defaultdict(list)
    every: dict[tuple[str, int], list[int]] = defaultdict(list)
    for r in frames:
        k = _key(r)
        if k in qc and not qc[k]["passed"]:
            every[k].append(int(r["frame_idx"]))
            if r["visible"]:
                vis[k].append(int(r["frame_idx"]))
    return {k: pick_frames(vis.get(k) or every[k]) for k in every}


def write_filmstrips(lake: Lake, batch_id: str, videos: list[dict], frames: list[dict],
                     qc_rows: list[dict] | None = None, opener: SourceOpener | None = None, *,
                     thumb_width: int = THUMB_WIDTH, keep_pngs: int = 3, timeout_s: float = 120.0) -> Filmstrips:
    """Write the batch's preview strips (and, with ``qc_rows``, the review strips of failing masklets).

    ``videos``: ``videos`` rows (``video_id``, ``source_uri``, ``video_height``/``video_width``);
    ``frames``: the batch's ``masklet_frames`` rows. Videos without masklet frames get no strip."""
    opener = opener or SourceOpener()
    qc = {(r["video_id"], *_key(r)): r for r in qc_rows or []}
    by_video: dict[str, list[dict]] = defaultdict(list)
    for r in frames:
        by_video[r["video_id"]].append(r)
    out = Filmstrips()
    if qc_rows is not None:
        prefix = f"exports/review/{batch_id}/"
        for rel in lake.list(prefix):
            if rel.endswith(".png"):
                lake.delete(rel)
    for video in sorted(videos, key=lambda v: v["video_id"]):
        vid = video["video_id"]
        if not by_video.get(vid):
            continue
        _write_video(lake, batch_id, video, by_video[vid], {k[1:]: r for k, r in qc.items() if k[0] == vid},
                     opener, out, thumb_width, keep_pngs, timeout_s)
    return out


def _write_video(lake: Lake, batch_id: str, video: dict, frames: list[dict], qc: dict, opener: SourceOpener,
                 out: Filmstrips, thumb_width: int, keep_pngs: int, timeout_s: float) -> None:
    vid = video["video_id"]
    shown = pick_frames(r["frame_idx"] for r in frames)
    failing = _failing(frames, qc)
    idx = sorted(set(shown).union(*failing.values()))
    try:
        thumbs = _decode(opener, video, idx, thumb_width, timeout_s)
    except VideoError as e:
        out.failed[vid] = f"{e.error_class}: {e.message}"
        return
    png = render_video_strip(vid, thumbs, shown, frames, qc)
    rel = preview_path(batch_id, vid)
    lake.put_bytes(rel, png, "image/png")
    out.previews[vid] = rel
    if len(out.pngs) < keep_pngs:
        out.pngs.append((vid, png))
    for key, fidx in sorted(failing.items(), key=lambda kv: (_type_rank(kv[0][0]), kv[0][1])):
        rel = review_path(batch_id, vid, *key)
        lake.put_bytes(rel, render_video_strip(vid, thumbs, fidx, frames, qc, only=key), "image/png")
        out.review.append(rel)


def metadata_markdown(pngs: list[tuple[str, bytes]], max_width: int = 768) -> str:
    """Markdown with the strips embedded as base64 PNGs (reduced to a 256-colour palette, at most
    ``max_width`` px wide) for Dagster asset metadata."""
    import base64
    import io

    from PIL import Image

    parts = []
    for vid, png in pngs:
        with Image.open(io.BytesIO(png)) as im:
            im = im.convert("RGB")
            if im.width > max_width:
                im = im.resize((max_width, max(1, round(im.height * max_width / im.width))), Image.LANCZOS)
            buf = io.BytesIO()
            im.quantize(256).save(buf, format="PNG", optimize=True)
        b64 = base64.b64encode(buf.getvalue()).decode()
        parts.append(f"**{vid}**\n\n![{posixpath.basename(vid)}](data:image/png;base64,{b64})")
    return "\n\n".join(parts)

"""Corrections: a reviewer's click on frame t re-propagates one masklet from t on, as in SAM 2's demo.

A correction is a row of a reviews file (``<root>/reviews/*.jsonl|json|csv``, beside the verdicts, or
written by ``sav-assets review correct``) with ``"kind": "correction"``::

    {"kind": "correction", "video": "Street Cam.mp4", "masklet_type": "auto", "masklet_id": 3,
     "frame_idx": 16, "points": [[80, 50], [20, 20]], "labels": [1, 0], "box": null,
     "reviewer": "ana", "note": "leaks", "corrected_at": "2025-01-31T10:00:00Z"}

The video is named as a verdict's is (``video_id``, ``video``, ``file_name``, ``source_uri`` or
``content_sha256``; :func:`sav_assets.lib.label.prompts.resolve_video`). ``frame_idx`` is a source
frame of the video's annotation grid (a ``masklet_frames.frame_idx``); points and box are in video
pixels. ``masklet_id`` null is a new object (a ``prompted`` masklet with the next free id, empty
before t, ``source = 'sam2_correction'``).

:func:`apply_corrections` (run by the ``masklets`` step after labeling) applies, per labeled video of
the batch, every correction not applied to its current labeling yet: SAM 2 starts from the masklet's
stored mask on its last visible annotated frame before t (at most ``max_memory_frames`` back), tracks
up to t (the object's memory), adds the clicks on t as a correction of the tracked prediction
(:meth:`Tracker.correct`, SAM2VideoPredictor's behaviour for clicks on a tracked frame) and tracks on
to the end. Rows before t, and every other masklet's rows, are written back unchanged; the masklet
keeps its id and ``label_key``; ``masklet_edited_frame_count`` is, as SA-V defines it, the number of
frames annotators edited: the distinct corrected frames (SAM 2's own masklets start at 0).

Writes follow the labeling's per-video protocol (:mod:`sav_assets.lib.label.batch`): the video's
``masklets`` / ``masklet_frames`` parts are replaced, then its ``masklet_edits`` part (who, when,
frame, prompt, old/new area on t, frames changed) is written last and is the commit marker. A
correction is keyed by a digest of its content and applied once per ``label_key``: a re-run skips it;
a relabel (another model) applies it again to the new masks. Re-applying after a crash between the
two writes gives the same masks (rows before t are unchanged and SAM 2 is deterministic) and the
same edited count (a set of frames); an object a correction created but no ``masklet_edits`` row
names (the crash left it uncommitted) is dropped before the re-apply creates it again, so a new
object is never there twice.

A correction that cannot be applied is a ``masklet_edits`` row with ``status = 'error'``, once per
error: ``bad_correction`` (malformed, no such masklet, an imported masklet, frame out of range or not
annotated, a point or box outside the frame) or ``unresolved_video``; the other corrections go on.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from sav_assets.lib.label.prompts import resolve_video, validate_prompt
from sav_assets.lib.store.lake import Lake
from sav_assets.lib.store.tables import MASKLET_EDITS, to_table
from sav_assets.lib.util import sha256_json
from sav_assets.lib.video.errors import BAD_CORRECTION, UNRESOLVED_VIDEO, VideoError

KIND = "correction"
_FIELDS = {"kind", "video_id", "video", "file_name", "source_uri", "content_sha256", "masklet_type",
           "masklet_id", "frame_idx", "points", "labels", "box", "reviewer", "note", "corrected_at"}
SAM2_TYPES = ("auto", "prompted")       # masklets SAM 2 made (part <video_id>.sam2); imports are not re-tracked
SOURCE = "sam2_correction"              # masklets.source of an object a correction created


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def is_correction(d: object) -> bool:
    return isinstance(d, dict) and d.get("kind") == KIND


def correction_row(video: str, masklet_id: int | None, frame_idx: int, *, points=None, labels=None, box=None,
                   masklet_type: str = "auto", reviewer: str | None = None, note: str | None = None,
                   when: dt.datetime | None = None) -> dict:
    """One correction as written to a reviews file (``video``: id, file name, URI or SHA-256)."""
    return {"kind": KIND, "video": video, "masklet_type": masklet_type if masklet_id is not None else "prompted",
            "masklet_id": None if masklet_id is None else int(masklet_id), "frame_idx": int(frame_idx),
            "points": points, "labels": labels, "box": box, "reviewer": reviewer, "note": note,
            "corrected_at": (when or _now()).isoformat()}


@dataclass
class CorrectionSummary:
    applied: int = 0
    errors: list[dict] = field(default_factory=list)       # error rows written by this call
    videos: list[str] = field(default_factory=list)        # videos whose masks changed
    masklets: list[tuple] = field(default_factory=list)    # (video_id, masklet_type, masklet_id) re-propagated


def _parse(rel: str, line: int, raw: dict) -> dict:
    """The correction's fields (``prompt``: a validated Prompt), or ValueError saying what is wrong."""
    unknown = set(raw) - _FIELDS
    if unknown:
        raise ValueError(f"unknown fields {sorted(unknown)}")
    mid = raw.get("masklet_id")
    d = {k: raw.get(k) for k in ("video_id", "video", "file_name", "source_uri", "content_sha256", "points",
                                  "labels", "box", "frame_idx")}
    prompt = validate_prompt({**{k: v for k, v in d.items() if v is not None}, "obj_id": 0 if mid is None else mid})
    when = raw.get("corrected_at")
    if when:
        when = dt.datetime.fromisoformat(str(when).replace("Z", "+00:00"))
        when = when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)
    return {"correction_id": sha256_json(raw)[:32], "video_key": prompt.video_id,
            "masklet_type": "prompted" if mid is None else str(raw.get("masklet_type") or "auto"),
            "masklet_id": None if mid is None else prompt.obj_id, "frame_idx": prompt.frame_idx, "prompt": prompt,
            "prompt_json": json.dumps({"points": prompt.points, "labels": prompt.labels, "box": prompt.box}),
            "reviewer": raw.get("reviewer"), "note": raw.get("note"), "corrected_at": when or None,
            "source_file": rel, "source_line": line}


def _error(c: dict, error_class: str, message: str) -> dict:
    where = f"{c['source_file']} line {c['source_line']}"
    keep = {k: v for k, v in c.items() if k in MASKLET_EDITS.names}
    return {**keep, "status": "error", "error_class": error_class, "error_message": f"{where}: {message}"[:2000]}


def apply_corrections(lake: Lake, batch_id: str, videos: list[dict], items: Iterable[tuple[str, int, object]],
                      load_model: Callable[[], object], cfg, *, all_videos: list[dict] | None = None,
                      opener=None, log: Callable[[str], None] = print) -> CorrectionSummary:
    """Apply the corrections among ``items`` (``(file, line, row)`` of the reviews files) that name a
    video of this batch (``videos``), resolved among ``all_videos`` (default: ``videos``)."""
    items = [(rel, line, raw) for rel, line, raw in items if is_correction(raw)]
    if not items:                    # the usual run: no correction pending, nothing to read
        return CorrectionSummary()
    now = _now()
    done = lake.read_table("masklet_edits", schema=MASKLET_EDITS).to_pylist()
    state = _State(applied={(r["correction_id"], r["label_key"]) for r in done if r["status"] == "applied"},
                   seen={(r["correction_id"], r["error_class"]) for r in done if r["status"] == "error"},
                   edited=done, now=now)
    in_batch = {v["video_id"]: v for v in videos}
    by_video: dict[str, list[dict]] = {}
    for rel, line, raw in items:
        base = {"correction_id": sha256_json(raw)[:32], "source_file": rel, "source_line": line}
        try:
            c = _parse(rel, line, raw)
        except (ValueError, TypeError) as e:
            state.error(_error(base, BAD_CORRECTION, str(e)))
            continue
        vid, cands = resolve_video(c["video_key"], all_videos if all_videos is not None else videos)
        if vid is None:
            why = f"ambiguous, matches {', '.join(cands[:5])}" if cands else "no ingested video has this id, SHA-256, URI or file name"
            state.error(_error(c, UNRESOLVED_VIDEO, f"video {c['video_key']!r}: {why}"))
        elif vid in in_batch:
            by_video.setdefault(vid, []).append({**c, "video_id": vid})
    summary = CorrectionSummary()
    for vid in sorted(by_video):
        rows = correct_video(lake, batch_id, in_batch[vid], by_video[vid], load_model, cfg, state, opener)
        if rows:
            summary.applied += len(rows)
            summary.videos.append(vid)
            summary.masklets += sorted({(vid, r["masklet_type"], r["masklet_id"]) for r in rows})
            log(f"{vid}: {len(rows)} correction(s) applied")
    if state.errors:
        for r in state.errors:
            r.setdefault("batch_id", batch_id)
            r["applied_at"] = now
        part = "errors." + sha256_json(sorted((r["correction_id"], r["error_class"]) for r in state.errors))[:16]
        lake.write_part("masklet_edits", batch_id, part, to_table(state.errors, MASKLET_EDITS))
        for r in state.errors:
            log(f"correction refused ({r['error_class']}): {r['error_message']}")
    summary.errors = state.errors
    return summary


@dataclass
class _State:
    """What earlier runs recorded, and the error rows of this one."""

    applied: set
    seen: set
    edited: list[dict]
    now: dt.datetime
    errors: list[dict] = field(default_factory=list)

    def error(self, row: dict) -> None:
        if (row["correction_id"], row["error_class"]) not in self.seen:
            self.seen.add((row["correction_id"], row["error_class"]))
            self.errors.append(row)

    def edited_frames(self, vid: str, mtype: str, mid: int, key: str) -> set[int]:
        return {int(r["frame_idx"]) for r in self.edited if r["status"] == "applied" and r["video_id"] == vid
                and r["masklet_type"] == mtype and r["masklet_id"] == mid and r["label_key"] == key}


def check(c: dict, masklets: dict, grid: list[int], n_frames: int, hw: tuple[int, int]) -> str | None:
    """Why the correction does not fit the labeled video, or None."""
    t, (H, W) = c["frame_idx"], hw
    if c["masklet_id"] is not None:
        key = (c["masklet_type"], c["masklet_id"])
        if c["masklet_type"] not in SAM2_TYPES:
            return f"{c['masklet_type']} masklets are imported, not tracked by SAM 2; only {list(SAM2_TYPES)} are corrected"
        if key not in masklets:
            return f"video {c['video_id']} has no {c['masklet_type']} masklet {c['masklet_id']}"
    if t >= n_frames:
        return f"frame {t} is out of range (the video has {n_frames} frames)"
    if t not in grid:
        near = sorted(grid, key=lambda g: abs(g - t))[:2]
        return f"frame {t} is not an annotated frame (nearest: {sorted(near)})"
    p = c["prompt"]
    for q in p.points or []:
        if not (0 <= q[0] < W and 0 <= q[1] < H):
            return f"point {q} is outside the {W}x{H} frame"
    if p.box and (p.box[2] > W or p.box[3] > H):
        return f"box {p.box} is outside the {W}x{H} frame"
    return None


def correction_problem(raw: dict, video_id: str, masklets, grid: list[int], n_frames: int,
                       hw: tuple[int, int]) -> str | None:
    """What the next run would refuse in the correction row ``raw`` for video ``video_id`` (its
    ``(masklet_type, masklet_id)`` keys, annotation grid, frame count and ``(H, W)``), or None: the
    checks ``sav-assets review correct`` runs before writing anything."""
    try:
        c = _parse("", 0, raw)
    except (ValueError, TypeError) as e:
        return str(e)
    return check({**c, "video_id": video_id}, set(masklets), grid, n_frames, hw)


def correct_video(lake: Lake, batch_id: str, video: dict, corrections: list[dict], load_model, cfg, state: _State,
                  opener=None) -> list[dict]:
    """Apply one video's pending corrections (see the module docstring); returns their ``masklet_edits``
    rows. A video not labeled yet in this batch is left for a later run."""
    from sav_assets.lib.label.batch import _existing_run, _local_video, _write_video_parts
    from sav_assets.lib.label.config import LabelingFailed
    from sav_assets.lib.store.source import SourceOpener

    vid = video["video_id"]
    run = _existing_run(lake, batch_id, vid)
    if not run or run.get("status") != "labeled":
        return []
    key = run["label_key"]
    pending = sorted((c for c in corrections if (c["correction_id"], key) not in state.applied),
                     key=lambda c: (c["frame_idx"], str(c["corrected_at"] or ""), c["correction_id"]))
    if not pending:
        return []
    part = f"{vid}.sam2"
    masklets = {(m["masklet_type"], m["masklet_id"]): m for m in lake.part_rows("masklets", batch_id, part).to_pylist()}
    frames: dict[tuple, list[dict]] = {}
    for f in sorted(lake.part_rows("masklet_frames", batch_id, part).to_pylist(), key=lambda f: f["ann_idx"]):
        frames.setdefault((f["masklet_type"], f["masklet_id"]), []).append(f)
    orphans = _drop_uncommitted_objects(vid, key, masklets, frames, state)
    rows: list[dict] = []
    try:
        with _local_video(opener or SourceOpener(), video["source_uri"]) as path:
            job = _Retrack(load_model, cfg, path, video)
            for c in pending:
                why = check(c, masklets, job.grid, job.n_frames, job.hw)
                if why:
                    state.error(_error(c, BAD_CORRECTION, why))
                    continue
                rows.append(job.apply(c, masklets, frames, key, state))
    except (LabelingFailed, VideoError) as e:
        for c in pending:
            state.error(_error(c, e.error_class, f"video {vid}: {e}"))
        return []
    if rows or orphans:
        _write_video_parts(lake, batch_id, vid, "sam2", [masklets[k] for k in sorted(masklets)],
                           [f for k in sorted(frames) for f in frames[k]], None)
    if rows:
        for r in rows:
            r.update(batch_id=batch_id, applied_at=state.now, status="applied", label_key=key)
        name = f"{vid}.edits." + sha256_json(sorted(r["correction_id"] for r in rows) + [key])[:16]
        lake.write_part("masklet_edits", batch_id, name, to_table(rows, MASKLET_EDITS))   # commit marker, last
    return rows


def _drop_uncommitted_objects(vid: str, key: str, masklets: dict, frames: dict, state: _State) -> list[tuple]:
    """Remove (from ``masklets`` / ``frames``) the objects a correction created whose ``masklet_edits``
    row was never written (a crash between the two writes): re-applying that correction creates its
    object again, so it is never there twice. Returns their keys."""
    made = {(r["masklet_type"], r["masklet_id"]) for r in state.edited if r["status"] == "applied"
            and r["video_id"] == vid and r["label_key"] == key and r.get("old_area") is None}
    orphans = [k for k, m in masklets.items() if m.get("source") == SOURCE and k not in made]
    for k in orphans:
        del masklets[k]
        frames.pop(k, None)
    return orphans


class _Retrack:
    """One video's annotation grid and the SAM 2 re-propagation of one masklet from a corrected frame."""

    def __init__(self, load_model, cfg, path: str, video: dict):
        from sav_assets.lib.sav.fields import annotation_grid, annotation_times
        from sav_assets.lib.video.decode import presentation_times

        self.load_model, self.cfg, self.path, self.loaded = load_model, cfg, path, None
        self.n_frames = int(video.get("video_frame_count") or 0)
        fps = float(video.get("video_fps") or 0.0)
        pts = presentation_times(path, isolate=cfg.isolate_decode) if self.n_frames > 0 else None
        self.grid = annotation_grid(self.n_frames, fps, cfg.target_fps, pts)
        self.times = annotation_times(self.n_frames, fps, cfg.target_fps, pts)
        self.hw = (int(video["video_height"]), int(video["video_width"]))

    def apply(self, c: dict, masklets: dict, frames: dict, key: str, state: _State) -> dict:
        """Re-track ``c``'s masklet from its frame; updates ``masklets`` / ``frames``; returns its edit row."""
        from sav_assets.lib.sav import fields as masklet_fields

        a_t = self.grid.index(c["frame_idx"])
        mk = (c["masklet_type"], c["masklet_id"])
        if c["masklet_id"] is None:
            mk = ("prompted", 1 + max((k[1] for k in masklets), default=-1))
            masklets[mk], frames[mk] = self._new_masklet(mk, c["video_id"], key), self._empty_frames(mk, c["video_id"])
        old = frames[mk]
        recs = self._track(old, a_t, mk[1], c["prompt"])
        new = [dict(f) for f in old]
        for a, r in recs.items():
            new[a].update(counts=r.counts, area=int(r.area), bbox=list(r.bbox), visible=r.visible,
                          predicted_iou=r.predicted_iou, stability_score=r.stability_score)
        changed = sum(1 for x, y in zip(old, new) if x != y)
        frames[mk] = new
        H, W = new[0]["size"] if new else self.hw
        stabs = [f["stability_score"] for f in new if f["visible"] and f["stability_score"] is not None]
        edited = state.edited_frames(c["video_id"], mk[0], mk[1], key) | {c["frame_idx"]}
        state.edited.append({"status": "applied", "video_id": c["video_id"], "masklet_type": mk[0],
                             "masklet_id": mk[1], "label_key": key, "frame_idx": c["frame_idx"],
                             "old_area": None if c["masklet_id"] is None else old[a_t]["area"]})
        masklets[mk].update(**masklet_fields.derive([f["area"] for f in new], H, W),
                            masklet_edited_frame_count=len(edited), masklet_cycle_iou=None,
                            masklet_stability_mean=sum(stabs) / len(stabs) if stabs else None,
                            masklet_stability_min=min(stabs) if stabs else None)
        row = {k: v for k, v in c.items() if k in MASKLET_EDITS.names}
        row.update(masklet_type=mk[0], masklet_id=mk[1], ann_idx=a_t, frames_changed=changed,
                   old_area=None if c["masklet_id"] is None else int(old[a_t]["area"]), new_area=int(new[a_t]["area"]),
                   corrected_at=c["corrected_at"] or state.now)
        return row

    def _new_masklet(self, mk: tuple, vid: str, key: str) -> dict:
        loaded = self._model()
        return {"video_id": vid, "masklet_id": mk[1], "masklet_type": mk[0], "source": SOURCE,
                "model_name": loaded.model_name, "checkpoint_sha256": loaded.checkpoint_sha256,
                "config_sha256": loaded.config_sha256, "random_weights": bool(loaded.random_weights),
                "label_key": key, "sav_fields_json": None}

    def _empty_frames(self, mk: tuple, vid: str) -> list[dict]:
        from sav_assets.lib.sav import rle

        H, W = self.hw
        counts = rle.empty(H, W)["counts"]
        return [{"video_id": vid, "masklet_id": mk[1], "masklet_type": mk[0], "ann_idx": a, "frame_idx": int(g),
                 "timestamp_s": float(self.times[a]), "size": [H, W], "counts": counts, "area": 0,
                 "bbox": [0.0, 0.0, 0.0, 0.0], "visible": False, "predicted_iou": None, "stability_score": None}
                for a, g in enumerate(self.grid)]

    def _model(self):
        if self.loaded is None:
            self.loaded = self.load_model()
        return self.loaded

    def _track(self, old: list[dict], a_t: int, mid: int, prompt) -> dict:
        """FrameRecords of annotated frames ``a_t..`` after the click (see the module docstring)."""
        import torch

        from sav_assets.lib.label.planning import point_inputs
        from sav_assets.lib.label.records import FrameRecord
        from sav_assets.lib.label.tracker import Tracker, to_video_res
        from sav_assets.lib.sav import rle
        from sav_assets.lib.video.decode import iter_frame_chunks

        loaded, cfg = self._model(), self.cfg
        back = range(a_t - 1, max(-1, a_t - 1 - int(cfg.max_memory_frames)), -1)
        a_s = next((a for a in back if old[a]["area"] > 0), a_t)
        tracker = Tracker(loaded, len(self.grid), offload_state=cfg.offload_state_to_cpu,
                          max_memory_frames=cfg.max_memory_frames)
        out = {}
        chunks = iter_frame_chunks(self.path, self.grid[a_s:], cfg.chunk_frames, isolate=cfg.isolate_decode,
                                   timeout_s=cfg.decode_timeout_s)
        with torch.inference_mode(), loaded.autocast():
            for chunk in chunks:
                for j in range(len(chunk.indices)):
                    a, frame = a_s + chunk.start + j, chunk.frames[j]
                    bb = tracker.backbone(frame)
                    if a < a_t and not tracker.cohorts:     # the object's stored mask before t: its memory
                        tracker.add_masks(a, bb, rle.decode(rle.from_row(old[a]))[None], [mid])
                        continue
                    per = tracker.track(a, bb) if tracker.cohorts else {}
                    if a == a_t:
                        H, W = self.hw
                        pin = point_inputs(prompt, H, W, int(loaded.image_size), loaded.model.device)
                        per[mid] = (tracker.correct(a, bb, mid, pin) if tracker.cohorts
                                    else tracker.add_points(a, bb, [(mid, pin)])[mid])
                    if a >= a_t:
                        masks, stab, ious = to_video_res(per, [mid], frame.shape[:2])
                        (enc,) = rle.encode_many_wh(masks)
                        out[a] = FrameRecord.from_encoding(enc, ious[0], stab[0])
        return out

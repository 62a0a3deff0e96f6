"""What the labeler records per masklet and annotated frame, and the table rows it becomes.

A :class:`FrameRecord` is one masklet on one annotated frame (the RLE ``counts`` at video
resolution, area, bbox, SAM 2's predicted IoU and stability). :class:`MaskletRecords` holds them for
a video (``None`` before a masklet's first frame) with each masklet's type and creation frame;
:func:`rows` turns them into ``masklets`` / ``masklet_frames`` rows (``tables.MASKLETS`` /
``tables.MASKLET_FRAMES`` columns minus ``batch_id`` / ``created_at``), SA-V fields derived by
:func:`sav_assets.lib.sav.fields.derive`.

:class:`RecordWriter` applies the driver's record updates in order on one worker thread behind a
bounded queue, so that copying masks to the host and RLE-encoding them stay off the tracking loop
(the queue's bound keeps at most ``depth`` frames of masks in flight).
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from sav_assets.lib.sav import fields as masklet_fields
from sav_assets.lib.sav import rle


def _nan_to_none(v) -> float | None:
    if v is None:
        return None
    v = float(v)
    return None if math.isnan(v) else v


@dataclass(frozen=True)
class FrameRecord:
    """One masklet on one annotated frame."""

    counts: str                    # COCO RLE counts at video resolution
    area: int
    bbox: list[float]              # [x, y, w, h]
    predicted_iou: float | None
    stability_score: float | None  # None when the masklet is not visible

    @property
    def visible(self) -> bool:
        return self.area > 0

    @classmethod
    def from_encoding(cls, enc: tuple[dict, int, list[float]], predicted_iou, stability) -> FrameRecord:
        """From an ``(rle, area, bbox)`` triple (:func:`sav_assets.lib.sav.rle.encode_many_wh`) and scores."""
        r, area, box = enc
        return cls(r["counts"], area, box, _nan_to_none(predicted_iou),
                   _nan_to_none(stability) if area > 0 else None)


class MaskletRecords:
    """Per-masklet, per-annotated-frame :class:`FrameRecord` s of one video (``T`` annotated frames)."""

    def __init__(self, T: int):
        self.T = T
        self.rec: dict[int, list[FrameRecord | None]] = {}
        self.kind: dict[int, str] = {}
        self.created: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self.rec)

    def new(self, mid: int, kind: str, a: int) -> None:
        self.rec[mid] = [None] * self.T
        self.kind[mid] = kind
        self.created[mid] = a

    def put(self, mid: int, a: int, enc: tuple[dict, int, list[float]], predicted_iou, stability) -> None:
        self.rec[mid][a] = FrameRecord.from_encoding(enc, predicted_iou, stability)

    def visible_at(self, a: int) -> list[int]:
        """Masklets visible on annotated frame ``a``, in creation order."""
        return [mid for mid, rs in self.rec.items() if rs[a] is not None and rs[a].visible]

    def rle(self, mid: int, a: int, hw: tuple[int, int]) -> dict:
        """The masklet's RLE on annotated frame ``a`` (empty before it exists)."""
        r = self.rec[mid][a]
        return rle.empty(*hw) if r is None else {"size": list(hw), "counts": r.counts}


def rows(video_id: str, grid: list[int], recs: MaskletRecords, hw: tuple[int, int], loaded, key: str,
         cycle: dict[int, float | None], times: list[float] | None = None) -> tuple[list[dict], list[dict]]:
    """``masklets`` and ``masklet_frames`` rows, masklets by id, every annotated frame per masklet.

    ``grid[a]`` is annotated frame ``a``'s source frame index and ``times[a]`` its ``timestamp_s``
    (:func:`sav_assets.lib.sav.fields.annotation_grid` / ``annotation_times``)."""
    H, W = hw
    empty = FrameRecord(rle.empty(H, W)["counts"], 0, [0.0, 0.0, 0.0, 0.0], None, None)
    masklets, frames = [], []
    for mid in sorted(recs.rec):
        kind = recs.kind[mid]
        rs = [r if r is not None else empty for r in recs.rec[mid]]
        stabs = [r.stability_score for r in rs if r.visible and r.stability_score is not None]
        masklets.append({
            "video_id": video_id,
            "masklet_id": int(mid),
            "masklet_type": kind,
            **masklet_fields.derive([r.area for r in rs], H, W),
            "masklet_edited_frame_count": 0,
            "masklet_stability_mean": float(np.mean(stabs)) if stabs else None,
            "masklet_stability_min": float(np.min(stabs)) if stabs else None,
            "source": "sam2_auto" if kind == "auto" else "sam2_prompted",
            "model_name": loaded.model_name,
            "checkpoint_sha256": loaded.checkpoint_sha256,
            "config_sha256": loaded.config_sha256,
            "random_weights": bool(loaded.random_weights),
            "label_key": key,
            "masklet_cycle_iou": cycle.get(mid),
            "sav_fields_json": None,
        })
        for a, r in enumerate(rs):
            frames.append({
                "video_id": video_id, "masklet_id": int(mid), "masklet_type": kind, "ann_idx": a,
                "frame_idx": int(grid[a]), "timestamp_s": None if times is None else float(times[a]),
                "size": [H, W], "counts": r.counts, "area": int(r.area),
                "bbox": list(r.bbox), "visible": r.visible, "predicted_iou": r.predicted_iou,
                "stability_score": r.stability_score,
            })
    return masklets, frames


class RecordWriter:
    """Runs ``submit``-ted callables in order on one worker thread (a bounded queue of ``depth``).

    Everything that changes the :class:`MaskletRecords` goes through it, so the records have one
    writer. An exception in the worker (a bug: it fails loudly) is raised again by the next
    :meth:`submit` or by :meth:`close`. ``wait_s`` is the time the driver spent blocked on a full
    queue; with ``depth`` 0 everything runs inline on the caller's thread.
    """

    def __init__(self, depth: int = 4, init: Callable[[], object] | None = None):
        self.depth, self.wait_s = int(depth), 0.0
        self._error: BaseException | None = None
        self._thread = None
        if self.depth > 0:
            self._q: queue.Queue = queue.Queue(maxsize=self.depth)
            self._thread = threading.Thread(target=self._loop, args=(init,), name="sav-record-writer",
                                            daemon=True)
            self._thread.start()

    def _loop(self, init) -> None:
        ctx = init() if init is not None else None
        if ctx is not None:
            ctx.__enter__()
        try:
            while True:
                fn = self._q.get()
                if fn is None:
                    return
                if self._error is None:
                    try:
                        fn()
                    except BaseException as e:  # noqa: BLE001 - re-raised on the driver's thread
                        self._error = e
        finally:
            if ctx is not None:
                ctx.__exit__(None, None, None)

    def _raise(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            raise err

    def submit(self, fn: Callable[[], None]) -> None:
        self._raise()
        if self._thread is None:
            fn()
            return
        t0 = time.perf_counter()
        self._q.put(fn)
        self.wait_s += time.perf_counter() - t0

    def close(self, *, raise_error: bool = True) -> None:
        """Wait for everything submitted; raise the worker's exception, if any (unless the caller is
        already failing: ``raise_error=False``)."""
        if self._thread is not None:
            self._q.put(None)
            self._thread.join()
            self._thread = None
        if raise_error:
            self._raise()

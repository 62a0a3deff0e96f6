"""Prompt planning: which prompted objects start or get corrected on which annotated frame.

:func:`plan_prompts` checks a video's prompts against the video (frame in range, coordinates
inside the frame) and snaps each prompt's ``frame_idx`` to the nearest frame of the annotation grid
(ties go to the earlier one). The earliest prompt of an ``obj_id`` starts its masklet; later ones
correct it on their frame. Two prompts of one object that snap to the same annotated frame, and
every other problem, are a ``bad_prompt`` :class:`LabelingFailed`. :func:`point_inputs` turns a
prompt into SAM 2's point inputs at the model's input size (a box is SAM 2's two corner points).
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from sav_assets.lib.label.config import LabelingFailed
from sav_assets.lib.label.prompts import Prompt
from sav_assets.lib.video.errors import BAD_PROMPT

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlannedPrompt:
    obj_id: int
    prompt: Prompt
    is_new: bool        # the object's first prompt (starts its masklet); otherwise a correction


@dataclass
class PromptPlan:
    by_frame: dict[int, list[PlannedPrompt]] = field(default_factory=dict)  # annotated frame -> prompts

    def at(self, ann_idx: int) -> list[PlannedPrompt]:
        return self.by_frame.get(ann_idx, [])

    @property
    def next_free_id(self) -> int:
        """The first masklet id above every prompted object (automatic masklets are numbered from it)."""
        ids = [p.obj_id for ps in self.by_frame.values() for p in ps]
        return max(ids) + 1 if ids else 0


def snap(grid: Sequence[int], frame_idx: int) -> int:
    """Index of the annotated frame nearest to ``frame_idx`` (the earlier one on a tie)."""
    k = bisect.bisect_left(grid, frame_idx)
    cands = [j for j in (k - 1, k) if 0 <= j < len(grid)]
    return min(cands, key=lambda j: (abs(grid[j] - frame_idx), j))


def _check(p: Prompt, n_frames: int, H: int, W: int) -> None:
    if p.frame_idx >= n_frames:
        raise LabelingFailed(BAD_PROMPT, f"prompt for obj {p.obj_id} on frame {p.frame_idx}, "
                                         f"but the video has {n_frames} frames")
    coords = [c for pt in (p.points or []) for c in pt] + list(p.box or [])
    xs, ys = coords[0::2], coords[1::2]
    if any(x < 0 or x > W for x in xs) or any(y < 0 or y > H for y in ys):
        raise LabelingFailed(BAD_PROMPT, f"prompt for obj {p.obj_id} on frame {p.frame_idx} has "
                                         f"coordinates outside the {W}x{H} frame")


def plan_prompts(prompts: Sequence[Prompt], video_id: str, grid: Sequence[int], n_frames: int, H: int,
                 W: int) -> PromptPlan:
    """The video's prompts by annotated frame (see the module docstring); others' prompts are ignored."""
    plan = PromptPlan()
    started: set[int] = set()
    seen: set[tuple[int, int]] = set()
    mine = [p for p in prompts if p.video_id == video_id]
    if len(mine) != len(prompts):
        log.warning("ignoring %d prompts for other videos than %s", len(prompts) - len(mine), video_id)
    for p in sorted(mine, key=lambda p: (p.frame_idx, p.obj_id)):
        _check(p, n_frames, H, W)
        a = snap(grid, p.frame_idx)
        if (p.obj_id, a) in seen:
            raise LabelingFailed(BAD_PROMPT, f"two prompts for obj {p.obj_id} fall on annotated frame "
                                             f"{grid[a]} (frames are snapped to the {len(grid)}-frame grid)")
        seen.add((p.obj_id, a))
        plan.by_frame.setdefault(a, []).append(PlannedPrompt(p.obj_id, p, p.obj_id not in started))
        started.add(p.obj_id)
    return plan


def point_inputs(p: Prompt, H: int, W: int, S: int, device) -> dict:
    """SAM 2 ``point_inputs`` for a prompt on an ``H`` x ``W`` video at model input size ``S``."""
    import torch

    pts = [list(map(float, q)) for q in (p.points or [])]
    labs = list(p.labels or [])
    if p.box is not None:
        pts = [[p.box[0], p.box[1]], [p.box[2], p.box[3]]] + pts
        labs = [2, 3] + labs
    coords = torch.tensor(pts, dtype=torch.float32).reshape(1, -1, 2)
    coords = coords / torch.tensor([float(W), float(H)]) * S
    return {"point_coords": coords.to(device), "point_labels": torch.tensor([labs], dtype=torch.int32).to(device)}

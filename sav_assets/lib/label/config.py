"""Labeling configuration and the label key: what a labeling run is asked to do, and the hash of
everything that determines its labels (so a re-run skips videos already labeled the same way).

``LabelerConfig`` is the one place every labeling default is written; the Dagster run config
(``defs/label.py``) takes its defaults from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from sav_assets.lib.label.prompts import Prompt
from sav_assets.lib.util import sha256_json
from sav_assets.lib.video.errors import VideoError

LABELER_VERSION = "1"
MODES = ("auto+prompted", "auto", "prompted")


@dataclass
class LabelerConfig:
    target_fps: float = 6.0              # annotation grid rate (SA-V: 6 fps)
    # automatic mask generator (SAM2AutomaticMaskGenerator) on seeding frames
    points_per_side: int = 32
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.8
    stability_score_thresh: float = 0.95
    box_nms_thresh: float = 0.7
    min_mask_region_area: int = 0        # px; >0 removes islands/holes below this area from seeds (scipy)
    min_area_frac: float = 1e-4          # seeds smaller than this fraction of the frame are dropped
    max_objects: int = 64                # cap on masklets per video (prompted ones are always kept)
    reseed_every: int = 8                # annotated frames between re-seeding; 0 = seed on frame 0 only
    seed_policy: str = "uncovered"       # uncovered (grid points no tracked mask covers) | grid | first_frame
    new_object_max_overlap: float = 0.3  # seed starts a new masklet if covered by tracked masks below this
    # execution
    chunk_frames: int = 16               # annotated frames decoded and held at once (x3 in flight)
    offload_video_to_cpu: bool = False   # keep decoded frames on the host until each is processed
    offload_state_to_cpu: bool = False   # keep memory features / mask logits of the state on the host
    max_memory_frames: int = 16          # non-conditioning frame outputs kept per cohort
    cycle_check: bool = True             # backward propagation agreement -> masklet_cycle_iou
    cycle_frames: int = 16               # annotated frames the backward pass covers, from the last one, on
    #                                      the forward pass's cached features; 0 = the whole video, re-encoded
    isolate_decode: bool = True          # decode in a subprocess (crash/hang isolation)
    decode_timeout_s: float = 300.0      # per chunk, isolated decoding only
    prefetch: bool = True                # decode the next chunk while the current one is tracked
    overlay_width: int = 512             # sample overlay PNG width (0 = no overlay)
    writer_depth: int = 4                # frames of masks queued to the host-copy / RLE thread (0 = inline)
    # SA-V annotation import: what one file may add (SA-V: a few dozen masklets, <= ~2 min at 6 fps)
    import_max_masklets: int = 256       # masklets per video in one _manual/_auto.json
    import_max_frames: int = 1800        # annotated frames per masklet (5 min at 6 fps)


# fields that change the labels (the others only change speed / memory); they enter label_key
_RESULT_FIELDS = (
    "target_fps", "points_per_side", "pred_iou_thresh", "stability_score_thresh", "box_nms_thresh",
    "min_mask_region_area", "min_area_frac", "max_objects", "reseed_every", "new_object_max_overlap",
    "max_memory_frames", "cycle_check", "seed_policy", "cycle_frames",
)


class LabelingFailed(VideoError):
    """Labeling a video failed: ``LabelingFailed(error_class, message)`` with a class from the one
    vocabulary of :mod:`sav_assets.lib.video.errors` (the decoder's own classes such as
    ``decode_error`` / ``decoder_timeout`` / ``decoder_crash``, or ``empty_video``, ``bad_prompt``,
    ``oom``, ``unreadable``); it lands in ``label_runs.error_class``. Any other exception while labeling
    is a bug and is raised as it is, never wrapped into one of these."""


@dataclass
class LabelResult:
    masklets: list[dict]
    frames: list[dict]
    stats: dict
    sample_overlay_png: bytes | None = None
    label_key: str | None = None


# ---------------------------------------------------------------------------------------------
# keys


def label_key(content_sha256: str, loaded, cfg: LabelerConfig, *, prompts: Sequence[Prompt] | None = None,
              mode: str = "auto+prompted") -> str:
    """Stable hash of everything that determines a video's labels (used to skip/resume work)."""
    c = asdict(cfg)
    payload = {
        "labeler": LABELER_VERSION,
        "content_sha256": content_sha256,
        "model_name": loaded.model_name,
        "checkpoint_sha256": loaded.checkpoint_sha256,
        "config_sha256": loaded.config_sha256,
        "random_weights": bool(loaded.random_weights),
        "seed": getattr(getattr(loaded, "spec", None), "seed", None) if loaded.random_weights else None,
        "precision": getattr(loaded, "precision", "fp32"),
        "cfg": {k: c[k] for k in _RESULT_FIELDS},
        "mode": mode,
        "prompts": sorted(
            [[p.frame_idx, p.obj_id, p.points, p.labels, p.box] for p in (prompts or []) if mode != "auto"]
        ),
    }
    return sha256_json(payload)

"""SAM 2 pseudo-labeler: automatic and prompted masklets on a video's annotation grid.

``label_video(loaded, video_path, video, cfg, prompts)`` returns rows for the ``masklets`` and
``masklet_frames`` tables (``tables.MASKLETS`` / ``tables.MASKLET_FRAMES`` columns, minus
``batch_id`` / ``created_at``), run statistics for ``label_runs`` and a small overlay PNG. This module
is the driver loop; each concern lives in its own module of :mod:`sav_assets.lib.label`:

* ``config``: :class:`LabelerConfig` (every default), :class:`LabelingFailed`, ``label_key``;
* ``tracker``: the batched SAM 2 tracker, the only module touching SAM 2 internals;
* ``seeding``: the automatic mask generator and :class:`SeedPolicy` (when to re-seed, which seeds
  start masklets); ``planning``: prompts snapped to the annotation grid; ``cycle``: the backward
  cycle-consistency check; ``records``: :class:`FrameRecord` s and the table rows they become.

How it works

* Only the annotated frames are decoded (``annotation_grid(frame_count, fps, cfg.target_fps, pts_s)``:
  every 4th frame of SA-V's 24 fps timeline, mapped by the container's presentation timestamps
  (``decode.presentation_times``), see :mod:`sav_assets.lib.sav.fields`), as uint8, ``cfg.chunk_frames`` at a time
  (:mod:`sav_assets.lib.video.decode`, optionally in an isolated subprocess). Each frame is resized and
  normalised on the compute device when it is processed; no float copy of the video ever exists.
  The tracker sees the annotated frames as consecutive frames, which is how SAM 2 was trained on SA-V.
* Auto masklets: the mask generator seeds objects where the :class:`SeedPolicy` says (annotated
  frame 0 and every ``cfg.reseed_every`` annotated frames, reusing the tracker's backbone features;
  with the default ``cfg.seed_policy`` ``uncovered`` it is prompted only at the grid points no
  tracked mask covers, ``grid`` prompts every point, ``first_frame`` seeds frame 0 only);
  a generated mask covered by the union of the tracked masks by less than
  ``cfg.new_object_max_overlap`` starts a new masklet, so objects entering later get
  ``masklet_first_appeared_frame > 0``. Auto masklet ids follow the prompted objects' ids.
* Prompted masklets: a prompt's points/box seed a new masklet on its (snapped) annotated frame; later
  prompts for the same ``obj_id`` correct it on their frame, as a correction click in SAM 2's demo.
  Prompted masklets are tracked forward only (empty before their first prompt).
* Tracking is SAM 2's own ``track_step`` with objects seeded together batched as a cohort; for the
  same mask prompts it gives SAM2VideoPredictor's masks. Object score logits <= 0 mean "not
  visible": the frame's RLE is empty and ``visible`` is False.
* Memory is bounded: non-conditioning outputs older than ``cfg.max_memory_frames`` annotated frames
  are dropped (SAM 2 reads at most 15 past frames, so the default 16 changes nothing), the decoded
  frames live one chunk at a time, and ``offload_state_to_cpu`` keeps memory features on the host.
  Because the tracking state is carried across chunks, chunking never changes the labels: identity
  is kept across chunk boundaries exactly.
* Cycle check (``cfg.cycle_check``): see :mod:`sav_assets.lib.label.cycle`; it runs on the forward
  pass's cached backbone features (the last ``cfg.cycle_frames`` annotated frames), so labeling runs
  ONE image-encoder pass per annotated frame.
* Off the critical path: each frame's masks are upsampled and copied to the host (on CUDA: pinned
  memory, ``non_blocking`` copies behind an event) and RLE-encoded on one :class:`RecordWriter`
  thread behind a queue of ``cfg.writer_depth`` frames; only a seeding frame waits for its masks (the
  generator needs their union). ``torch.compile`` of the image encoder is the model's
  (``ModelSpec.compile`` / ``SAV_SAM2_COMPILE``): it belongs to the loaded model, not to one run.
* Cost counters (``stats``, ``label_runs`` columns): ``encoder_calls`` (and per annotated frame),
  ``decoder_passes`` (tracking steps + generator batches), ``seed_prompts`` / ``prompts``,
  ``decode_wait_s``, ``host_copy_s``, ``rle_s``.
* Failures are :class:`LabelingFailed` with an error class of :mod:`sav_assets.lib.video.errors`:
  the decoder's own (``decode_error``, ``decoder_timeout``, ``decoder_crash``), ``empty_video``,
  ``bad_prompt``; CUDA out-of-memory is retried once with offloading on and smaller chunks, then
  ``oom``. These are about the video (its bytes, its size, its prompts) and become ``label_runs``
  rows. Any other exception (a ``TypeError`` / ``KeyError`` in our code, a ``RuntimeError`` from
  SAM 2 / torch) is a bug, not data: it is raised as it is and fails the step, because it would fail
  every video the same way (``tests/lib/label/test_batch_errors.py`` pins this).

A little over the house's ~400 lines: the forward pass and the callbacks it hands to the writer
thread share its state and read best side by side. torch / sam2 / decord are imported inside
functions: importing this module is cheap.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np

from sav_assets.lib.label import seeding
from sav_assets.lib.label.config import MODES, LabelerConfig, LabelingFailed, LabelResult, label_key
from sav_assets.lib.label.cycle import cycle_ious
from sav_assets.lib.label.planning import PromptPlan, plan_prompts, point_inputs
from sav_assets.lib.label.prompts import Prompt
from sav_assets.lib.label.records import MaskletRecords, RecordWriter, rows
from sav_assets.lib.label.tracker import FeatureCache, HostMasks, Tracker
from sav_assets.lib.sav import fields as masklet_fields
from sav_assets.lib.sav import rle
from sav_assets.lib.util import sha256_file
from sav_assets.lib.video.decode import iter_frame_chunks, presentation_times
from sav_assets.lib.video.errors import DECODE_ERROR, EMPTY_VIDEO, OOM, VideoError

log = logging.getLogger(__name__)


def label_video(loaded, video_path: str, video: dict, cfg: LabelerConfig | None = None,
                prompts: list[Prompt] | None = None, progress: Callable[[int, int], None] | None = None,
                mode: str = "auto+prompted") -> LabelResult:
    """Label one video; see the module docstring. Raises LabelingFailed(error_class, message)."""
    cfg = cfg or LabelerConfig()
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    try:
        return _label_retrying_oom(loaded, video_path, video, cfg, prompts or [], progress, mode)
    except LabelingFailed:
        raise
    except VideoError as e:     # the decoder's own classification of this video
        raise LabelingFailed(e.error_class, e.message) from e


def _label_retrying_oom(loaded, video_path, video, cfg, prompts, progress, mode) -> LabelResult:
    import torch

    oom_types = tuple({getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError),
                       torch.cuda.OutOfMemoryError})
    try:
        return _label(loaded, video_path, video, cfg, prompts, progress, mode, retried=False)
    except oom_types as e:
        log.warning("CUDA out of memory labeling %s (%s); retrying once with offloading",
                    video.get("video_id"), str(e).splitlines()[0] if str(e) else "")
        _free_cuda()
    cfg2 = replace(cfg, offload_video_to_cpu=True, offload_state_to_cpu=True,
                   chunk_frames=max(1, min(cfg.chunk_frames, 16)),
                   points_per_batch=max(1, min(cfg.points_per_batch, 16)))
    try:
        return _label(loaded, video_path, video, cfg2, prompts, progress, mode, retried=True)
    except oom_types as e2:
        _free_cuda()
        raise LabelingFailed(OOM, f"CUDA out of memory even with offloading: {e2}") from e2


def _free_cuda() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------
# one labeling attempt


@dataclass
class _Job:
    """What one video asks for: its grid, the prompt plan and the label key."""

    video_id: str
    grid: list[int]
    times: list[float]           # timestamp_s of each grid frame (seconds from the first frame)
    row_hw: tuple[int, int]      # (height, width) the video row says; prompts are in these pixels
    use_auto: bool
    plan: PromptPlan
    key: str

    @classmethod
    def create(cls, loaded, video_path: str, video: dict, cfg: LabelerConfig, prompts: list[Prompt],
               mode: str) -> _Job:
        video_id = str(video["video_id"])
        n_frames = int(video["video_frame_count"] or 0)
        fps = float(video.get("video_fps") or 0.0)
        H0, W0 = int(video["video_height"]), int(video["video_width"])
        pts = presentation_times(video_path, isolate=cfg.isolate_decode) if n_frames > 0 else None
        grid = masklet_fields.annotation_grid(n_frames, fps, cfg.target_fps, pts)
        times = masklet_fields.annotation_times(n_frames, fps, cfg.target_fps, pts)
        if not grid:
            raise LabelingFailed(EMPTY_VIDEO, f"{video_id}: no frames to annotate (frame_count={n_frames})")
        use_prompts = [] if mode == "auto" else list(prompts)
        plan = plan_prompts(use_prompts, video_id, grid, n_frames, H0, W0)
        content_sha = video.get("content_sha256") or sha256_file(video_path)
        key = label_key(content_sha, loaded, cfg, prompts=use_prompts, mode=mode)
        return cls(video_id, grid, times, (H0, W0), mode in ("auto", "auto+prompted"), plan, key)


class _Meter:
    """Progress ticks (``progress(done, total)``) and the peak host RSS seen at each tick."""

    def __init__(self, total: int, progress: Callable[[int, int], None] | None):
        import psutil

        self.proc = psutil.Process()
        self.peak_rss = self.proc.memory_info().rss
        self.total = total
        self.done = 0
        self.progress = progress

    def tick(self, n: int = 1) -> None:
        self.done += n
        self.sample()
        if self.progress is not None:
            self.progress(min(self.done, self.total), self.total)

    def finish(self) -> None:
        self.tick(max(0, self.total - self.done))

    def sample(self) -> None:
        self.peak_rss = max(self.peak_rss, self.proc.memory_info().rss)


class _Sample(NamedTuple):
    """The annotated frame with the most visible masklets (for the overlay PNG)."""

    visible: int
    ann_idx: int | None
    frame: np.ndarray | None


class _ForwardPass:
    """The forward pass over the annotated frames: tracking, prompts, seeding, records.

    One image-encoder pass per annotated frame that has work; its features are cached for the
    cycle pass (:class:`FeatureCache`, the last ``cfg.cycle_frames``). Masks go to the host and to
    RLE on the :class:`RecordWriter` thread, which alone changes the records.
    """

    def __init__(self, loaded, job: _Job, cfg: LabelerConfig, meter: _Meter):
        import torch

        self.job, self.cfg, self.meter = job, cfg, meter
        self.S = int(loaded.image_size)
        self.device = loaded.model.device
        self.cuda = str(loaded.device).startswith("cuda")
        T = len(job.grid)
        self.tracker = Tracker(loaded, T, offload_state=cfg.offload_state_to_cpu,
                               max_memory_frames=cfg.max_memory_frames)
        self.cache = FeatureCache(cfg.cycle_frames if cfg.cycle_check else 0, self.tracker.storage, self.device)
        self.policy = seeding.SeedPolicy.from_config(cfg, enabled=job.use_auto)
        self.gen = seeding.make_generator(loaded, cfg) if job.use_auto else None
        self.recs = MaskletRecords(T)
        self.masklets = 0                            # masklets started so far (the driver's count)
        self.next_auto = job.plan.next_free_id
        self.sample = _Sample(-1, None, None)
        self.hw: tuple[int, int] | None = None       # decoded frame size (masks use it)
        self.counters = {"seed_prompts": 0, "prompts": 0, "decode_wait_s": 0.0, "host_copy_s": 0.0,
                         "rle_s": 0.0}
        self.writer = RecordWriter(cfg.writer_depth, init=torch.inference_mode)
        self.decode_stats: dict = {}
        self.decode_kw = {"isolate": cfg.isolate_decode, "timeout_s": cfg.decode_timeout_s,
                          "prefetch": cfg.prefetch, "stats": self.decode_stats}

    def run(self, video_path: str) -> None:
        ok = False
        try:
            self._run(video_path)
            ok = True
        finally:
            self.writer.close(raise_error=ok)
        if self.hw is None:
            raise LabelingFailed(DECODE_ERROR, f"{self.job.video_id}: no frames decoded")

    def _run(self, video_path: str) -> None:
        import torch

        cfg = self.cfg
        chunks = iter_frame_chunks(video_path, self.job.grid, cfg.chunk_frames, first_chunk=8, **self.decode_kw)
        while True:
            t0 = time.perf_counter()
            chunk = next(chunks, None)
            self.counters["decode_wait_s"] += time.perf_counter() - t0
            if chunk is None:
                break
            frames = chunk.frames
            if not cfg.offload_video_to_cpu and self.cuda:
                frames = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device, non_blocking=True)
            for j in range(len(chunk.indices)):
                self.frame(chunk.start + j, frames[j], chunk.frames[j])
                self.meter.tick()
            del frames

    def _set_hw(self, frame: np.ndarray) -> None:
        self.hw = (int(frame.shape[0]), int(frame.shape[1]))
        H0, W0 = self.job.row_hw
        if self.hw != (H0, W0):
            log.warning("%s: decoded frames are %dx%d but the video row says %dx%d; masks use the decoded "
                        "size", self.job.video_id, self.hw[1], self.hw[0], W0, H0)

    def frame(self, a: int, frame_dev, frame_host: np.ndarray) -> None:
        """Annotated frame ``a`` (on the compute device, and on the host for seeding / the overlay)."""
        if self.hw is None:
            self._set_hw(frame_host)
        seeds_here = self.policy.seeds_at(a, self.masklets)
        todo = self.job.plan.at(a)
        if not self.tracker.cohorts and not seeds_here and not todo:
            return
        bb = self.tracker.backbone(frame_dev)
        self.cache.put(a, bb)
        per_obj = self.tracker.track(a, bb)
        self._apply_prompts(a, bb, todo, per_obj)
        ids = self.tracker.ids
        host = HostMasks(per_obj, ids, self.hw)
        union = None
        if seeds_here and ids:          # the seeding needs this frame's masks now
            union = host.get()[0].any(axis=0).T
        self.writer.submit(functools.partial(self._record, a, host))
        if seeds_here:
            self._seed(a, bb, frame_host, union)
        if self.cfg.overlay_width:
            self.writer.submit(functools.partial(self._pick_sample, a, frame_host))

    # -- on the writer thread --------------------------------------------------------------------
    def _record(self, a: int, host: HostMasks) -> None:
        masks, stab, ious = host.get()
        t0 = time.perf_counter()
        encs = rle.encode_many_wh(masks)
        self.counters["rle_s"] += time.perf_counter() - t0
        self.counters["host_copy_s"] += host.seconds
        for k, (oid, enc) in enumerate(zip(host.ids, encs)):
            self.recs.put(oid, a, enc, ious[k], stab[k])

    def _record_seeds(self, a: int, ids: list[int], seeds: list) -> None:
        t0 = time.perf_counter()
        encs = [rle.encode(s.mask) for s in seeds]
        self.counters["rle_s"] += time.perf_counter() - t0
        for oid, s, r in zip(ids, seeds, encs):
            self.recs.new(oid, "auto", a)
            self.recs.put(oid, a, (r, rle.area(r), rle.bbox(r)), s.predicted_iou, s.stability_score)

    def _pick_sample(self, a: int, frame_host: np.ndarray) -> None:
        nvis = len(self.recs.visible_at(a))
        if nvis > self.sample.visible:
            self.sample = _Sample(nvis, a, _small(frame_host, self.cfg.overlay_width))

    # -- on the driver's thread ------------------------------------------------------------------
    def _apply_prompts(self, a: int, bb: dict, todo: list, per_obj: dict) -> None:
        """New prompted objects start a cohort on frame ``a``; prompts for tracked ones correct them."""
        H0, W0 = self.job.row_hw
        new_items = []
        for pp in todo:
            pin = point_inputs(pp.prompt, H0, W0, self.S, self.device)
            self.counters["prompts"] += 1
            if pp.is_new:
                new_items.append((pp.obj_id, pin))
            else:
                per_obj[pp.obj_id] = self.tracker.correct(a, bb, pp.obj_id, pin)
        if new_items:
            per_obj.update(self.tracker.add_points(a, bb, new_items))
            self.masklets += len(new_items)
            for oid, _ in new_items:
                self.writer.submit(functools.partial(self.recs.new, oid, "prompted", a))

    def _seed(self, a: int, bb: dict, frame_host: np.ndarray, union: np.ndarray | None) -> None:
        """Run the mask generator on frame ``a`` at the policy's points; the seeds the policy picks
        start auto masklets."""
        points = self.policy.prompt_points(union)
        self.counters["seed_prompts"] += len(points)
        seeds = seeding.generate_seeds(self.gen, self.tracker, bb, frame_host, self.policy, points)
        pick = self.policy.pick(seeds, [] if union is None else [union], self.masklets)
        if not pick:
            return
        new_ids = list(range(self.next_auto, self.next_auto + len(pick)))
        self.next_auto += len(pick)
        self.masklets += len(pick)
        self.tracker.add_masks(a, bb, np.stack([seeds[i].mask for i in pick]), new_ids)
        self.writer.submit(functools.partial(self._record_seeds, a, new_ids, [seeds[i] for i in pick]))

    def cost(self) -> dict:
        """This pass's counters for ``label_runs`` (the cycle pass adds its own)."""
        return {**self.counters, "encoder_calls": self.tracker.encoder_calls,
                "decoder_passes": self.tracker.decoder_passes
                + (self.gen.predictor.decoder_passes if self.gen is not None else 0)}


def _label(loaded, video_path: str, video: dict, cfg: LabelerConfig, prompts: list[Prompt],
           progress, mode: str, retried: bool) -> LabelResult:
    import torch

    t_start = time.perf_counter()
    cuda = str(loaded.device).startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    job = _Job.create(loaded, video_path, video, cfg, prompts, mode)
    T = len(job.grid)
    meter = _Meter(T + (min(T, cfg.cycle_frames or T) if cfg.cycle_check else 0), progress)
    fwd = _ForwardPass(loaded, job, cfg, meter)
    with torch.inference_mode(), loaded.autocast():
        fwd.run(video_path)
        t_forward = time.perf_counter() - t_start
        cost = fwd.cost()
        cycle = cycle_ious(loaded, video_path, job.grid, fwd.recs, fwd.hw, cfg, fwd.decode_kw, fwd.cache,
                           meter.tick, cost)
        meter.finish()

    masklets, frame_rows = rows(job.video_id, job.grid, fwd.recs, fwd.hw, loaded, job.key, cycle,
                                times=job.times)
    overlay_png = _overlay(fwd, cfg)
    elapsed = time.perf_counter() - t_start
    meter.sample()
    H, W = fwd.hw
    stats = {
        "frames_labeled": T,
        "seconds": elapsed,
        "forward_seconds": t_forward,
        "fps": T / elapsed if elapsed > 0 else None,
        # this process plus the isolated decoder process, which runs beside it
        "peak_host_mb": meter.peak_rss / 2**20 + fwd.decode_stats.get("decoder_peak_mb", 0.0),
        "peak_decoder_mb": fwd.decode_stats.get("decoder_peak_mb"),
        "peak_gpu_mb": (torch.cuda.max_memory_allocated() / 2**20) if cuda else None,
        "objects": len(masklets),
        "masklets_auto": sum(1 for m in masklets if m["masklet_type"] == "auto"),
        "masklets_prompted": sum(1 for m in masklets if m["masklet_type"] == "prompted"),
        "cohorts": len(fwd.tracker.cohorts),
        "sample_frame_idx": None if fwd.sample.ann_idx is None else int(job.grid[fwd.sample.ann_idx]),
        "device": str(loaded.device),
        "image_size": int(loaded.image_size),
        "model_name": loaded.model_name,
        "random_weights": bool(loaded.random_weights),
        "oom_retried": retried,
        "video_hw": [H, W],
        # what the labeling cost (label_runs columns): one image-encoder pass per annotated frame
        "seed_policy": cfg.seed_policy,
        "encoder_calls": cost["encoder_calls"],
        "encoder_calls_per_frame": cost["encoder_calls"] / T,
        "decoder_passes": cost["decoder_passes"],
        "seed_prompts": cost["seed_prompts"],
        "prompts": cost["seed_prompts"] + cost["prompts"],
        "decode_wait_s": cost["decode_wait_s"],
        "host_copy_s": cost["host_copy_s"],
        "rle_s": cost["rle_s"],
        "writer_wait_s": fwd.writer.wait_s,
    }
    return LabelResult(masklets=masklets, frames=frame_rows, stats=stats, sample_overlay_png=overlay_png,
                       label_key=job.key)


def _overlay(fwd: _ForwardPass, cfg: LabelerConfig) -> bytes | None:
    """PNG of the masks over the frame with the most visible masklets (None when none was visible)."""
    a = fwd.sample.ann_idx
    if a is None:
        return None
    from sav_assets.lib.label.overlay import render_overlay

    mids = fwd.recs.visible_at(a)
    return render_overlay(fwd.sample.frame, [fwd.recs.rle(m, a, fwd.hw) for m in mids], mids,
                          width=cfg.overlay_width)


def _small(frame: np.ndarray, width: int) -> np.ndarray:
    from PIL import Image

    h, w = frame.shape[:2]
    if w <= width:
        return np.array(frame)
    return np.asarray(Image.fromarray(frame).resize((width, max(1, round(h * width / w))), Image.BILINEAR))

"""The training sampler: random clips of annotated frames and masklets from the training shards.

:class:`ShardClipDataset` (a ``torch.utils.data.IterableDataset``) reads the shards written by
:mod:`sav_assets.lib.dataset.shards` through the plain webdataset pipeline of
:mod:`sav_assets.lib.dataset.loader` (split by rank and DataLoader worker) and, as SAM 2's
``RandomUniformSampler`` does, per video:

1. reassembles the video's annotated frames from its consecutive shard samples (windows of one video
   follow each other in a shard; overlapping windows are merged by frame index; a video whose windows
   straddle two shards read by different workers counts as two shorter videos);
2. draws a window (:func:`sav_assets.lib.dataset.augment.plan_window`): a length of ``min_frames`` to
   ``max_frames`` annotated frames (uniform, capped by the video's length), a start, and the temporal
   augmentations (stride, dropout, reverse playback);
3. takes up to ``max_masklets`` masklets, drawn at random among those **visible in the window's first
   frame** (after any reversal), so that every object has a mask prompt there, as in SAM 2's training;
   a window whose first frame shows no masklet is redrawn (``max_tries``), then the video is skipped;
4. decodes only the chosen frames and masks (:func:`sav_assets.lib.dataset.loader.decode_sample`) and
   applies the spatial augmentations (:func:`sav_assets.lib.dataset.augment.spatial_augment`) to an
   ``input_size`` square; a chosen object whose first-frame mask the geometry emptied is dropped.

Each yields a :class:`Clip`: ``frames`` float32 ``T x 3 x S x S`` with values in **0..1** (or
normalised with SAM 2's ImageNet mean/std when ``SamplerConfig.normalize``), ``masks`` bool
``T x N x S x S``, masklet ids and types, video id, source frame indices in playback order.

Determinism: every draw comes from one ``torch.Generator`` seeded from (``seed``, epoch, rank, worker
id); the shard order of an epoch is a permutation seeded from (``seed``, epoch) alone, the same in
every worker, so the workers still partition the shards. The same seed, epoch and worker count give
the same clips. Videos are shuffled through a buffer of ``video_buffer`` videos (raw JPEG/RLE bytes).
``skipped`` counts videos and clips left out, by reason (in the process that iterates: with workers,
each worker has its own).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from sav_assets.lib.dataset.augment import (
    AugmentConfig,
    choose,
    normalize,
    plan_window,
    randint,
    spatial_augment,
)
from sav_assets.lib.dataset.loader import decode_sample
from sav_assets.lib.dataset.shard_samples import frame_name


@dataclass
class SamplerConfig:
    """What a training clip is; each default is written here once (README table)."""

    min_frames: int = 8              # shortest window, in annotated frames (SAM 2 trains on 8)
    max_frames: int = 16             # longest window (capped by the video's annotated frames)
    max_masklets: int = 3            # masklets per clip, among those visible in its first frame (SAM 2: 3)
    input_size: int = 1024           # square side of the output (SAM 2's resolution; use the model's)
    seed: int = 0                    # with the epoch, rank and worker id: every random draw
    clips_per_video: int = 1         # clips drawn from a video per epoch
    video_buffer: int = 16           # videos held for shuffling (1 = shard order)
    shuffle_shards: bool = True      # permute the shard order every epoch
    normalize: bool = False          # frames as SAM 2's normalised input instead of 0..1
    masklet_types: tuple[str, ...] | None = None   # only these types (e.g. ("manual",)); None = all
    max_tries: int = 10              # window draws per clip looking for a first frame with a masklet
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self):
        if not 1 <= self.min_frames <= self.max_frames:
            raise ValueError(f"need 1 <= min_frames <= max_frames, got {self.min_frames}..{self.max_frames}")
        if self.max_masklets < 1 or self.input_size < 1:
            raise ValueError("max_masklets and input_size must be >= 1")
        if isinstance(self.augment, dict):
            self.augment = AugmentConfig(**self.augment)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Clip:
    """One training clip. ``frames`` float32 ``T x 3 x S x S`` (0..1 unless normalised), ``masks`` bool
    ``T x N x S x S``; object ``j`` is masklet ``(object_types[j], object_ids[j])``, non-empty in frame 0."""

    frames: Any
    masks: Any
    object_ids: list[int]
    object_types: list[str | None]
    video_id: str
    frame_idx: list[int]                 # source frame index of each frame, in playback order
    ann_idx: list[int | None]            # SA-V annotation index of each frame
    augment: dict                        # what was applied: stride, dropped, reversed, hflip, crop, ...


@dataclass
class ClipBatch:
    """Clips padded to the longest window and the most objects of the batch.

    ``frames`` ``B x T x 3 x S x S``, ``masks`` ``B x T x N x S x S``, ``frame_valid`` ``B x T`` and
    ``object_valid`` ``B x N`` (bool: False on padding), ``object_ids`` / ``frame_idx`` long tensors
    (-1 on padding); the rest (video ids, object types, applied augmentations, SA-V annotation
    indices) are lists per clip.
    """

    frames: Any
    masks: Any
    frame_valid: Any
    object_valid: Any
    object_ids: Any
    frame_idx: Any
    video_ids: list[str]
    object_types: list[list[str | None]]
    augment: list[dict]
    ann_idx: list[list[int | None]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.video_ids)

    def pin_memory(self) -> ClipBatch:
        for name in ("frames", "masks", "frame_valid", "object_valid", "object_ids", "frame_idx"):
            setattr(self, name, getattr(self, name).pin_memory())
        return self


def collate_clips(clips: Sequence[Clip]) -> ClipBatch:
    """A DataLoader ``collate_fn``: clips to one :class:`ClipBatch` (zero / False / -1 padding)."""
    import torch

    if not clips:
        raise ValueError("collate_clips needs at least one clip")
    b = len(clips)
    t = max(c.frames.shape[0] for c in clips)
    n = max(c.masks.shape[1] for c in clips)
    s = tuple(clips[0].frames.shape[-2:])
    frames = torch.zeros((b, t, 3, *s), dtype=clips[0].frames.dtype)
    masks = torch.zeros((b, t, n, *s), dtype=torch.bool)
    frame_valid = torch.zeros((b, t), dtype=torch.bool)
    object_valid = torch.zeros((b, n), dtype=torch.bool)
    object_ids = torch.full((b, n), -1, dtype=torch.long)
    frame_idx = torch.full((b, t), -1, dtype=torch.long)
    for i, c in enumerate(clips):
        ct, cn = c.masks.shape[:2]
        frames[i, :ct] = c.frames
        masks[i, :ct, :cn] = c.masks
        frame_valid[i, :ct] = True
        object_valid[i, :cn] = True
        object_ids[i, :cn] = torch.as_tensor(c.object_ids, dtype=torch.long)
        frame_idx[i, :ct] = torch.as_tensor(c.frame_idx, dtype=torch.long)
    return ClipBatch(frames, masks, frame_valid, object_valid, object_ids, frame_idx,
                     [c.video_id for c in clips], [list(c.object_types) for c in clips],
                     [c.augment for c in clips], [list(c.ann_idx) for c in clips])


# ---- videos reassembled from shard samples -------------------------------------------------------

@dataclass
class ShardVideo:
    """One video's annotated frames as read from its shard samples (raw JPEG and RLE, undecoded)."""

    video_id: str
    size: list[int]
    objects: list[tuple[str | None, int]]                 # (masklet_type, masklet_id)
    frames: dict[int, dict] = field(default_factory=dict)  # frame_idx -> {jpeg, ann, rles, visible}

    def add(self, raw: dict, meta: dict, masks_doc: dict) -> None:
        keys = list(zip(masks_doc["masklet_type"], masks_doc["masklet_id"]))
        for t, f in enumerate(masks_doc["frame_idx"]):
            if f in self.frames:
                continue
            self.frames[f] = {"jpeg": raw[frame_name(t)], "ann": meta["ann_idx"][t],
                              "rles": dict(zip(keys, masks_doc["rles"][t])),
                              "visible": dict(zip(keys, meta["visible"][t]))}


def video_groups(samples: Iterable[dict], masklet_types: Sequence[str] | None = None) -> Iterator[ShardVideo]:
    """Consecutive raw shard samples of one video, merged into one annotated-frame sequence."""
    cur: ShardVideo | None = None
    for raw in samples:
        meta = json.loads(raw["meta.json"])
        masks_doc = json.loads(raw["masks.json"])
        vid = meta["video_id"]
        if cur is not None and cur.video_id != vid:
            yield cur
            cur = None
        if cur is None:
            objects = [k for k in zip(masks_doc["masklet_type"], masks_doc["masklet_id"])
                       if masklet_types is None or k[0] in masklet_types]
            cur = ShardVideo(vid, [int(x) for x in masks_doc["size"]], objects)
        cur.add(raw, meta, masks_doc)
    if cur is not None:
        yield cur


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0] >> 1)


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class _ShardClipDatasetImpl:
    """Random training clips (:class:`Clip`) from shard paths/URLs; see the module docstring."""

    def __init__(self, urls: str | Sequence[str], cfg: SamplerConfig | None = None):
        super().__init__()
        self.urls = [urls] if isinstance(urls, str) else list(urls)
        self.cfg = cfg or SamplerConfig()
        self.epoch = 0
        self.skipped: Counter = Counter()

    @classmethod
    def from_manifest(cls, lake, out_prefix: str, cfg: SamplerConfig | None = None):
        """The shards listed in ``<out_prefix>/manifest.json`` of a local lake (published ones)."""
        from sav_assets.lib.dataset.loader import ShardDataset

        return cls(ShardDataset.from_manifest(lake, out_prefix).urls, cfg)

    def set_epoch(self, epoch: int) -> None:
        """Another epoch: another shard order and other draws (call before iterating, as with
        ``DistributedSampler``)."""
        self.epoch = int(epoch)

    def generator(self, worker: int | None = None):
        """The generator of (seed, epoch, rank, worker): the worker of the current DataLoader process
        unless given."""
        import torch

        if worker is None:
            info = torch.utils.data.get_worker_info()
            worker = info.id if info is not None else 0
        return torch.Generator().manual_seed(_seed(self.cfg.seed, self.epoch, _rank(), worker))

    def epoch_urls(self) -> list[str]:
        """This epoch's shard order: the same in every worker (the workers then split it)."""
        import torch

        if not self.cfg.shuffle_shards:
            return list(self.urls)
        g = torch.Generator().manual_seed(_seed(self.cfg.seed, self.epoch))
        return [self.urls[i] for i in torch.randperm(len(self.urls), generator=g).tolist()]

    def __iter__(self) -> Iterator[Clip]:
        from sav_assets.lib.dataset.loader import ShardDataset

        gen = self.generator()
        buffer: list[ShardVideo] = []
        raw = ShardDataset(self.epoch_urls()).pipeline()
        for video in video_groups(raw, self.cfg.masklet_types):
            buffer.append(video)
            if len(buffer) >= max(1, self.cfg.video_buffer):
                yield from self.clips(buffer.pop(randint(gen, 0, len(buffer) - 1)), gen)
        while buffer:
            yield from self.clips(buffer.pop(randint(gen, 0, len(buffer) - 1)), gen)

    def clips(self, video: ShardVideo, gen) -> Iterator[Clip]:
        """``clips_per_video`` clips of one video (fewer when it has no usable window)."""
        for _ in range(max(1, self.cfg.clips_per_video)):
            clip = self.clip(video, gen)
            if clip is not None:
                yield clip

    def clip(self, video: ShardVideo, gen) -> Clip | None:
        """One clip of ``video``, or None (counted in ``skipped``)."""
        cfg = self.cfg
        order = sorted(video.frames)
        plan, visible = None, []
        for _ in range(max(1, cfg.max_tries)):
            plan = plan_window(len(order), cfg.min_frames, cfg.max_frames, gen, cfg.augment)
            if plan is None:
                self.skipped["fewer annotated frames than min_frames"] += 1
                return None
            first = video.frames[order[plan.positions[0]]]
            visible = [k for k in video.objects if first["visible"].get(k)]
            if visible:
                break
        if not visible:
            self.skipped["no masklet visible in the first frame"] += 1
            return None
        chosen = sorted(choose(gen, visible, cfg.max_masklets), key=video.objects.index)
        fidx = [order[p] for p in plan.positions]
        frames, masks = self._decode(video, fidx, chosen)
        frames, masks, applied = spatial_augment(frames, masks, gen, cfg.augment, cfg.input_size)
        keep = [j for j in range(len(chosen)) if j not in set(applied.pop("first_frame_empty", []))]
        if not keep:
            self.skipped["masklets too small to survive the resize"] += 1
            return None
        if len(keep) < len(chosen):
            masks = masks[:, keep]
            applied["dropped_objects"] = [list(chosen[j]) for j in range(len(chosen)) if j not in keep]
        chosen = [chosen[j] for j in keep]
        if cfg.normalize:
            frames = normalize(frames)
        applied.update(stride=plan.stride, reversed=plan.reversed,
                       dropped_frames=[order[p] for p in plan.dropped])
        return Clip(frames=frames, masks=masks, object_ids=[int(k[1]) for k in chosen],
                    object_types=[k[0] for k in chosen], video_id=video.video_id, frame_idx=fidx,
                    ann_idx=[video.frames[f]["ann"] for f in fidx], augment=applied)

    @staticmethod
    def _decode(video: ShardVideo, fidx: list[int], chosen: list[tuple]):
        """Only the chosen frames and masklets, through the shard loader's decoder."""
        import torch

        sample = {frame_name(t): video.frames[f]["jpeg"] for t, f in enumerate(fidx)}
        sample["masks.json"] = json.dumps({"size": video.size, "masklet_id": [k[1] for k in chosen],
                                           "rles": [[video.frames[f]["rles"][k] for k in chosen] for f in fidx]})
        sample["meta.json"] = json.dumps({"video_id": video.video_id})
        item = decode_sample(sample)
        frames = item["frames"].permute(0, 3, 1, 2).to(torch.float32).div_(255.0)
        return frames, item["masks"].to(torch.bool)


_built: dict[str, type] = {}


def __getattr__(name: str):
    """``ShardClipDataset`` subclasses ``torch.utils.data.IterableDataset``; torch is imported when the
    name is first used, not with the module (the code location loads without torch)."""
    if name != "ShardClipDataset":
        raise AttributeError(name)
    if name not in _built:
        import torch.utils.data

        _built[name] = type(name, (_ShardClipDatasetImpl, torch.utils.data.IterableDataset),
                            {"__module__": __name__, "__doc__": _ShardClipDatasetImpl.__doc__})
        globals()[name] = _built[name]
    return _built[name]

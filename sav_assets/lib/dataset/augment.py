"""Training augmentations of a clip, applied identically to its frames and its masks.

A clip is ``frames`` (float tensor ``T x 3 x H x W``, values in 0..1) and ``masks`` (bool tensor
``T x N x H x W``). Every random choice is drawn from the ``torch.Generator`` passed in, never from a
global generator, so a clip's augmentation is a pure function of (input, generator state): the sampler
seeds one generator per (seed, epoch, rank, worker) and the result is reproducible.

Spatial ops (one draw per clip, the same geometry for every frame, as SAM 2's ``consistent_transform``):

- horizontal flip;
- random crop (area fraction and aspect ratio drawn like ``RandomResizedCrop``), by integer slicing;
- the square resize to the model's input size (SAM 2's ``RandomResizeAPI(square=True)``): frames
  bilinear with antialiasing, masks ``nearest-exact``; both use half-pixel centres, so the mask stays
  on its pixels up to one pixel at an edge;
- scale variation: the frame shrunk by a factor and pasted at a random integer offset on a black canvas
  (masks likewise on an empty one): zooming out, where the crop zooms in;
- resolution variation: frames down to a fraction of the size and back up (a low-resolution source);
  the geometry does not change, so the masks are untouched;
- colour jitter: brightness / contrast / saturation / hue factors drawn once per clip, then small
  per-frame factors (SAM 2's two ``ColorJitter`` stages with its defaults); masks untouched.

Temporal ops act on positions in a video's list of annotated frames (:func:`plan_window`), so the
sampler decodes only the frames it keeps; :func:`apply_temporal` applies a plan to tensors in memory:

- speed variation by stride: every ``s``-th annotated frame (``s`` in 2..``max_stride``);
- temporal dropout: ``d`` frames of a longer run removed (never the first, which carries the prompt),
  so the clip keeps its length but has gaps;
- reverse playback: the window played backwards (decided before the dropout, so the clip's first frame
  is never dropped).

Not here, on purpose: SAM 2's random affine (rotation/shear) and grayscale; the crop and zoom cover
scale and position, and grayscale would remove the colour our consistency tests measure.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

# ImageNet statistics, the normalisation SAM 2's image encoder is trained with (NormalizeAPI).
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)


@dataclass
class AugmentConfig:
    """Augmentation probabilities and ranges; each default is written here once (README table)."""

    # spatial, one draw per clip
    hflip_prob: float = 0.5          # flip left-right
    crop_prob: float = 0.5           # random crop before the resize
    crop_min_area: float = 0.5       # a crop keeps at least this fraction of the frame area
    crop_max_aspect: float = 4 / 3   # crop aspect ratio within [1/x, x] times the frame's
    zoom_out_prob: float = 0.2       # scale variation: shrink into a padded canvas
    zoom_out_min: float = 0.6        # smallest shrink factor (of the input size)
    lowres_prob: float = 0.2         # resolution variation: down and back up (frames only)
    lowres_min: float = 0.5          # smallest intermediate resolution (fraction of the input size)
    # colour: per clip, then per frame (SAM 2's two ColorJitter stages; factors in [1-x, 1+x])
    brightness: float = 0.1
    contrast: float = 0.03
    saturation: float = 0.03
    hue: float = 0.0                 # in [-x, x] turns of the hue circle; SAM 2 uses none
    frame_brightness: float = 0.1
    frame_contrast: float = 0.05
    frame_saturation: float = 0.05
    # temporal
    reverse_prob: float = 0.25       # play the window backwards (SAM 2's reverse_time_prob)
    stride_prob: float = 0.3         # speed variation: every s-th annotated frame
    max_stride: int = 2              # s drawn in 2..max_stride (when the video is long enough)
    dropout_prob: float = 0.2        # temporal dropout: d frames of a longer run removed
    max_dropout: int = 2             # d drawn in 1..max_dropout (when the video is long enough)
    # a spatial draw that leaves no chosen object in the first frame is redrawn this many times, then
    # the clip keeps its geometry unaugmented (flip and colour only): SAM 2's RandomAffine tentatives
    first_frame_tries: int = 3

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class WindowPlan:
    """Which annotated frames a clip takes: ``positions`` index a video's annotated-frame list, in
    playback order (descending when ``reversed``)."""

    positions: list[int]
    stride: int = 1
    dropped: list[int] = field(default_factory=list)   # positions removed by the temporal dropout
    reversed: bool = False

    @property
    def length(self) -> int:
        return len(self.positions)


# ---- random draws from a torch.Generator ---------------------------------------------------------

def uniform(gen, lo: float, hi: float) -> float:
    import torch

    return lo + (hi - lo) * float(torch.rand((), generator=gen))


def randint(gen, lo: int, hi: int) -> int:
    """An integer in ``lo..hi`` inclusive."""
    import torch

    return int(torch.randint(int(lo), int(hi) + 1, (), generator=gen))


def chance(gen, p: float) -> bool:
    import torch

    return p > 0 and float(torch.rand((), generator=gen)) < p


def choose(gen, items: list, k: int) -> list:
    """``k`` distinct items in random order (all of them when fewer)."""
    import torch

    order = torch.randperm(len(items), generator=gen).tolist()
    return [items[i] for i in order[: max(0, min(k, len(items)))]]


# ---- temporal ------------------------------------------------------------------------------------

def plan_window(n_available: int, min_frames: int, max_frames: int, gen, cfg: AugmentConfig,
                start: int | None = None) -> WindowPlan | None:
    """A window of ``L`` (uniform in ``min_frames..min(max_frames, n_available)``) annotated frames.

    The length is drawn first, so every length in the range is reachable and the temporal ops never
    change it; a stride and a dropout are used only when the video has room for them (``(L + d - 1) * s
    + 1`` annotated frames). ``start`` fixes the window's first position (else uniform). ``None`` when
    the video has fewer than ``min_frames`` annotated frames.
    """
    if n_available < max(1, min_frames):
        return None
    length = randint(gen, min_frames, min(max_frames, n_available))
    stride = 1
    if chance(gen, cfg.stride_prob) and cfg.max_stride >= 2 and length > 1:
        stride = max(1, min(randint(gen, 2, cfg.max_stride), (n_available - 1) // (length - 1)))
    drop = 0
    if chance(gen, cfg.dropout_prob) and cfg.max_dropout >= 1 and length > 1:
        room = (n_available - 1) // stride + 1 - length      # extra frames the run can take
        drop = max(0, min(randint(gen, 1, cfg.max_dropout), room))
    run = length + drop
    span = (run - 1) * stride + 1
    first = randint(gen, 0, n_available - span) if start is None else int(start)
    if not 0 <= first <= n_available - span:
        raise ValueError(f"start {start} leaves no room for a span of {span} in {n_available} frames")
    positions = [first + k * stride for k in range(run)]
    rev = chance(gen, cfg.reverse_prob)
    if rev:
        positions.reverse()
    dropped = sorted(choose(gen, positions[1:], drop), key=positions.index) if drop else []
    kept = [p for p in positions if p not in set(dropped)]
    return WindowPlan(positions=kept, stride=stride, dropped=dropped, reversed=rev)


def apply_temporal(frames, masks, plan: WindowPlan):
    """``frames[plan.positions]`` and ``masks[plan.positions]``: the same frames, in the same order."""
    import torch

    idx = torch.as_tensor(plan.positions, dtype=torch.long)
    return frames.index_select(0, idx), masks.index_select(0, idx)


def temporal_augment(frames, masks, gen, cfg: AugmentConfig, min_frames: int, max_frames: int):
    """Plan a window over a clip in memory (its frames as the annotated-frame list) and apply it.

    Returns ``(frames, masks, plan)``; ``None`` for the tensors' plan when the clip is too short.
    """
    plan = plan_window(int(frames.shape[0]), min_frames, max_frames, gen, cfg)
    if plan is None:
        return frames, masks, None
    f, m = apply_temporal(frames, masks, plan)
    return f, m, plan


# ---- spatial -------------------------------------------------------------------------------------

def hflip(frames, masks):
    return frames.flip(-1), masks.flip(-1)


def crop(frames, masks, box: tuple[int, int, int, int]):
    """``box = (top, left, height, width)`` in pixels, the same slice of frames and masks."""
    t, left, h, w = box
    return frames[..., t: t + h, left: left + w], masks[..., t: t + h, left: left + w]


def crop_box(gen, hw: tuple[int, int], cfg: AugmentConfig) -> tuple[int, int, int, int]:
    """A crop keeping ``crop_min_area..1`` of the area, aspect within ``[1/a, a]`` of the frame's."""
    h, w = hw
    area = uniform(gen, cfg.crop_min_area, 1.0) * h * w
    log_a = math.log(max(1.0, cfg.crop_max_aspect))
    aspect = math.exp(uniform(gen, -log_a, log_a)) * (w / h)
    ch = max(1, min(h, round(math.sqrt(area / aspect))))
    cw = max(1, min(w, round(math.sqrt(area * aspect))))
    return randint(gen, 0, h - ch), randint(gen, 0, w - cw), ch, cw


def resize(frames, masks, hw: tuple[int, int]):
    """Frames bilinear (antialiased when shrinking), masks nearest-exact: the same pixel grid."""
    import torch.nn.functional as F

    if tuple(frames.shape[-2:]) == tuple(hw):
        return frames, masks
    f = F.interpolate(frames, size=hw, mode="bilinear", align_corners=False, antialias=True).clamp_(0, 1)
    t, n = masks.shape[:2]
    m = masks.reshape(t * n, 1, *masks.shape[-2:]).to(frames.dtype)
    m = F.interpolate(m, size=hw, mode="nearest-exact").reshape(t, n, *hw) > 0.5
    return f, m


def zoom_out(frames, masks, scale: float, offset: tuple[int, int] | None, gen=None):
    """The clip shrunk by ``scale`` and pasted at ``offset`` (top, left; random from ``gen`` when
    None) on a black canvas of the same size; masks on an empty one. Returns ``(frames, masks, box)``."""
    import torch

    H, W = frames.shape[-2:]
    h, w = max(1, round(H * scale)), max(1, round(W * scale))
    f, m = resize(frames, masks, (h, w))
    top, left = offset if offset is not None else (randint(gen, 0, H - h), randint(gen, 0, W - w))
    out_f = torch.zeros_like(frames)
    out_m = torch.zeros_like(masks)
    out_f[..., top: top + h, left: left + w] = f
    out_m[..., top: top + h, left: left + w] = m
    return out_f, out_m, (top, left, h, w)


def lower_resolution(frames, fraction: float):
    """Frames down to ``fraction`` of their size and back (bilinear): detail lost, geometry kept."""
    import torch.nn.functional as F

    H, W = frames.shape[-2:]
    small = (max(1, round(H * fraction)), max(1, round(W * fraction)))
    f = F.interpolate(frames, size=small, mode="bilinear", align_corners=False, antialias=True)
    return F.interpolate(f, size=(H, W), mode="bilinear", align_corners=False).clamp_(0, 1)


def _factor(gen, x: float) -> float | None:
    return uniform(gen, max(0.0, 1 - x), 1 + x) if x > 0 else None


def color_jitter(frames, gen, brightness: float, contrast: float, saturation: float, hue: float = 0.0,
                 per_frame: bool = False):
    """torchvision's colour adjustments with factors from ``gen``: one draw for the clip, or one per
    frame (``per_frame``). Grey stays grey under every one of them; only colours move."""
    from torchvision.transforms.v2 import functional as TF

    def draw():
        return (_factor(gen, brightness), _factor(gen, contrast), _factor(gen, saturation),
                uniform(gen, -hue, hue) if hue > 0 else None)

    def adjust(x, b, c, s, h):
        if b is not None:
            x = TF.adjust_brightness(x, b)
        if c is not None:
            x = TF.adjust_contrast(x, c)
        if s is not None:
            x = TF.adjust_saturation(x, s)
        if h is not None:
            x = TF.adjust_hue(x, h)
        return x

    if not per_frame:
        return adjust(frames, *draw())
    import torch

    return torch.stack([adjust(f, *draw()) for f in frames])


def _geometry(frames, masks, gen, cfg: AugmentConfig, size: int, out: dict):
    """Crop, square resize and zoom-out: one draw. Returns ``(frames, masks)``; ``out`` records it."""
    if chance(gen, cfg.crop_prob):
        box = crop_box(gen, tuple(frames.shape[-2:]), cfg)
        frames, masks = crop(frames, masks, box)
        out["crop"] = list(box)
    frames, masks = resize(frames, masks, (size, size))
    if chance(gen, cfg.zoom_out_prob):
        scale = uniform(gen, cfg.zoom_out_min, 1.0)
        frames, masks, box = zoom_out(frames, masks, scale, None, gen)
        out["zoom_out"] = list(box)
    return frames, masks


def spatial_augment(frames, masks, gen, cfg: AugmentConfig, size: int):
    """All spatial ops, to a ``size x size`` clip. Returns ``(frames, masks, applied)``.

    When the geometry leaves every object empty in the first frame (the prompt frame), it is redrawn
    up to ``cfg.first_frame_tries`` times, then the plain resize is used. Objects that lose their
    first-frame mask while others keep theirs are left to the caller (``applied["first_frame_empty"]``
    lists their indices).
    """
    applied: dict = {}
    if chance(gen, cfg.hflip_prob):
        frames, masks = hflip(frames, masks)
        applied["hflip"] = True
    had = masks[0].flatten(1).any(1) if masks.shape[1] else None
    for _ in range(max(0, cfg.first_frame_tries)):
        geo: dict = {}
        f, m = _geometry(frames, masks, gen, cfg, size, geo)
        if had is None or not bool(had.any()) or bool(m[0].flatten(1).any(1)[had].any()):
            break
    else:
        geo = {"fallback": True}
        f, m = resize(frames, masks, (size, size))
    applied.update(geo)
    if chance(gen, cfg.lowres_prob):
        fraction = uniform(gen, cfg.lowres_min, 1.0)
        f = lower_resolution(f, fraction)
        applied["lowres"] = round(fraction, 4)
    f = color_jitter(f, gen, cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue)
    f = color_jitter(f, gen, cfg.frame_brightness, cfg.frame_contrast, cfg.frame_saturation, per_frame=True)
    if had is not None:
        applied["first_frame_empty"] = [int(i) for i in (had & ~m[0].flatten(1).any(1)).nonzero().flatten()]
    return f, m, applied


def normalize(frames):
    """0..1 frames to SAM 2's input: ``(x - IMAGE_MEAN) / IMAGE_STD`` per channel."""
    import torch

    mean = torch.tensor(IMAGE_MEAN, dtype=frames.dtype).view(3, 1, 1)
    std = torch.tensor(IMAGE_STD, dtype=frames.dtype).view(3, 1, 1)
    return (frames - mean) / std

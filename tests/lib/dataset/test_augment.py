"""Clip augmentations: after every op the object's mask and its pixels still coincide; temporal ops keep
each frame with its own mask; draws come only from the generator passed in; window statistics."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from sav_assets.lib.dataset import augment as A
from sav_assets.lib.dataset.augment import AugmentConfig, WindowPlan

H, W = 60, 84
GREY = 0.5
OFF = AugmentConfig(hflip_prob=0, crop_prob=0, zoom_out_prob=0, lowres_prob=0, brightness=0, contrast=0,
                    saturation=0, frame_brightness=0, frame_contrast=0, frame_saturation=0, reverse_prob=0,
                    stride_prob=0, dropout_prob=0)


def red_square_clip(t: int = 3, box=(14, 20, 22, 30)):
    """Grey frames with a pure-red rectangle (object 0) and a smaller blue one (object 1), moving right
    by 2 px per frame; masks are exactly the drawn rectangles."""
    frames = torch.full((t, 3, H, W), GREY)
    masks = torch.zeros((t, 2, H, W), dtype=torch.bool)
    y, x, h, w = box
    for k in range(t):
        xk = x + 2 * k
        frames[k, :, y: y + h, xk: xk + w] = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)
        masks[k, 0, y: y + h, xk: xk + w] = True
        frames[k, :, 4:10, 4 + 2 * k: 12 + 2 * k] = torch.tensor([0.0, 0.0, 1.0]).view(3, 1, 1)
        masks[k, 1, 4:10, 4 + 2 * k: 12 + 2 * k] = True
    return frames, masks


def object_pixels(frames, channel: int):
    """Where a colour dominates: that channel minus the larger of the other two, > 0.25."""
    others = [c for c in range(3) if c != channel]
    return (frames[:, channel] - frames[:, others].amax(1)) > 0.25


def _band(mask: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
    """(dilation, erosion) of a bool image by an r-pixel square (outside the image counts as empty)."""
    x = torch.from_numpy(mask).float()[None, None]
    grown = torch.nn.functional.max_pool2d(x, 2 * r + 1, 1, r)
    shrunk = -torch.nn.functional.max_pool2d(-torch.nn.functional.pad(x, (r, r, r, r)), 2 * r + 1, 1, 0)
    return grown[0, 0].bool().numpy(), shrunk[0, 0].bool().numpy()


def assert_mask_on_pixels(pix: np.ndarray, m: np.ndarray, tol: int = 0, what: str = "object") -> None:
    """``pix`` (T x H x W, where the object's colour is) equals ``m`` (its mask): exactly (tol 0) or up to
    ``tol`` pixels at the mask's edge (interpolation)."""
    for k in range(m.shape[0]):
        if tol == 0:
            assert np.array_equal(pix[k], m[k]), f"{what} frame {k}: pixels != mask"
        else:
            grown, shrunk = _band(m[k], tol)
            assert not (pix[k] & ~grown).any(), f"{what} frame {k}: colour outside the mask"
            assert not (shrunk & ~pix[k]).any(), f"{what} frame {k}: mask outside the colour"


def assert_coincide(frames, masks, tol: int = 0):
    """Object 0 = red pixels, object 1 = blue pixels in every frame."""
    for obj, ch in ((0, 0), (1, 2)):
        m = masks[:, obj].numpy()
        assert m.any(axis=(1, 2)).all() or tol, "every frame keeps the object"
        assert_mask_on_pixels(object_pixels(frames, ch).numpy(), m, tol, f"object {obj}")


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Small tensors on a shared 2-core machine: one intra-op thread is several times faster."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

def gen(seed: int = 0):
    return torch.Generator().manual_seed(seed)


# ---- each spatial op ------------------------------------------------------------------------------

def test_synthetic_clip_coincides_before_any_op():
    assert_coincide(*red_square_clip())


def test_hflip_moves_pixels_and_masks_together():
    f, m = red_square_clip()
    f2, m2 = A.hflip(f, m)
    assert_coincide(f2, m2)
    assert m2[0, 0, 14, W - 1 - 20] and not m2[0, 0, 14, 20]          # really flipped


@pytest.mark.parametrize("box", [(0, 0, 40, 50), (10, 25, 30, 40), (20, 30, 40, 54)])
def test_crop_is_one_slice_of_frames_and_masks(box):
    f, m = red_square_clip()
    f2, m2 = A.crop(f, m, box)
    assert tuple(f2.shape[-2:]) == box[2:] == tuple(m2.shape[-2:])
    pix = object_pixels(f2, 0).numpy()
    assert np.array_equal(pix, m2[:, 0].numpy())


def test_crop_box_within_frame_and_area_bounds():
    cfg = AugmentConfig(crop_min_area=0.5, crop_max_aspect=4 / 3)
    g = gen(3)
    for _ in range(300):
        t, left, h, w = A.crop_box(g, (H, W), cfg)
        assert 0 <= t and t + h <= H and 0 <= left and left + w <= W
        assert h * w >= 0.5 * H * W * 0.85                           # area draw, up to clamping/rounding
        assert 1 / (4 / 3) - 0.1 <= (w / h) / (W / H) <= 4 / 3 + 0.1 or h == H or w == W


@pytest.mark.parametrize("hw", [(96, 96), (32, 32), (45, 70), (121, 160)])
def test_resize_keeps_mask_on_the_object(hw):
    f, m = red_square_clip()
    f2, m2 = A.resize(f, m, hw)
    assert tuple(f2.shape[-2:]) == hw and m2.dtype == torch.bool
    assert_coincide(f2, m2, tol=1)


@pytest.mark.parametrize("scale,offset", [(0.6, (0, 0)), (0.75, (10, 15)), (0.9, (6, 8))])
def test_zoom_out_pastes_frames_and_masks_at_the_same_place(scale, offset):
    f, m = red_square_clip()
    f2, m2, box = A.zoom_out(f, m, scale, offset)
    top, left, h, w = box
    assert (top, left) == offset and tuple(f2.shape) == tuple(f.shape)
    assert (f2[..., :top, :] == 0).all() and not m2[..., :top, :].any()     # the canvas is empty
    assert_coincide(f2, m2, tol=1)
    # the object shrank with the frame
    assert m2[:, 0].sum() < m[:, 0].sum() * (scale ** 2) * 1.3


@pytest.mark.parametrize("fraction", [0.5, 0.7])
def test_lower_resolution_keeps_geometry(fraction):
    f, m = red_square_clip()
    f2 = A.lower_resolution(f, fraction)
    assert f2.shape == f.shape and not torch.equal(f2, f)        # detail was lost ...
    assert_coincide(f2, m, tol=1)                                # ... but the object is where its mask is


@pytest.mark.parametrize("per_frame", [False, True])
def test_colour_jitter_changes_colours_not_objects(per_frame):
    f, m = red_square_clip()
    f2 = A.color_jitter(f, gen(1), brightness=0.4, contrast=0.4, saturation=0.4, hue=0.05, per_frame=per_frame)
    assert not torch.allclose(f2, f)
    assert_coincide(f2, m)
    grey = f2[:, :, 50, 70]                                      # background stays grey
    assert torch.allclose(grey, grey[:, :1].expand_as(grey), atol=1e-5)
    if per_frame:
        assert not torch.allclose(f2[0, :, 50, 70], f2[1, :, 50, 70])   # each frame its own factors


def test_spatial_augment_every_op_on_keeps_masks_on_pixels():
    cfg = AugmentConfig(hflip_prob=1, crop_prob=1, zoom_out_prob=1, lowres_prob=1, hue=0.05)
    seen = Counter()
    for seed in range(25):
        f, m = red_square_clip()
        f2, m2, applied = A.spatial_augment(f, m, gen(seed), cfg, 48)
        assert tuple(f2.shape) == (3, 3, 48, 48) and tuple(m2.shape) == (3, 2, 48, 48)
        assert 0 <= float(f2.min()) and float(f2.max()) <= 1
        seen.update(k for k in applied if k != "first_frame_empty")
        # the crop may cut an object out of some frames; where the mask is, the colour is
        assert_coincide(f2, m2, tol=2)
    assert seen["hflip"] == 25 and seen["lowres"] == 25
    assert seen["crop"] + seen["fallback"] == 25 and seen["zoom_out"] > 0


def test_spatial_augment_keeps_a_prompt_in_the_first_frame():
    """An object only in a corner: a crop that loses it is redrawn, then the geometry is left alone."""
    f = torch.full((2, 3, H, W), GREY)
    m = torch.zeros((2, 1, H, W), dtype=torch.bool)
    f[:, :, 0:3, 0:3] = torch.tensor([1.0, 0, 0]).view(3, 1, 1)
    m[:, 0, 0:3, 0:3] = True
    cfg = AugmentConfig(hflip_prob=0, crop_prob=1, crop_min_area=0.2, zoom_out_prob=0, lowres_prob=0,
                        first_frame_tries=2)
    fallbacks = 0
    for seed in range(40):
        _, m2, applied = A.spatial_augment(f, m, gen(seed), cfg, 32)
        assert m2[0, 0].any() and applied["first_frame_empty"] == []
        fallbacks += bool(applied.get("fallback"))
    assert 0 < fallbacks < 40


def test_normalize_matches_sam2_input_statistics():
    f = torch.ones((1, 3, 2, 2))
    n = A.normalize(f)
    assert torch.allclose(n[0, :, 0, 0], torch.tensor([(1 - mu) / sd for mu, sd in zip(A.IMAGE_MEAN, A.IMAGE_STD)]))


# ---- determinism ---------------------------------------------------------------------------------

def test_spatial_augment_is_a_function_of_the_generator():
    cfg = AugmentConfig(hflip_prob=0.5, crop_prob=0.5, zoom_out_prob=0.5, lowres_prob=0.5)
    f, m = red_square_clip()
    torch.manual_seed(123)                                          # the global generator is not used ...
    a = A.spatial_augment(f, m, gen(7), cfg, 40)
    torch.manual_seed(999)
    b = A.spatial_augment(f, m, gen(7), cfg, 40)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[2] == b[2]
    others = [A.spatial_augment(f, m, gen(s), cfg, 40) for s in range(8, 14)]
    assert any(not torch.equal(a[0], o[0]) for o in others)         # ... another seed draws otherwise
    assert len({str(sorted(o[2].items())) for o in others}) > 1


# ---- temporal ------------------------------------------------------------------------------------

def numbered_clip(t: int, h: int = 8, w: int = 40):
    """Frame k carries k in its pixels (channel 1 = k / 64) and its mask is column k."""
    frames = torch.zeros((t, 3, h, w))
    masks = torch.zeros((t, 1, h, w), dtype=torch.bool)
    for k in range(t):
        frames[k, 1] = k / 64
        masks[k, 0, :, k] = True
    return frames, masks


def frame_numbers(frames) -> list[int]:
    return [round(float(x) * 64) for x in frames[:, 1, 0, 0]]


def mask_numbers(masks) -> list[int]:
    return [int(m[0, 0].nonzero()[0, 0]) for m in masks]


def test_apply_temporal_keeps_frame_mask_pairs():
    f, m = numbered_clip(30)
    plan = WindowPlan(positions=[20, 18, 16, 12, 10], stride=2, dropped=[14], reversed=True)
    f2, m2 = A.apply_temporal(f, m, plan)
    assert frame_numbers(f2) == mask_numbers(m2) == [20, 18, 16, 12, 10]


@pytest.mark.parametrize("name,cfg", [
    ("reverse", AugmentConfig(reverse_prob=1, stride_prob=0, dropout_prob=0)),
    ("stride", AugmentConfig(reverse_prob=0, stride_prob=1, max_stride=3, dropout_prob=0)),
    ("dropout", AugmentConfig(reverse_prob=0, stride_prob=0, dropout_prob=1, max_dropout=3)),
    ("all", AugmentConfig(reverse_prob=1, stride_prob=1, max_stride=3, dropout_prob=1, max_dropout=3)),
])
def test_temporal_ops_keep_pairs_and_do_what_they_say(name, cfg):
    f, m = numbered_clip(40)
    for seed in range(30):
        f2, m2, plan = A.temporal_augment(f, m, gen(seed), cfg, 8, 12)
        got = frame_numbers(f2)
        assert got == mask_numbers(m2) == plan.positions and 8 <= len(got) <= 12
        steps = {b - a for a, b in zip(got, got[1:])}
        if name == "reverse":
            assert steps == {-1} and plan.reversed
        if name == "stride":
            assert plan.stride in (2, 3) and steps == {plan.stride}
        if name == "dropout":
            assert 1 <= len(plan.dropped) <= 3 and got[0] not in plan.dropped
            assert sorted(got + plan.dropped) == list(range(got[0], got[0] + len(got) + len(plan.dropped)))
        if name == "all":
            run = sorted(got + plan.dropped, reverse=True)
            assert got[0] == run[0] and {a - b for a, b in zip(run, run[1:])} == {plan.stride}
            assert not set(got) & set(plan.dropped) and all(s < 0 for s in steps)


def test_temporal_ops_fit_short_videos():
    cfg = AugmentConfig(stride_prob=1, max_stride=4, dropout_prob=1, max_dropout=3)
    for seed in range(50):
        plan = A.plan_window(9, 8, 16, gen(seed), cfg)
        assert plan.stride == 1 and 8 <= plan.length <= 9 and len(plan.dropped) <= 9 - plan.length
        assert all(0 <= p < 9 for p in plan.positions + plan.dropped)
    assert A.plan_window(7, 8, 16, gen(0), cfg) is None


def test_window_length_statistics():
    """Lengths are uniform over min..max: all reachable, none outside, no length favoured."""
    g = gen(11)
    n = 2700
    lengths = Counter()
    starts = Counter()
    for _ in range(n):
        plan = A.plan_window(40, 8, 16, g, AugmentConfig())
        lengths[plan.length] += 1
        starts[min(plan.positions + plan.dropped)] += 1
    assert set(lengths) == set(range(8, 17))
    expected = n / 9
    assert all(abs(c - expected) < 0.25 * expected for c in lengths.values()), lengths
    assert min(starts) == 0 and max(starts) >= 40 - 16                  # starts spread over the video
    capped = Counter(A.plan_window(11, 8, 16, g, AugmentConfig()).length for _ in range(400))
    assert set(capped) == {8, 9, 10, 11}


def test_temporal_op_frequencies_follow_the_config():
    cfg = AugmentConfig(reverse_prob=0.25, stride_prob=0.3, dropout_prob=0.2)
    g = gen(5)
    plans = [A.plan_window(60, 8, 16, g, cfg) for _ in range(2000)]
    rev = sum(p.reversed for p in plans) / len(plans)
    strided = sum(p.stride > 1 for p in plans) / len(plans)
    dropped = sum(bool(p.dropped) for p in plans) / len(plans)
    assert abs(rev - 0.25) < 0.04 and abs(strided - 0.3) < 0.04 and abs(dropped - 0.2) < 0.04

"""The training sampler over real shards: clips whose masks sit on their objects' pixels, prompts in the
first frame, window and masklet statistics, determinism per (seed, epoch, worker), DataLoader workers."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone

import numpy as np
import pytest
import torch
from test_augment import (
    OFF,
    _one_torch_thread,  # noqa: F401  (the autouse fixture, here too)
    assert_mask_on_pixels,
    object_pixels,
)

from sav_assets.lib.dataset.augment import AugmentConfig, normalize
from sav_assets.lib.dataset.loader import ShardDataset
from sav_assets.lib.dataset.sampler import SamplerConfig, ShardClipDataset, collate_clips, video_groups
from sav_assets.lib.dataset.shards import ShardConfig, write_shards
from sav_assets.lib.sav import rle
from sav_assets.lib.store.lake import Lake

H, W = 96, 160
RED, BLUE, GREEN = (255, 0, 0), (0, 0, 255), (0, 255, 0)
CHANNEL = {0: 0, 1: 2, 2: 1}           # masklet id -> the colour channel that marks its pixels
LATE = 48                              # masklet 2 (green) appears at this source frame


def boxes(vid: str, f: int) -> dict[int, tuple[int, int, int, int]]:
    """(top, left, height, width) of each object in source frame ``f``: the red one jumps 16 px per
    annotated frame, so a frame paired with another frame's mask would show."""
    shift = 0 if vid == "vid_a" else 30
    out = {0: (10, 4 + (4 * f + shift) % 120, 20, 20), 1: (66, 140 - (f // 2) % 100, 16, 16)}
    if vid == "vid_a" and f >= LATE:
        out[2] = (40, 70, 16, 16)
    return out


def write_video(path, vid: str, n: int) -> list[dict]:
    """A grey H.264 video with coloured squares; returns the exact masks of every 4th frame as
    ``masklet_frames``-like rows (manual masklets)."""
    import av

    rows = []
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=24)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        s.options = {"crf": "8", "preset": "ultrafast", "bf": "0"}
        for f in range(n):
            img = np.full((H, W, 3), 128, np.uint8)
            b = boxes(vid, f)
            for mid, (y, x, h, w) in b.items():
                img[y: y + h, x: x + w] = (RED, BLUE, GREEN)[mid]
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
            if f % 4:
                continue
            for mid in (0, 1, 2) if vid == "vid_a" else (0, 1):
                m = np.zeros((H, W), np.uint8)
                if mid in b:
                    y, x, h, w = b[mid]
                    m[y: y + h, x: x + w] = 1
                r = rle.encode(m)
                rows.append({"video_id": vid, "masklet_id": mid, "masklet_type": "manual", "ann_idx": f // 4,
                             "frame_idx": f, "size": r["size"], "counts": r["counts"], "visible": bool(m.any())})
        for p in s.encode():
            c.mux(p)
    return rows


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """vid_a: 97 frames (25 annotated, masklet 2 from frame 48), vid_b: 65 frames (17 annotated);
    windows of 8 -> 3 + 2 samples, one video per shard (so each of two workers reads one)."""
    d = tmp_path_factory.mktemp("sampler")
    spec = {"vid_a": 97, "vid_b": 65}
    frames, paths = {}, {}
    for vid, n in spec.items():
        paths[vid] = str(d / f"{vid}.mp4")
        frames[vid] = write_video(paths[vid], vid, n)
    lake = Lake(d / "lake")
    res = write_shards(lake, "shards/train", [{"video_id": v} for v in spec], frames, None, paths,
                       ShardConfig(window=8, shard_max_samples=3), now=datetime(2025, 1, 1, tzinfo=timezone.utc))
    assert res["samples"] == 5 and res["shards"] == 2 and res["skipped"] == []
    return lake, "shards/train"


def dataset(shards, **kw) -> ShardClipDataset:
    kw.setdefault("input_size", 64)
    return ShardClipDataset.from_manifest(*shards, cfg=SamplerConfig(**kw))


def check_clip(frames, masks, object_ids, video_id, frame_idx, ann_idx, tol: int = 2):
    """Shape, SA-V fields and the object's pixels under its mask in every frame."""
    t, n = masks.shape[:2]
    assert 8 <= t <= 16 and 1 <= n <= 3 and frames.dtype == torch.float32 and masks.dtype == torch.bool
    assert float(frames.min()) >= 0 and float(frames.max()) <= 1
    assert all(f % 4 == 0 for f in frame_idx) and ann_idx == [f // 4 for f in frame_idx]
    assert len(set(frame_idx)) == t and len(set(object_ids)) == n
    steps = {abs(b - a) for a, b in zip(frame_idx, frame_idx[1:])}
    assert all(s % 4 == 0 for s in steps)
    assert masks[0].flatten(1).any(1).all(), "every object has a mask prompt in the first frame"
    if 2 in object_ids:
        assert video_id == "vid_a" and frame_idx[0] >= LATE          # chosen only when visible first
    for j, mid in enumerate(object_ids):
        assert_mask_on_pixels(object_pixels(frames, CHANNEL[mid]).numpy(), masks[:, j].numpy(), tol,
                              f"{video_id} masklet {mid}")


@pytest.mark.parametrize("workers", [0, 2])
def test_dataloader_batches_of_real_clips(shards, workers):
    ds = dataset(shards, clips_per_video=3, augment=AugmentConfig(hue=0.02))
    dl = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=collate_clips, num_workers=workers)
    per_video = Counter()
    n_batches = 0
    for b in dl:
        n_batches += 1
        assert b.frames.shape[0] == len(b) and tuple(b.frames.shape[-3:]) == (3, 64, 64)
        for i in range(len(b)):
            t, n = int(b.frame_valid[i].sum()), int(b.object_valid[i].sum())
            assert b.frame_valid[i, :t].all() and b.object_valid[i, :n].all()
            assert not b.masks[i, t:].any() and (b.frame_idx[i, t:] == -1).all() and (b.object_ids[i, n:] == -1).all()
            assert b.object_types[i] == ["manual"] * n and len(b.ann_idx[i]) == t
            check_clip(b.frames[i, :t], b.masks[i, :t, :n], b.object_ids[i, :n].tolist(), b.video_ids[i],
                       b.frame_idx[i, :t].tolist(), b.ann_idx[i])
            per_video[b.video_ids[i]] += 1
    assert per_video == {"vid_a": 3, "vid_b": 3}
    assert n_batches == (3 if workers == 0 else 4)          # two workers: a batch of 2 and one of 1 each


def test_masks_match_the_shard_masks_without_augmentation(shards):
    """With every op off, a clip is the stored masks of its frame indices, resized: metadata, frames and
    masks are one frame."""
    ds = dataset(shards, input_size=W, augment=OFF, clips_per_video=2)
    clips = list(ds)
    assert len(clips) == 4
    for c in clips:
        for t, f in enumerate(c.frame_idx):
            for j, mid in enumerate(c.object_ids):
                y, x, h, w = boxes(c.video_id, f)[mid]
                expect = torch.zeros((H, W), dtype=torch.bool)
                expect[y: y + h, x: x + w] = True
                got = torch.nn.functional.interpolate(c.masks[t, j][None, None].float(), size=(H, W),
                                                      mode="nearest-exact")[0, 0] > 0.5
                assert (got ^ expect).float().mean() < 0.02, (c.video_id, f, mid)
        assert c.augment == {"stride": 1, "reversed": False, "dropped_frames": []}
        steps = {b - a for a, b in zip(c.frame_idx, c.frame_idx[1:])}
        assert steps == {4}


def test_deterministic_per_seed_epoch_and_worker(shards):
    def key(clips):
        return [(c.video_id, tuple(c.frame_idx), tuple(c.object_ids), str(sorted(c.augment.items())),
                 round(float(c.frames.sum()), 3)) for c in clips]

    ds = dataset(shards, clips_per_video=3, seed=5)
    first = key(list(ds))
    assert key(list(ds)) == first                                     # same seed and epoch: same clips
    again = [c for c in dataset(shards, clips_per_video=3, seed=5)]
    assert all(torch.equal(a.frames, b.frames) and torch.equal(a.masks, b.masks)
               for a, b in zip(list(ds), again))
    ds.set_epoch(1)
    assert key(list(ds)) != first                                     # another epoch draws otherwise
    fixed = dataset(shards, clips_per_video=3, seed=5, shuffle_shards=False)
    e0 = key(list(fixed))
    fixed.set_epoch(1)
    assert key(list(fixed)) != e0                                     # ... not only another shard order
    assert key(list(dataset(shards, clips_per_video=3, seed=6))) != first
    # workers: each has its own stream, the whole is reproducible
    g0, g1 = ds.generator(worker=0), ds.generator(worker=1)
    assert torch.rand(4, generator=g0).tolist() != torch.rand(4, generator=g1).tolist()

    def by_workers():
        dl = torch.utils.data.DataLoader(dataset(shards, clips_per_video=2, seed=5), batch_size=None,
                                         num_workers=2)
        return key(dl)

    w = by_workers()
    assert w == by_workers() and len(w) == 4


def test_epoch_shard_order_is_shared_by_workers(shards):
    ds = dataset(shards, seed=1)
    orders = set()
    for e in range(8):
        ds.set_epoch(e)
        urls = ds.epoch_urls()
        assert sorted(urls) == sorted(ds.urls) and urls == ds.epoch_urls()    # a permutation, stable
        orders.add(tuple(urls))
    assert len(orders) == 2
    assert dataset(shards, shuffle_shards=False).epoch_urls() == ds.urls


def _video(shards, vid: str):
    urls = ShardDataset.from_manifest(*shards).urls
    return next(v for v in video_groups(ShardDataset(urls).pipeline()) if v.video_id == vid)


def test_window_and_masklet_statistics(shards):
    """Over many clips of vid_a (24 annotated frames in its shards, 3 masklets, the third from frame 48): every length
    8..16 drawn about equally often; as many masklets as max_masklets allows among those visible in
    the first frame, each about equally often; the late one only when it is visible there."""
    ds = dataset(shards, input_size=16, max_masklets=2, augment=AugmentConfig(hflip_prob=0, crop_prob=0,
                                                                              zoom_out_prob=0, lowres_prob=0))
    video = _video(shards, "vid_a")
    assert sorted(video.frames) == list(range(0, 96, 4))          # 3 windows of 8: the 25th is left out
    g = torch.Generator().manual_seed(0)
    lengths, counts, chosen, late_first = Counter(), Counter(), Counter(), 0
    n = 360
    for _ in range(n):
        c = ds.clip(video, g)
        lengths[len(c.frame_idx)] += 1
        visible_first = 3 if c.frame_idx[0] >= LATE else 2
        late_first += visible_first == 3
        assert len(c.object_ids) == min(2, visible_first)
        counts[len(c.object_ids)] += 1
        chosen.update(c.object_ids)
        if 2 in c.object_ids:
            assert c.frame_idx[0] >= LATE
    assert set(lengths) == set(range(8, 17)) and max(lengths.values()) < 2.2 * min(lengths.values())
    assert counts == {2: n}
    assert chosen[2] > 0 and late_first > 0
    # object 2 is eligible in late_first clips and chosen in about 2/3 of them
    assert abs(chosen[2] / late_first - 2 / 3) < 0.15
    assert abs(chosen[0] - chosen[1]) < 0.15 * n
    # with room for all three, the count follows visibility in the first frame
    ds3 = dataset(shards, input_size=16, max_masklets=3, augment=OFF)
    got = Counter(len(ds3.clip(video, g).object_ids) for _ in range(120))
    assert set(got) == {2, 3}


def test_unusable_videos_are_counted_not_fatal(shards):
    ds = dataset(shards, min_frames=20, max_frames=24)
    clips = list(ds)
    assert {c.video_id for c in clips} == {"vid_a"}                  # vid_b has 17 annotated frames
    assert ds.skipped == {"fewer annotated frames than min_frames": 1}
    none = dataset(shards, masklet_types=("auto",))
    assert list(none) == [] and none.skipped == {"no masklet visible in the first frame": 2}


def test_normalised_frames_are_sam2_input(shards):
    a = list(dataset(shards, seed=3))
    b = list(dataset(shards, seed=3, normalize=True))
    assert [c.frame_idx for c in a] == [c.frame_idx for c in b]
    for x, y in zip(a, b):
        assert torch.allclose(normalize(x.frames), y.frames, atol=1e-6) and float(y.frames.min()) < 0


def test_config_validation():
    with pytest.raises(ValueError, match="min_frames"):
        SamplerConfig(min_frames=9, max_frames=8)
    cfg = SamplerConfig(augment={"hflip_prob": 0.0})
    assert isinstance(cfg.augment, AugmentConfig) and cfg.augment.hflip_prob == 0.0
    assert SamplerConfig().as_dict()["augment"]["reverse_prob"] == AugmentConfig().reverse_prob


def test_readme_tables_show_the_defaults_that_run():
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    section = readme.split("### Training sampler and augmentations", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| `(\w+)` \| ([^|]+) \|", section, flags=re.M))
    rows = {k: v for k, v in rows.items() if k not in ("SamplerConfig", "AugmentConfig")}
    expect = {k: v for k, v in SamplerConfig().as_dict().items() if k != "augment"}
    expect.update(AugmentConfig().as_dict())
    assert {k: str(v) for k, v in expect.items()} == {k: v.strip() for k, v in rows.items()}

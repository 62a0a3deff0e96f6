"""The SAM 2 pseudo-labeler with the real sam2 code: tiny 2.1 config, random weights, 128 px input, CPU.

Random weights make masks meaningless, so these tests assert structure and invariants (RLE sizes,
the annotation grid, visibility, SA-V fields, ids), identity across chunks, agreement with
SAM2VideoPredictor's own propagation, the re-seeding plumbing and error classification.
"""

from __future__ import annotations

import functools
import io
import sys
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sam2")
pytest.importorskip("decord")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _video_util import make_video, synth_frames  # noqa: E402
from conftest import SHARED_DATA  # noqa: E402

from sav_assets.lib.label import labeler as lab  # noqa: E402
from sav_assets.lib.label import seeding  # noqa: E402
from sav_assets.lib.label.config import LabelerConfig, LabelingFailed, LabelResult, label_key  # noqa: E402
from sav_assets.lib.label.labeler import label_video  # noqa: E402
from sav_assets.lib.label.model import ModelSpec, load_model  # noqa: E402
from sav_assets.lib.label.prompts import Prompt  # noqa: E402
from sav_assets.lib.sav import fields as masklet_fields  # noqa: E402
from sav_assets.lib.sav import rle  # noqa: E402
from sav_assets.lib.store import tables  # noqa: E402
from sav_assets.lib.video.decode import iter_frame_chunks, read_frames  # noqa: E402
from sav_assets.lib.video.errors import DECODER_CRASH, DECODER_TIMEOUT, VideoError  # noqa: E402

N_FRAMES, W, H, FPS = 32, 160, 120, 24   # 24 fps -> every 4th frame -> 8 annotated frames
LATE = 16                                 # the blue square enters on frame 16 = annotated frame 4
SIZE = 128                                # model input size (a multiple of 32): keeps CPU tests fast
GRID = masklet_fields.annotation_grid(N_FRAMES, FPS)
SHARED = SHARED_DATA / "videos"


def fast_cfg(**kw) -> LabelerConfig:
    base = {"points_per_side": 4, "points_per_batch": 16, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0,
            "max_objects": 6, "reseed_every": 4, "chunk_frames": 64, "isolate_decode": False,
            "prefetch": False, "cycle_check": False, "min_area_frac": 0.0}
    base.update(kw)
    return LabelerConfig(**base)


@pytest.fixture(scope="module")
def loaded():
    """The real SAM 2.1 tiny model, random weights, at a 128 px input on the CPU."""
    return load_model(ModelSpec(config="tiny", image_size=SIZE, device="cpu"))


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    d = tmp_path_factory.mktemp("labeler")
    v = make_video(d / "synth.mp4", n=N_FRAMES, w=W, h=H, fps=FPS, late_square_from=LATE)
    return str(d / "synth.mp4"), v


SQUARE_BOX = [10.0, 80.0, 40.0, 110.0]   # the blue square, present from frame 16 (annotated frame 4)
PROMPTS = [
    Prompt("synth", 0, 1, [[38.0, 50.0], [150.0, 10.0]], [1, 0], None),
    Prompt("synth", 17, 7, None, None, SQUARE_BOX),         # snaps to frame 16
    Prompt("synth", 24, 1, [[80.0, 50.0]], [1], None),       # correction for obj 1 on frame 24
]


@pytest.fixture(scope="module")
def prompted_chunked(loaded, video):
    path, v = video
    seen = []
    res = label_video(loaded, path, v, fast_cfg(chunk_frames=3, cycle_check=True), prompts=PROMPTS,
                      progress=lambda d, n: seen.append((d, n)), mode="prompted")
    return res, seen


# ---------------------------------------------------------------------------------------------
# invariants


def check_invariants(res, v, grid):
    h, w = v["video_height"], v["video_width"]
    T = len(grid)
    mcols = {f.name for f in tables.MASKLETS} - {"batch_id", "created_at"}
    fcols = {f.name for f in tables.MASKLET_FRAMES} - {"batch_id", "created_at"}
    ids = [m["masklet_id"] for m in res.masklets]
    assert len(ids) == len(set(ids)), "masklet ids must be unique"
    by_id: dict[int, list] = {i: [] for i in ids}
    for r in res.frames:
        assert set(r) == fcols
        by_id[r["masklet_id"]].append(r)
    for m in res.masklets:
        assert set(m) == mcols
        rows = sorted(by_id[m["masklet_id"]], key=lambda r: r["ann_idx"])
        assert [r["ann_idx"] for r in rows] == list(range(T))
        assert [r["frame_idx"] for r in rows] == grid
        for r in rows:
            assert r["size"] == [h, w]
            d = rle.decode({"size": r["size"], "counts": r["counts"]})
            assert d.shape == (h, w)
            assert int(d.sum()) == r["area"] == rle.area(r)
            assert r["visible"] == (r["area"] > 0)
            assert r["bbox"] == rle.bbox(r)
            assert r["masklet_type"] == m["masklet_type"]
            if not r["visible"]:
                assert r["stability_score"] is None
        derived = masklet_fields.derive([r["area"] for r in rows], h, w)
        for k, val in derived.items():
            assert m[k] == val, k
        stabs = [r["stability_score"] for r in rows if r["visible"] and r["stability_score"] is not None]
        if stabs:
            assert m["masklet_stability_min"] == pytest.approx(min(stabs))
            assert m["masklet_stability_mean"] == pytest.approx(float(np.mean(stabs)))
        assert m["source"] == {"auto": "sam2_auto", "prompted": "sam2_prompted"}[m["masklet_type"]]
        assert m["masklet_edited_frame_count"] == 0 and m["sav_fields_json"] is None
        assert m["random_weights"] is True and m["checkpoint_sha256"] is None
        assert m["model_name"] == "sam2.1_hiera_tiny" and m["label_key"] == res.label_key
        ci = m["masklet_cycle_iou"]
        assert ci is None or 0.0 <= ci <= 1.0
    # rows go into the real table schemas
    tables.to_table(res.masklets, tables.MASKLETS)
    tables.to_table(res.frames, tables.MASKLET_FRAMES)
    assert res.stats["frames_labeled"] == T and res.stats["objects"] == len(ids)
    assert res.stats["peak_host_mb"] > 0 and res.stats["peak_gpu_mb"] is None  # CPU run


# ---------------------------------------------------------------------------------------------
# decoding the annotated frames


def test_frames_decode_only_the_grid_in_chunks(video):
    path, _ = video
    chunks = list(iter_frame_chunks(path, GRID, 3))
    assert [c.indices for c in chunks] == [GRID[i:i + 3] for i in range(0, len(GRID), 3)]
    assert [c.start for c in chunks] == [0, 3, 6]
    assert all(c.frames.dtype == np.uint8 and c.frames.shape[1:] == (H, W, 3) for c in chunks)
    iso = list(iter_frame_chunks(path, GRID, 4, isolate=True, prefetch=True))
    assert np.array_equal(np.concatenate([c.frames for c in iso]), np.concatenate([c.frames for c in chunks]))
    rev = list(iter_frame_chunks(path, GRID, 4, reverse=True))
    assert [c.start for c in rev] == [4, 0]
    ref = synth_frames(N_FRAMES, W, H, LATE)[GRID]
    got = read_frames(path, GRID).astype(int)
    assert np.abs(got - ref).mean() < 12  # lossy codec, but the right frames
    with pytest.raises(VideoError, match="outside"):
        read_frames(path, [0, N_FRAMES + 5])


def test_chunked_decoding_returns_exactly_the_sequential_frames(make_video):
    """Chunks (forward, reverse, isolated) hold the very frames a frame-by-frame read gives, on a video
    with several GOPs: guards the seek that stops decord's read-ahead (a wrong seek shifts frames)."""
    import decord

    path = str(make_video(None, seconds=3.0, fps=24, width=160, height=120, gop=12, seed=5))
    vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=0)
    seq = np.stack([vr[i].asnumpy() for i in range(len(vr))])
    grid = list(range(0, len(vr), 4))
    for kw in ({}, {"reverse": True}, {"isolate": True, "prefetch": True}):
        chunks = list(iter_frame_chunks(path, grid, 3, **kw))
        for c in chunks:
            assert np.array_equal(c.frames, seq[c.indices]), (kw, c.indices)
        assert sorted(i for c in chunks for i in c.indices) == grid


def test_isolated_decoder_reports_its_peak_memory(video):
    path, _ = video
    stats: dict = {}
    list(iter_frame_chunks(path, GRID, 4, isolate=True, stats=stats))
    assert 10 < stats["decoder_peak_mb"] < 4096


@pytest.mark.parametrize("fault,error_class", [("segv", DECODER_CRASH), ("hang", DECODER_TIMEOUT)])
def test_decoder_crash_and_hang_fail_the_video_with_the_ingestion_spellings(loaded, video, monkeypatch, fault,
                                                                            error_class):
    """A crash / hang of the isolated decoder while labeling is a LabelingFailed (a VideoError) with the
    one vocabulary's class, never the old ``decoder_crashed`` / ``decode_timeout``."""
    path, v = video
    monkeypatch.setattr(lab, "iter_frame_chunks", functools.partial(iter_frame_chunks, test_fault=fault))
    t0 = time.monotonic()
    with pytest.raises(LabelingFailed) as ei:
        label_video(loaded, path, v, fast_cfg(isolate_decode=True, decode_timeout_s=3))
    assert isinstance(ei.value, VideoError)
    assert ei.value.error_class == error_class and error_class not in ("decoder_crashed", "decode_timeout")
    assert time.monotonic() - t0 < 30


def test_overlay_png():
    from PIL import Image

    from sav_assets.lib.label.overlay import render_overlay

    f = synth_frames(1, W, H)[0]
    m = np.zeros((H, W), bool)
    m[30:70, 20:56] = True
    png = render_overlay(f, [m, rle.encode(m[::-1].copy())], [1, 2], width=512)
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG" and img.size == (512, round(H * 512 / W))


# ---------------------------------------------------------------------------------------------
# label_video end to end


def test_auto_labeling_invariants(loaded, video):
    path, v = video
    res = label_video(loaded, path, v, fast_cfg(reseed_every=3, cycle_check=True, max_objects=3), mode="auto")
    check_invariants(res, v, GRID)
    assert all(m["masklet_type"] == "auto" for m in res.masklets)
    assert len(res.masklets) <= 3  # max_objects caps the auto masklets
    assert res.stats["masklets_auto"] == len(res.masklets)
    for m in res.masklets:
        assert m["masklet_first_appeared_frame"] in (-1, *range(len(GRID)))
    if any(r["visible"] for r in res.frames):
        assert res.sample_overlay_png and res.sample_overlay_png[:8] == b"\x89PNG\r\n\x1a\n"
        assert res.stats["sample_frame_idx"] in GRID


def test_prompted_masklets_and_late_object(prompted_chunked, video):
    res, seen = prompted_chunked
    path, v = video
    check_invariants(res, v, GRID)
    assert seen[-1] == (seen[-1][1], seen[-1][1])  # progress reaches the total
    by = {m["masklet_id"]: m for m in res.masklets}
    assert sorted(by) == [1, 7]
    assert all(m["masklet_type"] == "prompted" and m["source"] == "sam2_prompted" for m in by.values())
    late = [r for r in res.frames if r["masklet_id"] == 7]
    # the object prompted on frame 17 (snapped to annotated frame 4 = frame 16) is empty before it
    assert all(r["area"] == 0 and not r["visible"] for r in late if r["ann_idx"] < 4)
    assert by[7]["masklet_first_appeared_frame"] == -1 or by[7]["masklet_first_appeared_frame"] >= 4
    assert by[7]["masklet_frame_count"] == len(GRID)
    # cycle check ran: a float for masklets visible on the last frame
    last = {r["masklet_id"]: r["visible"] for r in res.frames if r["ann_idx"] == len(GRID) - 1}
    for mid, vis in last.items():
        if vis:
            assert by[mid]["masklet_cycle_iou"] is not None


def test_chunking_keeps_identity_and_labels_exactly(prompted_chunked, loaded, video):
    chunked, _ = prompted_chunked
    path, v = video
    whole = label_video(loaded, path, v, fast_cfg(chunk_frames=64, cycle_check=True, isolate_decode=True,
                                                  prefetch=True),
                        prompts=PROMPTS, mode="prompted")
    key = lambda r: (r["masklet_id"], r["ann_idx"])  # noqa: E731
    a = sorted(chunked.frames, key=key)
    b = sorted(whole.frames, key=key)
    assert [key(r) for r in a] == [key(r) for r in b]
    assert [r["counts"] for r in a] == [r["counts"] for r in b]
    for ma, mb in zip(chunked.masklets, whole.masklets):
        assert ma["masklet_id"] == mb["masklet_id"]
        if ma["masklet_cycle_iou"] is None:
            assert mb["masklet_cycle_iou"] is None
        else:
            assert ma["masklet_cycle_iou"] == pytest.approx(mb["masklet_cycle_iou"])
    # chunking and decode isolation do not change the resume key
    assert chunked.label_key == whole.label_key


def test_reseeding_starts_new_masklet_for_object_entering_later(loaded, video, monkeypatch):
    """The mask generator 'finds' the blue square when it enters: a new auto masklet starts there."""
    path, v = video
    square = np.zeros((H, W), bool)
    x0, y0, x1, y1 = map(int, SQUARE_BOX)
    square[y0:y1, x0:x1] = True
    red = np.zeros((H, W), bool)
    red[30:70, 20:56] = True
    calls = []

    def fake_seeds(gen, tracker, bb, frame, policy, points=None):
        calls.append(frame.shape)
        blue_visible = frame[y0 + 5:y1 - 5, x0 + 5:x1 - 5, 2].mean() > 150
        out = [seeding.Seed(red, 0.9, 0.97)]
        if blue_visible:
            out.append(seeding.Seed(square, 0.95, 0.99))
        return out

    monkeypatch.setattr(seeding, "generate_seeds", fake_seeds)
    cfg = fast_cfg(reseed_every=4, new_object_max_overlap=1.01, seed_policy="grid")  # every seed is new
    res = label_video(loaded, path, v, cfg, prompts=[Prompt("synth", 0, 3, [[150.0, 60.0]], [1], None)])
    check_invariants(res, v, GRID)
    assert len(calls) == 2  # annotated frames 0 and 4
    by = {m["masklet_id"]: m for m in res.masklets}
    # prompted id 3 keeps its id; auto ids follow it
    assert by[3]["masklet_type"] == "prompted"
    autos = sorted(i for i, m in by.items() if m["masklet_type"] == "auto")
    assert autos == [4, 5, 6]  # red at 0, then red again + square at 4 (max_overlap > 1: all new)
    assert by[4]["masklet_first_appeared_frame"] == 0
    assert by[6]["masklet_first_appeared_frame"] == 4, "the square seeded on annotated frame 4 starts there"
    rows = {r["ann_idx"]: r for r in res.frames if r["masklet_id"] == 6}
    assert all(rows[a]["area"] == 0 for a in range(4))
    assert rows[4]["area"] == int(square.sum()) and rows[4]["predicted_iou"] == pytest.approx(0.95)
    assert rows[4]["stability_score"] == pytest.approx(0.99)


def test_bad_and_empty_inputs_are_classified(loaded, video, tmp_path):
    path, v = video
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    for iso in (False, True):
        with pytest.raises(LabelingFailed) as ei:
            label_video(loaded, str(junk), {**v, "video_id": "junk"}, fast_cfg(isolate_decode=iso))
        assert ei.value.error_class == "decode_error" and "junk.mp4" in ei.value.message
    src = SHARED / "bedroom.mp4"
    if src.is_file():
        trunc = tmp_path / "trunc.mp4"
        trunc.write_bytes(src.read_bytes()[:60000])
        with pytest.raises(LabelingFailed) as ei:
            label_video(loaded, str(trunc), {"video_id": "trunc", "video_fps": 30.0, "video_frame_count": 200,
                                             "video_height": 540, "video_width": 960}, fast_cfg())
        assert ei.value.error_class in ("decode_error", DECODER_CRASH)
    with pytest.raises(LabelingFailed) as ei:
        label_video(loaded, path, {**v, "video_frame_count": 0}, fast_cfg())
    assert ei.value.error_class == "empty_video"
    for bad in (Prompt("synth", 0, 1, [[W + 50.0, 10.0]], [1], None), Prompt("synth", 999, 1, [[1.0, 1.0]], [1], None)):
        with pytest.raises(LabelingFailed) as ei:
            label_video(loaded, path, v, fast_cfg(), prompts=[bad], mode="prompted")
        assert ei.value.error_class == "bad_prompt"
    with pytest.raises(ValueError, match="mode"):
        label_video(loaded, path, v, fast_cfg(), mode="everything")


def test_cuda_oom_is_retried_once_with_offloading(loaded, video, monkeypatch):
    path, v = video
    seen = []

    def fake(loaded_, path_, video_, cfg, prompts, progress, mode, retried):
        seen.append((cfg.offload_state_to_cpu, cfg.offload_video_to_cpu, cfg.chunk_frames, retried))
        if len(seen) == 1 or fail_always:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return LabelResult([], [], {"oom_retried": retried})

    monkeypatch.setattr(lab, "_label", fake)
    fail_always = False
    res = label_video(loaded, path, v, fast_cfg())
    assert res.stats["oom_retried"] is True
    assert seen == [(False, False, 64, False), (True, True, 16, True)]
    seen.clear()
    fail_always = True
    with pytest.raises(LabelingFailed) as ei:
        label_video(loaded, path, v, fast_cfg())
    assert ei.value.error_class == "oom" and len(seen) == 2

    def boom(*a, **k):
        raise KeyError("surprise")

    monkeypatch.setattr(lab, "_label", boom)
    with pytest.raises(KeyError, match="surprise"):     # a bug, not a video's failure: raised as it is
        label_video(loaded, path, v, fast_cfg())


def test_label_key_is_stable_and_tracks_what_changes_labels(loaded):
    k = label_key("abc", loaded, LabelerConfig())
    assert k == label_key("abc", loaded, LabelerConfig()) and len(k) == 64
    assert k != label_key("abd", loaded, LabelerConfig())
    assert k != label_key("abc", loaded, LabelerConfig(points_per_side=16))
    assert k != label_key("abc", loaded, LabelerConfig(reseed_every=0))
    assert k != label_key("abc", loaded, LabelerConfig(), prompts=PROMPTS)
    assert label_key("abc", loaded, LabelerConfig(), mode="auto") == label_key(
        "abc", loaded, LabelerConfig(), prompts=PROMPTS, mode="auto")  # auto mode ignores prompts
    # speed/memory knobs do not change the labels, so they keep the key
    assert k == label_key("abc", loaded, LabelerConfig(chunk_frames=8, offload_state_to_cpu=True,
                                                           isolate_decode=False, points_per_batch=16))


# ---------------------------------------------------------------------------------------------
# what labeling costs: encoder calls, decoder passes, prompts (counted on the real model)


@pytest.fixture(scope="module")
def long_video(tmp_path_factory):
    """80 frames at 24 fps: 20 annotated frames, so re-seeding (every 8th) and the 16-frame cycle
    window both happen with the default workload."""
    d = tmp_path_factory.mktemp("labeler_long")
    v = make_video(d / "synth.mp4", n=80, w=W, h=H, fps=FPS, late_square_from=LATE)
    return str(d / "synth.mp4"), v


def _count_calls(monkeypatch, obj, name) -> list:
    calls = []
    real = getattr(obj, name)

    def counted(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(obj, name, counted)
    return calls


def test_default_workload_runs_one_image_encoder_pass_per_annotated_frame(loaded, long_video, monkeypatch):
    """The full default workload (re-seeding and the cycle check on, LabelerConfig's defaults) encodes
    every annotated frame exactly once: the cycle check reuses the forward pass's features. The
    encoder and mask-decoder calls are counted on the real SAM 2 model and match label_runs' counters."""
    path, v = long_video
    enc = _count_calls(monkeypatch, loaded.model, "forward_image")
    dec = []
    hook = loaded.model.sam_mask_decoder.register_forward_hook(lambda *a: dec.append(1))
    prompts = [Prompt("synth", 0, 1, None, None, [20.0, 30.0, 56.0, 70.0]),
               Prompt("synth", 76, 1, [[40.0, 50.0]], [1], None)]     # correction on the last annotated frame
    try:
        res = label_video(loaded, path, v, LabelerConfig(), prompts=prompts)
    finally:
        hook.remove()
    T = len(masklet_fields.annotation_grid(80, FPS))
    assert T == 20
    assert len(enc) == T, f"{len(enc)} image-encoder passes for {T} annotated frames"
    st = res.stats
    assert st["encoder_calls"] == T and st["encoder_calls_per_frame"] == 1.0
    assert st["decoder_passes"] == len(dec)
    # the cycle check ran (on cached features): the prompted masklet visible on the last frame has a value
    by = {m["masklet_id"]: m for m in res.masklets}
    last = {r["masklet_id"]: r["visible"] for r in res.frames if r["ann_idx"] == T - 1}
    assert last[1] and by[1]["masklet_cycle_iou"] is not None
    assert st["seed_policy"] == "uncovered" and st["prompts"] == st["seed_prompts"] + 2
    for k in ("decode_wait_s", "host_copy_s", "rle_s"):
        assert st[k] >= 0.0
    assert st["host_copy_s"] > 0 and st["rle_s"] > 0
    check_invariants(res, v, masklet_fields.annotation_grid(80, FPS))


def test_whole_video_cycle_check_re_encodes_and_agrees_with_the_cached_one(loaded, video):
    """cycle_frames=0 (the whole video, frames decoded and encoded again) gives the same cycle IoUs
    as the cached features when the window covers the video: only the encoder work differs."""
    path, v = video
    cfg = fast_cfg(cycle_check=True, reseed_every=0)
    a = label_video(loaded, path, v, cfg, prompts=PROMPTS[:2], mode="prompted")
    b = label_video(loaded, path, v, fast_cfg(cycle_check=True, reseed_every=0, cycle_frames=0),
                    prompts=PROMPTS[:2], mode="prompted")
    T = len(GRID)
    assert a.stats["encoder_calls"] == T
    assert T < b.stats["encoder_calls"] <= 2 * T
    assert [r["counts"] for r in a.frames] == [r["counts"] for r in b.frames]
    for ma, mb in zip(a.masklets, b.masklets):
        assert ma["masklet_cycle_iou"] == mb["masklet_cycle_iou"]


def _union_on(rows: list[dict], ids: list[int], a: int, hw) -> np.ndarray | None:
    u = None
    for r in rows:
        if r["masklet_id"] in ids and r["ann_idx"] == a:
            m = rle.decode(r).astype(bool)
            u = m if u is None else u | m
    return u


@pytest.mark.parametrize("policy", ["uncovered", "grid", "first_frame"])
def test_seed_prompt_accounting_with_the_real_generator(loaded, long_video, monkeypatch, policy):
    """Each seeding prompts the real SAM 2 generator at exactly the policy's points (for ``uncovered``:
    the grid points outside the union of the masks tracked on that frame, read back from the
    rows), and label_runs' prompt and decoder counters are what the model ran."""
    path, v = long_video
    calls = []
    real = seeding.generate_seeds

    def spy(gen, tracker, bb, frame, pol, points=None):
        calls.append((len(calls), list(tracker.ids), np.asarray(points)))
        return real(gen, tracker, bb, frame, pol, points)

    monkeypatch.setattr(seeding, "generate_seeds", spy)
    dec = []
    hook = loaded.model.sam_mask_decoder.register_forward_hook(lambda *a: dec.append(1))
    cfg = fast_cfg(points_per_side=8, reseed_every=8, max_objects=64, seed_policy=policy)
    try:
        res = label_video(loaded, path, v, cfg, prompts=[Prompt("synth", 0, 1, None, None, [20.0, 30.0, 90.0, 80.0])])
    finally:
        hook.remove()
    st = res.stats
    seeding_frames = [0] if policy == "first_frame" else [0, 8, 16]
    assert len(calls) == len(seeding_frames)
    pol = seeding.SeedPolicy.from_config(cfg)
    for (_k, ids, pts), a in zip(calls, seeding_frames):
        expect = pol.prompt_points(_union_on(res.frames, ids, a, (H, W)) if policy == "uncovered" else None)
        assert np.array_equal(pts, expect), (policy, a)
    assert st["seed_prompts"] == sum(len(p) for _, _, p in calls)
    assert st["decoder_passes"] == len(dec)
    if policy != "uncovered":
        assert st["seed_prompts"] == 64 * len(seeding_frames)
    else:
        assert st["seed_prompts"] < 64 * len(seeding_frames)  # the prompted box covers part of frame 0

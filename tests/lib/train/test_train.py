"""lib/train on the real SAM 2.1 tiny (random weights, 128 px, CPU): the fine-tuned checkpoint loads
through the normal SAV_SAM2_CHECKPOINT path with its SHA-256 pin, training steps reduce SAM 2's loss on
a fixed synthetic clip, a run resumes from its saved state, the registry promotes, and the evaluator
scores a known case."""

from __future__ import annotations

import numpy as np
import pytest

from sav_assets.lib.label.model import CheckpointRefused, ModelSpec, load_model
from sav_assets.lib.store.lake import Lake
from sav_assets.lib.train import registry
from sav_assets.lib.train.evaluate import Episode, evaluate_models
from sav_assets.lib.train.finetune import FinetuneConfig, finetune, learning_rate, run_key
from sav_assets.lib.train.synthetic import demo_clips

SIZE = 128


def _model():
    return load_model(ModelSpec(config="tiny", image_size=SIZE, device="cpu"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Six steps on one fixed clip (the loss must fall), checkpoint in a local lake."""
    import torch

    torch.set_num_threads(2)
    lake = Lake(tmp_path_factory.mktemp("lake"))
    clip = next(iter(demo_clips(n_videos=1, clip_frames=3, max_objects=2)(0)))
    cfg = FinetuneConfig(steps=6, lr=1e-3, warmup_steps=1, point_prob=0.0, freeze_image_encoder=True, save_every=3)
    loaded = _model()
    res = finetune(loaded, lambda epoch: [clip], cfg, lake, data_version="fixed-clip")
    return lake, loaded, cfg, res


def test_training_steps_reduce_sam2_loss(trained):
    _, _, _, res = trained
    assert res.steps == 6 and len(res.losses) == 6
    assert res.losses[-1] < 0.8 * res.losses[0], res.losses


def test_checkpoint_round_trip_through_the_loading_path_with_pin(trained, tmp_path):
    import torch

    lake, loaded, _, res = trained
    assert res.checkpoint_uri.endswith(f"models/checkpoints/{res.sha256}.pt")
    back = load_model(ModelSpec(config="tiny", image_size=SIZE, device="cpu", checkpoint=res.checkpoint_uri,
                                checkpoint_sha256=res.sha256))
    assert back.checkpoint_sha256 == res.sha256 and not back.random_weights
    sd_a, sd_b = loaded.model.state_dict(), back.model.state_dict()
    assert all(torch.equal(sd_a[k].cpu(), sd_b[k]) for k in sd_a)
    with pytest.raises(CheckpointRefused, match="SHA-256"):
        load_model(ModelSpec(config="tiny", image_size=SIZE, device="cpu", checkpoint=res.checkpoint_uri,
                             checkpoint_sha256="0" * 64))


def test_resume_from_last_saved_step(trained):
    lake, _, cfg, res = trained
    # a longer run with the same key prefix resumes from the saved state of step 6
    more = FinetuneConfig(**{**cfg.__dict__, "steps": 7})
    loaded = _model()
    key = run_key(loaded, more, "fixed-clip")
    lake.put_bytes(f"models/runs/{key}/state.pt", lake.get_bytes(f"models/runs/{res.run_key}/state.pt"))
    clip = next(iter(demo_clips(n_videos=1, clip_frames=3, max_objects=2)(0)))
    res2 = finetune(loaded, lambda epoch: [clip], more, lake, data_version="fixed-clip")
    assert res2.resumed_from == 6 and res2.steps == 7 and len(res2.losses) == 7
    assert res2.losses[:6] == res.losses


def test_registry_promotion_and_current_model(trained):
    lake, loaded, cfg, res = trained
    assert registry.current_labeling_model(lake) is None
    kw = dict(checkpoint_uri=res.checkpoint_uri, parent_sha256=None, model_config="tiny", image_size=SIZE,
              data_version="fixed-clip", config_hash=cfg.digest(), steps=res.steps, metrics={"loss": 1.0})
    registry.register(lake, sha256=res.sha256, run_key=res.run_key, **kw)
    registry.register(lake, sha256="f" * 64, run_key="other", **kw)
    assert registry.find_run(lake, res.run_key)["sha256"] == res.sha256
    registry.promote(lake, res.sha256[:10])
    assert registry.current_labeling_model(lake)["sha256"] == res.sha256
    registry.promote(lake, "f" * 64)
    cur = registry.current_labeling_model(lake)
    assert cur["sha256"] == "f" * 64
    rows = {r["sha256"]: r for r in registry.list_models(lake)}
    assert rows[res.sha256]["promoted"] is False and rows["f" * 64]["promoted"] is True
    with pytest.raises(KeyError):
        registry.promote(lake, "0123")


def test_evaluation_numbers_on_a_known_case(monkeypatch):
    from sav_assets.lib.train import evaluate

    gt = np.zeros((5, 1, 40, 40), bool)
    for t in range(5):
        gt[t, 0, 10:20, 5 + 2 * t:15 + 2 * t] = True
    ep = Episode("v0", np.zeros((5, 40, 40, 3), np.uint8), gt, ["0"])
    half = gt.copy()
    half[:, :, :, :] = False
    for t in range(5):
        half[t, 0, 10:20, 5 + 2 * t:10 + 2 * t] = True      # half of each box: J = 0.5
    preds = {"perfect": gt, "half": half}
    monkeypatch.setattr(evaluate, "predict_episode", lambda loaded, e: preds[loaded])
    res = evaluate_models({"perfect": "perfect", "half": "half"}, [ep])
    assert res["models"]["perfect"]["J&F"] == pytest.approx(1.0)
    assert res["models"]["perfect"]["stability"] == pytest.approx(1.0)
    assert res["models"]["half"]["J"] == pytest.approx(0.5)
    assert res["plots"]["v0"][:8] == b"\x89PNG\r\n\x1a\n"


def test_frozen_encoder_cache_gives_the_same_outputs_and_encodes_each_frame_once():
    import torch

    from sav_assets.lib.train.forward import EncoderCache, clip_forward, prepare_clip

    torch.set_num_threads(1)
    loaded = load_model(ModelSpec(config="tiny", image_size=64, device="cpu"))
    clip = next(iter(demo_clips(n_videos=1, clip_frames=3, max_objects=2, size=(64, 48))(0)))
    frames, masks = prepare_clip(clip.frames, clip.masks, 64, "cpu")
    cache = EncoderCache()
    with torch.no_grad():
        plain = clip_forward(loaded.model, frames, masks)
        first = clip_forward(loaded.model, frames, masks, cache=cache)
        assert (cache.hits, cache.misses) == (0, 3)
        again = clip_forward(loaded.model, frames[1:], masks[1:], cache=cache)
        assert (cache.hits, cache.misses) == (2, 3)
        direct = clip_forward(loaded.model, frames[1:], masks[1:])
    for a, b in zip(plain, first):
        torch.testing.assert_close(a["pred_masks_high_res"], b["pred_masks_high_res"], rtol=1e-4, atol=1e-4)
    for a, b in zip(direct, again):
        torch.testing.assert_close(a["pred_masks_high_res"], b["pred_masks_high_res"], rtol=1e-4, atol=1e-4)


def test_validation_episodes_are_held_out_and_promptable():
    from sav_assets.lib.train import synthetic

    eps = synthetic.demo_episodes(n_videos=2, n_frames=32, size=(64, 48))
    train = synthetic.render_video(synthetic.TRAIN_SEED_BASE, n_frames=32, width=64, height=48)
    for ep in eps:
        # every scored object has a frame-0 prompt (the late diamond, obj 2, has none there)
        assert ep.masks[0].reshape(len(ep.obj_ids), -1).any(1).all()
        assert "2" not in ep.obj_ids and ep.masks.shape[1] == len(ep.obj_ids) == 3
        assert not np.array_equal(ep.frames, train[0])


def test_single_mask_tracking_supervises_the_mask_that_is_output():
    """The default from random weights: one mask per propagated frame in training AND evaluation, so the loss
    sees exactly the mask the evaluator scores (sam2's default keeps 3 and outputs the best-IoU one)."""
    import torch

    from sav_assets.lib.train.forward import clip_forward, prepare_clip

    torch.set_num_threads(1)
    multi_model = load_model(ModelSpec(config="tiny", image_size=64, device="cpu"))
    one_model = load_model(ModelSpec(config="tiny", image_size=64, device="cpu", multimask_tracking=False))
    assert one_model.config_sha256 != multi_model.config_sha256      # label keys tell the two apart
    clip = next(iter(demo_clips(n_videos=1, clip_frames=3, max_objects=2, size=(64, 48))(0)))
    frames, masks = prepare_clip(clip.frames, clip.masks, 64, "cpu")
    with torch.no_grad():
        multi = clip_forward(multi_model.model, frames, masks)
        one = clip_forward(one_model.model, frames, masks)
    assert multi[1]["multistep_pred_multimasks_high_res"][0].shape[1] == 3
    assert one[1]["multistep_pred_multimasks_high_res"][0].shape[1] == 1
    torch.testing.assert_close(one[1]["pred_masks_high_res"], one[1]["multistep_pred_multimasks_high_res"][0])


def test_loss_weights_and_tracking_follow_the_parent(trained):
    """Unset loss weights / tracking resolve by parent: SAM 2.1's training from a checkpoint, the
    dice-weighted single-mask setting from random weights; explicit values win; the run records it."""
    _, _, cfg, res = trained
    scratch, ckpt = cfg.resolved(random_parent=True), cfg.resolved(random_parent=False)
    assert (scratch.loss_mask, scratch.loss_dice, scratch.multimask_tracking) == (0.0, 5.0, False)
    assert (ckpt.loss_mask, ckpt.loss_dice, ckpt.multimask_tracking) == (20.0, 1.0, True)
    mine = FinetuneConfig(loss_mask=2.0, multimask_tracking=True).resolved(random_parent=True)
    assert (mine.loss_mask, mine.loss_dice, mine.multimask_tracking) == (2.0, 5.0, True)
    assert res.multimask_tracking is False and res.config_hash == scratch.digest() != ckpt.digest()
    assert res.run_key == run_key(_model(), cfg, "fixed-clip")     # the caller's key is the trainer's


def test_registered_model_loads_with_the_tracking_it_was_trained_with(trained):
    lake, _, cfg, res = trained
    kw = dict(checkpoint_uri=res.checkpoint_uri, parent_sha256=None, model_config="tiny", image_size=SIZE,
              data_version="fixed-clip", config_hash=res.config_hash, steps=res.steps, metrics={})
    row = registry.register(lake, sha256=res.sha256, run_key=res.run_key, multimask_tracking=False, **kw)
    spec = registry.model_spec(row, device="cpu")
    assert spec.multimask_tracking is False and spec.checkpoint_sha256 == res.sha256
    m = load_model(spec).model
    assert m.multimask_output_for_tracking is False and m.sam_mask_decoder.dynamic_multimask_via_stability is False
    legacy = {**row, "multimask_tracking": None}        # a row written before the column: sam2's default
    assert registry.model_spec(legacy).multimask_tracking is True


def test_cosine_learning_rate_paced_by_steps_or_budget():
    cfg = FinetuneConfig(steps=100, lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert learning_rate(cfg, 0, 0.0) == pytest.approx(0.1)                 # warmup
    assert learning_rate(cfg, 9, 0.0) == pytest.approx(1.0 * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * 0.09))))
    assert learning_rate(cfg, 50, 0.0) == pytest.approx(0.55)               # half way: the mean of lr and min
    assert learning_rate(cfg, 100, 0.0) == pytest.approx(0.1)
    timed = FinetuneConfig(steps=10_000, lr=1.0, warmup_steps=1, min_lr_ratio=0.0, max_seconds=60.0)
    assert learning_rate(timed, 5, 30.0) == pytest.approx(0.5)              # the budget paces it
    assert learning_rate(timed, 5, 90.0) == pytest.approx(0.0)
    flat = FinetuneConfig(steps=100, lr=1.0, warmup_steps=1, lr_schedule="constant")
    assert learning_rate(flat, 99, 1e9) == 1.0
    with pytest.raises(ValueError, match="lr_schedule"):
        learning_rate(FinetuneConfig(lr_schedule="step"), 0, 0.0)


def test_objects_apart_tells_a_tracker_from_a_foreground_segmenter():
    from sav_assets.lib.train.evaluate import objects_apart

    pred = np.zeros((3, 2, 10, 10), bool)
    pred[:, 0, :5], pred[:, 1, 5:] = True, True            # two disjoint objects
    assert objects_apart(pred) == 1.0
    same = pred.copy()
    same[1:, 1] = same[1:, 0]                               # propagated frames: one mask for both
    assert objects_apart(same) == 0.0                       # frame 0 (the prompt) is not counted
    assert objects_apart(pred[:, :1]) is None


def test_early_stopping_writes_the_best_scoring_state(tmp_path):
    """With eval_every the checkpoint is the state that scored best on the dev set, not the last one."""
    import torch

    torch.set_num_threads(2)
    clip = next(iter(demo_clips(n_videos=1, clip_frames=3, max_objects=2)(0)))
    cfg = FinetuneConfig(steps=6, lr=1e-3, warmup_steps=1, point_prob=0.0, freeze_image_encoder=True, save_every=0,
                         eval_every=2)
    seen, scores = [], iter([0.1, 0.9, 0.2])

    def dev_score(loaded):          # a dev set whose 2nd scoring (step 4) is the best
        seen.append({k: v.detach().clone() for k, v in loaded.model.state_dict().items()})
        return next(scores)

    res = finetune(_model(), lambda epoch: [clip], cfg, Lake(tmp_path), "fixed-clip", evaluate=dev_score)
    assert res.dev_scores == [(2, 0.1), (4, 0.9), (6, 0.2)] and res.best_step == 4 and res.steps == 6
    back = load_model(ModelSpec(config="tiny", image_size=SIZE, device="cpu", checkpoint=res.checkpoint_uri))
    sd = back.model.state_dict()
    assert all(torch.equal(seen[1][k], sd[k]) for k in sd)
    assert not all(torch.equal(seen[2][k], sd[k]) for k in sd)
    with pytest.raises(ValueError, match="evaluate"):
        finetune(_model(), lambda epoch: [clip], cfg, Lake(tmp_path / "b"), "fixed-clip")

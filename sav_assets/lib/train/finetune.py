"""Fine-tune SAM 2 on training clips with SAM 2's own objective; content-addressed, resumable.

:func:`finetune` trains the model that :func:`sav_assets.lib.label.model.load_model` builds (the
configured checkpoint, or random weights) on clips of frames ``[T,3,S,S]`` and masks ``[T,N,S,S]``
(:class:`sav_assets.lib.dataset.sampler.ShardClipDataset` over the QC-passed training shards, or
:func:`sav_assets.lib.train.synthetic.demo_clips`):

* forward: :func:`sav_assets.lib.train.forward.clip_forward` (first frame prompted by its mask or a
  click, the rest propagated from memory);
* loss: sam2's ``training/loss_fns.py`` ``MultiStepMultiMasksAndIous`` (focal + dice on the best of the
  multimask outputs, IoU prediction, object score); from a checkpoint with SAM 2.1's training weights
  (20 / 1 / 1 / 1) and multimask tracking, from random weights dice-weighted with ONE mask per object
  (:meth:`FinetuneConfig.resolved`; the result records the tracking the labeler must use);
* learning rate: linear warmup, then a cosine decay paced by the step cap or the wall-clock budget
  (:func:`learning_rate`);
* early stopping (``eval_every`` and an ``evaluate`` callable): the checkpoint is the state that scored
  best on a dev set during the run;
* with ``freeze_image_encoder`` the encoder's outputs are cached per distinct frame
  (:class:`~sav_assets.lib.train.forward.EncoderCache`): clips reuse a fixed set of frames;
* AdamW with gradient clipping; on CUDA bf16 autocast and ``grad_accum`` clips per optimizer step;
* ``progress(step, steps, loss, steps_per_s)`` after every optimizer step.

Where things go (all through the :class:`~sav_assets.lib.store.lake.Lake`, local or S3):

* ``models/runs/<run_key>/state.pt``: model, optimizer, step and loss history every ``save_every``
  steps (``weights_only``-loadable); a run that stops (crash, time budget) resumes from it;
* ``models/checkpoints/<sha256>.pt``: the result in the official ``{"model": state_dict}`` layout,
  named by its SHA-256, loadable through ``SAV_SAM2_CHECKPOINT`` with ``SAV_SAM2_CHECKPOINT_SHA256``.

``run_key`` hashes the parent model (its checkpoint SHA-256, or the random-weight seed), the model
config, the training config and the data version (the shard manifests' digests): the registry
(:mod:`sav_assets.lib.train.registry`) keeps one row per key, so a re-run with the same inputs is
skipped by the caller. A resumed run sees other clips than an uninterrupted one would (the sampler is
restarted at a new epoch), so its weights are not bit-identical to one; its step count and config are.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from sav_assets.lib.store.lake import Lake
from sav_assets.lib.util import peak_rss_mb, sha256_json

TRAINER_VERSION = "1"


@dataclass
class FinetuneConfig:
    """What a fine-tuning run does; every default written here once (defs/training.py reads them)."""

    steps: int = 300                   # optimizer steps
    lr: float = 3e-4                   # AdamW peak learning rate (after warmup)
    warmup_steps: int = 10             # linear warmup
    lr_schedule: str = "cosine"        # cosine (decays to min_lr_ratio * lr over the run) | constant
    min_lr_ratio: float = 0.05         # the cosine schedule's final learning rate, as a fraction of lr
    weight_decay: float = 0.01
    grad_clip: float = 0.1             # max gradient norm (SAM 2's training setting)
    grad_accum: int = 1                # clips per optimizer step (CUDA and CPU alike)
    point_prob: float = 0.5            # first frame prompted by one click instead of the mask
    freeze_image_encoder: bool = False  # train only the memory, prompt and mask-decoder parts
    # None = by parent (resolved()): from a checkpoint SAM 2.1's training (focal 20, dice 1, multimask
    # tracking); from random weights FROM_SCRATCH (focal 0, dice 5, ONE mask per object), see resolved()
    loss_mask: float | None = None     # focal weight
    loss_dice: float | None = None     # dice weight
    multimask_tracking: bool | None = None  # propagated frames decoded with 3 masks (True) or 1 (False)
    loss_iou: float = 1.0
    loss_class: float = 1.0            # object-score weight
    save_every: int = 25               # steps between resumable states
    eval_every: int = 0                # steps between scorings on a dev set (finetune's ``evaluate``); the
    #                                    checkpoint written is the best-scoring state (early stopping); 0: off
    max_seconds: float | None = None   # wall-clock budget: stop early (the row records the steps done)
    seed: int = 0

    def resolved(self, random_parent: bool) -> FinetuneConfig:
        """The config with every by-parent field (None) filled: :data:`SAM21_TRAINING` when the parent is
        a checkpoint, :data:`FROM_SCRATCH` when it has random weights. From random weights SAM 2.1's
        focal weight 20 holds the loss at a plateau of near-empty, class-level masks and J&F does not
        move (docs/benchmarks.md, probes A/B), and its best-of-3 multimask loss lets one output per
        object class satisfy it while the IoU head selects another (probe G vs E)."""
        preset = FROM_SCRATCH if random_parent else SAM21_TRAINING
        return replace(self, **{k: v for k, v in preset.items() if getattr(self, k) is None})

    def digest(self) -> str:
        """Hash of the fields that change the result (not the save cadence; the wall-clock budget is in
        it: it bounds the steps and paces the cosine schedule)."""
        d = {k: v for k, v in asdict(self).items() if k != "save_every"}
        return sha256_json({"trainer": TRAINER_VERSION, **d})[:16]


SAM21_TRAINING = {"loss_mask": 20.0, "loss_dice": 1.0, "multimask_tracking": True}
FROM_SCRATCH = {"loss_mask": 0.0, "loss_dice": 5.0, "multimask_tracking": False}


@dataclass
class FinetuneResult:
    run_key: str
    steps: int
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    steps_per_s: float = 0.0
    peak_host_mb: float = 0.0
    peak_gpu_mb: float = 0.0
    checkpoint_uri: str | None = None
    sha256: str | None = None
    resumed_from: int = 0
    multimask_tracking: bool = True    # how the model was trained to track: label and evaluate it the same way
    config_hash: str = ""              # the resolved config's digest
    dev_scores: list[tuple[int, float]] = field(default_factory=list)  # (step, dev score) with eval_every
    best_step: int | None = None       # the step whose state became the checkpoint (eval_every); None: the last


def run_key(loaded: Any, cfg: FinetuneConfig, data_version: str) -> str:
    """The identity of a run: parent model, model config, training config (resolved for the parent) and
    data version."""
    parent = loaded.checkpoint_sha256 or f"random:{getattr(loaded.spec, 'seed', 0)}"
    return sha256_json({"parent": parent, "config_sha256": loaded.config_sha256, "image_size": loaded.image_size,
                        "train": cfg.resolved(loaded.random_weights).digest(), "data": data_version})[:32]


def loss_function(cfg: FinetuneConfig):
    """SAM 2's training loss (sam2 package, ``training/loss_fns.py``) with the (resolved) config's weights."""
    from training.loss_fns import MultiStepMultiMasksAndIous

    return MultiStepMultiMasksAndIous(
        weight_dict={"loss_mask": cfg.loss_mask, "loss_dice": cfg.loss_dice, "loss_iou": cfg.loss_iou,
                     "loss_class": cfg.loss_class},
        supervise_all_iou=True, iou_use_l1_loss=True, pred_obj_scores=True,
        focal_gamma_obj_score=0.0, focal_alpha_obj_score=-1.0,
    )


def _state_rel(key: str) -> str:
    return f"models/runs/{key}/state.pt"


def _load_state(lake: Lake, key: str) -> dict | None:
    import torch

    rel = _state_rel(key)
    if not lake.exists(rel):
        return None
    return torch.load(io.BytesIO(lake.get_bytes(rel)), map_location="cpu", weights_only=True)


def _save_state(lake: Lake, key: str, model, opt, step: int, losses: list[float]) -> None:
    import torch

    buf = io.BytesIO()
    torch.save({"model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "optim": opt.state_dict(), "step": step, "losses": list(losses)}, buf)
    lake.put_bytes(_state_rel(key), buf.getvalue())


def learning_rate(cfg: FinetuneConfig, step: int, elapsed: float) -> float:
    """The learning rate of optimizer step ``step`` (0-based): linear warmup, then constant or a cosine
    decay over the run's progress, the larger of ``step / steps`` and ``elapsed / max_seconds`` (a
    run with a wall-clock budget decays within it, however many steps it gets; a resumed run counts
    its time from the resume)."""
    import math

    if cfg.lr_schedule not in ("cosine", "constant"):
        raise ValueError(f"lr_schedule must be 'cosine' or 'constant', got {cfg.lr_schedule!r}")
    lr = cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup_steps))
    if cfg.lr_schedule == "constant":
        return lr
    done = step / max(1, cfg.steps)
    if cfg.max_seconds:
        done = max(done, elapsed / cfg.max_seconds)
    done = min(1.0, done)
    return lr * (cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * done)))


def _cycle(clips: Callable[[int], Iterable[Any]]) -> Iterator[Any]:
    """Clips forever: ``clips(epoch)`` for epoch 0, 1, ... (an empty epoch is an error)."""
    epoch = 0
    while True:
        n = 0
        for c in clips(epoch):
            n += 1
            yield c
        if n == 0:
            raise ValueError("the training data yields no clips (no QC-passed training shards with masks?)")
        epoch += 1


def _clip_tensors(clip: Any) -> tuple[Any, Any]:
    if isinstance(clip, tuple):
        return clip[0], clip[1]
    return clip.frames, clip.masks


def _setup(loaded: Any, cfg: FinetuneConfig):
    import torch

    model = loaded.model
    model.train()
    for p in model.image_encoder.parameters():
        p.requires_grad = not cfg.freeze_image_encoder
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return model, params, opt


class _BestState:
    """Early stopping: the model's state with the best dev score so far (in memory, on the host)."""

    def __init__(self, evaluate: Callable[[Any], float] | None, every: int):
        self.evaluate, self.every = evaluate, int(every)
        if self.every and evaluate is None:
            raise ValueError("eval_every > 0 needs an evaluate callable (a dev set to score the model on)")
        self.scores: list[tuple[int, float]] = []
        self.best: tuple[float, int, dict] | None = None

    def check(self, loaded: Any, step: int, final: bool = False) -> None:
        if not self.every or (step % self.every and not final) or (self.scores and self.scores[-1][0] == step):
            return
        score = float(self.evaluate(loaded))
        loaded.model.train()
        self.scores.append((step, score))
        if self.best is None or score > self.best[0]:
            self.best = (score, step, {k: v.detach().to("cpu", copy=True) for k, v in loaded.model.state_dict().items()})

    def restore(self, model) -> int | None:
        """Load the best state into ``model``; its step (None without early stopping)."""
        if self.best is None:
            return None
        model.load_state_dict(self.best[2])
        return self.best[1]


def finetune(loaded: Any, clips: Callable[[int], Iterable[Any]], cfg: FinetuneConfig, lake: Lake,
             data_version: str, progress: Callable[[int, int, float, float], None] | None = None,
             evaluate: Callable[[Any], float] | None = None) -> FinetuneResult:
    """Train ``loaded`` (a :class:`~sav_assets.lib.label.model.LoadedModel`) in place and write the
    checkpoint into the lake; resumes from ``models/runs/<run_key>/state.pt`` when it exists. With
    ``cfg.eval_every``, ``evaluate(loaded)`` (higher is better, e.g. J&F on dev videos the run does not
    train on) scores the model every so many steps and at the end, and the best-scoring state is the
    checkpoint (early stopping; the scoring time counts in ``max_seconds``; a resumed run scores from
    the resume on)."""
    import torch

    from sav_assets.lib.label.model import set_tracking
    from sav_assets.lib.train.forward import EncoderCache, clip_forward, prepare_clip

    cfg = cfg.resolved(loaded.random_weights)
    key = run_key(loaded, cfg, data_version)
    set_tracking(loaded.model, cfg.multimask_tracking)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model, params, opt = _setup(loaded, cfg)
    loss_fn = loss_function(cfg)
    state = _load_state(lake, key)
    step, losses = 0, []
    if state is not None:
        model.load_state_dict(state["model"], strict=True)
        opt.load_state_dict(state["optim"])
        step, losses = int(state["step"]), [float(x) for x in state["losses"]]
    resumed_from = step
    cuda = loaded.device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    data = _cycle(clips)
    cache = EncoderCache() if cfg.freeze_image_encoder else None
    best = _BestState(evaluate, cfg.eval_every)
    t0 = time.time()
    while step < cfg.steps and (cfg.max_seconds is None or time.time() - t0 < cfg.max_seconds):
        lr = learning_rate(cfg, step, time.time() - t0)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for _ in range(max(1, cfg.grad_accum)):
            frames, masks = prepare_clip(*_clip_tensors(next(data)), loaded.image_size, loaded.device)
            with loaded.autocast():
                outs = clip_forward(model, frames, masks, point_prob=cfg.point_prob, rng=rng, cache=cache)
            loss = loss_fn([{k: _f32(v) for k, v in o.items()} for o in outs], masks)["core_loss"]
            (loss / max(1, cfg.grad_accum)).backward()
            total += float(loss.detach()) / max(1, cfg.grad_accum)
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        step += 1
        losses.append(total)
        if progress:
            progress(step, cfg.steps, total, (step - resumed_from) / max(1e-9, time.time() - t0))
        if cfg.save_every and step % cfg.save_every == 0 and step < cfg.steps:
            _save_state(lake, key, model, opt, step, losses)
        best.check(loaded, step)
    best.check(loaded, step, final=True)
    secs = time.time() - t0
    _save_state(lake, key, model, opt, step, losses)
    best_step = best.restore(model)
    model.eval()
    uri, sha = write_checkpoint(lake, model)
    return FinetuneResult(
        run_key=key, steps=step, losses=losses, seconds=secs,
        steps_per_s=(step - resumed_from) / secs if secs > 0 else 0.0, peak_host_mb=peak_rss_mb(),
        peak_gpu_mb=torch.cuda.max_memory_allocated() / 2**20 if cuda else 0.0,
        checkpoint_uri=uri, sha256=sha, resumed_from=resumed_from, multimask_tracking=cfg.multimask_tracking,
        config_hash=cfg.digest(), dev_scores=best.scores, best_step=best_step)


def _f32(v):
    """Loss inputs in float32 (outputs of a bf16 autocast region are bf16)."""
    if isinstance(v, list):
        return [_f32(x) for x in v]
    return v.float() if hasattr(v, "is_floating_point") and v.is_floating_point() else v


def write_checkpoint(lake: Lake, model) -> tuple[str, str]:
    """``{"model": state_dict}`` at ``models/checkpoints/<sha256>.pt``; returns (its URI, its SHA-256)."""
    from sav_assets.lib.label.model import save_checkpoint

    with tempfile.TemporaryDirectory() as d:
        tmp = os.path.join(d, "checkpoint.pt")
        sha = save_checkpoint(model, tmp)
        rel = f"models/checkpoints/{sha}.pt"
        if not lake.exists(rel):
            lake.put_file(rel, tmp)
    return lake.uri(rel), sha


def loss_plot_png(losses: list[float], title: str = "training loss") -> bytes:
    """A small PNG of the loss curve (raw and a 10-step moving average)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3), dpi=80)
    x = np.arange(1, len(losses) + 1)
    ax.plot(x, losses, lw=0.8, alpha=0.5, label="loss")
    if len(losses) >= 10:
        ma = np.convolve(losses, np.ones(10) / 10, mode="valid")
        ax.plot(x[9:], ma, lw=1.5, label="10-step mean")
    ax.set_xlabel("step")
    ax.set_ylabel("SAM 2 loss")
    ax.set_title(title)
    ax.legend(loc="upper right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def describe_result(res: FinetuneResult) -> dict:
    """JSON-able summary (registry metrics, asset metadata)."""
    d = asdict(res)
    d["losses"] = [round(x, 5) for x in res.losses]
    d["final_loss"] = float(np.mean(res.losses[-10:])) if res.losses else None
    return json.loads(json.dumps(d))

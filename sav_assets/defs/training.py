"""sam2_finetune and model_evaluation (group ``training``, pool ``gpu``): close the loop.

``sam2_finetune`` fine-tunes the labeling model (the promoted one, else ``SAV_SAM2_CHECKPOINT``, else
random weights) on clips of the published training shards (lib/dataset/sampler.py) with SAM 2's
loss (lib/train/finetune.py), writes the checkpoint content-addressed into the lake and registers it
in the ``models`` table; the same parent, config and shard manifests skip the run. ``model_evaluation``
scores the current labeling model and the newest candidates on the val layout (``eval_layout``) side
by side and, with ``auto_promote``, promotes a candidate that beats the current model by ``margin``
(:class:`sav_assets.lib.train.registry.EvaluationPolicy`); its ``label_sets`` metadata compares each
relabeled video's current automatic masklets with the superseded model's (``masklets_archive``).
Neither asset is in the default demo selection (``make demo-loop`` runs them).
"""

import base64
import tempfile
from pathlib import Path

import dagster as dg

from sav_assets.defs.metadata import refresh_views
from sav_assets.defs.tunables import lib_field, to_lib
from sav_assets.lib.dataset.sampler import SamplerConfig
from sav_assets.lib.train.finetune import FinetuneConfig
from sav_assets.lib.train.registry import EvaluationPolicy
from sav_assets.lib.util import markdown_table, sha256_json
from sav_assets.resources import LakeResource, SAM2Resource

C = FinetuneConfig


class FinetuneRunConfig(dg.Config):
    """SAM 2 fine-tuning: steps, optimizer, prompts, and the clips drawn from the shards."""

    steps: int = lib_field(C, "steps", "optimizer steps")
    lr: float = lib_field(C, "lr", "AdamW peak learning rate")
    warmup_steps: int = lib_field(C, "warmup_steps", "linear warmup steps")
    lr_schedule: str = lib_field(C, "lr_schedule", "cosine (decays over the steps or max_seconds) | constant")
    min_lr_ratio: float = lib_field(C, "min_lr_ratio", "cosine: final learning rate as a fraction of lr")
    weight_decay: float = lib_field(C, "weight_decay", "AdamW weight decay")
    grad_clip: float = lib_field(C, "grad_clip", "max gradient norm")
    grad_accum: int = lib_field(C, "grad_accum", "clips per optimizer step")
    point_prob: float = lib_field(C, "point_prob", "first frame prompted by a click instead of the mask")
    freeze_image_encoder: bool = lib_field(C, "freeze_image_encoder", "train only memory/prompt/decoder parts")
    loss_mask: float | None = lib_field(C, "loss_mask", "focal loss weight; unset: 20 (SAM 2.1) from a "
                                        "checkpoint, 0 from random weights")
    loss_dice: float | None = lib_field(C, "loss_dice", "dice loss weight; unset: 1 (SAM 2.1) from a "
                                        "checkpoint, 5 from random weights")
    multimask_tracking: bool | None = lib_field(C, "multimask_tracking", "propagate with 3 candidate masks "
                                                "(true) or one (false); unset: true from a checkpoint, "
                                                "false from random weights. Recorded in the models table")
    loss_iou: float = lib_field(C, "loss_iou", "IoU prediction loss weight")
    loss_class: float = lib_field(C, "loss_class", "object score loss weight")
    save_every: int = lib_field(C, "save_every", "steps between resumable states")
    eval_every: int = lib_field(C, "eval_every", "early stopping: steps between J&F scorings on the val layout "
                                "(eval_layout), the best state becomes the checkpoint; model_evaluation's "
                                "figures on the same videos are then optimistic. 0: off")
    max_seconds: float | None = lib_field(C, "max_seconds", "wall-clock budget; unset: none")
    seed: int = lib_field(C, "seed", "random seed")
    clip_min_frames: int = lib_field(SamplerConfig, "min_frames", "shortest clip (annotated frames)")
    clip_max_frames: int = lib_field(SamplerConfig, "max_frames", "longest clip (annotated frames)")
    clip_max_masklets: int = lib_field(SamplerConfig, "max_masklets", "masklets per clip")

    def finetune_config(self) -> FinetuneConfig:
        return to_lib(FinetuneConfig, self)


def _dev_scorer(lk, eval_every: int):
    """Early stopping's scorer: J&F on the val layout's videos (None when ``eval_every`` is 0)."""
    from sav_assets.lib.train.evaluate import jf_scorer, load_layout_episodes

    if not eval_every:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        dev = load_layout_episodes(_local_layout(lk, "val", tmp), "val")
    if not dev:
        raise dg.Failure("sam2_finetune: eval_every needs the val layout's videos (materialize eval_layout first)")
    return jf_scorer(dev)


def _shard_manifests(lk) -> dict[str, bytes]:
    return {rel: lk.get_bytes(rel) for rel in sorted(lk.list("shards")) if rel.endswith("/manifest.json")}


@dg.asset(group_name="training", kinds={"pytorch"}, pool="gpu", deps=["training_shards"],
          description="SAM 2 fine-tuned on the QC-passed training shards (SAM 2's loss); checkpoint in "
                      "models/checkpoints/<sha256>.pt, a row in the models table.")
def sam2_finetune(context: dg.AssetExecutionContext, config: FinetuneRunConfig, lake: LakeResource,
                  sam2: SAM2Resource) -> dg.MaterializeResult:
    from sav_assets.lib.dataset.sampler import ShardClipDataset
    from sav_assets.lib.label.model import load_model
    from sav_assets.lib.train import registry
    from sav_assets.lib.train.finetune import describe_result, finetune, loss_plot_png, run_key

    lk = lake.lake()
    manifests = _shard_manifests(lk)
    if not manifests:
        raise dg.Failure("sam2_finetune: no published training shards (materialize training_shards first)")
    data_version = sha256_json({k: v.decode() for k, v in manifests.items()})[:32]
    cfg = config.finetune_config()
    loaded = load_model(sam2.spec())
    key = run_key(loaded, cfg, data_version)
    done = registry.find_run(lk, key)
    if done is not None:
        context.log.info(f"same parent, config and shards as model {done['sha256'][:16]}: skipped")
        return dg.MaterializeResult(metadata={"skipped": True, "sha256": done["sha256"],
                                              "checkpoint": dg.MetadataValue.path(done["checkpoint_uri"])})
    scfg = SamplerConfig(min_frames=config.clip_min_frames, max_frames=config.clip_max_frames,
                         max_masklets=config.clip_max_masklets, input_size=loaded.image_size, seed=cfg.seed)
    urls = [u for rel in manifests for u in ShardClipDataset.from_manifest(lk, rel.rsplit("/", 1)[0], scfg).urls]
    dataset = ShardClipDataset(urls, scfg)

    def clips(epoch):
        dataset.set_epoch(epoch)
        return iter(dataset)

    def progress(step, steps, loss, sps):
        if step % 10 == 0 or step == steps:
            context.log.info(f"step {step}/{steps} loss {loss:.4f} ({sps:.3f} steps/s)")

    res = finetune(loaded, clips, cfg, lk, data_version, progress, evaluate=_dev_scorer(lk, cfg.eval_every))
    row = registry.register(lk, sha256=res.sha256, checkpoint_uri=res.checkpoint_uri,
                            parent_sha256=loaded.checkpoint_sha256, model_config=loaded.spec.config,
                            image_size=loaded.image_size, data_version=data_version, config_hash=res.config_hash,
                            run_key=key, steps=res.steps, metrics=describe_result(res),
                            multimask_tracking=res.multimask_tracking)
    refresh_views(context, lk)
    png = base64.b64encode(loss_plot_png(res.losses)).decode()
    return dg.MaterializeResult(metadata={
        "sha256": row["sha256"], "checkpoint": dg.MetadataValue.path(row["checkpoint_uri"]),
        "steps": res.steps, "resumed_from_step": res.resumed_from, "steps_per_s": round(res.steps_per_s, 4),
        "final_loss": round(sum(res.losses[-10:]) / max(1, len(res.losses[-10:])), 4),
        "peak_host_mb": round(res.peak_host_mb, 1), "peak_gpu_mb": round(res.peak_gpu_mb, 1),
        "data_version": data_version, "shards": len(urls),
        "tracking": "multimask" if res.multimask_tracking else "single mask",
        "best_step": res.best_step if res.best_step is not None else res.steps,
        "dev_jf": dg.MetadataValue.md(markdown_table([{"step": st, "val J&F": round(j, 4)} for st, j in res.dev_scores])
                                      if res.dev_scores else "early stopping off (eval_every 0)"),
        "loss_curve": dg.MetadataValue.md(f"![loss](data:image/png;base64,{png})"),
    })


class EvaluationConfig(dg.Config):
    """Which candidates are compared with the current labeling model, and when one is promoted."""

    split: str = lib_field(EvaluationPolicy, "split", "eval layout split (exports/sav_<split>)")
    candidates: int = lib_field(EvaluationPolicy, "candidates", "newest unpromoted models evaluated")
    max_videos: int | None = lib_field(EvaluationPolicy, "max_videos", "at most this many val videos; unset: all")
    auto_promote: bool = lib_field(EvaluationPolicy, "auto_promote",
                                   "promote the best candidate beating the current model")
    margin: float = lib_field(EvaluationPolicy, "margin", "J&F gain (0..1) needed for automatic promotion")

    def policy(self) -> EvaluationPolicy:
        return to_lib(EvaluationPolicy, self)


def _local_layout(lk, split: str, tmp: str) -> Path:
    """The val layout as a local folder (downloaded through the store from an S3 lake)."""
    prefix = f"exports/sav_{split}"
    out = Path(tmp) / "layout"
    for rel in lk.list(prefix):
        dest = out / rel[len(prefix) + 1:]
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(lk.get_bytes(rel))
    return out


@dg.asset(group_name="training", kinds={"pytorch"}, pool="gpu", deps=["sam2_finetune", "eval_layout"],
          description="Semi-supervised VOS on the val split (first-frame masks): J&F and temporal stability of "
                      "the current labeling model and each new candidate, side by side; optional promotion.")
def model_evaluation(context: dg.AssetExecutionContext, config: EvaluationConfig, lake: LakeResource,
                     sam2: SAM2Resource) -> dg.MaterializeResult:
    from sav_assets.lib.label.model import load_model
    from sav_assets.lib.train import registry
    from sav_assets.lib.train.evaluate import compare_label_sets, evaluate_models, load_layout_episodes

    lk = lake.lake()
    spec = sam2.spec()
    models = {"current": load_model(spec)}
    cands = [r for r in registry.list_models(lk) if not r["promoted"]][: config.candidates]
    for r in cands:
        models[r["sha256"][:12]] = load_model(registry.model_spec(r, device=spec.device, bf16=spec.bf16,
                                                                  cache_dir=spec.cache_dir))
    with tempfile.TemporaryDirectory() as tmp:
        episodes = load_layout_episodes(_local_layout(lk, config.split, tmp), config.split, config.max_videos)
    if not episodes:
        raise dg.Failure(f"model_evaluation: no videos in exports/sav_{config.split} (materialize eval_layout)")
    res = evaluate_models(models, episodes)
    cur = res["models"]["current"]["J&F"]
    cand_jf = {r["sha256"]: res["models"][r["sha256"][:12]]["J&F"] for r in cands}
    for sha, jf in cand_jf.items():
        registry.update_metrics(lk, sha, {"val_jf": round(jf, 4), "val_jf_current": round(cur, 4)})
    promoted = config.policy().choose(cur, cand_jf)
    if promoted:
        registry.promote(lk, promoted[0])
        context.log.info(f"promoted {promoted[0][:16]}: val J&F {promoted[1]:.4f} vs {cur:.4f}; masklets are stale")
    refresh_views(context, lk)
    label_sets = compare_label_sets(lk)     # the current vs the superseded model's automatic masklets
    plots = "\n\n".join(f"`{v}`\n\n![{v}](data:image/png;base64,{base64.b64encode(p).decode()})"
                        for v, p in list(res["plots"].items())[:8])
    return dg.MaterializeResult(metadata={
        "jf_table": dg.MetadataValue.md(markdown_table(res["rows"])),
        "per_video": dg.MetadataValue.md(markdown_table(res["per_video"])),
        "label_sets": dg.MetadataValue.md(markdown_table(label_sets) if label_sets else
                                          "no video has labels of two models yet"),
        "plots": dg.MetadataValue.md(plots),
        "current_jf": round(cur, 4), "videos": len(episodes),
        "promoted": promoted[0] if promoted else "",
    })

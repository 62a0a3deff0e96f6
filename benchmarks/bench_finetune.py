"""Fine-tuning closes the loop: validation J&F of SAM 2.1 tiny before and after training on the demo scenes.

No arguments needed. Defaults: CPU, ONE torch thread (on a shared 2-core box two OpenMP threads spin
against other processes: a 64 px step took 6-10 s with 2 threads and 1.1 s with 1 under load average
5), SAM 2.1 tiny from random weights at a ``--size`` input, image encoder frozen (its features cached
per distinct frame), tracking with ONE mask per object in training and in both evaluations
(``ModelSpec(multimask_tracking=False)``: no multimask outputs and no stability-based token switch;
``--multimask`` keeps sam2's three), SAM 2's loss with dice weight 5 and focal weight 0
(``--loss-dice`` / ``--loss-mask``; SAM 2.1 trained with 1 / 20): ``FinetuneConfig``'s defaults from
random weights (``FinetuneConfig.resolved``), the ones ``sam2_finetune`` uses; a cosine learning-rate
decay over the budget (``--schedule``); early stopping: every ``--eval-every`` steps J&F on ``--dev``
dev scenes (a third seed set, neither trained on nor validated on; scoring time counts in the
budget) and the best state is the checkpoint, trained on clips of the demo corpus's synthetic scenes (exact masks,
:mod:`sav_assets.lib.train.synthetic`) for at most ``--seconds`` (900 = 15 minutes) of training; then
both models (the random-weight parent and the fine-tuned one) evaluated side by side on held-out
scenes (other seeds, never trained on) with the SA-V val protocol (first-frame mask prompt, our J&F
evaluator). Prints the loss curve (every 25 steps, and a PNG at ``--png``), steps/s, peak memory, the
evaluation tables, and as its LAST line ``val J&F before <x> after <y> gain <y-x>`` (fractions 0..1).

On a GPU machine (``--device cuda``) it reports steps/s for each of ``--configs`` (e.g. tiny,large);
the evaluation is of the first.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._harness import PeakRSS, machine, print_table  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=900.0, help="training wall-clock budget (15 min)")
    ap.add_argument("--steps", type=int, default=100_000, help="optimizer step cap")
    ap.add_argument("--size", type=int, default=128, help="input size (multiple of 32, >= 64)")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--schedule", default="cosine", choices=["cosine", "constant"], help="learning-rate schedule")
    ap.add_argument("--min-lr", type=float, default=0.05, help="cosine: final lr as a fraction of --lr")
    ap.add_argument("--val-seed", type=int, default=0, help="seed set of the held-out validation scenes")
    ap.add_argument("--eval-every", type=int, default=50,
                    help="early stopping: steps between J&F scorings on the dev scenes, the best state is kept (0: off)")
    ap.add_argument("--dev", type=int, default=2, help="dev scenes for early stopping (seed set --dev-seed)")
    ap.add_argument("--dev-seed", type=int, default=7, help="seed set of the dev scenes (never trained on, not val)")
    ap.add_argument("--train-encoder", action="store_true", help="train the image encoder too (no cache)")
    ap.add_argument("--frames", type=int, default=6, help="annotated frames per training clip")
    ap.add_argument("--objects", type=int, default=3, help="objects per training clip")
    ap.add_argument("--videos", type=int, default=24, help="synthetic training scenes")
    ap.add_argument("--val", type=int, default=4, help="held-out validation scenes")
    ap.add_argument("--point-prob", type=float, default=0.0, help="first frame prompted by a click instead")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch threads on the CPU")
    ap.add_argument("--configs", default="tiny", help="comma-separated SAM 2.1 sizes (GPU: tiny,large)")
    ap.add_argument("--loss-mask", type=float, default=None,
                    help="focal-loss weight (default: FinetuneConfig's from random weights, 0; SAM 2.1 trained with 20)")
    ap.add_argument("--loss-dice", type=float, default=None,
                    help="dice-loss weight (default: FinetuneConfig's from random weights, 5; SAM 2.1: 1)")
    ap.add_argument("--multimask", action="store_true",
                    help="track with sam2's 3 multimask outputs (default from random weights: one mask per object, "
                         "in training AND in both evaluations)")
    ap.add_argument("--out", default="", help="keep the training lake here (its models/checkpoints/<sha256>.pt "
                    "is what benchmarks/bench_reseed.py --checkpoint takes); default: a temporary folder")
    ap.add_argument("--png", default=str(Path(tempfile.gettempdir()) / "bench_finetune_loss.png"),
                    help="loss-curve PNG ('' = none)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    import numpy as np
    import torch

    from sav_assets.lib.label.model import ModelSpec, load_model
    from sav_assets.lib.store.lake import Lake
    from sav_assets.lib.train.evaluate import evaluate_models, jf_scorer
    from sav_assets.lib.train.finetune import FinetuneConfig, finetune, loss_plot_png
    from sav_assets.lib.train.synthetic import demo_clips, demo_episodes

    a = parse_args(argv)
    if a.device == "cpu":
        torch.set_num_threads(a.threads)
    print(f"# bench_finetune: {machine()}; device {a.device}, input {a.size}px, {a.threads} thread(s), "
          f"{time.strftime('%Y-%m-%d %H:%M')}", flush=True)
    cfg = FinetuneConfig(steps=a.steps, max_seconds=a.seconds, lr=a.lr, warmup_steps=a.warmup,
                         lr_schedule=a.schedule, min_lr_ratio=a.min_lr, eval_every=a.eval_every,
                         freeze_image_encoder=not a.train_encoder, point_prob=a.point_prob, save_every=0,
                         loss_mask=a.loss_mask, loss_dice=a.loss_dice, multimask_tracking=True if a.multimask else None)
    clips = demo_clips(n_videos=a.videos, clip_frames=a.frames, max_objects=a.objects)
    episodes = demo_episodes(n_videos=a.val, n_frames=96, seed=a.val_seed)
    dev = jf_scorer(demo_episodes(n_videos=a.dev, n_frames=48, seed=a.dev_seed)) if a.eval_every else None
    rows, result, curve = [], None, None
    for name in a.configs.split(","):
        tracking = cfg.resolved(random_parent=True).multimask_tracking   # the parent has random weights
        spec = ModelSpec(config=name, image_size=a.size, device=a.device, multimask_tracking=tracking)
        parent, model = load_model(spec), load_model(spec)   # both evaluated with the tracking trained
        with tempfile.TemporaryDirectory() as tmp, PeakRSS() as rss:
            def progress(step, steps, loss, sps):
                if step % 25 == 0 or step == 1:
                    print(f"step {step:5d} loss {loss:8.4f} {sps:.3f} steps/s", flush=True)
            res = finetune(model, clips, cfg, Lake(a.out or tmp), data_version="demo-synthetic", progress=progress,
                           evaluate=dev)
        if a.out:
            print(f"checkpoint ({name}): {res.checkpoint_uri} sha256 {res.sha256} "
                  f"tracking {'multimask' if res.multimask_tracking else 'single'}", flush=True)
        ma = [round(float(np.mean(res.losses[max(0, i - 25):i])), 3) for i in range(25, len(res.losses) + 1, 25)]
        print(f"loss, mean of each 25 steps ({name}): {ma}", flush=True)
        if res.dev_scores:
            print(f"dev J&F by step ({name}): {[(st, round(j, 4)) for st, j in res.dev_scores]}; "
                  f"checkpoint = step {res.best_step}", flush=True)
        rows.append({"model": model.model_name, "steps": res.steps, "best step": res.best_step, "seconds": round(res.seconds, 1),
                     "steps/s": round(res.steps_per_s, 4), "peak RSS MB": round(rss.peak_mb, 1),
                     "peak GPU MB": round(res.peak_gpu_mb, 1),
                     "loss first 25": round(float(np.mean(res.losses[:25])), 4),
                     "loss last 25": round(float(np.mean(res.losses[-25:])), 4)})
        if result is None:
            curve = res.losses
            result = evaluate_models({"before (random weights)": parent, "after (fine-tuned)": model}, episodes,
                                     plots=False)
    if a.png and curve:
        Path(a.png).write_bytes(loss_plot_png(curve, f"SAM 2.1 {a.configs.split(',')[0]} @{a.size}px, {a.device}"))
        print(f"loss curve: {a.png}")
    print_table(rows)
    print_table(result["rows"])
    print_table(result["per_video"])
    b, f = (result["models"][k]["J&F"] for k in ("before (random weights)", "after (fine-tuned)"))
    print(f"val J&F before {b:.4f} after {f:.4f} gain {f - b:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

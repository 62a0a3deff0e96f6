"""Fine-tuning closes the loop: validation J&F of SAM 2.1 tiny before and after training on the demo scenes.

No arguments. Defaults: CPU (2 threads), SAM 2.1 tiny from random weights at a 128 px input, trained on
clips of the demo corpus's synthetic scenes (exact masks, :mod:`sav_assets.lib.train.synthetic`) for
at most 15 minutes, then both models (the random-weight parent and the fine-tuned one) evaluated side
by side on held-out scenes (other seeds) with the SA-V val protocol (first-frame mask prompt, our
J&F evaluator). Prints the loss curve (every 10 steps), steps/s, peak memory, the evaluation table, and
as its LAST line ``val J&F before <x> after <y> gain <y-x>`` (fractions 0..1).

Environment knobs for development runs (not needed for the figure): BENCH_FT_SECONDS (training budget,
900), BENCH_FT_STEPS (step cap, 100000), BENCH_FT_SIZE (input size, 128), BENCH_FT_DEVICE (cpu),
BENCH_FT_FREEZE (1: image encoder frozen), BENCH_FT_VAL (held-out videos, 4). On a GPU machine
(BENCH_FT_DEVICE=cuda) it reports steps/s for tiny and large (BENCH_FT_CONFIGS=tiny,large).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._harness import PeakRSS, machine, print_table  # noqa: E402


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def main() -> int:
    import torch

    from sav_assets.lib.label.model import ModelSpec, load_model
    from sav_assets.lib.store.lake import Lake
    from sav_assets.lib.train.evaluate import evaluate_models
    from sav_assets.lib.train.finetune import FinetuneConfig, finetune
    from sav_assets.lib.train.synthetic import demo_clips, demo_episodes

    device = _env("BENCH_FT_DEVICE", "cpu")
    if device == "cpu":
        torch.set_num_threads(int(_env("BENCH_FT_THREADS", "2")))
    size = int(_env("BENCH_FT_SIZE", "128"))
    configs = _env("BENCH_FT_CONFIGS", "tiny").split(",")
    print(f"# bench_finetune: {machine()}; device {device}, input {size}px, {time.strftime('%Y-%m-%d %H:%M')}",
          flush=True)
    cfg = FinetuneConfig(steps=int(_env("BENCH_FT_STEPS", "100000")), max_seconds=float(_env("BENCH_FT_SECONDS", "900")),
                         lr=float(_env("BENCH_FT_LR", "1e-3")), freeze_image_encoder=_env("BENCH_FT_FREEZE", "1") == "1",
                         point_prob=0.3, save_every=0)
    clips = demo_clips(n_videos=24, clip_frames=int(_env("BENCH_FT_FRAMES", "6")), max_objects=2)
    episodes = demo_episodes(n_videos=int(_env("BENCH_FT_VAL", "4")), n_frames=96)
    rows, result = [], None
    for name in configs:
        spec = ModelSpec(config=name, image_size=size, device=device)
        parent, model = load_model(spec), load_model(spec)
        with tempfile.TemporaryDirectory() as tmp, PeakRSS() as rss:
            def progress(step, steps, loss, sps):
                if step % 10 == 0 or step == 1:
                    print(f"step {step:5d} loss {loss:8.4f} {sps:.3f} steps/s", flush=True)
            res = finetune(model, clips, cfg, Lake(tmp), data_version="demo-synthetic", progress=progress)
        rows.append({"model": model.model_name, "steps": res.steps, "seconds": round(res.seconds, 1),
                     "steps/s": round(res.steps_per_s, 4), "peak RSS MB": round(rss.peak_mb, 1),
                     "peak GPU MB": round(res.peak_gpu_mb, 1),
                     "loss first 10": round(sum(res.losses[:10]) / max(1, len(res.losses[:10])), 4),
                     "loss last 10": round(sum(res.losses[-10:]) / max(1, len(res.losses[-10:])), 4)})
        if result is None:
            result = evaluate_models({"before (random weights)": parent, "after (fine-tuned)": model}, episodes,
                                     plots=False)
    print_table(rows)
    print_table(result["rows"])
    print_table(result["per_video"])
    b, a = (result["models"][k]["J&F"] for k in ("before (random weights)", "after (fine-tuned)"))
    print(f"val J&F before {b:.4f} after {a:.4f} gain {a - b:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

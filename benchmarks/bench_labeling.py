#!/usr/bin/env python
"""Labeled frames/s of the pipeline's real default labeling workload vs SAM 2's own tools doing the
same work, in alternating paired runs on the same input.

Ours: ``sav_assets.lib.label.labeler.label_video`` end to end on the video file with
``LabelerConfig``'s defaults: automatic masklets seeded by the mask generator on annotated frame 0
and re-seeded every ``reseed_every`` annotated frames (``seed_policy``, default ``uncovered``),
batched tracking, the backward cycle check (``cycle_frames`` from the last frame), decode in an
isolated subprocess, COCO RLE, SA-V fields. With random weights (no ``--checkpoint``) the generator's
quality thresholds are set to 0 so that seeds exist at all (said in the output); nothing else changes.

Theirs (what a SAM 2 user runs for the same frames and the same objects), from a JPEG folder of the
same annotated frames (extraction not timed, shown separately): ``SAM2AutomaticMaskGenerator`` with
the same settings on the same seeding frames (every grid point: SAM 2 has no notion of covered
points), ``SAM2VideoPredictor.init_state`` + ``add_new_mask`` for every masklet ours found (its mask
on the frame it was seeded) + ``propagate_in_video``, then for the cycle check ``reset_state`` +
``add_new_mask`` of the objects visible on the last frame + ``propagate_in_video(reverse=True)`` over
the same ``cycle_frames``; masks thresholded and copied to the host. Same model object, weights,
precision and torch threads.

The two run in turn (warm-up round untimed, then ``--rounds`` rounds of ours, theirs); the ratio is
the median over rounds of theirs' time / ours' time (= ours fps / theirs fps, same frames). Per-stage
counters are counted on the model (image-encoder passes, mask-decoder passes, generator prompts)
for both, plus ours' label_runs timings (decode wait, host copies, RLE). ``--policies`` adds rows
for other seeding policies (``grid`` is the behaviour before ``uncovered``).

    python benchmarks/bench_labeling.py --smoke        # CPU, tiny, 256 px, 24 annotated frames
    python benchmarks/bench_labeling.py --device cuda --config large --checkpoint sam2.1_hiera_large.pt

Needs only torch, sam2, numpy, decord, PIL, psutil and ``sav_assets.lib`` (no Dagster).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import platform
import sys
import tempfile
import warnings
from dataclasses import replace
from pathlib import Path

from _harness import REPO, alternate, machine, measure, paired_ratio, print_table

DEFAULT_VIDEO = REPO / ".." / "shared" / "data" / "videos" / "bedroom.mp4"


def probe(path: str) -> dict:
    import decord

    from sav_assets.lib.util import sha256_file

    vr = decord.VideoReader(path, ctx=decord.cpu(0))
    h, w = vr[0].shape[:2]
    return {"video_id": Path(path).stem, "video_fps": float(vr.get_avg_fps()), "video_frame_count": len(vr),
            "video_height": int(h), "video_width": int(w), "content_sha256": sha256_file(path)}


def limited_video(video: dict, frames: int, target_fps: float = 6.0) -> tuple[dict, list[int]]:
    """The video row cut so that its annotation grid has ``frames`` frames (0 = all)."""
    from sav_assets.lib.sav.fields import annotation_grid

    grid = annotation_grid(video["video_frame_count"], video["video_fps"], target_fps)
    if frames and frames < len(grid):
        grid = annotation_grid(grid[frames - 1] + 1, video["video_fps"], target_fps)[:frames]
        video = {**video, "video_frame_count": grid[-1] + 1}
    return video, grid


class Counter:
    """Counts calls of the model's image encoder (``forward_image``), mask decoder and the points the
    generator's predictor is given, while active."""

    def __init__(self, model):
        self.model, self.on = model, False
        self.n = {"encoder": 0, "decoder": 0}
        real = model.forward_image

        def forward_image(*a, **k):
            self.n["encoder"] += self.on
            return real(*a, **k)

        model.forward_image = forward_image
        model.sam_mask_decoder.register_forward_hook(lambda *a: self.n.__setitem__("decoder", self.n["decoder"]
                                                                                   + self.on))

    def count(self, fn):
        self.n = {"encoder": 0, "decoder": 0}
        self.on = True
        try:
            return fn()
        finally:
            self.on = False


def ours_fn(loaded, path: str, video: dict, cfg):
    from sav_assets.lib.label.labeler import label_video

    return lambda: label_video(loaded, path, video, cfg)


def objects_of(res) -> list[tuple[int, int, object]]:
    """(masklet id, annotated frame it starts on, HxW mask there) of ours' masklets."""
    from sav_assets.lib.sav import rle

    first = {m["masklet_id"]: m["masklet_first_appeared_frame"] for m in res.masklets}
    return [(r["masklet_id"], r["ann_idx"], rle.decode(r).astype(bool)) for r in res.frames
            if first[r["masklet_id"]] == r["ann_idx"]]


def theirs_fn(loaded, folder: Path, cfg, objects, seed_frames: list[int], T: int, prompts: list):
    """SAM 2's own generator on the seeding frames + SAM2VideoPredictor forward + backward."""
    import numpy as np
    import torch
    from PIL import Image
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

    pred = loaded.model

    def run():
        with torch.inference_mode(), loaded.autocast():
            gen = SAM2AutomaticMaskGenerator(
                pred, points_per_side=cfg.points_per_side, points_per_batch=cfg.points_per_batch,
                pred_iou_thresh=cfg.pred_iou_thresh, stability_score_thresh=cfg.stability_score_thresh,
                box_nms_thresh=cfg.box_nms_thresh, output_mode="binary_mask")
            S = int(loaded.image_size)   # SAM2ImagePredictor assumes 1024 px unless told
            gen.predictor._bb_feat_sizes = [(S // 4, S // 4), (S // 8, S // 8), (S // 16, S // 16)]
            for a in seed_frames:
                gen.generate(np.asarray(Image.open(folder / f"{a:05d}.jpg").convert("RGB")))
                prompts.append(cfg.points_per_side ** 2)
            st = pred.init_state(str(folder))
            for oid, a, m in objects:
                pred.add_new_mask(st, a, oid, m)
            fwd = {t: (ids, (vm[:, 0] > 0).cpu().numpy()) for t, ids, vm in pred.propagate_in_video(st)}
            ids, last = fwd[T - 1]
            vis = [(oid, last[j]) for j, oid in enumerate(ids) if last[j].any()]
            back = {}
            if cfg.cycle_check and vis and T > 1:
                pred.reset_state(st)
                for oid, m in vis:
                    pred.add_new_mask(st, T - 1, oid, m)
                n = (cfg.cycle_frames or T) - 1
                back = {t: (vm[:, 0] > 0).cpu().numpy() for t, _, vm in
                        pred.propagate_in_video(st, start_frame_idx=T - 1, max_frame_num_to_track=n, reverse=True)}
            return fwd, back
    return run


def _prepare(args, out: Path) -> dict:
    from PIL import Image

    from sav_assets.lib.video.decode import read_frames

    video, grid = limited_video(probe(args.video), args.frames)

    def extract():  # what the baseline's user does first: extract JPEGs
        frames = read_frames(args.video, grid)
        for j in range(len(grid)):
            Image.fromarray(frames[j]).save(out / f"{j:05d}.jpg", quality=95)

    return {"video": video, "grid": grid, "extract_seconds": measure(extract, 1).best}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny, 256 px input, 24 annotated frames")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--config", default="tiny")
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--video", default=str(DEFAULT_VIDEO))
    ap.add_argument("--frames", type=int, default=0, help="annotated frames to label (0 = the whole grid)")
    ap.add_argument("--image-size", type=int, default=0, help="input-size override (0 = the config's 1024)")
    ap.add_argument("--max-objects", type=int, default=0, help="masklets per video (0 = LabelerConfig's)")
    ap.add_argument("--policies", default="uncovered", help="comma-separated seed policies for ours")
    ap.add_argument("--no-bf16", action="store_true")
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds of ours, theirs (after one warm-up)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    args = ap.parse_args(argv)
    if args.smoke:
        args.device, args.config = "cpu", "tiny"
        args.image_size = args.image_size or 256
        args.frames = args.frames or 24
        args.max_objects = args.max_objects or 8
        args.threads = args.threads or 1  # steadier timings on a small shared CPU
    args.video = str(Path(args.video).resolve())
    warnings.filterwarnings("ignore")  # sam2 warns on every frame when its CUDA extension is missing

    import logging

    import torch

    from sav_assets.lib.label.config import LabelerConfig
    from sav_assets.lib.label.model import ModelSpec, load_model

    logging.basicConfig(level=logging.ERROR)
    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load_model(ModelSpec(config=args.config, checkpoint=args.checkpoint, device=args.device,
                                  image_size=args.image_size or None, bf16=not args.no_bf16))
    cfg = LabelerConfig()
    if args.max_objects:
        cfg = replace(cfg, max_objects=args.max_objects)
    if loaded.random_weights:
        cfg = replace(cfg, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    sync = torch.cuda.synchronize if str(loaded.device).startswith("cuda") else None
    counter = Counter(loaded.model)
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]

    with tempfile.TemporaryDirectory(prefix="bench_labeling_") as tmp:
        folder = Path(tmp)
        meta = _prepare(args, folder)
        video, T = meta["video"], len(meta["grid"])
        cfgs = {p: replace(cfg, seed_policy=p) for p in policies}
        fns = {f"ours ({p})": ours_fn(loaded, args.video, video, c) for p, c in cfgs.items()}
        first = {name: counter.count(fn) for name, fn in fns.items()}       # warm-up, and ours' counters
        base = first[f"ours ({policies[0]})"]
        seed_frames = list(range(0, T, cfg.reseed_every or T))
        their_prompts: list = []
        fns["theirs"] = theirs_fn(loaded, folder, cfgs[policies[0]], objects_of(base), seed_frames, T, their_prompts)
        counter.count(fns["theirs"])                                       # warm-up, and theirs' counters
        theirs_n = {**counter.n, "prompts": sum(their_prompts)}
        timings = alternate(fns, args.rounds, sync)
    _report(args, loaded, meta, cfg, first, theirs_n, timings, policies)
    return 0


def _report(args, loaded, meta, cfg, first, theirs_n, timings, policies) -> None:
    import torch

    v, T = meta["video"], len(meta["grid"])
    dev = str(loaded.device)
    gpu = torch.cuda.get_device_name(0) if dev.startswith("cuda") else None
    print("## Labeling throughput: the default labeling workload vs SAM 2's own tools\n")
    print(f"- date: {_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}")
    print(f"- machine: {platform.node()} ({machine()}" + (f", {gpu}" if gpu else ", no GPU")
          + f"), torch {torch.__version__}")
    print(f"- command: `python benchmarks/bench_labeling.py {' '.join(sys.argv[1:])}`")
    print(f"- video: {Path(args.video).name} ({v['video_width']}x{v['video_height']}, {v['video_fps']:.2f} fps), "
          f"{T} annotated frames; model {loaded.model_name} at {loaded.image_size} px"
          + (", RANDOM WEIGHTS" if loaded.random_weights else "")
          + f"; {args.rounds} alternating rounds after a warm-up" + (f", {args.threads} torch thread(s)" if args.threads else ""))
    print(f"- workload: LabelerConfig defaults (reseed_every {cfg.reseed_every}, cycle_check {cfg.cycle_check}, "
          f"cycle_frames {cfg.cycle_frames}, points_per_side {cfg.points_per_side}, max_objects {cfg.max_objects})"
          + ("; generator thresholds 0 (random weights)" if loaded.random_weights else ""))
    print(f"- theirs: JPEG folder of the same frames (extraction {meta['extract_seconds']:.2f}s, not timed)")
    if not dev.startswith("cuda"):
        print("- NOTE: CPU run at a small input size: it compares the two paths' work, not GPU throughput.")
    print()
    th = timings["theirs"]
    rows = []
    for p in policies:
        name = f"ours ({p})"
        st = first[name].stats
        rows.append({"path": name, "masklets": st["objects"], "fps (median)": f"{T / timings[name].median:.2f}",
                     "paired ratio vs theirs": f"{paired_ratio(th, timings[name]):.2f}x",
                     "encoder calls / frame": f"{st['encoder_calls_per_frame']:.2f}",
                     "decoder passes": st["decoder_passes"], "generator prompts": st["seed_prompts"],
                     "decode wait s": f"{st['decode_wait_s']:.2f}", "host copy s": f"{st['host_copy_s']:.2f}",
                     "RLE s": f"{st['rle_s']:.2f}"})
    rows.append({"path": "theirs (SAM 2 generator + SAM2VideoPredictor)", "masklets": rows[0]["masklets"],
                 "fps (median)": f"{T / th.median:.2f}", "paired ratio vs theirs": "1.00x",
                 "encoder calls / frame": f"{theirs_n['encoder'] / T:.2f}", "decoder passes": theirs_n["decoder"],
                 "generator prompts": theirs_n["prompts"], "decode wait s": "n/a", "host copy s": "n/a", "RLE s": "n/a"})
    print_table(rows)


if __name__ == "__main__":
    raise SystemExit(main())

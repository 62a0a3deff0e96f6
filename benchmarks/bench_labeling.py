#!/usr/bin/env python
"""Annotated frames/s of ``label_video`` vs SAM 2's own propagation, side by side on the same input.

Ours: ``sav_assets.lib.label.labeler.label_video`` end to end on the video file (decode of the annotated
frames in an isolated subprocess, batched tracking, COCO RLE, SA-V fields), prompted with one box
per object on annotated frame 0, re-seeding and cycle check off.

Baseline (what a SAM 2 user would run): the same annotated frames extracted beforehand to a JPEG
folder (extraction not timed), then ``SAM2VideoPredictor.init_state(folder)`` +
``add_new_mask`` for the same objects (our masks on frame 0) + ``propagate_in_video``, masks
thresholded and copied to the host. Same model object, same weights, same frames, same precision.

Each path runs in its own fresh subprocess (so peak host RSS is its own; ``_harness.spawn_worker``)
after a short warm-up; each measurement is the best of ``--repeats`` runs (this matters on a shared
machine).
The table reports annotated frames per second, ours / baseline ratio, peak host RSS and peak GPU
memory, and the mean IoU between our masks and the baseline's (agreement of the two paths).

    python benchmarks/bench_labeling.py --smoke            # CPU, tiny, 256 px, 8 frames (~2-3 min)
    python benchmarks/bench_labeling.py --device cuda --config large --checkpoint sam2.1_hiera_large.pt

Needs only torch, sam2, numpy, decord, PIL, psutil and ``sav_assets.lib`` (no Dagster).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import sys
import tempfile
import warnings
from pathlib import Path

from _harness import REPO, PeakRSS, add_worker_args, machine, measure, print_table, spawn_worker, worker_main

DEFAULT_VIDEO = REPO / ".." / "shared" / "data" / "videos" / "bedroom.mp4"


# ---------------------------------------------------------------------------------------------
# helpers


def probe(path: str) -> dict:
    import decord

    vr = decord.VideoReader(path, ctx=decord.cpu(0))
    h, w = vr[0].shape[:2]
    return {"video_id": Path(path).stem, "video_fps": float(vr.get_avg_fps()), "video_frame_count": len(vr),
            "video_height": int(h), "video_width": int(w)}


def limited_video(video: dict, frames: int, target_fps: float = 6.0) -> tuple[dict, list[int]]:
    """The video row cut so that its annotation grid has ``frames`` frames (0 = all)."""
    from sav_assets.lib.sav.fields import annotation_grid

    grid = annotation_grid(video["video_frame_count"], video["video_fps"], target_fps)
    if frames and frames < len(grid):
        grid = annotation_grid(grid[frames - 1] + 1, video["video_fps"], target_fps)[:frames]
        video = {**video, "video_frame_count": grid[-1] + 1}
    return video, grid


def boxes_for(k: int, w: int, h: int) -> list[list[float]]:
    """k boxes on a grid over the frame (each a cell shrunk to its middle 60%)."""
    cols = max(1, math.ceil(math.sqrt(k * w / h)))
    rows = max(1, math.ceil(k / cols))
    cw, ch = w / cols, h / rows
    out = []
    for i in range(k):
        r, c = divmod(i, cols)
        x0, y0 = c * cw + 0.2 * cw, r * ch + 0.2 * ch
        out.append([round(x0, 1), round(y0, 1), round(x0 + 0.6 * cw, 1), round(y0 + 0.6 * ch, 1)])
    return out


def spec_from(args):
    from sav_assets.lib.label.model import ModelSpec

    return ModelSpec(config=args.config, checkpoint=args.checkpoint, device=args.device,
                     image_size=args.image_size or None, bf16=not args.no_bf16)


# ---------------------------------------------------------------------------------------------
# workers (each runs in its own process)


def _sync(loaded):
    """A callable that waits for the GPU (None on the CPU), so that timings include the work."""
    import torch

    return torch.cuda.synchronize if str(loaded.device).startswith("cuda") else None


def _reset_gpu(loaded):
    import torch

    if str(loaded.device).startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def _gpu_peak(loaded):
    import torch

    return torch.cuda.max_memory_allocated() / 2**20 if str(loaded.device).startswith("cuda") else None


def worker_ours(args) -> dict:
    import numpy as np

    from sav_assets.lib.label.config import LabelerConfig
    from sav_assets.lib.label.labeler import label_video
    from sav_assets.lib.label.model import load_model
    from sav_assets.lib.label.prompts import Prompt
    from sav_assets.lib.sav import rle

    out = Path(args.out)
    meta = json.loads((out / "meta.json").read_text())
    video, grid = meta["video"], meta["grid"]
    loaded = load_model(spec_from(args))
    cfg = LabelerConfig(reseed_every=0, cycle_check=False, chunk_frames=args.chunk_frames, overlay_width=0)
    W, H = video["video_width"], video["video_height"]
    warm, _ = limited_video(video, 2)  # warm-up on the first 2 annotated frames
    label_video(loaded, args.video, warm, cfg, prompts=[Prompt(video["video_id"], 0, 1, None, None,
                                                               boxes_for(1, W, H)[0])], mode="prompted")
    results = {}
    for k in args.counts:
        prompts = [Prompt(video["video_id"], 0, i + 1, None, None, b) for i, b in enumerate(boxes_for(k, W, H))]
        _reset_gpu(loaded)
        with PeakRSS() as rss:
            run = measure(lambda p=prompts: label_video(loaded, args.video, video, cfg, prompts=p,
                                                        mode="prompted"), args.repeats, _sync(loaded))
        secs, res = run.best, run.result
        assert res.stats["frames_labeled"] == len(grid)
        # objects for the baseline (our frame-0 masks) and our masks for the agreement check
        rows = sorted(res.frames, key=lambda r: (r["masklet_id"], r["ann_idx"]))
        first = [rle.decode(r) for r in rows if r["ann_idx"] == 0]
        np.savez_compressed(out / f"objects_{k}.npz", masks=np.stack(first).astype(bool))
        (out / f"ours_{k}.json").write_text(json.dumps(
            [[r["masklet_id"], r["ann_idx"], r["size"], r["counts"]] for r in rows]))
        results[k] = {"fps": len(grid) / secs, "seconds": secs, "peak_host_mb": rss.peak_mb,
                      "peak_gpu_mb": _gpu_peak(loaded), "frames": len(grid), "device": loaded.device,
                      "model": loaded.model_name, "random_weights": loaded.random_weights,
                      "image_size": loaded.image_size}
    return results


def worker_baseline(args) -> dict:
    import numpy as np
    import torch
    from pycocotools import mask as mu

    from sav_assets.lib.label.model import load_model

    warnings.filterwarnings("ignore")  # sam2 warns on every frame when its CUDA extension is missing
    out = Path(args.out)
    loaded = load_model(spec_from(args))
    pred = loaded.model

    def run(folder: str, masks) -> list:
        got = []
        with torch.inference_mode(), loaded.autocast():
            st = pred.init_state(folder, offload_video_to_cpu=False, offload_state_to_cpu=False)
            for i, m in enumerate(masks):
                pred.add_new_mask(st, 0, i + 1, m)
            for _t, _ids, vm in pred.propagate_in_video(st):
                got.append((vm[:, 0] > 0).cpu().numpy())
        return got

    run(str(out / "jpg_warm"), np.load(out / f"objects_{args.counts[0]}.npz")["masks"][:1])
    results = {}
    for k in args.counts:
        masks0 = np.load(out / f"objects_{k}.npz")["masks"]
        _reset_gpu(loaded)
        with PeakRSS() as rss:
            timing = measure(lambda m=masks0: run(str(out / "jpg"), m), args.repeats, _sync(loaded))
        secs, got = timing.best, timing.result
        # agreement with our masks
        ours = json.loads((out / f"ours_{k}.json").read_text())
        ids = sorted({m for m, *_ in ours})
        by = {(m, a): {"size": size, "counts": counts.encode("ascii")} for m, a, size, counts in ours}
        ious = []
        for a, fm in enumerate(got):
            for j, m in enumerate(ids):
                b = mu.encode(np.asfortranarray(fm[j].astype(np.uint8)))
                o = by[(m, a)]
                both_empty = mu.area(b) == 0 and mu.area(o) == 0
                ious.append(1.0 if both_empty else float(mu.iou([b], [o], [0])[0][0]))
        results[k] = {"fps": len(got) / secs, "seconds": secs, "peak_host_mb": rss.peak_mb,
                      "peak_gpu_mb": _gpu_peak(loaded), "frames": len(got),
                      "miou_vs_ours": float(np.mean(ious)) if ious else None}
    return results


# ---------------------------------------------------------------------------------------------
# orchestration


def _prepare(args, out: Path) -> dict:
    from PIL import Image

    from sav_assets.lib.util import sha256_file
    from sav_assets.lib.video.decode import read_frames

    video = probe(args.video)
    video, grid = limited_video(video, args.frames)
    video["content_sha256"] = sha256_file(args.video)
    def extract():  # what the baseline's user does first: extract JPEGs
        frames = read_frames(args.video, grid)
        for name, sel in (("jpg", range(len(grid))), ("jpg_warm", range(min(2, len(grid))))):
            d = out / name
            d.mkdir(parents=True, exist_ok=True)
            for j in sel:
                Image.fromarray(frames[j]).save(d / f"{j:05d}.jpg", quality=95)

    meta = {"video": video, "grid": grid, "extract_seconds": measure(extract, args.repeats).best}
    (out / "meta.json").write_text(json.dumps(meta))
    return meta


def _spawn(args, kind: str, out: Path) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--objects", args.objects,
           "--out", str(out), "--video", args.video, "--config", args.config, "--device", args.device,
           "--image-size", str(args.image_size or 0), "--chunk-frames", str(args.chunk_frames),
           "--repeats", str(args.repeats), "--threads", str(args.threads)]
    if args.checkpoint:
        cmd += ["--checkpoint", args.checkpoint]
    if args.no_bf16:
        cmd += ["--no-bf16"]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"} if args.threads else None
    res, _tree = spawn_worker(cmd, kind, env)
    return {int(k): v for k, v in res.items()}


def _fmt(v, nd=1):
    return "n/a" if v is None else f"{v:.{nd}f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny, 256 px input, 8 annotated frames")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--config", default="tiny")
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--video", default=str(DEFAULT_VIDEO))
    ap.add_argument("--frames", type=int, default=0, help="annotated frames to label (0 = the whole grid)")
    ap.add_argument("--objects", default="1,12", help="comma-separated object counts")
    ap.add_argument("--image-size", type=int, default=0, help="input-size override (0 = the config's 1024)")
    ap.add_argument("--chunk-frames", type=int, default=64)
    ap.add_argument("--no-bf16", action="store_true")
    ap.add_argument("--repeats", type=int, default=2, help="timed runs per measurement (the best counts)")
    add_worker_args(ap)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.smoke:
        args.device, args.config = "cpu", "tiny"
        args.image_size = args.image_size or 256
        args.frames = args.frames or 8
        args.threads = args.threads or 1  # steadier timings on a small shared CPU
    args.video = str(Path(args.video).resolve())

    if args.worker:
        args.counts = [int(x) for x in args.objects.split(",") if x.strip()]
        return worker_main(worker_ours if args.worker == "ours" else worker_baseline, args)

    counts = [int(x) for x in args.objects.split(",") if x.strip()]
    with tempfile.TemporaryDirectory(prefix="bench_labeling_") as tmp:
        out = Path(tmp)
        meta = _prepare(args, out)
        ours = _spawn(args, "ours", out)
        base = _spawn(args, "baseline", out)
        rows = [(k, ours[k], base[k]) for k in counts]

    import torch

    o0 = rows[0][1]
    dev = o0["device"]
    gpu = torch.cuda.get_device_name(0) if dev.startswith("cuda") else None
    v = meta["video"]
    print("## Labeling throughput: label_video vs SAM2VideoPredictor\n")
    print(f"- date: {_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}")
    print(f"- machine: {platform.node()} ({machine()}" + (f", {gpu}" if gpu else ", no GPU")
          + f"), torch {torch.__version__}")
    print(f"- command: `python benchmarks/bench_labeling.py {' '.join(sys.argv[1:])}`")
    print("- ours = label_video on the video file (decode included); baseline = SAM2VideoPredictor on a JPEG "
          f"folder of the same annotated frames (extracting it took {meta['extract_seconds']:.2f}s, shown "
          "separately)")
    print(f"- video: {Path(args.video).name} ({v['video_width']}x{v['video_height']}, {v['video_fps']:.2f} fps), "
          f"{o0['frames']} annotated frames; model {o0['model']} at {o0['image_size']} px"
          + (", RANDOM WEIGHTS" if o0["random_weights"] else "")
          + f"; best of {args.repeats} runs" + (f", {args.threads} torch thread(s)" if args.threads else ""))
    if not dev.startswith("cuda"):
        print("- NOTE: no GPU was used in this run (device cpu): these are CPU numbers at a small input size; "
              "they compare the two paths' overheads, not GPU throughput.")
    if o0["random_weights"]:
        print("- NOTE: random weights: masks are meaningless; the mIoU column only checks that both paths agree.")
    print()
    ex = meta["extract_seconds"]
    table = []
    for k, o, b in rows:
        bx = b["frames"] / (b["seconds"] + ex)
        table.append({
            "device": o["device"], "model": o["model"], "objects": k, "frames": o["frames"],
            "ours fps": f"{o['fps']:.2f}", "baseline fps": f"{b['fps']:.2f}", "ratio": f"{o['fps'] / b['fps']:.2f}x",
            "peak host MB (ours / base)": f"{o['peak_host_mb']:.0f} / {b['peak_host_mb']:.0f}",
            "peak GPU MB (ours / base)": f"{_fmt(o['peak_gpu_mb'], 0)} / {_fmt(b['peak_gpu_mb'], 0)}",
            "baseline fps incl. JPEG extraction": f"{bx:.2f}", "ratio vs that": f"{o['fps'] / bx:.2f}x",
            "mask mIoU ours vs base": _fmt(b["miou_vs_ours"], 3)})
    print_table(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

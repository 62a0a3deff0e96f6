#!/usr/bin/env python
"""Peak host memory of labeling a long 1080p video: ``label_video`` vs ``SAM2VideoPredictor``.

The labeling issue claims: "A 60 s 1080p video must label with host memory well under 4 GB".
This benchmark measures it on CPU:

1. A 60 s, 1920x1080, 24 fps H.264 video of moving textured shapes is rendered once with
   ``sav_assets.lib.ingest.demo.write_synthetic_video`` (preset ultrafast) and cached in ``--workdir``.
2. Ours, in a fresh subprocess: ``label_video`` (mode "prompted", otherwise the default
   ``LabelerConfig``: isolated decoding, 16-frame chunks, prefetch, cycle check) on the whole 6 fps
   grid (360 annotated frames), with one box prompt per object on annotated frame 0 (the boxes
   are the scene's real objects: ball, checkered box, bar). Model: SAM 2.1 tiny, RANDOM WEIGHTS
   (no checkpoint here), device cpu, ``--image-size`` input (default 512).
3. Baseline, in another fresh subprocess: what a SAM 2 user runs: the same 360 annotated frames
   extracted beforehand to a JPEG folder (not timed, cached), then ``init_state(folder)``,
   ``add_new_points_or_box`` with the same boxes on frame 0 and ``propagate_in_video``; each
   frame's masks are thresholded and kept as COCO RLE (as ours keeps them), not as raw masks.
   ``--baseline-frames N`` runs it on the first N frames only and extrapolates linearly (labelled).

Peak RSS is sampled (every 10 ms, ``_harness.PeakRSS``) in two ways: inside the worker (the worker
process alone), and from the parent over the worker's whole
process tree (sum of RSS of the worker and its children: our decoder runs in a child process).
The RSS after importing torch and building the model is reported too, and RSS is recorded along
the video so that growth with video length is visible.

    .venv/bin/python benchmarks/bench_long_video.py                               # 512 px, 1 object
    .venv/bin/python benchmarks/bench_long_video.py --image-size 256 --objects 3  # faster
    .venv/bin/python benchmarks/bench_long_video.py --seconds 4                   # quick check

On 2 CPU cores (shared) the first took ~18 min (video rendering included: ~30 s, once), the
second ~8.5 min: the cycle check doubles our time; ``--no-cycle-check`` halves it.

``--decode`` measures decoding alone instead (no model): the annotation grid of a single-key-frame
render of the video (``gop`` longer than the video), decoded in ``--chunk-frames`` chunks by
``iter_frame_chunks`` (one sequential pass; in process and isolated as the labeler runs it) against
a single pass (decord decoding every grid frame in one ``get_batch``) and against the previous path
(decord ``get_batch`` per chunk, parked on frame 0 after each: every chunk decodes from the only key
frame), alternating, ``--repeats`` times; it prints each one's median seconds and its ratio to the single pass.

    .venv/bin/python benchmarks/bench_long_video.py --decode --seconds 20 --width 640 --height 360

(Both measurements live in this one script, past ~400 lines, because they share the rendered and
cached long video and its helpers.)

Needs only torch, sam2, numpy, PIL, psutil, decord, av and ``sav_assets.lib`` (no Dagster).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

from _harness import MB, PeakRSS, add_worker_args, machine, print_table, spawn_worker, worker_main
from _harness import rss_mb as _rss_mb

# ---------------------------------------------------------------------------------------------
# helpers


def video_path(args) -> Path:
    name = f"synth_{args.seconds:g}s_{args.width}x{args.height}_{args.fps:g}fps.mp4"
    return Path(args.workdir) / name


def ensure_video(args) -> tuple[Path, float]:
    """Render and encode the video once (cached); returns (path, seconds spent, 0 when cached)."""
    from sav_assets.lib.ingest.demo import write_synthetic_video

    p = video_path(args)
    if p.is_file():
        return p, 0.0
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".part.mp4")
    t0 = time.perf_counter()
    write_synthetic_video(tmp, seconds=args.seconds, fps=args.fps, width=args.width, height=args.height,
                          seed=0, preset="ultrafast", crf=23)
    os.replace(tmp, p)
    return p, time.perf_counter() - t0


def video_row(path: Path) -> dict:
    import decord

    vr = decord.VideoReader(str(path), ctx=decord.cpu(0))
    h, w = vr[0].shape[:2]
    return {"video_id": path.stem, "video_fps": float(vr.get_avg_fps()), "video_frame_count": len(vr),
            "video_height": int(h), "video_width": int(w)}


def object_boxes(args, k: int) -> list[list[float]]:
    """Boxes of the scene's objects on frame 0 (ball, checkered box, bar), clipped to the frame."""
    from sav_assets.lib.ingest.demo import Scene

    n = max(1, int(round(args.seconds * args.fps)))
    sc = Scene(args.width, args.height, args.fps, n, seed=0)
    pos = sc.positions(0)
    out = []
    for s in (0, 1, 3, 2):
        if pos[s] is None:
            continue
        y, x = pos[s]
        h, w = sc.sprites[s].mask.shape
        x0, y0 = max(0, x), max(0, y)
        x1, y1 = min(args.width, x + w), min(args.height, y + h)
        if x1 - x0 >= 4 and y1 - y0 >= 4:
            out.append([float(x0), float(y0), float(x1), float(y1)])
    if len(out) < k:
        raise SystemExit(f"only {len(out)} objects are visible on frame 0; use --objects <= {len(out)}")
    return out[:k]


def ensure_jpegs(args, path: Path, grid: list[int]) -> tuple[Path, float]:
    """The annotated frames as a JPEG folder (00000.jpg ...), extracted once (cached)."""
    from PIL import Image

    from sav_assets.lib.video.decode import iter_frame_chunks

    d = Path(args.workdir) / f"{path.stem}_jpg_{len(grid)}"
    done = d / ".complete"
    if done.is_file():
        return d, 0.0
    d.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for chunk in iter_frame_chunks(str(path), grid, 32):
        for j, frame in enumerate(chunk.frames):
            Image.fromarray(frame).save(d / f"{chunk.start + j:05d}.jpg", quality=95)
    done.write_text("ok")
    return d, time.perf_counter() - t0


def load(args):
    from sav_assets.lib.label.model import ModelSpec, load_model

    return load_model(ModelSpec(config=args.config, checkpoint=None, device="cpu", image_size=args.image_size))


class _Timeline:
    """RSS of this process at the given annotated-frame counts (a growth check along the video)."""

    def __init__(self, total: int, every: int):
        self.total, self.every = total, max(1, every)
        self.points: list[tuple[int, float]] = []
        self._next = 0

    def __call__(self, done: int, _total: int | None = None) -> None:
        if done >= self._next or done == self.total:
            self.points.append((int(done), _rss_mb()))
            self._next = done + self.every


# ---------------------------------------------------------------------------------------------
# workers (each runs in its own fresh process)


def worker_ours(args) -> dict:
    from sav_assets.lib.label.config import LabelerConfig
    from sav_assets.lib.label.labeler import label_video
    from sav_assets.lib.label.prompts import Prompt
    from sav_assets.lib.sav.fields import annotation_grid

    path = video_path(args)
    video = video_row(path)
    grid = annotation_grid(video["video_frame_count"], video["video_fps"])
    rss_start = _rss_mb()
    loaded = load(args)
    rss_model = _rss_mb()
    boxes = object_boxes(args, args.objects)
    prompts = [Prompt(video["video_id"], 0, i + 1, None, None, b) for i, b in enumerate(boxes)]
    cfg = LabelerConfig(chunk_frames=args.chunk_frames, cycle_check=not args.no_cycle_check)
    total = len(grid) * (2 if cfg.cycle_check else 1)
    tl = _Timeline(total, args.timeline_every)
    with PeakRSS() as rss:
        t0 = time.perf_counter()
        res = label_video(loaded, str(path), video, cfg, prompts=prompts, progress=tl, mode="prompted")
        wall = time.perf_counter() - t0
    st = res.stats
    assert st["frames_labeled"] == len(grid), st
    return {"path": "ours", "frames": len(grid), "objects": len(prompts), "wall_s": wall,
            "fps": len(grid) / wall, "peak_mb": rss.peak_mb, "rss_start_mb": rss_start,
            "rss_model_mb": rss_model, "timeline": tl.points, "timeline_total": total,
            "cycle_check": cfg.cycle_check, "chunk_frames": cfg.chunk_frames,
            "visible_frames": sum(1 for f in res.frames if f["visible"]),
            "stats": {k: st[k] for k in ("seconds", "forward_seconds", "fps", "peak_host_mb", "objects",
                                         "cohorts", "image_size", "model_name", "random_weights", "device",
                                         "video_hw")}}


def worker_baseline(args) -> dict:
    import torch

    from sav_assets.lib.sav import rle
    from sav_assets.lib.sav.fields import annotation_grid

    warnings.filterwarnings("ignore")  # sam2 warns about its missing CUDA extension
    path = video_path(args)
    video = video_row(path)
    grid = annotation_grid(video["video_frame_count"], video["video_fps"])
    n = len(grid) if not args.baseline_frames else min(args.baseline_frames, len(grid))
    folder = Path(args.jpg_dir)
    if n < len(grid):  # a folder holding only the first n frames (links, no copies)
        sub = Path(args.workdir) / f"{folder.name}_first{n}"
        sub.mkdir(exist_ok=True)
        for j in range(n):
            dst = sub / f"{j:05d}.jpg"
            if not dst.exists():
                os.symlink(folder / f"{j:05d}.jpg", dst)
        folder = sub
    rss_start = _rss_mb()
    loaded = load(args)
    pred = loaded.model
    rss_model = _rss_mb()
    boxes = object_boxes(args, args.objects)
    tl = _Timeline(n, args.timeline_every)
    out: dict[int, dict[int, dict]] = {}
    with PeakRSS() as rss, torch.inference_mode():
        t0 = time.perf_counter()
        st = pred.init_state(str(folder), offload_video_to_cpu=False, offload_state_to_cpu=False)
        rss_init = _rss_mb()
        t_init = time.perf_counter() - t0
        for i, b in enumerate(boxes):
            pred.add_new_points_or_box(st, frame_idx=0, obj_id=i + 1, box=b)
        for t, ids, vm in pred.propagate_in_video(st):
            masks = (vm[:, 0] > 0).cpu().numpy()
            out[t] = {int(o): rle.encode(masks[k]) for k, o in enumerate(ids)}
            tl(len(out))
        wall = time.perf_counter() - t0
    assert len(out) == n, (len(out), n)
    return {"path": "baseline", "frames": n, "frames_grid": len(grid), "objects": len(boxes), "wall_s": wall,
            "fps": n / wall, "peak_mb": rss.peak_mb, "rss_start_mb": rss_start, "rss_model_mb": rss_model,
            "rss_after_init_state_mb": rss_init, "init_state_s": t_init, "timeline": tl.points,
            "timeline_total": n, "images_tensor_mb": n * 3 * loaded.image_size ** 2 * 4 / MB,
            "visible_frames": sum(1 for d in out.values() for r in d.values() if rle.area(r) > 0)}


# ---------------------------------------------------------------------------------------------
# orchestration


def _spawn(args, kind: str, extra: list[str]) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--workdir", str(args.workdir),
           "--seconds", str(args.seconds), "--width", str(args.width), "--height", str(args.height),
           "--fps", str(args.fps), "--config", args.config, "--image-size", str(args.image_size),
           "--objects", str(args.objects), "--chunk-frames", str(args.chunk_frames),
           "--baseline-frames", str(args.baseline_frames), "--timeline-every", str(args.timeline_every)]
    cmd += extra
    if args.no_cycle_check:
        cmd.append("--no-cycle-check")
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    res, tree = spawn_worker(cmd, kind)
    return {**res, "tree_peak_mb": tree.peak_mb, "children_peak_mb": tree.children_peak_mb}


def _growth(res: dict) -> str:
    """RSS along the run, e.g. '0:812 120:905 240:907 360:909' (annotated frames processed: MB)."""
    return " ".join(f"{d}:{m:.0f}" for d, m in res["timeline"])


def decode_ratio(args) -> int:
    """``--decode``: chunked decoding of a single-key-frame video vs a single pass (see the docstring)."""
    import statistics

    from sav_assets.lib.ingest.demo import write_synthetic_video
    from sav_assets.lib.sav.fields import annotation_grid
    from sav_assets.lib.video import decode

    p = video_path(args).with_name(video_path(args).stem + "_1gop.mp4")
    if not p.is_file():
        p.parent.mkdir(parents=True, exist_ok=True)
        write_synthetic_video(p, seconds=args.seconds, fps=args.fps, width=args.width, height=args.height,
                              seed=0, preset="ultrafast", crf=23, gop=10**6)
    video = video_row(p)
    grid = annotation_grid(video["video_frame_count"], video["video_fps"])

    def previous_path():     # what iter_frame_chunks did for every chunk before the sequential pass
        vr = decode._open(str(p), None)
        for _, idx in decode._chunks(grid, args.chunk_frames):
            decode._decode_batch(vr, idx, str(p))

    def single_pass():       # the baseline: decord decodes every grid frame in one call, in process
        vr = decode._open(str(p), None)
        decode._decode_batch(vr, grid, str(p))

    c = args.chunk_frames
    runs = {"single pass (decord, one get_batch, in process)": single_pass,
            f"chunked by {c}, now (in process)": lambda: list(decode.iter_frame_chunks(str(p), grid, c)),
            f"chunked by {c}, now (isolated, as the labeler)":
                lambda: list(decode.iter_frame_chunks(str(p), grid, c, isolate=True)),
            f"chunked by {c}, previous (seek per chunk, in process)": previous_path}
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.repeats):
        for name, fn in runs.items():          # alternating, so contention hits all three alike
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    base = statistics.median(next(iter(times.values())))
    print(f"## Chunked decoding of a single-key-frame video ({video['video_width']}x{video['video_height']}, "
          f"{video['video_frame_count']} frames, {len(grid)} annotated, key frames "
          f"{len(decode._open(str(p), None).get_key_indices())})\n")
    print(f"- command: `.venv/bin/python benchmarks/bench_long_video.py {' '.join(sys.argv[1:])}`; "
          f"{machine()}; median of {args.repeats} alternating runs\n")
    print_table([{"decoding": k, "seconds": f"{statistics.median(v):.2f}",
                  "ratio vs single pass": f"{statistics.median(v) / base:.2f}x"} for k, v in times.items()])
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "sav_bench_long_video"),
                    help="where the video and the JPEG folder are cached")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--width", type=int, default=1920)
    ap.add_argument("--height", type=int, default=1080)
    ap.add_argument("--fps", type=float, default=24.0)
    ap.add_argument("--config", default="tiny")
    ap.add_argument("--image-size", type=int, default=512, help="model input size (multiple of 32)")
    ap.add_argument("--objects", type=int, default=1, help="box-prompted objects on annotated frame 0 (1-3)")
    ap.add_argument("--chunk-frames", type=int, default=16, help="LabelerConfig.chunk_frames (ours; its default)")
    ap.add_argument("--no-cycle-check", action="store_true", help="ours: LabelerConfig(cycle_check=False)")
    ap.add_argument("--baseline-frames", type=int, default=0,
                    help="run the baseline on the first N annotated frames only and extrapolate (0 = all)")
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--timeline-every", type=int, default=60, help="record RSS every N processed frames")
    ap.add_argument("--decode", action="store_true", help="decoding only: chunked vs a single pass (no model)")
    ap.add_argument("--repeats", type=int, default=3, help="--decode: alternating runs of each")
    add_worker_args(ap)
    ap.add_argument("--jpg-dir", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.decode:
        return decode_ratio(args)

    if args.worker:
        return worker_main(worker_ours if args.worker == "ours" else worker_baseline, args)

    from sav_assets.lib.sav.fields import annotation_grid

    t_all = time.perf_counter()
    path, t_video = ensure_video(args)
    video = video_row(path)
    grid = annotation_grid(video["video_frame_count"], video["video_fps"])
    ours = _spawn(args, "ours", [])
    base = None
    jpg_s = 0.0
    if not args.no_baseline:
        jpg_dir, jpg_s = ensure_jpegs(args, path, grid)
        base = _spawn(args, "baseline", ["--jpg-dir", str(jpg_dir)])
    total_s = time.perf_counter() - t_all

    import torch

    T = len(grid)
    S = ours["stats"]["image_size"]
    tensor_1024_mb = T * 3 * 1024 * 1024 * 4 / MB
    tensor_s_mb = T * 3 * S * S * 4 / MB
    dur = video["video_frame_count"] / video["video_fps"]
    vdesc = f"{dur:.0f} s, {video['video_width']}x{video['video_height']}, {video['video_fps']:g} fps, {T} ann."

    print("## Peak host memory labeling a long 1080p video (CPU)\n")
    print(f"- date: {_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}")
    print(f"- machine: {platform.node()} ({machine()}, no GPU used), "
          f"torch {torch.__version__}" + (f", {args.threads} torch threads" if args.threads else ""))
    cmd = " ".join([".venv/bin/python benchmarks/bench_long_video.py", *sys.argv[1:]])
    print(f"- command: `{cmd}`")
    print(f"- video: {path.name} ({video['video_frame_count']} frames, {path.stat().st_size / MB:.1f} MB"
          + (f", rendered+encoded in {t_video:.0f} s" if t_video else ", cached") + ")")
    print(f"- model: {ours['stats']['model_name']} at {S} px, RANDOM WEIGHTS (masks meaningless; memory and "
          f"time are what is measured), device cpu; {ours['objects']} box prompt(s) on annotated frame 0")
    print(f"- ours: label_video(mode='prompted'), chunk_frames={ours['chunk_frames']}, "
          f"cycle_check={ours['cycle_check']} (wall time includes the backward cycle-check pass"
          + ("" if ours["cycle_check"] else ", here off") + "), isolated decoding in a child process")
    if base:
        print(f"- baseline: SAM2VideoPredictor.init_state(JPEG folder of the {T} annotated frames; extraction "
              + (f"took {jpg_s:.0f} s, " if jpg_s else "cached, ") + "not timed) + add_new_points_or_box + "
              "propagate_in_video, masks kept as RLE")
    print("- peak host MB: worker process RSS (PeakRSS, 10 ms sampling) / whole process tree (worker + "
          "children, e.g. our decoder subprocess; summed RSS, so shared pages count twice)")
    print()
    col_tensor = f"SAM 2 init_state float32 frames @1024 px, {T} frames (MB)"

    def row(path: str, res: dict, wall: str, fps: str, peak: str) -> dict:
        return {"video": vdesc, "input size": S, "objects": res["objects"], "path": path, "wall s": wall,
                "ann. frames/s": fps, "peak host MB (process / tree)": peak,
                "RSS after model load MB": f"{res['rss_model_mb']:.0f}", col_tensor: f"{tensor_1024_mb:.0f}"}

    table = [row("ours (label_video)", ours, f"{ours['wall_s']:.1f}", f"{ours['fps']:.2f}",
                 f"{ours['peak_mb']:.0f} / {ours['tree_peak_mb']:.0f}")]
    extrap = None
    if base:
        full = base["frames"] == T
        label = "SAM2VideoPredictor" + ("" if full else f" (first {base['frames']} frames)")
        table.append(row(label, base, f"{base['wall_s']:.1f}", f"{base['fps']:.2f}",
                         f"{base['peak_mb']:.0f} / {base['tree_peak_mb']:.0f}"))
        if not full:
            per = (base["peak_mb"] - base["rss_model_mb"]) / base["frames"]
            extrap = base["rss_model_mb"] + per * T
            table.append(row(f"SAM2VideoPredictor, LINEAR EXTRAPOLATION to {T} frames", base,
                             f"{base['wall_s'] * T / base['frames']:.0f} (extrap.)", "-",
                             f"{extrap:.0f} (extrap.)"))
    print_table(table)
    print(f"- SAM 2's init_state holds the frames as float32 [T, 3, S, S]: {T} x 3 x 1024^2 x 4 B = "
          f"{tensor_1024_mb:.0f} MB ({tensor_1024_mb / 1024:.2f} GiB) at the default 1024 px; at {S} px "
          f"it is {tensor_s_mb:.0f} MB.")
    print(f"- ours, label_video's own stats: peak_host_mb {ours['stats']['peak_host_mb']:.0f} (sampled at "
          f"progress ticks), seconds {ours['stats']['seconds']:.1f}, forward pass {ours['stats']['forward_seconds']:.1f} s, "
          f"fps {ours['stats']['fps']:.2f}, objects {ours['stats']['objects']}, cohorts {ours['stats']['cohorts']}, "
          f"video_hw {ours['stats']['video_hw']}; visible mask-frames {ours['visible_frames']}")
    print(f"- ours, peak summed RSS of the worker's child processes (the isolated decoder): "
          f"{ours['children_peak_mb']:.0f} MB")
    print(f"- ours, worker RSS along the run (processed/{ours['timeline_total']} progress ticks: MB; forward "
          f"then cycle-check pass): {_growth(ours)}")
    if base:
        print(f"- baseline: RSS {base['rss_model_mb']:.0f} MB after model load, {base['rss_after_init_state_mb']:.0f} "
              f"MB after init_state ({base['init_state_s']:.1f} s; its float32 frame tensor at {S} px for "
              f"{base['frames']} frames is {base['images_tensor_mb']:.0f} MB); visible mask-frames "
              f"{base['visible_frames']}")
        print(f"- baseline, RSS along propagation (frames: MB): {_growth(base)}")
        if extrap is not None:
            print(f"- baseline extrapolation (LINEAR, not measured): (peak - RSS after model load) / "
                  f"{base['frames']} frames x {T} frames + RSS after model load = {extrap:.0f} MB")
    print(f"- total benchmark wall time {total_s:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python
"""One batch labeled in-process and on a local Ray cluster of N workers: throughput ratios and per-unit overhead.

The same generated batch (``--videos`` demo videos, ingested by ``ingest_batch``) is labeled by
``lib/label/runners.run_labeling``, each run into a fresh copy of the lake:

* baseline: the in-process runner (``SAV_RAY_ADDRESS`` unset: one ``label_batch`` over every video,
  one model load);
* ``ray N``: an embedded single-node Ray with ``num_cpus=N`` (``--gpus``: ``num_gpus=N`` and
  ``--device cuda``), the videos bin-packed into units (one per video here), each unit a task that
  rebuilds the lake, loads the model once and writes its parts straight to the lake.

Every run uses one torch thread per worker (``OMP_NUM_THREADS=1``), so ``ray N`` has N times the
compute of the baseline and near-linear scaling reads ``speedup ~ N``. Each configuration runs right
after its own baseline (``--rounds`` pairs, medians). Printed per configuration: wall seconds and
annotated frames/s of both, ``speedup`` = baseline wall / Ray wall, ``efficiency`` = speedup / N,
and ``overhead per unit`` = (N x Ray wall - baseline wall) / units: the seconds a unit costs beyond
the in-process work (task start, lake and model rebuilt in the worker, Ray's scheduling). The
embedded Ray is started and both paths are warmed by one one-video run outside the timed region. Label keys
and masklet RLEs of every run are checked equal to the baseline's (one torch thread on both sides).

    python benchmarks/bench_scaleout.py --workers 1 2                      # CPU (~3-6 min on 2 cores)
    python benchmarks/bench_scaleout.py --device cuda --gpus --workers 1 2 4 8 --videos 32

Needs the ``ray`` extra (``pip install 'sav-assets[ray]'``), torch and sam2; no Dagster.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from _harness import machine, print_table  # noqa: E402


def build_batch(work: Path, n_videos: int, seconds: float, size: tuple[int, int]) -> tuple[list[dict], Path]:
    """Demo videos ingested into ``videos`` rows (the lake itself is only written by labeling)."""
    from sav_assets.lib.ingest.demo import write_demo_corpus
    from sav_assets.lib.ingest.ingest_batch import ingest_batch
    from sav_assets.lib.store.source import Source
    from sav_assets.lib.video.probe import ProbeLimits

    src = work / "src"
    write_demo_corpus(src, n_videos=n_videos, seconds=seconds, width=size[0], height=size[1], seed=11,
                      include_bad=False)
    source = Source(str(src))
    res = ingest_batch(source, {"objects": [o.to_json() for o in source.list_objects()]}, "bench", [],
                       ProbeLimits(), workers=1)
    return [v for v in res.videos if v["status"] == "ok"], src


def label_once(runner, videos: list[dict], root: Path, args) -> dict:
    """Label the batch into a fresh lake at ``root`` with ``runner``; wall time and what was written."""
    import functools

    from sav_assets.lib.label.config import LabelerConfig
    from sav_assets.lib.label.model import ModelSpec, load_model
    from sav_assets.lib.label.runners import LabelJob, run_labeling
    from sav_assets.lib.store.lake import Lake
    from sav_assets.lib.store.source import Source, SourceOpener
    from sav_assets.lib.store.tables import LABEL_RUNS, MASKLET_FRAMES

    shutil.rmtree(root, ignore_errors=True)
    spec = ModelSpec(config=args.config, image_size=args.image_size, device=args.device)
    cfg = LabelerConfig(points_per_side=4, points_per_batch=16, pred_iou_thresh=0.0, stability_score_thresh=0.0,
                        max_objects=4, reseed_every=4, isolate_decode=False, prefetch=False, cycle_check=False,
                        min_area_frac=0.0, overlay_width=0)
    job = LabelJob(functools.partial(Lake, str(root)), Source, "bench", {v["video_id"]: v for v in videos}, {},
                   spec, cfg, None, True)
    lake = Lake(str(root))
    t0 = time.perf_counter()
    summary, report = run_labeling(runner, job, lake, SourceOpener(), lambda: load_model(spec),
                                   unit_frames=1, log=lambda m: None)
    wall = time.perf_counter() - t0
    runs = lake.read_table("label_runs", batches=["bench"], schema=LABEL_RUNS).to_pylist()
    masks = lake.read_table("masklet_frames", batches=["bench"], schema=MASKLET_FRAMES).to_pylist()
    # frames from the lake: a unit Ray re-runs (its result object lost) skips what it already committed
    frames = sum(r["frames_labeled"] or 0 for r in runs if r["status"] == "labeled")
    return {"wall": wall, "frames": frames, "units": report.units, "failed": len(summary.failed),
            "retried": report.units_retried,
            "keys": sorted((r["video_id"], r["status"], r["label_key"]) for r in runs),
            "rles": sorted((r["video_id"], r["masklet_type"], r["masklet_id"], r["frame_idx"], r["counts"])
                           for r in masks)}


def on_ray(n: int, args, videos: list[dict], root: Path) -> dict:
    import ray

    from sav_assets.lib.cluster.runner import ClusterSettings, connect

    kw = {"num_gpus": n, "num_cpus": n} if args.gpus else {"num_cpus": n, "num_gpus": 0}
    ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=True, dashboard_host="127.0.0.1",
             log_to_driver=False, configure_logging=False, **kw)
    try:
        runner = connect(ClusterSettings(address="local"))   # joins the cluster started above
        label_once(runner, videos[:1], root.with_name(root.name + "_warm"), args)   # workers up, imports cached
        return label_once(runner, videos, root, args)
    finally:
        ray.shutdown()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=1, help="baseline/ray pairs per configuration (median)")
    ap.add_argument("--videos", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--size", default="160x120")
    ap.add_argument("--config", default="tiny")
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--gpus", action="store_true", help="units ask for one GPU each (num_gpus=N)")
    args = ap.parse_args()

    import torch

    from sav_assets.lib.cluster.runner import InlineRunner

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="bench_scaleout_"))
    try:
        w, h = (int(x) for x in args.size.split("x"))
        videos, _ = build_batch(work, args.videos, args.seconds, (w, h))
        label_once(InlineRunner(), videos[:1], work / "inline_warm", args)   # imports and caches, as on Ray
        runs: dict[int, list[tuple[dict, dict]]] = {n: [] for n in args.workers}   # n -> [(baseline, ray)]
        for _ in range(args.rounds):     # each configuration right after its own baseline: same machine load
            for n in args.workers:
                base = label_once(InlineRunner(), videos, work / "inline", args)
                runs[n].append((base, on_ray(n, args, videos, work / f"ray{n}")))
        rows = []
        for n in args.workers:
            bases, rays = [b for b, _ in runs[n]], [r for _, r in runs[n]]
            speed = statistics.median(b["wall"] / r["wall"] for b, r in runs[n])
            over = statistics.median((n * r["wall"] - b["wall"]) / r["units"] for b, r in runs[n])
            same = all(r["keys"] == b["keys"] and r["rles"] == b["rles"] and not r["failed"] for b, r in runs[n])
            b_wall, r_wall = statistics.median(b["wall"] for b in bases), statistics.median(r["wall"] for r in rays)
            rows.append({"workers": f"{n} {'GPU' if args.gpus else 'CPU'}", "units": rays[0]["units"],
                         "in-process s": round(b_wall, 1), "ray s": round(r_wall, 1),
                         "in-process frames/s": round(bases[0]["frames"] / b_wall, 2),
                         "ray frames/s": round(rays[0]["frames"] / r_wall, 2), "speedup": f"{speed:.2f}x",
                         "efficiency (speedup / N)": f"{speed / n:.2f}", "overhead per unit s": round(over, 2),
                         "units retried": sum(r["retried"] for r in rays),
                         "labels equal": "yes" if same else "NO"})
        base = runs[args.workers[0]][0][0]
        print(f"# bench_scaleout: {len(videos)} videos, {base['frames']} annotated frames, SAM 2.1 {args.config} "
              f"@{args.image_size}px on {args.device}, 1 torch thread per worker; {machine()}")
        print_table(rows)
        return 0 if all(r["labels equal"] == "yes" for r in rows) else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Late-entering objects found by re-seeding: automatic masklets of a random-weight and a fine-tuned
SAM 2.1 tiny on held-out synthetic videos with exact ground truth (issue 11 item 6).

Each video is a demo-corpus video (:func:`sav_assets.lib.ingest.demo.write_demo_video`: ball, box, bar
from the first frame, a diamond entering from the right edge after the first second) rendered from
scene seeds ``91000 + i`` (``--seed`` 91: disjoint from the training scenes, 10000+, and from
bench_finetune's validation scenes, ``VAL_SEED_BASE`` 90000+). Both models label every video with
``label_video(..., mode="auto")`` (the real labeler: the automatic mask generator on annotated frame 0
and every ``reseed_every`` annotated frames at the grid points no tracked mask covers, a seed covered
less than ``new_object_max_overlap`` starting a new masklet) under the SAME ``LabelerConfig`` (printed),
and :func:`sav_assets.lib.train.reseeding.late_object_report` scores each against the ``_manual.json``
masks: per object the matched masklet, the annotated frame it first appeared on, J&F over the object's
visible frames, and ``found`` (J&F >= ``--found-jf`` and, for the late diamond, a masklet started by a
re-seeding, never one of frame 0's).

Settings: the labeler's own defaults (``LabelerConfig``: ``pred_iou_thresh`` 0.8,
``stability_score_thresh`` 0.95, 32 x 32 points, re-seed every 8 annotated frames) unless overridden by
the flags. If with them neither model finds any late object (``--relaxed auto``, the default; ``always``
/ ``never``), the run is repeated with the RELAXED setting (``pred_iou_thresh`` and
``stability_score_thresh`` 0: every generated mask may seed, which is also what ``bench_labeling.py``
uses with random weights), reported in its own section. The last line is
``late object found: before <k>/<n> after <k>/<n>`` (n = late-entering objects over the videos) of the
last setting run (the relaxed one when it ran; the line above it names the setting). When neither model
finds a late object, the generator's masks on one frame where every object is visible (thresholds 0)
are listed per model with their predicted IoU and stability: why no seed passed the thresholds. Last,
each model's IoU from one click on each object (best of SAM 2's 3 masks), the most seeding can find.

    python benchmarks/bench_reseed.py                                       # random weights only
    python benchmarks/bench_reseed.py --checkpoint LAKE/models/checkpoints/<sha>.pt --sha256 <sha>

Timings are wall seconds of labeling per model (same videos, same config, one torch thread by default);
peak RSS of the whole run. CPU, 128 px input: a demonstration, not a throughput figure.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import sys
import tempfile
import time
import warnings
from dataclasses import replace
from pathlib import Path

from _harness import PeakRSS, machine, print_table

OBJECTS = ("ball", "box", "diamond", "bar")     # demo.Scene's sprites, by masklet id
SEED = 91                                        # scene seeds 91000 + i
RELAXED = {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
SHOWN = ("points_per_side", "pred_iou_thresh", "stability_score_thresh", "reseed_every", "seed_policy",
         "new_object_max_overlap", "min_area_frac", "max_objects", "cycle_check", "target_fps")


def _args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", default=None, help="fine-tuned checkpoint (bench_finetune --out DIR: "
                    "DIR/models/checkpoints/<sha256>.pt); none: the random-weight model only")
    ap.add_argument("--sha256", default=None, help="pin of the checkpoint")
    ap.add_argument("--tracking", choices=["single", "multimask"], default="single",
                    help="tracking of both models (bench_finetune from random weights trains single)")
    ap.add_argument("--videos", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--size", type=int, default=128, help="model input size")
    ap.add_argument("--width", type=int, default=160)
    ap.add_argument("--height", type=int, default=120)
    ap.add_argument("--seed", type=int, default=SEED, help="scene seeds seed*1000 + i (held out)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--pred-iou-thresh", type=float, default=None, help="default: LabelerConfig's")
    ap.add_argument("--stability-thresh", type=float, default=None, help="default: LabelerConfig's")
    ap.add_argument("--points-per-side", type=int, default=None, help="default: LabelerConfig's")
    ap.add_argument("--reseed-every", type=int, default=None, help="default: LabelerConfig's")
    ap.add_argument("--found-jf", type=float, default=0.5, help="J&F a match needs to count as found")
    ap.add_argument("--relaxed", choices=["auto", "always", "never"], default="auto",
                    help="also run with generator thresholds 0 (auto: when nothing late is found otherwise)")
    return ap.parse_args(argv)


def _config(a):
    from sav_assets.lib.label.config import LabelerConfig

    over = {"pred_iou_thresh": a.pred_iou_thresh, "stability_score_thresh": a.stability_thresh,
            "points_per_side": a.points_per_side, "reseed_every": a.reseed_every}
    return replace(LabelerConfig(), **{k: v for k, v in over.items() if v is not None})


def _videos(a, folder: Path) -> list[dict]:
    from bench_labeling import probe

    from sav_assets.lib.ingest.demo import write_demo_video
    from sav_assets.lib.train.reseeding import sav_ground_truth

    out = []
    for i in range(a.videos):
        v = write_demo_video(folder, i, seconds=a.seconds, fps=24, width=a.width, height=a.height, seed=a.seed)
        row = {**probe(v["video"]), "video_id": f"reseed_{a.seed}{i:03d}"}
        out.append({"row": row, "path": v["video"], "gt": sav_ground_truth(v["annotation"])})
    return out


def _run(loaded, videos, cfg, found_jf) -> dict:
    """Label every video (mode auto) and report it; wall seconds of labeling."""
    from sav_assets.lib.label.labeler import label_video
    from sav_assets.lib.train.reseeding import late_object_report

    reports, seconds = [], 0.0
    for v in videos:
        t0 = time.perf_counter()
        res = label_video(loaded, v["path"], v["row"], cfg, mode="auto")
        seconds += time.perf_counter() - t0
        reports.append((v["row"]["video_id"], res.stats,
                        late_object_report(res.masklets, res.frames, v["gt"], threshold=found_jf)))
    return {"reports": reports, "seconds": seconds}


def _frame(a, f) -> str:
    return "-" if a is None or a < 0 else f"{a} (frame {f})"


def _print_model(name: str, run: dict) -> tuple[int, int]:
    rows, mrows, late_n, late_k = [], [], 0, 0
    for vid, stats, rep in run["reports"]:
        for o in rep.objects:
            rows.append({"video": vid, "object": f"{o['obj_id']} {OBJECTS[o['obj_id']] if o['obj_id'] < 4 else ''}",
                         "late": "yes" if o["late"] else "", "first visible": _frame(o["first_visible"],
                                                                                     o["first_visible_frame"]),
                         "masklet": "-" if o["masklet_id"] is None else o["masklet_id"],
                         "masklet first appeared": _frame(o["masklet_first_appeared"], o["masklet_first_appeared_frame"]),
                         "J&F": f"{o['J&F']:.3f}", "found": "FOUND" if o["found"] else "no"})
        s = rep.summary()
        late_n, late_k = late_n + s["late_objects"], late_k + s["late_found"]
        mrows.append({"video": vid, "auto masklets": s["auto_masklets"], "started by re-seeding": s["reseeded_masklets"],
                      "covering > 50% of frame": s["covering_masklets"],
                      "first appeared (annotated frame)": " ".join(str(m["first_appeared"]) for m in rep.masklets) or "-",
                      "mean area fraction": " ".join(f"{m['mean_area_frac']:.2f}" for m in rep.masklets) or "-",
                      "generator prompts": stats.get("seed_prompts")})
    n_obj = sum(len(r.objects) for _, _, r in run["reports"])
    found = sum(r.summary()["found"] for _, _, r in run["reports"])
    print(f"#### {name}\n")
    print_table(rows)
    print_table(mrows)
    masklets = sum(r.summary()["auto_masklets"] for _, _, r in run["reports"])
    print(f"{name}: objects found {found}/{n_obj}, late objects found {late_k}/{late_n}; {masklets} automatic "
          f"masklets; labeling {run['seconds']:.1f}s ({run['seconds'] / max(1, len(run['reports'])):.1f}s/video)\n")
    return late_k, late_n


def _setting(title: str, cfg, models: dict, videos, a) -> dict[str, tuple[int, int]]:
    print(f"### {title}\n")
    print("LabelerConfig: " + ", ".join(f"{k}={getattr(cfg, k)}" for k in SHOWN) + "\n")
    return {name: _print_model(name, _run(m, videos, cfg, a.found_jf)) for name, m in models.items()}


def _seed_scores(models: dict, video: dict, cfg, top: int = 6) -> None:
    """Why seeds pass or not: the generator's masks on the first annotated frame where every object is
    visible, thresholds 0, per model: how many, how many pass the thresholds, and the ``top`` largest
    of those above the labeler's minimum seed area with their predicted IoU and stability."""
    import math

    from sav_assets.lib.label.seeding import make_generator
    from sav_assets.lib.sav.fields import annotation_grid
    from sav_assets.lib.sav.jf import db_eval_iou
    from sav_assets.lib.video.decode import read_frames

    gt = video["gt"]
    a = next(t for t in range(len(gt[0])) if all(g[t].any() for g in gt.values()))
    frame = read_frames(video["path"], [annotation_grid(video["row"]["video_frame_count"], 24.0)[a]])[0]
    min_area = max(1, math.ceil(cfg.min_area_frac * frame.shape[0] * frame.shape[1]))
    print(f"Generator masks on {video['row']['video_id']} annotated frame {a} (every object visible), thresholds 0, "
          f"{cfg.points_per_side}x{cfg.points_per_side} points, after box NMS; below, the {top} largest per model:\n")
    rows = []
    for name, m in models.items():
        anns = make_generator(m, replace(cfg, pred_iou_thresh=0.0, stability_score_thresh=0.0)).generate(frame)
        big = [x for x in anns if int(x["segmentation"].sum()) >= min_area]
        passing = sum(x["predicted_iou"] > cfg.pred_iou_thresh and x["stability_score"] >= cfg.stability_score_thresh
                      for x in big)
        print(f"- {name}: {len(anns)} generator masks, {len(big)} of at least {min_area} px, {passing} of them "
              f"passing pred_iou_thresh {cfg.pred_iou_thresh} and stability_score_thresh {cfg.stability_score_thresh}")
        for x in sorted(big, key=lambda x: -int(x["segmentation"].sum()))[:top]:
            seg = x["segmentation"]
            best = max(gt, key=lambda o: db_eval_iou(gt[o][a], seg))
            rows.append({"model": name, "area fraction": f"{seg.mean():.3f}", "predicted IoU": f"{x['predicted_iou']:.3f}",
                         "stability": f"{x['stability_score']:.3f}",
                         "best object (IoU)": f"{best} {OBJECTS[best]} ({db_eval_iou(gt[best][a], seg):.2f})"})
    print()
    print_table(rows)


def _click_ious(models: dict, videos: list[dict]) -> None:
    """What seeding can find at best: per model and object, the mean IoU of the best of SAM 2's three
    masks from ONE click on the object (its middle mask pixel), over the annotated frames where it is
    visible (the generator prompts with such clicks and, at thresholds 0, keeps all three masks)."""
    import numpy as np

    from sav_assets.lib.label.tracker import image_predictor
    from sav_assets.lib.sav.fields import annotation_grid
    from sav_assets.lib.sav.jf import db_eval_iou
    from sav_assets.lib.video.decode import read_frames

    rows = []
    frames_of = [read_frames(v["path"], annotation_grid(v["row"]["video_frame_count"], 24.0)) for v in videos]
    for name, m in models.items():
        pred, ious = image_predictor(m), {k: [] for k in range(len(OBJECTS))}
        for v, frames in zip(videos, frames_of, strict=True):
            for t, frame in enumerate(frames):
                pred.set_image(frame)
                for k, g in v["gt"].items():
                    ys, xs = np.nonzero(g[t])
                    if len(ys):
                        masks, _, _ = pred.predict(point_coords=np.array([[xs[len(xs) // 2], ys[len(ys) // 2]]]),
                                                   point_labels=np.array([1]), multimask_output=True)
                        ious[k].append(max(float(db_eval_iou(g[t], mm > 0)) for mm in masks))
        rows.append({"model": name, **{f"{k} {o}": f"{np.mean(ious[k]):.3f} ({len(ious[k])})" if ious[k] else "-"
                                       for k, o in enumerate(OBJECTS)}})
    print("One click per object and annotated frame: mean IoU of the best of the 3 masks (clicks):\n")
    print_table(rows)


def _line(res: dict[str, tuple[int, int]]) -> str:
    k0, n = res["before"]
    after = f"{res['after'][0]}/{res['after'][1]}" if "after" in res else "n/a (no --checkpoint)"
    return f"late object found: before {k0}/{n} after {after}"


def main(argv=None) -> int:
    a = _args(argv)
    warnings.filterwarnings("ignore")
    import logging

    import torch

    from sav_assets.lib.label.model import ModelSpec, load_model

    logging.basicConfig(level=logging.ERROR)
    torch.set_num_threads(a.threads)
    spec = ModelSpec(config="tiny", image_size=a.size, device="cpu", multimask_tracking=a.tracking == "multimask")
    models = {"before": load_model(spec)}
    if a.checkpoint:
        models["after"] = load_model(replace(spec, checkpoint=a.checkpoint, checkpoint_sha256=a.sha256))
    cfg = _config(a)
    print(f"# bench_reseed: {machine()}; {_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}; "
          f"torch {torch.__version__}, {a.threads} thread(s)")
    print(f"- command: `python benchmarks/bench_reseed.py {' '.join(sys.argv[1:] if argv is None else argv)}`")
    print(f"- models: before = SAM 2.1 tiny, RANDOM WEIGHTS (seed {spec.seed}); after = "
          + (f"{a.checkpoint} (sha256 {models['after'].checkpoint_sha256})" if a.checkpoint else "none")
          + f"; {a.size} px input, tracking {a.tracking}, CPU")
    print(f"- videos: {a.videos} held-out demo videos (scene seeds {a.seed * 1000}+i), {a.seconds:g}s at 24 fps, "
          f"{a.width}x{a.height}; objects 0 ball, 1 box, 2 diamond (enters after the first second), 3 bar")
    print(f"- found: J&F >= {a.found_jf} over the object's visible annotated frames and, for a late object, a "
          "masklet first appearing after annotated frame 0 (started by a re-seeding)\n")
    with tempfile.TemporaryDirectory(prefix="bench_reseed_") as tmp, PeakRSS() as rss:
        videos = _videos(a, Path(tmp))
        given = [a.pred_iou_thresh, a.stability_thresh, a.points_per_side, a.reseed_every]
        title = "labeler defaults" if all(v is None for v in given) else "labeler defaults with the given flags"
        res = _setting(title, cfg, models, videos, a)
        none_found = not any(k for k, _ in res.values())
        if none_found:
            print(f"With these settings neither model found a late object: {_line(res)}.\n")
            _seed_scores(models, videos[0], cfg)
        if a.relaxed == "always" or (a.relaxed == "auto" and none_found):
            print(f"{_line(res)}  [settings above]\n")
            title = "RELAXED: generator thresholds 0 (pred_iou_thresh=0, stability_score_thresh=0), all else as above"
            res = _setting(title, replace(cfg, **RELAXED), models, videos, a)
        _click_ious(models, videos)
    print(f"peak RSS {rss.peak_mb:.0f} MB")
    print(f"settings of the last line: {'relaxed' if title.startswith('RELAXED') else 'as configured above'}")
    print(_line(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

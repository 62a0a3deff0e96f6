"""Ingest throughput: ``probe_file`` and ``sample_frames`` against PyAV sequential decoding.

Baseline (what a user would otherwise write): open the file with PyAV and decode every frame in
order, to learn the frame count / size / fps (probe) or to reach the frames to sample (sampling,
frames converted to RGB and resized like ours). Ours: ``probe_file`` (isolated subprocess, header
checks, decord index + a few key frames) and ``sample_frames`` (isolated subprocess, key-frame-aware
decoding of only what the sampled frames need: the 8 anchors and their shake triplets, 24 frames,
exactly what ``assess_batch`` decodes). Our figures include forking the isolated child for every
call; the one-time start of the isolation zygote is printed separately. Both run on the same files in the same process, one after the other,
after one warm-up pass; each figure is the best of ``--repeat`` runs, ours and the baseline
alternating so that both see the same load.

Inputs: the real videos in ``../shared/data/videos`` (~10 s, key frames 8 s apart or only one) plus
two generated 1280x720 videos: 20 s with a key frame every second (like phone footage) and 5 s with
a single key frame (the worst case for sampling: everything up to the last sample is decoded).

    .venv/bin/python benchmarks/bench_ingest.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
from _harness import alternate, machine, print_table

from sav_assets.lib.ingest.demo import write_synthetic_video
from sav_assets.lib.ingest.quality import QualityThresholds, sample_indices
from sav_assets.lib.video.probe import ProbeLimits, probe_file
from sav_assets.lib.video.sample import sample_frames
from sav_assets.lib.video.sandbox import run_isolated

SHARED_VIDEOS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "videos"


def baseline_probe(path: str) -> dict:
    import av

    with av.open(path) as c:
        vs = c.streams.video[0]
        n = 0
        w = h = 0
        for frame in c.decode(vs):
            n += 1
            w, h = frame.width, frame.height
        return {"frames": n, "fps": float(vs.average_rate), "width": w, "height": h, "codec": vs.codec_context.name}


def baseline_sample(path: str, indices: list[int], max_side: int) -> np.ndarray:
    import av
    from PIL import Image

    want = set(indices)
    last = max(indices)
    out = []
    with av.open(path) as c:
        for i, frame in enumerate(c.decode(c.streams.video[0])):
            if i in want:
                a = frame.to_ndarray(format="rgb24")
                h, w = a.shape[:2]
                s = min(1.0, max_side / max(h, w))
                if s < 1.0:
                    a = np.asarray(Image.fromarray(a).resize((round(w * s), round(h * s)), Image.BILINEAR,
                                                             reducing_gap=2.0))
                out.append(a)
            if i >= last:
                break
    return np.stack(out)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-generated", action="store_true")
    args = ap.parse_args(argv)
    t = QualityThresholds()
    with tempfile.TemporaryDirectory() as tmp:
        files = sorted(str(p) for p in SHARED_VIDEOS.glob("*.mp4")) if SHARED_VIDEOS.is_dir() else []
        if not args.no_generated:
            g1 = os.path.join(tmp, "gen_720p_20s_gop1s.mp4")
            write_synthetic_video(g1, 20.0, 24, 1280, 720, seed=1, preset="veryfast", gop=24)
            g2 = os.path.join(tmp, "gen_720p_5s_onegop.mp4")
            write_synthetic_video(g2, 5.0, 24, 1280, 720, seed=2, preset="veryfast", gop=300)
            files += [g1, g2]
        if not files:
            raise SystemExit("no input videos")
        rows = []
        t0 = time.perf_counter()
        run_isolated("os:getpid")  # one-time start of the isolation zygote (per process, not per file)
        t_zygote = time.perf_counter() - t0
        for f in files:
            # warm-up: page cache, imports, lazily loaded codecs
            pr = probe_file(f, ProbeLimits())
            assert pr.status == "ok", pr
            idx = sample_indices(pr.video_frame_count, t.sample_frames, pr.video_fps, triplets=True)
            baseline_probe(f)
            probe = alternate({"ours": partial(probe_file, f, ProbeLimits()),
                               "base": partial(baseline_probe, f)}, args.repeat)
            pr, bp = probe["ours"].result, probe["base"].result
            assert bp["frames"] == pr.video_frame_count, (bp, pr)
            samp = alternate({"ours": partial(sample_frames, f, t.sample_frames, 120, t.max_side,
                                              indices=idx),
                              "base": partial(baseline_sample, f, idx, t.max_side)}, args.repeat)
            ours, base = samp["ours"].result, samp["base"].result
            assert ours.shape == base.shape, (ours.shape, base.shape)
            diff = float(np.abs(ours.astype(int) - base.astype(int)).mean())
            rows.append({"name": os.path.basename(f), "frames": pr.video_frame_count,
                         "size": f"{pr.video_width}x{pr.video_height}", "sampled": len(idx),
                         "t_probe": probe["ours"].best, "t_bprobe": probe["base"].best,
                         "t_samp": samp["ours"].best, "t_bsamp": samp["base"].best, "diff": diff})

    print(f"# bench_ingest  {_dt.datetime.now().isoformat(timespec='seconds')}  {machine()}, best of "
          f"{args.repeat}; one-time isolation zygote start {t_zygote:.2f} s (not in the figures)\n")
    print_table([{"video": r["name"], "frames": r["frames"], "size": r["size"],
                  "probe ours (s)": f"{r['t_probe']:.3f}", "probe PyAV (s)": f"{r['t_bprobe']:.3f}",
                  "probe ratio": f"{r['t_bprobe'] / r['t_probe']:.2f}x", "sampled": r["sampled"],
                  "sample ours (s)": f"{r['t_samp']:.3f}", "sample PyAV (s)": f"{r['t_bsamp']:.3f}",
                  "sample ratio": f"{r['t_bsamp'] / r['t_samp']:.2f}x",
                  "mean abs px diff": f"{r['diff']:.2f}"} for r in rows])
    n = len(rows)
    tp, tbp = sum(r["t_probe"] for r in rows), sum(r["t_bprobe"] for r in rows)
    ts, tbs = sum(r["t_samp"] for r in rows), sum(r["t_bsamp"] for r in rows)
    frames = sum(r["sampled"] for r in rows)
    print_table([
        {"figure": "probe throughput (videos/s)", "ours": f"{n / tp:.2f}",
         "PyAV sequential": f"{n / tbp:.2f}", "ratio (ours / baseline)": f"{(n / tp) / (n / tbp):.2f}x"},
        {"figure": "sampling throughput (sampled frames/s)", "ours": f"{frames / ts:.1f}",
         "PyAV sequential": f"{frames / tbs:.1f}",
         "ratio (ours / baseline)": f"{(frames / ts) / (frames / tbs):.2f}x"},
    ])

if __name__ == "__main__":
    main()

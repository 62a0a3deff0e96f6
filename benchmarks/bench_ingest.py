"""Ingest throughput: ``probe_file`` against a header-only PyAV probe, and ``sample_frames`` against PyAV
sequential decoding.

Probe baselines (what a user would otherwise write to learn frame count, size, fps and codec): PyAV
opens the container and reads the stream fields, no frame decoded (``header_probe``); once in this
process, once through the same isolation as ours (``run_isolated``: the zygote forks a child per
call, so the two differ only in what runs inside). Ours, ``probe_file``, does more than read the
header: limits, then decord indexes every packet (a file cut mid-stream fails there) and decodes up
to four frames (first, middle key frame, last key frame, final frame), plus the first frame's
rotation through PyAV. Its parts are timed separately in the same isolation: the header check
(``_check_header``: header + first frame), decord's index alone, and the whole child
(``_probe_child``). Every figure is paired: the calls alternate round after round on the same file,
and a ratio is the median over rounds of baseline time / our time (below 1: ours is slower).

Sampling: ``sample_frames`` (isolated, key-frame-aware decoding of only what the 8 anchors and their
shake triplets need, 24 frames, exactly what ``assess_batch`` decodes) against decoding every frame
in order up to the last sample with PyAV (frames converted to RGB and resized like ours).

Inputs: the real videos in ``../shared/data/videos`` (~10 s, key frames 8 s apart or only one) plus
two generated 1280x720 videos: 20 s with a key frame every second (like phone footage) and 5 s with
a single key frame (the worst case for sampling: everything up to the last sample is decoded).

    .venv/bin/python benchmarks/bench_ingest.py [--repeat 5]
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
from _harness import alternate, machine, paired_ratio, print_table
from _probe_targets import header_probe

from sav_assets.lib.ingest.demo import write_synthetic_video
from sav_assets.lib.ingest.quality import QualityThresholds, sample_indices
from sav_assets.lib.video.probe import ProbeLimits, probe_file
from sav_assets.lib.video.sample import sample_frames
from sav_assets.lib.video.sandbox import run_isolated

SHARED_VIDEOS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "videos"


def isolated(target: str, **kwargs):
    res = run_isolated(target, kwargs, timeout_s=120.0)
    assert res.status == "ok", (target, res.status, res.message)
    return res.value


PROBE_CALLS = {
    "ours": lambda f: probe_file(f, ProbeLimits()),
    "header, in process": header_probe,
    "header, isolated": lambda f: isolated("_probe_targets:header_probe", path=f),
    "part: header check": lambda f: isolated("sav_assets.lib.video.probe:_check_header", path=f, max_width=10**5,
                                             max_height=10**5, max_duration_s=10.0**6),
    "part: decord index": lambda f: isolated("_probe_targets:decord_index", path=f),
    "part: whole child": lambda f: isolated("sav_assets.lib.video.probe:_probe_child", path=f, max_width=10**5,
                                            max_height=10**5, max_duration_s=10.0**6),
}


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


def probe_row(f: str, repeat: int) -> dict:
    t = alternate({k: partial(fn, f) for k, fn in PROBE_CALLS.items()}, repeat)
    pr, hp = t["ours"].result, t["header, in process"].result
    assert pr.status == "ok", pr
    assert (hp["width"], hp["height"]) in ((pr.video_width, pr.video_height), (pr.video_height, pr.video_width))
    row = {"video": os.path.basename(f), "frames": pr.video_frame_count, "size": f"{pr.video_width}x{pr.video_height}",
           "ours (s)": f"{t['ours'].median:.3f}"}
    for k in PROBE_CALLS:
        if k != "ours":
            row[f"{k} (s)"] = f"{t[k].median:.3f}"
    row["ours vs header in process"] = f"{paired_ratio(t['header, in process'], t['ours']):.2f}x"
    row["ours vs header isolated"] = f"{paired_ratio(t['header, isolated'], t['ours']):.2f}x"
    return row


def sample_row(f: str, repeat: int, t: QualityThresholds) -> dict:
    pr = probe_file(f, ProbeLimits())
    idx = sample_indices(pr.video_frame_count, t.sample_frames, pr.video_fps, triplets=True)
    baseline_sample(f, idx, t.max_side)          # warm-up
    samp = alternate({"ours": partial(sample_frames, f, t.sample_frames, 120, t.max_side, indices=idx),
                      "base": partial(baseline_sample, f, idx, t.max_side)}, repeat)
    ours, base = samp["ours"].result, samp["base"].result
    assert ours.shape == base.shape, (ours.shape, base.shape)
    diff = float(np.abs(ours.astype(int) - base.astype(int)).mean())
    return {"video": os.path.basename(f), "sampled": len(idx), "sample ours (s)": f"{samp['ours'].median:.3f}",
            "sample PyAV sequential (s)": f"{samp['base'].median:.3f}",
            "ratio (PyAV / ours, paired)": f"{paired_ratio(samp['base'], samp['ours']):.2f}x",
            "mean abs px diff": f"{diff:.2f}"}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--no-generated", action="store_true")
    ap.add_argument("--no-sampling", action="store_true")
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
        # the isolated children import the baseline targets (_probe_targets.py) from this folder
        os.environ["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parent),
                                                    *filter(None, [os.environ.get("PYTHONPATH")])])
        t0 = time.perf_counter()
        run_isolated("os:getpid")  # one-time start of the isolation zygote (per process, not per file)
        t_zygote = time.perf_counter() - t0
        for f in files:                              # warm-up: page cache, imports, lazily loaded codecs
            for fn in PROBE_CALLS.values():
                fn(f)
        probes = [probe_row(f, args.repeat) for f in files]
        samples = [] if args.no_sampling else [sample_row(f, args.repeat, t) for f in files]

    print(f"# bench_ingest  {_dt.datetime.now().isoformat(timespec='seconds')}  {machine()}, median of "
          f"{args.repeat} alternating rounds; one-time isolation zygote start {t_zygote:.2f} s (not in the figures)\n")
    print("## probe (ratio = baseline time / our time, paired; below 1x ours is slower)\n")
    print_table(probes)
    if samples:
        print("\n## sampling\n")
        print_table(samples)


if __name__ == "__main__":
    main()

"""Evaluation layout at growing dataset sizes: ours (masklet_frames streamed from DuckDB one video at a
time, incremental: only new or changed videos written) vs the previous path (the whole table read into
Python, every val video rewritten on every run), each in a fresh worker process (peak RSS of its
process tree, decoding children included), on the same lake.

The lake holds ``--rows`` masklet_frames rows of train videos (SA-V-like synthetic tables from
``gen_savscale.gen_batch``: ~1,260 rows per video; their RLE is never decoded) plus ``--val`` small
real val videos (2 s, 24 fps, 160x120, two manual masklets each, 12 annotated frames). The val set
is fixed, so the work is the same at every size: what grows is the table the layout reads from. The
sizes are scaled down from SA-V's 64M rows (10k / 100k / 1M rows, not videos): the old path's memory
is ~1.5 kB per row held in Python, ours should not grow at all. Each worker runs the layout twice on
the same output folder: ours writes nothing the second time; the old path rewrote everything, so its
second run is a full write again. Ratios are old / ours.

    python benchmarks/bench_eval_layout.py                    # 10k and 100k rows
    python benchmarks/bench_eval_layout.py --rows 10000 100000 1000000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from datetime import date
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
from _harness import MB, machine, print_table, spawn_worker
from gen_savscale import conform, gen_batch

from sav_assets.lib.ingest.demo import write_synthetic_video
from sav_assets.lib.sav import rle
from sav_assets.lib.sav.eval_layout import write_eval_layout
from sav_assets.lib.store import tables
from sav_assets.lib.store.lake import Lake

ROWS_PER_VIDEO = 1260          # gen_savscale: ~12.6 masklets x ~100 annotated frames
VIDEOS_PER_PART = 20


def val_rows(vid: str, h: int, w: int, n_ann: int = 12) -> list[dict]:
    rows = []
    for mid in (0, 1):
        for k in range(n_ann):
            m = np.zeros((h, w), np.uint8)
            m[10 + 2 * k + 20 * mid: 40 + 2 * k + 20 * mid, 20 + 3 * k: 60 + 3 * k] = 1
            r = rle.encode(m)
            rows.append({"video_id": vid, "batch_id": "val", "masklet_id": mid, "masklet_type": "manual",
                         "ann_idx": k, "frame_idx": 4 * k, "timestamp_s": 4 * k / 24.0, "size": r["size"],
                         "counts": r["counts"], "area": int(m.sum()), "bbox": [0.0, 0.0, 1.0, 1.0],
                         "visible": True, "predicted_iou": 1.0, "stability_score": 1.0})
    return rows


def build_lake(root: Path, n_rows: int, n_val: int) -> None:
    lake = Lake(str(root / "lake"))
    rows = []
    for i in range(n_val):
        vid = f"val_{i:03d}"
        write_synthetic_video(str(root / f"{vid}.mp4"), 2.0, 24, 160, 120, seed=i)
        rows += val_rows(vid, 120, 160)
    lake.write_part("masklet_frames", "val", "part-0", conform(pa.Table.from_pylist(rows), tables.MASKLET_FRAMES))
    n_videos = max(1, round(n_rows / ROWS_PER_VIDEO))
    args = SimpleNamespace(counts_median=40.0)
    for b, first in enumerate(range(0, n_videos, VIDEOS_PER_PART)):
        tbl = gen_batch(b, first, min(VIDEOS_PER_PART, n_videos - first), np.random.default_rng([7, b]), args)
        lake.write_part("masklet_frames", f"sav_{b:03d}", "part-0",
                        conform(tbl["masklet_frames"], tables.MASKLET_FRAMES))


def _inputs(root: Path, n_val: int):
    vids = [f"val_{i:03d}" for i in range(n_val)]
    videos = [{"video_id": v, "content_sha256": f"sha-{v}", "video_fps": 24.0, "video_frame_count": 48} for v in vids]
    return Lake(str(root / "lake")), videos, {v: str(root / f"{v}.mp4") for v in vids}


def run_ours(args) -> dict:
    from sav_assets.lib.store.catalog import connect, run_sql_file

    lake, videos, paths = _inputs(Path(args.root), args.val)
    out = Path(args.root) / "out_ours"
    con = connect(lake, read_only=False)
    times, written = [], []
    for _ in range(2):
        t0 = time.perf_counter()
        s = write_eval_layout(out, "val", videos,
                              lambda v: run_sql_file(con, "masklet_frames_of_video.sql", [v]).to_pylist(), paths)
        times.append(time.perf_counter() - t0)
        written.append(len(s["rewritten"]))
    con.close()
    return {"first_s": times[0], "second_s": times[1], "written": written, "videos": s["videos"]}


def run_old(args) -> dict:
    lake, videos, paths = _inputs(Path(args.root), args.val)
    times = []
    for i in range(2):
        t0 = time.perf_counter()
        frames = lake.read_table("masklet_frames", schema=tables.MASKLET_FRAMES).to_pylist()   # the old read
        by_video = defaultdict(list)
        for f in frames:
            by_video[f["video_id"]].append(f)
        out = Path(args.root) / f"out_old_{i}"                # a fresh folder: every video written, as before
        s = write_eval_layout(out, "val", videos, by_video, paths)
        times.append(time.perf_counter() - t0)
        del frames, by_video
    return {"first_s": times[0], "second_s": times[1], "written": [args.val, args.val], "videos": s["videos"]}


def measure(n_rows: int, n_val: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-eval-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        build_lake(root, n_rows, n_val)
        build_s = time.perf_counter() - t0
        res = {}
        for kind in ("ours", "baseline"):
            r, rss = spawn_worker([sys.executable, __file__, "--worker", kind, "--root", tmp, "--val", str(n_val)], kind)
            res[kind] = {**r, "peak_mb": rss.peak / MB}
    o, b = res["ours"], res["baseline"]
    assert o["videos"] == b["videos"] == n_val, res
    return {"masklet_frames rows": f"{n_rows:,}", "val videos": n_val,
            "old first run (s)": f"{b['first_s']:.2f}", "ours first run (s)": f"{o['first_s']:.2f}",
            "old second run (s)": f"{b['second_s']:.2f}", "ours second run (s)": f"{o['second_s']:.2f}",
            "ours videos written (1st, 2nd)": f"{o['written'][0]}, {o['written'][1]}",
            "second run old/ours": f"{b['second_s'] / o['second_s']:.1f}x",
            "old peak RSS (MB)": f"{b['peak_mb']:.0f}", "ours peak RSS (MB)": f"{o['peak_mb']:.0f}",
            "lake build (s, not timed)": f"{build_s:.0f}"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000], help="masklet_frames rows")
    ap.add_argument("--val", type=int, default=3, help="val videos")
    ap.add_argument("--worker", choices=["ours", "baseline"], help=argparse.SUPPRESS)
    ap.add_argument("--root", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        from _harness import worker_main

        return worker_main(run_ours if args.worker == "ours" else run_old, args)
    out = []
    for n in args.rows:
        out.append(measure(n, args.val))
        print(out[-1], flush=True)
    print(f"\n{machine()}, {date.today()}; peak RSS of each worker's process tree (the sandboxed decoders "
          f"included)\n")
    print_table(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python
"""View refresh and compaction per pipeline run at 10k and 100k Parquet parts: now vs the previous code.

A lake is generated with ``N`` tiny ``label_runs`` parts, one per video, ``--per-batch`` per batch
(the layout labeling writes before consolidation). Each measurement runs in a fresh subprocess on
that lake, with either this checkout (``now``) or the previous code (``prev``: ``git archive`` of
``--baseline-rev``, the commit before incremental refresh/compaction and consolidation) on its path:

* **refresh**: ``refresh_catalog`` once cold, then ``--runs`` times, each after ``--new-per-run``
  new per-video parts were written (what a pipeline run does between refreshes); the per-run median.
* **compaction**: a first ``compact_table`` of the whole table (cold), then ``--compact-runs`` runs
  each after ``--new-per-run`` new parts (``min_new_parts=1``): the previous code re-sorts every part
  every run, ours sorts only the new batch into a segment.
* **consolidated** (``now`` only): every batch merged into one part (``consolidate_batch``, timed),
  then the same refresh and compaction runs: the layout the pipeline writes now.

The previous code runs only up to ``--prev-max-parts`` parts (default 10k: at 100k one previous
refresh took ~6.5 min and a compaction ~15 min on 2 cores, issue 13); the ratio is given at 10k.
Above ``--per-video-max-parts`` (default 10k) only the layout labeling leaves now is measured:
``n`` videos as one consolidated part per batch, written directly (merging 100k tiny parts first
takes ~10 min here, ~6 ms a part).

    .venv/bin/python benchmarks/bench_refresh.py                          # 10k and 100k parts
    .venv/bin/python benchmarks/bench_refresh.py --parts 10000 --runs 5   # quicker
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _harness import REPO, machine, print_table

BASELINE_REV = "5720628"     # before incremental refresh / compaction and per-batch consolidation


def tiny_part() -> bytes:
    import pyarrow.parquet as pq

    from sav_assets.lib.store.tables import LABEL_RUNS, to_table

    tbl = to_table([{"video_id": "v", "batch_id": "b", "label_key": "k", "status": "labeled", "masklets": 3,
                     "frames_labeled": 10}], LABEL_RUNS)
    buf = io.BytesIO()
    pq.write_table(tbl, buf, compression="zstd")
    return buf.getvalue()


def write_parts(root: Path, batch: str, names: range, data: bytes) -> None:
    d = root / "tables" / "label_runs" / batch
    d.mkdir(parents=True, exist_ok=True)
    for i in names:
        (d / f"v{i:07d}.sam2.parquet").write_bytes(data)


def generate_merged(root: Path, n: int, per_batch: int) -> float:
    """The layout labeling leaves now, written directly: one consolidated part per batch (with the
    per-video manifest ``consolidate_batch`` writes), for sizes where merging 100k tiny parts first
    would dominate the run."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from gen_savscale import write_labels

    from sav_assets.lib.store.lake import Lake

    t0 = time.perf_counter()
    lake = Lake(root)
    one = pq.read_table(pa.BufferReader(tiny_part()))
    for b in range(0, n, per_batch):
        ids = [f"v{i:07d}" for i in range(b, min(n, b + per_batch))]
        tbl = pa.concat_tables([one] * len(ids)).set_column(0, "video_id", pa.array(ids))
        write_labels(lake, "label_runs", f"b{b // per_batch:05d}", tbl, "per-batch", 0)
    return time.perf_counter() - t0


def generate(root: Path, n: int, per_batch: int) -> float:
    t0 = time.perf_counter()
    data = tiny_part()
    for b in range(0, n, per_batch):
        write_parts(root, f"b{b // per_batch:05d}", range(b, min(n, b + per_batch)), data)
    return time.perf_counter() - t0


# ---- the worker: one measurement in a fresh process, with `now` or `prev` code on sys.path ----------


def worker(args) -> int:
    from sav_assets.lib.store.catalog import refresh_catalog
    from sav_assets.lib.store.compaction import compact_table
    from sav_assets.lib.store.lake import Lake

    root = Path(args.root)
    lake = Lake(root)
    data = tiny_part()
    op = (lambda: refresh_catalog(lake)) if args.op == "refresh" else (
        lambda: compact_table(lake, "label_runs", min_new_parts=1, log=lambda _m: None))
    t0 = time.perf_counter()
    op()
    cold = time.perf_counter() - t0
    runs = []
    for r in range(args.runs):
        first = 10_000_000 + args.seq * 1000 + r * args.new_per_run
        write_parts(root, f"new{args.seq:02d}_{r:03d}", range(first, first + args.new_per_run), data)
        t0 = time.perf_counter()
        op()
        runs.append(time.perf_counter() - t0)
    print("RESULT " + json.dumps({"cold": cold, "runs": runs}))
    return 0


def reset(root: Path) -> None:
    """Every measurement starts cold: no compaction, no catalog, no remembered schema checks."""
    shutil.rmtree(root / "compacted", ignore_errors=True)
    for p in [root / "sav.duckdb", *root.glob("tables/*/_schema/columns.json")]:
        p.unlink(missing_ok=True)


def spawn(code_dir: Path, op: str, root: Path, runs: int, new_per_run: int, seq: int) -> dict:
    reset(root)
    env = {**os.environ, "PYTHONPATH": str(code_dir)}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", op, "--root", str(root), "--runs", str(runs),
           "--new-per-run", str(new_per_run), "--seq", str(seq), "--code", str(code_dir)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=str(code_dir), check=False)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise SystemExit(f"worker failed ({op}, {code_dir}):\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
    return json.loads(line[len("RESULT "):])


def baseline_tree(rev: str, dest: Path) -> Path:
    if not (dest / "sav_assets").is_dir():
        dest.mkdir(parents=True, exist_ok=True)
        arch = subprocess.run(["git", "-C", str(REPO), "archive", rev, "sav_assets", "sql"], capture_output=True,
                              check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=arch, check=True)
    return dest


def consolidate_all(root: Path) -> float:
    from sav_assets.lib.store.consolidation import consolidate_batch
    from sav_assets.lib.store.lake import Lake

    lake = Lake(root)
    t0 = time.perf_counter()
    for b in lake.batches("label_runs"):
        consolidate_batch(lake, "label_runs", b, log=lambda _m: None)
    return time.perf_counter() - t0


def _row(n: int, layout: str, op: str, code: str, res: dict, base: dict | None) -> dict:
    med = statistics.median(res["runs"])
    ratio = f"{med / statistics.median(base['runs']):.3f}x" if base else "-"
    return {"parts": f"{n:,}", "layout": layout, "operation": op, "code": code, "cold s": f"{res['cold']:.2f}",
            "per run s (median)": f"{med:.3f}", "max run s": f"{max(res['runs']):.3f}", "ratio vs prev": ratio}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--parts", default="10000,100000")
    ap.add_argument("--per-batch", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=10, help="refreshes per measurement (each after new parts)")
    ap.add_argument("--compact-runs", type=int, default=3)
    ap.add_argument("--new-per-run", type=int, default=8)
    ap.add_argument("--prev-max-parts", type=int, default=10_000)
    ap.add_argument("--per-video-max-parts", type=int, default=10_000,
                    help="larger sizes: only the consolidated layout (written directly)")
    ap.add_argument("--baseline-rev", default=BASELINE_REV)
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "sav_bench_refresh"))
    ap.add_argument("--worker", choices=["refresh", "compact"])
    ap.add_argument("--root")
    ap.add_argument("--seq", type=int, default=0)
    ap.add_argument("--code")
    args = ap.parse_args(argv)
    if args.worker:
        args.op = args.worker
        return worker(args)

    work = Path(args.workdir)
    prev = baseline_tree(args.baseline_rev, work / f"prev-{args.baseline_rev}")
    rows, notes = [], []
    for n in (int(x) for x in args.parts.split(",")):
        root = work / f"lake-{n}"
        shutil.rmtree(root, ignore_errors=True)
        seq = 0
        results = {}
        if n > args.per_video_max_parts:       # the per-video layout's cold refresh reads every footer once
            notes.append(f"{n:,} videos written as {-(-n // args.per_batch)} consolidated parts in "
                         f"{generate_merged(root, n, args.per_batch):.0f} s (per-video layout not run at this size)")
            for op, runs in (("refresh", args.runs), ("compact", args.compact_runs)):
                seq += 1
                rows.append(_row(n, "per batch (consolidated)", op, "now",
                                 spawn(REPO, op, root, runs, args.new_per_run, seq), None))
            shutil.rmtree(root, ignore_errors=True)
            continue
        notes.append(f"{n:,} parts generated in {generate(root, n, args.per_batch):.0f} s")
        for op, runs in (("refresh", args.runs), ("compact", args.compact_runs)):
            for code, code_dir in (("prev", prev), ("now", REPO)):
                if code == "prev" and n > args.prev_max_parts:
                    continue
                seq += 1
                results[(op, code)] = spawn(code_dir, op, root, runs, args.new_per_run, seq)
                rows.append(_row(n, "per video", op, code, results[(op, code)], results.get((op, "prev"))
                                 if code == "now" else None))
        notes.append(f"{n:,} parts: {n // args.per_batch + seq} batches merged in {consolidate_all(root):.1f} s")
        for op, runs in (("refresh", args.runs), ("compact", args.compact_runs)):
            seq += 1
            rows.append(_row(n, "per batch (consolidated)", op, "now",
                             spawn(REPO, op, root, runs, args.new_per_run, seq), results.get((op, "prev"))))
        shutil.rmtree(root, ignore_errors=True)
    print("## View refresh and compaction per run (local lake)\n")
    print(f"- command: `.venv/bin/python benchmarks/bench_refresh.py {' '.join(sys.argv[1:])}`; {machine()}")
    print(f"- prev: the code at {args.baseline_rev} (git archive), now: this checkout; each measurement in a "
          f"fresh process; a run = {args.new_per_run} new per-video parts in a new batch, then the operation")
    for note in notes:
        print(f"- {note}")
    print()
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())

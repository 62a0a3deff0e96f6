"""Time every sql/stats query and a one-video lookup on SA-V-scale tables, through catalog.connect (the
read-only connection `sav-assets sql` uses; the lookup also through the pipeline's own connection).

Targets: each statistic < 1 s, ``select * from masklet_frames where video_id = ?`` < 20 ms (2 cores).
First the lake's big tables are compacted (``sav-assets compact``: a few globally sorted files with
64Ki-row groups; timed and printed), then every query runs through the views. The lookup is also
timed over the files labeling leaves (``gen_savscale.py --layout``: one consolidated part per batch
now, one part per video before consolidation; i.e. the view before compaction) and over the baseline ``tables/masklet_frames_unsorted`` (the same rows
shuffled within each batch, pyarrow's default 1Mi-row row groups: a writer that neither sorts nor
sizes row groups, nor compacts). Prints Markdown tables; ratios are baseline time / ours.

    python benchmarks/gen_savscale.py --out /tmp/savscale --scale 1.0 --baseline
    python benchmarks/bench_sql.py --root /tmp/savscale
"""

from __future__ import annotations

import argparse
import platform
import statistics
from datetime import date
from pathlib import Path

import numpy as np
from _harness import Timings, machine, measure, print_table

from sav_assets.lib.dataset.statistics import stat_names
from sav_assets.lib.store.catalog import connect, refresh_catalog, sql_text
from sav_assets.lib.store.compaction import compact_table, read_pointer
from sav_assets.lib.store.lake import Lake

LOOKUP = "select * from masklet_frames where video_id = ?"


def compaction_row(lake: Lake, c) -> dict:
    row = {"compaction": c.table, "result": c.reason}
    if not c.compacted:
        return row
    ptr = read_pointer(lake, c.table) or {}
    return {**row, "rows": f"{ptr.get('rows', 0):,}", "source parts": len(ptr.get("sources", {})),
            "files": len(ptr.get("files", [])), "MB": f"{ptr.get('bytes', 0) / 1e6:.0f}",
            "seconds": f"{c.seconds:.1f}"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", required=True, help="lake written by gen_savscale.py")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per statistic after a first run")
    ap.add_argument("--lookups", type=int, default=30, help="random videos looked up")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-compact", action="store_true", help="query the batch parts as they are")
    ap.add_argument("--recompact", action="store_true", help="compact again even if nothing changed")
    ap.add_argument("--memory-limit", default="4GB", help="DuckDB memory for the compaction sort")
    args = ap.parse_args(argv)

    lake = Lake(args.root)
    compactions = []
    if not args.no_compact:
        for table in ("masklet_frames", "masklets", "masklet_qc", "videos", "video_quality", "splits"):
            res = compact_table(lake, table, force=args.recompact, memory_limit=args.memory_limit, log=lambda m: print(m, flush=True))
            compactions.append(res)
    refresh_catalog(lake)
    con = connect(lake, read_only=True)
    n_rows = con.execute("select count(*) from masklet_frames").fetchall()[0][0]
    n_vid = con.execute("select count(*) from videos").fetchall()[0][0]
    n_m = con.execute("select count(*) from masklets").fetchall()[0][0]
    threads = con.execute("select current_setting('threads')").fetchall()[0][0]

    rows = []
    for name in stat_names():
        text = sql_text(f"stats/{name}.sql")
        run = measure(lambda text=text: con.sql(text).to_arrow_table(), 1 + args.repeat)
        rows.append((f"stats/{name}.sql", run.first, run.warm_median, 1.0, run.result.num_rows))

    rng = np.random.default_rng(args.seed)
    vids = [r[0] for r in con.execute("select video_id from videos order by video_id").fetchall()]
    sample = [vids[i] for i in rng.choice(len(vids), size=min(args.lookups, len(vids)), replace=False)]

    timings = Timings()

    # The read-only connection (what `sav-assets sql` gives users) opens no file by name; the pipeline's
    # own connection (read_only=False) reads the files with DuckDB's Parquet reader and also runs the
    # baselines below, which name files directly.
    pipeline = connect(lake, read_only=False)

    def lookups(sql: str, params_of, name: str, c=con) -> tuple[list[float], int]:
        c.sql(sql, params=params_of(sample[0])).to_arrow_table()         # warm: metadata, page cache
        n = 0
        for v in sample:
            with timings.time(name):
                n += c.sql(sql, params=params_of(v)).to_arrow_table().num_rows
        return timings[name].times, n

    ours, n_ours = lookups(LOOKUP, lambda v: [v], "view")
    miss, _ = lookups(LOOKUP, lambda v: [v + "-missing"], "absent")        # pure per-file / bind overhead
    rows.append(("lookup: " + LOOKUP, ours[0], statistics.median(ours), 0.020, n_ours // len(sample)))
    piped, n_piped = lookups(LOOKUP, lambda v: [v], "pipeline view", pipeline)
    assert n_piped == n_ours, (n_piped, n_ours)
    parts_sql = "select * from read_parquet(?, union_by_name = true) where video_id = ?"
    live = [lake.uri(r) for r in lake.table_parts("masklet_frames")]   # the files labeling left (any layout)
    parts, n_parts = lookups(parts_sql, lambda v: [live, v], "parts", pipeline)
    assert n_parts == n_ours, (n_parts, n_ours)
    base_glob = lake.uri("tables/masklet_frames_unsorted") + "/*/*.parquet"
    have_base = any(Path(lake.uri("tables/masklet_frames_unsorted")).glob("*/*.parquet"))
    if have_base:
        base, n_base = lookups(parts_sql, lambda v: [base_glob, v], "baseline", pipeline)
        assert n_base == n_ours, (n_base, n_ours)
    pipeline.close()
    con.close()

    # one-shot: a fresh read-only connection per lookup, as `sav-assets sql` / `duckdb -c` pay it
    for v in sample[:10]:
        with timings.time("oneshot"):
            c = connect(lake, read_only=True)
            c.sql(LOOKUP, params=[v]).to_arrow_table()
            c.close()
    oneshot = timings["oneshot"].times

    print(f"\n## SQL benchmark ({date.today()}, {platform.processor() or platform.machine()}, "
          f"{machine()}, DuckDB threads={threads})\n")
    print(f"Tables: {n_vid:,} videos, {n_m:,} masklets, {n_rows:,} masklet_frames rows at {lake.root}\n")
    if compactions:
        print_table([compaction_row(lake, c) for c in compactions],
                    ["compaction", "result", "rows", "source parts", "files", "MB", "seconds"])
    table, ok = [], True
    for q, first, med, target, nr in rows:
        passed = med < target
        ok &= passed
        table.append({"query": f"`{q}`", "first run": f"{first * 1e3:.1f} ms", "median": f"{med * 1e3:.1f} ms",
                      "target": f"< {target * 1e3:.0f} ms", "pass": "pass" if passed else "FAIL", "rows": f"{nr:,}"})
    print_table(table)
    n_files = len(lake.table_parts("masklet_frames"))
    merged = sum("/consolidated/" in r for r in lake.table_parts("masklet_frames"))
    files_layout = ("one consolidated part per batch, 128Ki-row groups" if merged == n_files else
                    "one part per batch" if all(r.endswith("/part-0.parquet") for r in lake.table_parts("masklet_frames"))
                    else "one part per video (before consolidation)")
    ptr = read_pointer(lake, "masklet_frames")

    def ms(xs):
        return f"{statistics.median(xs) * 1e3:.1f} ms (p95 {float(np.percentile(xs, 95)) * 1e3:.1f})"

    def ratio(b, o):
        return f"**{statistics.median(b) / statistics.median(o):.1f}x**"

    layout = (f"{len(ptr['files'])} compacted files, globally sorted, {ptr['row_group_size']:,}-row groups, "
              f"{ptr.get('compression', 'zstd')}"
              if ptr else "not compacted")
    cols = [f"one-video lookup, {len(sample)} random videos", "median (p95)", "baseline / this"]
    lookups_table = [
        (f"view `masklet_frames` ({layout})", ms(ours), ratio(base, ours) if have_base else "-"),
        ("view, video absent (per-file + bind overhead only)", ms(miss), "-"),
        ("view through the pipeline's connection (DuckDB's own Parquet reader)", ms(piped),
         ratio(base, piped) if have_base else "-"),
        ("view, fresh read-only connection per lookup (one-shot CLI cost)", ms(oneshot), "-"),
        (f"labeling's files as written ({n_files} files: {files_layout}, no compaction)", ms(parts),
         ratio(base, parts) if have_base else "-"),
    ]
    if have_base:
        lookups_table.append(("baseline: unsorted within batch, 1Mi-row groups, not compacted", ms(base), "1.0x"))
    print_table([dict(zip(cols, r, strict=True)) for r in lookups_table], cols)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

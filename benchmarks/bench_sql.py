"""Time every sql/stats query and a one-video lookup on SA-V-scale tables, through catalog.connect.

Targets: each statistic < 1 s, ``select * from masklet_frames where video_id = ?`` < 20 ms (2 cores).
Baseline for the lookup: the same query over ``tables/masklet_frames_unsorted`` (the same rows
shuffled within each batch, pyarrow's default 1Mi-row row groups), i.e. what a writer that neither
sorts nor sizes row groups gets. Prints a Markdown table; the ratio is baseline time / ours.

    python benchmarks/gen_savscale.py --out /tmp/savscale --scale 1.0 --baseline
    python benchmarks/bench_sql.py --root /tmp/savscale
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import duckdb

from sav_assets.lib.catalog import DB_NAME, connect, refresh_catalog, sql_text
from sav_assets.lib.lookup import FrameLookup
from sav_assets.lib.stats import stat_names
from sav_assets.lib.storage import Lake

LOOKUP = "select * from masklet_frames where video_id = ?"


def timed(fn, repeat: int) -> tuple[float, float, object]:
    """(first run s, median of the following runs s, last result)."""
    t = time.perf_counter()
    out = fn()
    first = time.perf_counter() - t
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        runs.append(time.perf_counter() - t)
    return first, statistics.median(runs) if runs else first, out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", required=True, help="lake written by gen_savscale.py")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per statistic after a first run")
    ap.add_argument("--lookups", type=int, default=30, help="random videos looked up")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    lake = Lake(args.root)
    refresh_catalog(lake)
    con = connect(lake, read_only=True)
    n_rows = con.execute("select count(*) from masklet_frames").fetchall()[0][0]
    n_vid = con.execute("select count(*) from videos").fetchall()[0][0]
    n_m = con.execute("select count(*) from masklets").fetchall()[0][0]
    threads = con.execute("select current_setting('threads')").fetchall()[0][0]

    rows = []
    for name in stat_names():
        text = sql_text(f"stats/{name}.sql")
        first, med, tbl = timed(lambda text=text: con.sql(text).to_arrow_table(), args.repeat)
        rows.append((f"stats/{name}.sql", first, med, 1.0, tbl.num_rows))

    rng = np.random.default_rng(args.seed)
    vids = [r[0] for r in con.execute("select video_id from videos order by video_id").fetchall()]
    sample = [vids[i] for i in rng.choice(len(vids), size=min(args.lookups, len(vids)), replace=False)]

    def lookups(sql: str, params_of) -> tuple[list[float], int]:
        con.sql(sql, params=params_of(sample[0])).to_arrow_table()       # warm: metadata, page cache
        times, n = [], 0
        for v in sample:
            t = time.perf_counter()
            n += con.sql(sql, params=params_of(v)).to_arrow_table().num_rows
            times.append(time.perf_counter() - t)
        return times, n

    ours, n_ours = lookups(LOOKUP, lambda v: [v])
    miss, _ = lookups(LOOKUP, lambda v: [v + "-missing"])        # pure per-file / bind overhead
    base_glob = lake.uri("tables/masklet_frames_unsorted") + "/*/*.parquet"
    have_base = any(Path(lake.uri("tables/masklet_frames_unsorted")).glob("*/*.parquet"))
    if have_base:
        base_sql = "select * from read_parquet(?, union_by_name = true) where video_id = ?"
        base, n_base = lookups(base_sql, lambda v: [base_glob, v])
        assert n_base == n_ours, (n_base, n_ours)
    rows.append(("lookup: " + LOOKUP, ours[0], statistics.median(ours), 0.020, n_ours // len(sample)))
    t = time.perf_counter()
    fl = FrameLookup(lake, con)
    t_index = time.perf_counter() - t
    fl.frames(sample[0])
    fast, n_fast = [], 0
    for v in sample:
        t = time.perf_counter()
        n_fast += fl.frames(v).num_rows
        fast.append(time.perf_counter() - t)
    assert n_fast == n_ours, (n_fast, n_ours)
    rows.append(("lookup: FrameLookup(lake, con).frames(video_id) (footer index, one part)", fast[0],
                 statistics.median(fast), 0.020, n_fast // len(sample)))
    fast_base = None
    if have_base:
        flb = FrameLookup(lake, con, table="masklet_frames_unsorted")
        flb.frames(sample[0])
        fast_base = []
        for v in sample:
            t = time.perf_counter()
            flb.frames(v)
            fast_base.append(time.perf_counter() - t)
    con.close()             # the read-only settings lock the database instance until it is closed
    cached = None
    if not lake.is_s3:
        # What catalog.connect would give with DuckDB's Parquet footer cache on (a connection setting
        # it would have to make before locking the configuration): same read-only settings otherwise.
        con = duckdb.connect(str(Path(lake.root) / DB_NAME), read_only=True)
        con.execute("SET parquet_metadata_cache = true")
        con.execute(f"SET allowed_directories = ['{lake.uri('tables')}']")
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
        cached, _ = lookups(LOOKUP, lambda v: [v])
        con.close()

    print(f"\n## SQL benchmark ({date.today()}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs visible, DuckDB threads={threads})\n")
    print(f"Tables: {n_vid:,} videos, {n_m:,} masklets, {n_rows:,} masklet_frames rows at {lake.root}\n")
    print("| query | first run | median | target | pass | rows |")
    print("| --- | ---: | ---: | ---: | :---: | ---: |")
    ok = True
    for q, first, med, target, nr in rows:
        passed = med < target
        ok &= passed
        print(f"| `{q}` | {first * 1e3:.1f} ms | {med * 1e3:.1f} ms | < {target * 1e3:.0f} ms | "
              f"{'pass' if passed else 'FAIL'} | {nr:,} |")
    n_files = len(lake.table_parts("masklet_frames"))
    rg = pq.ParquetFile(lake.uri(lake.table_parts("masklet_frames")[0])).metadata.row_group(0).num_rows

    def ms(xs):
        return f"{statistics.median(xs) * 1e3:.1f} ms (p95 {float(np.percentile(xs, 95)) * 1e3:.1f})"

    def ratio(b, o):
        return f"**{statistics.median(b) / statistics.median(o):.1f}x**"

    print(f"\n| one-video lookup, {len(sample)} random videos, {n_files} batch files | sorted by (video_id, "
          f"masklet_id, frame_idx), {rg:,}-row row groups (ours) | unsorted within batch, 1Mi-row row groups "
          f"(baseline) | baseline / ours |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| view: `{LOOKUP}` | {ms(ours)} | {ms(base) if have_base else '-'} | "
          f"{ratio(base, ours) if have_base else '-'} |")
    print(f"| FrameLookup (footer index of {len(fl.ranges)} parts, built once in {t_index * 1e3:.0f} ms) | "
          f"{ms(fast)} | {ms(fast_base) if fast_base else '-'} | {ratio(fast_base, fast) if fast_base else '-'} |")
    print(f"| view, video absent (per-file + bind overhead only) | {ms(miss)} | - | - |")
    if cached:
        print(f"| view, with `SET parquet_metadata_cache = true` on the connection | {ms(cached)} | - | - |")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

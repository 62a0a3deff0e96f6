"""Generate SA-V-scale tables (synthetic) in the lake layout, for the SQL benchmarks.

At ``--scale 1.0``: ~50.9k videos, ~642k masklets (12.6 per video), ~64M masklet_frames rows
(~100 annotated frames per masklet at 6 fps), plus videos, video_quality, masklet_qc and splits.
Tables are written per batch of ``--videos-per-batch`` videos (like SA-V's sav_000..sav_050
chunks) as ``tables/<table>/<batch>/part-0.parquet``, sorted by (video_id, masklet_id, frame_idx),
with ``--row-group-size`` rows per row group for masklet_frames. RLE ``counts`` are random strings in
the RLE alphabet with a log-normal length (median ``--counts-median`` characters), so they compress
like real counts do (hardly at all); the sizes are consistent with the chosen resolution.

``--layout`` picks the files labeling leaves: ``per-batch`` (default, what the pipeline writes now:
after a batch's labeling its per-video parts of masklets / masklet_frames are merged into one
``tables/<table>/<batch>/consolidated/<generation>.parquet`` with the per-video manifest in its footer,
128Ki-row groups, see ``sav_assets.lib.store.consolidation``), ``per-video`` (what labeling wrote
before: one ``<video_id>.sam2.parquet`` per video and table, ~51k files per table at scale 1.0) or
``part-0`` (one ``part-0.parquet`` per batch, the layout earlier SQL figures assumed). The other
tables are one part per batch in every layout.

``--baseline`` also writes ``tables/masklet_frames_unsorted/``: the same rows shuffled within each
batch, with pyarrow's default (1Mi-row) row groups, for the lookup baseline in bench_sql.py.

Everything is vectorised (numpy + pyarrow): about 2-4 minutes at scale 1.0 on 2 cores.

    python benchmarks/gen_savscale.py --out /tmp/savscale --scale 1.0 --baseline
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sav_assets.lib.store import tables
from sav_assets.lib.store.lake import Lake

SAV_VIDEOS = 50_900            # 50,583 train + 155 val + 150 test, rounded as the paper does
MASKLETS_PER_VIDEO = 12.62     # 642.6K / 50.9K
RESOLUTIONS = np.array([[848, 480], [480, 848], [720, 1280], [1080, 1920], [1280, 720], [1920, 1080]],
                       dtype=np.int32)
TS0 = datetime(2025, 1, 1, tzinfo=timezone.utc)
QC_REASONS = ["flicker", "fragmented", "duplicate", "low_stability", "area_jump"]
VQ_REASONS = ["blurry", "low_resolution", "too_short", "near_duplicate", "camera_shake"]


def dict_strings(indices: np.ndarray, dictionary: list[str] | pa.Array) -> pa.Array:
    """Strings by index, materialised in C++ (no Python objects per row)."""
    d = dictionary if isinstance(dictionary, pa.Array) else pa.array(dictionary, pa.string())
    return pa.DictionaryArray.from_arrays(pa.array(indices.astype(np.int32)), d).cast(pa.string())


def random_counts(rng: np.random.Generator, n: int, median: float, visible: np.ndarray) -> pa.Array:
    lengths = np.clip(rng.lognormal(np.log(median), 0.6, n), 4, 2000).astype(np.int64)
    lengths[~visible] = rng.integers(4, 8, int((~visible).sum()))   # an empty mask's RLE is short
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    data = rng.integers(48, 112, int(offsets[-1]), dtype=np.uint8)    # pycocotools' RLE alphabet '0'..'o'
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data))


def fixed_lists(values: np.ndarray, width: int, typ) -> pa.Array:
    n = len(values) // width
    offsets = pa.array(np.arange(0, n * width + 1, width, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(values, typ))


def gen_batch(b: int, first_vid: int, n_videos: int, rng: np.random.Generator, args) -> dict[str, pa.Table]:
    batch = f"sav_{b:03d}"
    vids = [f"sav_{first_vid + i:06d}" for i in range(n_videos)]
    vdict = pa.array(vids, pa.string())
    res = RESOLUTIONS[rng.integers(0, len(RESOLUTIONS), n_videos)]
    n_ann = rng.integers(60, 140, n_videos)                           # annotated frames per video, mean ~100
    n_m = 1 + rng.poisson(MASKLETS_PER_VIDEO - 1, n_videos)

    # ---- videos / video_quality
    status = np.where(rng.random(n_videos) < 0.005, 1, 0)           # a few quarantined files
    videos = pa.table({
        "video_id": vdict, "batch_id": dict_strings(np.zeros(n_videos), [batch]),
        "video_frame_count": pa.array(n_ann * 4, pa.int64()),
        "video_height": pa.array(res[:, 0]), "video_width": pa.array(res[:, 1]),
        "video_fps": pa.array(np.full(n_videos, 24.0)),
        "status": dict_strings(status, ["ok", "quarantined"]),
        "ingested_at": pa.array([TS0] * n_videos, tables.TS),
    })
    passed = rng.random(n_videos) > 0.06
    n_reasons = np.where(passed, 0, rng.integers(1, 3, n_videos))
    reason_idx = rng.integers(0, len(VQ_REASONS), int(n_reasons.sum()))
    vq = pa.table({
        "video_id": vdict, "batch_id": videos["batch_id"], "passed": pa.array(passed),
        "reasons": pa.ListArray.from_arrays(pa.array(np.concatenate([[0], np.cumsum(n_reasons)]).astype(np.int32)),
                                            dict_strings(reason_idx, VQ_REASONS)),
        "video_environment": dict_strings(rng.integers(0, 2, n_videos), ["Indoor", "Outdoor"]),
        "evaluated_at": pa.array([TS0] * n_videos, tables.TS),
    })

    # ---- masklets (sorted by video, masklet_id)
    M = int(n_m.sum())
    m_vid = np.repeat(np.arange(n_videos), n_m)
    m_start = np.repeat(np.cumsum(n_m) - n_m, n_m)
    m_id = (np.arange(M) - m_start).astype(np.int32)
    m_manual = rng.random(M) < 0.296
    vis_changes = np.where(rng.random(M) < 0.28, rng.integers(1, 6, M), 0).astype(np.int32)
    size_abs = np.exp(rng.normal(8.0, 1.6, M))
    bucket = np.where(size_abs < 32 ** 2, 0, np.where(size_abs < 96 ** 2, 1, 2))
    masklets = pa.table({
        "video_id": dict_strings(m_vid, vdict), "batch_id": dict_strings(np.zeros(M), [batch]),
        "masklet_id": pa.array(m_id),
        "masklet_type": dict_strings(m_manual.astype(int), ["auto", "manual"]),
        "masklet_size_abs": pa.array(size_abs),
        "masklet_size_rel": pa.array(size_abs / (res[m_vid, 0] * res[m_vid, 1])),
        "masklet_size_bucket": dict_strings(bucket, ["small", "medium", "large"]),
        "masklet_visibility_changes": pa.array(vis_changes),
        "masklet_first_appeared_frame": pa.array(np.zeros(M, np.int64)),
        "masklet_frame_count": pa.array(n_ann[m_vid].astype(np.int32)),
        "source": dict_strings(m_manual.astype(int), ["sam2_auto", "sav_import"]),
        "created_at": pa.array([TS0] * M, tables.TS),
    })
    qc_pass = rng.random(M) > 0.12
    q_n = np.where(qc_pass, 0, rng.integers(1, 3, M))
    q_idx = rng.integers(0, len(QC_REASONS), int(q_n.sum()))
    masklet_qc = pa.table({
        "video_id": masklets["video_id"], "batch_id": masklets["batch_id"], "masklet_id": masklets["masklet_id"],
        "masklet_type": masklets["masklet_type"], "passed": pa.array(qc_pass),
        "reasons": pa.ListArray.from_arrays(pa.array(np.concatenate([[0], np.cumsum(q_n)]).astype(np.int32)),
                                            dict_strings(q_idx, QC_REASONS)),
        "evaluated_at": pa.array([TS0] * M, tables.TS),
    })

    # ---- masklet_frames: every masklet on every annotated frame of its video
    per_m = n_ann[m_vid]
    R = int(per_m.sum())
    r_m = np.repeat(np.arange(M), per_m)
    r_ann = (np.arange(R) - np.repeat(np.cumsum(per_m) - per_m, per_m)).astype(np.int32)
    r_vid = m_vid[r_m]
    visible = rng.random(R) < 0.85
    hw = res[r_vid]
    area = np.where(visible, rng.integers(1, 200_000, R), 0).astype(np.int64)
    bbox = rng.random((R, 4)) * 500
    bbox[~visible] = 0
    frames = pa.table({
        "video_id": dict_strings(r_vid, vdict),
        "batch_id": dict_strings(np.zeros(R), [batch]),
        "masklet_id": pa.array(m_id[r_m]),
        "masklet_type": dict_strings(m_manual[r_m].astype(int), ["auto", "manual"]),
        "ann_idx": pa.array(r_ann),
        "frame_idx": pa.array(r_ann.astype(np.int64) * 4),
        "size": fixed_lists(hw.reshape(-1), 2, pa.int32()),
        "counts": random_counts(rng, R, args.counts_median, visible),
        "area": pa.array(area),
        "bbox": fixed_lists(bbox.reshape(-1), 4, pa.float64()),
        "visible": pa.array(visible),
        "predicted_iou": pa.array(rng.random(R, dtype=np.float32)),
        "stability_score": pa.array(rng.random(R, dtype=np.float32)),
    })
    split = np.where(rng.random(n_videos) < 0.006, 1, 0)
    splits = pa.table({
        "video_id": vdict, "batch_id": videos["batch_id"], "split": dict_strings(split, ["train", "val"]),
        "group_key": pa.array([f"vid:{v}" for v in vids]), "assigned_at": pa.array([TS0] * n_videos, tables.TS),
    })
    return {"videos": videos, "video_quality": vq, "masklets": masklets, "masklet_qc": masklet_qc,
            "masklet_frames": frames, "splits": splits}


def conform(tbl: pa.Table, schema: pa.Schema) -> pa.Table:
    """Exactly the table's schema: missing columns as typed nulls, schema column order."""
    cols = {}
    for f in schema:
        cols[f.name] = tbl[f.name].cast(f.type) if f.name in tbl.column_names else pa.nulls(tbl.num_rows, f.type)
    return pa.table(cols, schema=schema)


PER_VIDEO_TABLES = ("masklets", "masklet_frames")     # written per video by lib/label/batch.py


def write_labels(lake: Lake, name: str, batch: str, tbl: pa.Table, layout: str, rg: int) -> None:
    """One batch of a per-video table in ``layout`` (rows sorted by video_id: each video is one run)."""
    import json
    import os

    from sav_assets.lib.store.consolidation import ROW_GROUP_ROWS
    from sav_assets.lib.store.lake import MANIFEST_KEY

    vids = np.asarray(tbl.column("video_id").to_numpy(zero_copy_only=False))
    _, starts = np.unique(vids, return_index=True)
    bounds = sorted(starts.tolist()) + [tbl.num_rows]
    runs = [(str(vids[a]), a, b - a) for a, b in zip(bounds, bounds[1:])]
    if layout == "per-video":
        for vid, a, n in runs:
            lake.write_part(name, batch, f"{vid}.sam2", tbl.slice(a, n), row_group_size=rg)
        return
    parts = {f"{vid}.sam2": {"rows": [a, n], "version": "generated"} for vid, a, n in runs}
    out = lake.local_path(f"tables/{name}/{batch}/consolidated/00000000T000000000000Z-generated.parquet")
    os.makedirs(out.parent, exist_ok=True)
    with pq.ParquetWriter(str(out), tbl.schema, compression="zstd", write_statistics=True) as w:
        w.write_table(tbl, row_group_size=ROW_GROUP_ROWS)
        w.add_key_value_metadata({MANIFEST_KEY: json.dumps({"files": {}, "parts": parts})})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="lake root to write (a local folder)")
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of SA-V's 50.9k videos")
    ap.add_argument("--videos-per-batch", type=int, default=1000)
    ap.add_argument("--row-group-size", type=int, default=65_536, help="masklet_frames rows per row group")
    ap.add_argument("--counts-median", type=float, default=40.0, help="median RLE counts length (chars)")
    ap.add_argument("--baseline", action="store_true", help="also write the shuffled, big-row-group copy")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--layout", choices=["per-batch", "per-video", "part-0"], default="per-batch",
                    help="files of masklets / masklet_frames (see the docstring)")
    args = ap.parse_args(argv)

    lake = Lake(args.out)
    n_total = max(1, round(SAV_VIDEOS * args.scale))
    n_batches = -(-n_total // args.videos_per_batch)
    t0 = time.perf_counter()
    totals = {}
    for b in range(n_batches):
        first = b * args.videos_per_batch
        n = min(args.videos_per_batch, n_total - first)
        rng = np.random.default_rng([args.seed, b])
        tbls = gen_batch(b, first, n, rng, args)
        batch = f"sav_{b:03d}"
        for name, tbl in tbls.items():
            tbl = conform(tbl, tables.SCHEMAS[name])
            rg = args.row_group_size if name == "masklet_frames" else 128 * 1024
            if name in PER_VIDEO_TABLES and args.layout != "part-0":
                write_labels(lake, name, batch, tbl, args.layout, rg)
            else:
                lake.write_part(name, batch, "part-0", tbl, row_group_size=rg)   # already sorted
            totals[name] = totals.get(name, 0) + tbl.num_rows
        if args.baseline:
            fr = conform(tbls["masklet_frames"], tables.MASKLET_FRAMES)
            perm = rng.permutation(fr.num_rows)
            lake.write_part("masklet_frames_unsorted", batch, "part-0", fr.take(pa.array(perm)),
                            row_group_size=1024 * 1024)
        if b % 10 == 0 or b == n_batches - 1:
            print(f"batch {b + 1}/{n_batches}: {totals.get('masklet_frames', 0):,} frame rows, "
                  f"{time.perf_counter() - t0:.0f}s", flush=True)
    size = sum(p.stat().st_size for p in Path(lake.uri("tables/masklet_frames")).rglob("*.parquet"))
    print(f"\nwrote {n_batches} batches in {time.perf_counter() - t0:.0f}s to {lake.root}")
    for name, n in totals.items():
        print(f"  {name:16s} {n:>12,} rows")
    print(f"  masklet_frames on disk: {size / 1e9:.2f} GB, row groups of {args.row_group_size:,} rows")
    first = lake.table_parts("masklet_frames", ["sav_000"])[0]
    meta = pq.ParquetFile(lake.uri(first)).metadata
    print(f"  layout {args.layout}: {len(lake.table_parts('masklet_frames')):,} masklet_frames files; "
          f"first: {first} ({meta.num_rows:,} rows in {meta.num_row_groups} row groups)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

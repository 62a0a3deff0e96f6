"""`sav-assets demo`, `export-sav` and `compact`: small commands over the library."""

from __future__ import annotations

import sys
from pathlib import Path

from sav_assets.cli.common import _lake


def cmd_demo(args) -> int:
    from sav_assets.lib.ingest.demo import write_demo_corpus

    out = write_demo_corpus(args.out, n_videos=args.videos, seconds=args.seconds, seed=args.seed,
                            include_bad=not args.no_bad)
    print(f"demo corpus written to {Path(args.out).resolve()}")
    for k, v in out.items():
        if isinstance(v, list):
            print(f"  {k}: {len(v)}")
    return 0


def cmd_export_sav(args) -> int:
    from sav_assets.lib.sav.exports import export_sav_all

    lk = _lake(args.root)
    if getattr(args, "train", False):
        return _export_train(lk, args)
    written = export_sav_all(lk, args.dest, video_ids=args.video_id or None)
    print(f"wrote {len(written)} SA-V JSON file(s) to {args.dest or lk.uri('exports/sav')}")
    return 0


def _export_train(lk, args) -> int:
    from sav_assets.lib.dataset.shards import export_sav_train_lake

    res = export_sav_train_lake(lk, args.dest, video_ids=args.video_id or None,
                                masklet_type=args.masklet_type)
    print(f"wrote {res['videos']} video(s) for SAM 2 training to {res['uri']} "
          f"({args.masklet_type} masklets as <video>_manual.json, frames on the 24 fps timeline)")
    for s in res["skipped"]:
        print(f"  skipped {s['video_id']}: {s['reason']}")
    return 0


def cmd_compact(args) -> int:
    from sav_assets.lib.store.catalog import refresh_catalog
    from sav_assets.lib.store.compaction import (
        DEFAULT_TABLES,
        CompactionError,
        compact_table,
        drop_compaction,
    )

    lk = _lake(args.root)
    failed = 0
    for table in args.table or DEFAULT_TABLES:
        if args.drop:
            drop_compaction(lk, table)
            print(f"{table}: compacted copy removed; its view reads the batch parts")
            continue
        try:
            res = compact_table(lk, table, min_new_parts=args.min_new_parts, force=args.force,
                                memory_limit=args.memory_limit, log=lambda m: print(m, flush=True))
        except CompactionError as e:
            print(f"error: {e}", file=sys.stderr)
            failed += 1
            continue
        if not res.compacted:
            print(f"{table}: skipped ({res.reason})")
    refresh_catalog(lk)
    return 1 if failed else 0

"""`sav-assets`: a thin command line over the same Dagster definitions.

  sav-assets demo --out DIR                       write a demo corpus (videos + SA-V manual masks)
  sav-assets run --source URI --root URI          ingest what is new as one batch, run the graph for it
                                                  (first resuming any claimed batch that never finished)
  sav-assets batches [--root URI]                 claimed batches: finished / unfinished / running
  sav-assets sql [--root URI] ["SELECT ..."]      read-only SQL over the table views (no query: a shell)
  sav-assets export-sav [--root URI] --dest DIR   write SA-V JSON for every labeled video
  sav-assets export-sav --train [--masklet-type auto]   SAM 2's training layout (24 fps JPEGs + JSON + list)
  sav-assets compact [--root URI]                 rewrite the big tables into a few sorted files
  sav-assets review accept|reject VIDEO TYPE ID  a human verdict on a masklet (VIDEO: id, file name, URI, SHA-256)
  sav-assets review correct VIDEO ID|new --frame T --point X,Y[,L] | --box X0,Y0,X1,Y1
                                                  clicks on frame T: the next run re-propagates the masklet
  sav-assets takedown TARGET --reason TEXT       remove a video (id, URI or SHA-256) and all derived from it
  sav-assets init-home [--postgres-url URL]       write $DAGSTER_HOME/dagster.yaml (gpu pool limit; PostgreSQL
                                                  storage with a URL) if missing, initialise the instance once

Defaults come from the same places as the assets': the lake and source from the resources (and so
from SAV_DATA_ROOT / SAV_SOURCE_URI), compaction's from lib/store/compaction.py.
"""

from __future__ import annotations

import argparse
import sys

from sav_assets.cli.admin import cmd_compact, cmd_demo, cmd_export_sav
from sav_assets.cli.common import INSTANCE_CONFIG, UsageError, _format, cmd_init_home, init_home
from sav_assets.cli.models import add_parser as add_models_parser
from sav_assets.cli.review import add_review_parser
from sav_assets.cli.run import cmd_batches, cmd_run, parse_selection
from sav_assets.cli.sql import cmd_sql
from sav_assets.cli.takedown import add_parser as add_takedown_parser

__all__ = ["INSTANCE_CONFIG", "UsageError", "_format", "init_home", "main", "parse_selection"]


def main(argv: list[str] | None = None) -> int:
    from sav_assets.defs.tunables import lib_default
    from sav_assets.lib.store.compaction import compact_table

    p = argparse.ArgumentParser(prog="sav-assets", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    d = sub.add_parser("demo", help="write a procedurally generated demo corpus with exact SA-V manual masks")
    d.add_argument("--out", default="demo_source")
    d.add_argument("--videos", type=int, default=3)
    d.add_argument("--seconds", type=float, default=5.0)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--no-bad", action="store_true", help="leave out the corrupt and non-video example files")
    d.set_defaults(fn=cmd_demo)

    r = sub.add_parser("run", help="ingest what is new at the source as one batch and materialize the graph")
    r.add_argument("--source", default=None, help="local folder or s3://bucket/prefix (default $SAV_SOURCE_URI)")
    r.add_argument("--root", default=None, help="lake root, local path or s3:// (default $SAV_DATA_ROOT or ./data)")
    r.add_argument("--select", default=None, help="Dagster asset selection, e.g. 'raw_videos video_quality' "
                                                   "or 'group:ingestion' (default: everything)")
    r.add_argument("--batch", default=None, help="re-run an existing batch instead of planning a new one")
    r.add_argument("--config", default=None, help="run config file (YAML/JSON), e.g. {ops: {masklets: {config: "
                                                   "{points_per_side: 8}}}}")
    r.add_argument("--settle", type=float, default=0.0,
                   help="skip local files modified in the last N seconds (still being copied)")
    r.set_defaults(fn=cmd_run)

    b = sub.add_parser("batches", help="list the claimed batches: finished, unfinished (the next plain `run` "
                                       "resumes it) or running")
    b.add_argument("--root", default=None)
    b.add_argument("--unfinished", action="store_true", help="only batches whose ingestion never finished")
    b.add_argument("--format", choices=["table", "csv", "json"], default="table")
    b.set_defaults(fn=cmd_batches)

    s = sub.add_parser("sql", help="read-only DuckDB SQL over the table views")
    s.add_argument("query", nargs="?", default=None,
                   help="SQL to run; without it, an interactive read-only shell reading statements from stdin")
    s.add_argument("--root", default=None)
    s.add_argument("--format", choices=["table", "csv", "json"], default="table")
    s.set_defaults(fn=cmd_sql)

    e = sub.add_parser("export-sav", help="write <video_id>_auto.json / _manual.json in the SA-V schema")
    e.add_argument("--root", default=None)
    e.add_argument("--dest", default=None, help="local folder or s3:// prefix (default <root>/exports/sav)")
    e.add_argument("--video-id", action="append")
    e.add_argument("--train", action="store_true",
                   help="SAM 2's training layout: JPEGImages_24fps/<video>/%%05d.jpg on SA-V's 24 fps timeline, "
                        "annotations/<video>_manual.json, sav_train.txt (default dest <root>/exports/sav_train)")
    e.add_argument("--masklet-type", choices=["manual", "auto", "prompted"], default="manual",
                   help="with --train: the masklets written as <video>_manual.json (the only name SAM 2 opens)")
    e.set_defaults(fn=cmd_export_sav)

    c = sub.add_parser("compact", help="rewrite the big tables into a few sorted files behind the DuckDB views "
                                       "(fast SQL at SA-V scale; the batch parts stay the source of truth)")
    c.add_argument("--root", default=None)
    c.add_argument("--table", action="append", help="table to compact (repeatable; default: masklet_frames, "
                                                    "masklets, masklet_qc, label_runs, videos, video_quality)")
    c.add_argument("--min-new-parts", type=int, default=lib_default(compact_table, "min_new_parts"),
                   help="skip a table with fewer parts written since its last compaction")
    c.add_argument("--force", action="store_true", help="compact even if nothing changed")
    c.add_argument("--memory-limit", default=lib_default(compact_table, "memory_limit"), help="DuckDB memory for the sort (it spills beyond)")
    c.add_argument("--drop", action="store_true", help="remove the compacted copies instead (frees the disk)")
    c.set_defaults(fn=cmd_compact)

    h = sub.add_parser("init-home", help="write $DAGSTER_HOME/dagster.yaml (the gpu pool's limit) if missing and "
                                         "initialise the instance's storage once, under a lock")
    h.add_argument("--postgres-url", default=None,
                   help="store runs and events in PostgreSQL (dagster-postgres): postgresql://user@host:port/db")
    h.set_defaults(fn=cmd_init_home)

    add_review_parser(sub)
    add_takedown_parser(sub)
    add_models_parser(sub)

    args = p.parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except UsageError as e:
        print(f"sav-assets {args.cmd}: error: {e}", file=sys.stderr)
        return 2

"""`sav-assets takedown TARGET --reason ...`: take a video down (see sav_assets.lib.dataset.takedown).

TARGET is a ``video_id``, a source URI or key, or a content SHA-256. A target that names no video of
the lake is a usage error (one line, exit code 2); running it again after a takedown (or after one
that was interrupted) finishes what is left and says the tombstone was already there.
"""

from __future__ import annotations

import getpass
import json

from sav_assets.cli.common import UsageError, _lake


def add_parser(sub) -> None:
    t = sub.add_parser("takedown", help="remove a video and everything derived from it (labels, QC, splits, "
                                        "shard samples, exports, statistics); its content is never ingested again")
    t.add_argument("target", help="video_id, source URI or key, or content SHA-256")
    t.add_argument("--reason", required=True, help="why (kept in the takedowns table)")
    t.add_argument("--by", default=None, help="who asks (default: the current user)")
    t.add_argument("--root", default=None)
    t.add_argument("--format", choices=["text", "json"], default="text")
    t.set_defaults(fn=cmd_takedown)


def cmd_takedown(args) -> int:
    from sav_assets.lib.dataset.takedown import TakedownError, takedown

    lk = _lake(args.root)
    try:
        rep = takedown(lk, args.target, args.reason, args.by or getpass.getuser())
    except TakedownError as e:
        raise UsageError(str(e)) from e
    if args.format == "json":
        print(json.dumps(rep.summary(), indent=1, sort_keys=True))
        return 0
    s = rep.summary()
    print(f"{'already taken down; finished' if rep.already else 'taken down'}: {', '.join(rep.video_ids)} "
          f"(content {rep.content_sha256})")
    rows = ", ".join(f"{t} {n}" for t, n in sorted(rep.rows_removed.items())) or "none"
    print(f"  rows removed: {rows}")
    print(f"  shards rewritten: {s['shards_rewritten']} ({s['samples_removed']} samples removed); "
          f"files removed: {s['files_removed']}, rewritten: {s['files_rewritten']}")
    print(f"  tombstone: takedowns table (content {rep.content_sha256[:12]}...); the same bytes are refused "
          f"under any name")
    return 0

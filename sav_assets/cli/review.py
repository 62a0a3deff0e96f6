"""`sav-assets review accept|reject VIDEO MASKLET_TYPE MASKLET_ID`: a human verdict on one masklet.

VIDEO is the video's id, source file name, URI or content SHA-256; it must name exactly one ingested
video that has the masklet (else a one-line usage error, nothing written). The verdict is written as
a new file under ``<root>/reviews/`` (one atomic put, the same on S3) with the resolved ``video_id``;
the next run's ``masklet_qc`` step records it in ``masklet_reviews`` and splits and shards honour it
(:mod:`sav_assets.lib.qc.reviews`).
"""

from __future__ import annotations

import getpass

from sav_assets.cli.common import UsageError, _lake


def add_review_parser(sub) -> None:
    r = sub.add_parser("review", help="accept or reject a masklet (overrides masklet QC in splits and shards)")
    r.add_argument("verdict", choices=["accept", "reject"])
    r.add_argument("video", help="video_id, source file name, source URI or content SHA-256")
    r.add_argument("masklet_type", help="auto | manual | prompted")
    r.add_argument("masklet_id", type=int)
    r.add_argument("--note", default=None, help="why (kept with the verdict)")
    r.add_argument("--reviewer", default=None, help="who (default: the login name)")
    r.add_argument("--root", default=None)
    r.set_defaults(fn=cmd_review)


def _reviewer(given: str | None) -> str | None:
    if given:
        return given
    try:
        return getpass.getuser()
    except (KeyError, OSError):     # no login name (a container without a passwd entry)
        return None


def cmd_review(args) -> int:
    from sav_assets.lib.label.prompts import resolve_video
    from sav_assets.lib.qc.reviews import append_verdicts, verdict_row
    from sav_assets.lib.store.tables import MASKLETS, VIDEOS

    lk = _lake(args.root)
    videos = [v for v in lk.read_table("videos", schema=VIDEOS).to_pylist() if v.get("status") in (None, "ok")]
    vid, cands = resolve_video(args.video, videos)
    if vid is None:
        raise UsageError(f"{args.video!r} matches {len(cands)} videos ({', '.join(cands[:5])}); name it by video_id"
                         if cands else f"no ingested video has the id, SHA-256, URI or file name {args.video!r}")
    mk = lk.read_table("masklets", schema=MASKLETS, columns=["video_id", "masklet_type", "masklet_id"]).to_pylist()
    if {"video_id": vid, "masklet_type": args.masklet_type, "masklet_id": args.masklet_id} not in mk:
        raise UsageError(f"video {vid} has no {args.masklet_type} masklet {args.masklet_id}")
    row = verdict_row(vid, args.masklet_type, args.masklet_id, args.verdict, args.note, _reviewer(args.reviewer))
    uri = append_verdicts(lk, [row])
    print(f"{args.verdict} {vid} {args.masklet_type} {args.masklet_id}: written to {uri} "
          "(recorded by the next run's masklet_qc)")
    return 0

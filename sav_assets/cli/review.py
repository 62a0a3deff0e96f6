"""`sav-assets review accept|reject|correct`: a human verdict on one masklet, or a correction of it.

``review accept|reject VIDEO MASKLET_TYPE MASKLET_ID``: VIDEO is the video's id, source file name, URI
or content SHA-256; it must name exactly one ingested video that has the masklet (else a one-line
usage error, nothing written). The verdict is written as a new file under ``<root>/reviews/`` (one
atomic put, the same on S3) with the resolved ``video_id``; the next run's ``masklet_qc`` step records
it in ``masklet_reviews`` and splits and shards honour it (:mod:`sav_assets.lib.qc.reviews`).

``review correct VIDEO MASKLET_ID --frame T (--point X,Y[,LABEL] ... | --box X0,Y0,X1,Y1)``: clicks
(label 1: object, 0: background) and/or a box in video pixels on source frame T, for a SAM 2 masklet
(``--masklet-type auto|prompted``) or, with MASKLET_ID ``new``, a new object. It is checked as the next
run will check it (the video, the masklet, T on the video's annotation grid, points and box inside
the frame: :func:`sav_assets.lib.label.corrections.correction_problem`); a problem is one line on
stderr, exit code 2, nothing written. Else one correction row goes to a new file under
``<root>/reviews/``; the next ``masklets`` run of the video's batch (``sav-assets run --batch B``, or
the partition in the UI) re-propagates the masklet from T on (:mod:`sav_assets.lib.label.corrections`).
"""

from __future__ import annotations

import argparse
import getpass
import sys

from sav_assets.cli.common import UsageError, _lake


class _OneLineParser(argparse.ArgumentParser):
    """Argument errors as one line on stderr, exit code 2 (no usage block)."""

    def error(self, message: str):
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def add_review_parser(sub) -> None:
    r = sub.add_parser("review", help="accept or reject a masklet (overrides masklet QC in splits and shards), "
                                      "or correct it with clicks")
    acts = r.add_subparsers(dest="review_action", required=True, parser_class=_OneLineParser)
    for verdict in ("accept", "reject"):
        v = acts.add_parser(verdict, help=f"{verdict} a masklet")
        v.add_argument("video", help="video_id, source file name, source URI or content SHA-256")
        v.add_argument("masklet_type", help="auto | manual | prompted")
        v.add_argument("masklet_id", type=int)
        v.add_argument("--note", default=None, help="why (kept with the verdict)")
        v.add_argument("--reviewer", default=None, help="who (default: the login name)")
        v.add_argument("--root", default=None)
        v.set_defaults(fn=cmd_review, verdict=verdict)
    c = acts.add_parser("correct", help="clicks or a box on a frame: the next run re-propagates the masklet "
                                        "from that frame on (SAM 2 masklets; 'new': a new object)")
    c.add_argument("video", help="video_id, source file name, source URI or content SHA-256")
    c.add_argument("masklet_id", help="the masklet's id, or 'new' for an object not tracked yet")
    c.add_argument("--frame", required=True, help="source frame index (a frame of the annotation grid)")
    c.add_argument("--point", action="append", default=[], metavar="X,Y[,LABEL]",
                   help="a click in video pixels; LABEL 1 (object, default) or 0 (background); repeatable")
    c.add_argument("--box", default=None, metavar="X0,Y0,X1,Y1", help="a box in video pixels")
    c.add_argument("--masklet-type", default="auto", help="auto | prompted (ignored for 'new')")
    c.add_argument("--note", default=None, help="why (kept with the correction)")
    c.add_argument("--reviewer", default=None, help="who (default: the login name)")
    c.add_argument("--root", default=None)
    c.set_defaults(fn=cmd_correct)


def _reviewer(given: str | None) -> str | None:
    if given:
        return given
    try:
        return getpass.getuser()
    except (KeyError, OSError):     # no login name (a container without a passwd entry)
        return None


def _resolve(lk, key: str) -> dict:
    """The one ingested video ``key`` names (its ``videos`` row), else a UsageError."""
    from sav_assets.lib.label.prompts import resolve_video
    from sav_assets.lib.store.tables import VIDEOS

    videos = [v for v in lk.read_table("videos", schema=VIDEOS).to_pylist() if v.get("status") in (None, "ok")]
    vid, cands = resolve_video(key, videos)
    if vid is None:
        raise UsageError(f"{key!r} matches {len(cands)} videos ({', '.join(cands[:5])}); name it by video_id"
                         if cands else f"no ingested video has the id, SHA-256, URI or file name {key!r}")
    return next(v for v in videos if v["video_id"] == vid)


def cmd_review(args) -> int:
    from sav_assets.lib.qc.reviews import append_verdicts, verdict_row
    from sav_assets.lib.store.tables import MASKLETS

    lk = _lake(args.root)
    vid = _resolve(lk, args.video)["video_id"]
    mk = lk.read_table("masklets", schema=MASKLETS, columns=["video_id", "masklet_type", "masklet_id"]).to_pylist()
    if {"video_id": vid, "masklet_type": args.masklet_type, "masklet_id": args.masklet_id} not in mk:
        raise UsageError(f"video {vid} has no {args.masklet_type} masklet {args.masklet_id}")
    row = verdict_row(vid, args.masklet_type, args.masklet_id, args.verdict, args.note, _reviewer(args.reviewer))
    uri = append_verdicts(lk, [row])
    print(f"{args.verdict} {vid} {args.masklet_type} {args.masklet_id}: written to {uri} "
          "(recorded by the next run's masklet_qc)")
    return 0


def _numbers(text: str, what: str, sizes: tuple[int, ...]) -> list[float]:
    try:
        vals = [float(x) for x in text.split(",")]
    except ValueError:
        vals = []
    if len(vals) not in sizes:
        raise UsageError(f"{what} {text!r}: expected {' or '.join(str(n) for n in sizes)} comma-separated numbers")
    return vals


def _prompt_args(args) -> tuple[int, int | None, list | None, list | None, list | None]:
    """frame, masklet id (None: new), points, labels, box from the command line, or a UsageError."""
    try:
        frame = int(args.frame)
    except ValueError:
        raise UsageError(f"--frame {args.frame!r}: expected a frame index") from None
    mid_text = str(args.masklet_id).strip().lower()
    try:
        mid = None if mid_text == "new" else int(mid_text)
    except ValueError:
        raise UsageError(f"MASKLET_ID {args.masklet_id!r}: expected an integer or 'new'") from None
    points, labels = [], []
    for p in args.point:
        xs = _numbers(p, "--point", (2, 3))
        label = int(xs[2]) if len(xs) == 3 else 1
        if len(xs) == 3 and xs[2] not in (0.0, 1.0):
            raise UsageError(f"--point {p!r}: the label is 1 (object) or 0 (background)")
        points.append(xs[:2])
        labels.append(label)
    box = _numbers(args.box, "--box", (4,)) if args.box is not None else None
    if not points and box is None:
        raise UsageError("give at least one --point or a --box")
    return frame, mid, points or None, labels or None, box


def cmd_correct(args) -> int:
    from sav_assets.lib.label.corrections import SAM2_TYPES, correction_problem, correction_row
    from sav_assets.lib.qc.reviews import append_verdicts
    from sav_assets.lib.store.tables import MASKLET_FRAMES

    frame, mid, points, labels, box = _prompt_args(args)
    lk = _lake(args.root)
    video = _resolve(lk, args.video)
    vid = video["video_id"]
    cols = ["video_id", "masklet_type", "masklet_id", "frame_idx"]
    rows = [r for r in lk.read_table("masklet_frames", batches=[video["batch_id"]], columns=cols,
                                     schema=MASKLET_FRAMES).to_pylist()
            if r["video_id"] == vid and r["masklet_type"] in SAM2_TYPES]
    if not rows:
        raise UsageError(f"video {vid} has no SAM 2 masklets yet (label it first)")
    row = correction_row(vid, mid, frame, points=points, labels=labels, box=box, masklet_type=args.masklet_type,
                         reviewer=_reviewer(args.reviewer), note=args.note)
    problem = correction_problem(row, vid, {(r["masklet_type"], r["masklet_id"]) for r in rows},
                                 sorted({r["frame_idx"] for r in rows}), int(video["video_frame_count"] or 0),
                                 (int(video["video_height"]), int(video["video_width"])))
    if problem:
        raise UsageError(problem)
    uri = append_verdicts(lk, [row])
    what = "new object" if mid is None else f"{row['masklet_type']} masklet {mid}"
    print(f"correct {vid} {what} from frame {frame}: written to {uri} (applied by the next masklets run "
          f"of batch {video['batch_id']}: sav-assets run --batch {video['batch_id']})")
    return 0

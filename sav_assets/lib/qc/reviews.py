"""Human verdicts on masklets: read from the lake's reviews location, recorded, and read back.

A reviewer accepts or rejects masklets by dropping files under ``<root>/reviews/`` (JSON Lines
``*.jsonl``, a JSON list ``*.json``, or CSV with a header ``*.csv``), by the review page's download, or
through ``sav-assets review accept|reject`` (which writes one new file per verdict, so an "append" is a
single atomic put on a local folder and on S3 alike). One verdict per row::

    {"video_id": "sav_000001", "masklet_type": "auto", "masklet_id": 3, "verdict": "reject",
     "note": "leaks into the background", "reviewer": "ana", "reviewed_at": "2025-01-31T10:00:00Z"}

The video may be named instead by ``file_name``, ``source_uri`` or ``content_sha256`` (or ``video``:
any of them), resolved through the ``videos`` table as prompts are
(:func:`sav_assets.lib.label.prompts.resolve_video`). ``note``, ``reviewer`` and ``reviewed_at`` are
optional (no time: the time the pipeline first read the row).

:func:`record_reviews` (run by the ``masklet_qc`` step) turns every row not recorded yet into a
``masklet_reviews`` row: append-only, one part per run that found something new, each verdict in the
batch folder of the masklet it judges. A row that cannot be used is recorded too, as an error row of
the run's batch: ``bad_review`` (not JSON / CSV, no or unknown verdict, bad masklet id, no such masklet)
or ``unresolved_video`` (names no ingested video, or several); it is tried again on later runs (a
video ingested later resolves it) and recorded again only with another error. :func:`latest_verdicts`
is what :mod:`sav_assets.lib.dataset.selection` reads: the latest verdict per masklet (by
``reviewed_at``, then ``recorded_at``, file and line) overrides QC's; QC's own row stays as it was.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import posixpath
import uuid
from collections.abc import Iterable, Iterator

from sav_assets.lib.label.corrections import is_correction
from sav_assets.lib.label.prompts import resolve_video, video_key_of
from sav_assets.lib.store.lake import Lake
from sav_assets.lib.store.tables import MASKLET_REVIEWS, MASKLETS, VIDEOS, to_table
from sav_assets.lib.util import sha256_json, sha256_text
from sav_assets.lib.video.errors import BAD_REVIEW, UNRESOLVED_VIDEO

REVIEWS_PREFIX = "reviews"
VERDICTS = ("accept", "reject")
SUFFIXES = (".jsonl", ".json", ".csv")
_FIELDS = {"video_id", "video", "file_name", "source_uri", "content_sha256", "masklet_type", "masklet_id",
           "verdict", "note", "reviewer", "reviewed_at"}

Key = tuple[str, str, int]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


# ---- writing verdicts -------------------------------------------------------------------------

def verdict_row(video: str, masklet_type: str, masklet_id: int, verdict: str, note: str | None = None,
                reviewer: str | None = None, when: dt.datetime | None = None) -> dict:
    """One verdict as written to a reviews file (``video``: id, file name, URI or SHA-256)."""
    if verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {VERDICTS}, got {verdict!r}")
    return {"video": video, "masklet_type": masklet_type, "masklet_id": int(masklet_id), "verdict": verdict,
            "note": note, "reviewer": reviewer, "reviewed_at": (when or _now()).isoformat()}


def append_verdicts(lake: Lake, rows: list[dict]) -> str:
    """Write ``rows`` as a new JSON Lines file under ``reviews/`` (one atomic put); returns its URI."""
    stamp = _now().strftime("%Y%m%dT%H%M%S%f")
    rel = f"{REVIEWS_PREFIX}/cli-{stamp}-{uuid.uuid4().hex[:8]}.jsonl"
    return lake.put_bytes(rel, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows).encode(),
                          "application/x-ndjson")


# ---- reading verdict files --------------------------------------------------------------------

def _items(rel: str, text: str) -> list[tuple[int, object]]:
    """``(line, raw row)`` of one file; a file that cannot be parsed at all is one row: its error text."""
    if rel.endswith(".csv"):
        reader = csv.DictReader(io.StringIO(text))
        return [(reader.line_num, {k: v for k, v in row.items() if k is not None and v not in (None, "")})
                for row in reader]
    if rel.endswith(".json"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            return [(e.lineno, f"invalid JSON ({e.msg})")]
        return list(enumerate(data if isinstance(data, list) else [data], start=1))
    out: list[tuple[int, object]] = []
    for n, line in enumerate(text.splitlines(), start=1):
        s = line.strip()
        if s and not s.startswith("#"):
            try:
                out.append((n, json.loads(s)))
            except json.JSONDecodeError as e:
                out.append((n, f"invalid JSON ({e.msg})"))
    return out


def _check(d: object) -> dict:
    """The verdict's fields, checked; ValueError says what is wrong."""
    if not isinstance(d, dict):
        raise ValueError(d if isinstance(d, str) else f"a verdict must be an object, got {type(d).__name__}")
    unknown = set(d) - _FIELDS
    if unknown:
        raise ValueError(f"unknown fields {sorted(unknown)}")
    verdict = str(d.get("verdict") or "").strip().lower()
    if verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {list(VERDICTS)}, got {d.get('verdict')!r}")
    mtype = str(d.get("masklet_type") or "").strip()
    if not mtype:
        raise ValueError("masklet_type is missing")
    try:
        mid = int(str(d.get("masklet_id")).strip())
    except ValueError:
        raise ValueError(f"masklet_id must be an integer, got {d.get('masklet_id')!r}") from None
    when = d.get("reviewed_at")
    if when not in (None, ""):
        try:
            when = dt.datetime.fromisoformat(str(when).replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"reviewed_at is not an ISO 8601 time: {when!r}") from None
        when = when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)
    return {"video_key": video_key_of(d), "masklet_type": mtype, "masklet_id": mid, "verdict": verdict,
            "note": d.get("note") or None, "reviewer": d.get("reviewer") or None, "reviewed_at": when or None}


def review_items(lake: Lake) -> list[tuple[str, int, object]]:
    """``(file, line, raw row)`` of every row of every reviews file, verdicts and corrections alike
    (a file that cannot be parsed: one row, its error text)."""
    out = []
    for rel, text, error in _review_files(lake):
        if error:
            out.append((rel, 0, error))
            continue
        out += [(rel, line, raw) for line, raw in _items(rel, text)]
    return out


def _review_files(lake: Lake) -> Iterator[tuple[str, str, str | None]]:
    """``(file, text, None)`` for every reviews file, or ``(file, "", error)`` when it is not UTF-8."""
    for rel in lake.list(REVIEWS_PREFIX):
        if not rel.endswith(SUFFIXES) or posixpath.basename(rel).startswith("."):
            continue
        try:
            yield rel, lake.get_bytes(rel).decode("utf-8-sig"), None
        except UnicodeDecodeError as e:
            yield rel, "", f"{rel}: not UTF-8 text ({e.reason})"


def read_verdicts(lake: Lake) -> list[dict]:
    """Every row of every reviews file, checked but not resolved: ``review_id``, ``source_file``,
    ``source_line`` and either the verdict's fields or ``error_class`` / ``error_message``. Corrections
    (:mod:`sav_assets.lib.label.corrections`) are not verdicts: the ``masklets`` step reads them."""
    out = []
    for rel, text, error in _review_files(lake):
        if error:
            out.append({"review_id": sha256_text(rel)[:32], "source_file": rel, "source_line": 0,
                        "error_class": BAD_REVIEW, "error_message": error})
            continue
        for line, raw in _items(rel, text):
            if is_correction(raw):
                continue
            row = {"review_id": sha256_json([rel, raw])[:32], "source_file": rel, "source_line": line}
            try:
                row.update(_check(raw))
            except ValueError as e:
                row.update(error_class=BAD_REVIEW, error_message=f"{rel} line {line}: {e}"[:2000])
            out.append(row)
    return out


# ---- recording --------------------------------------------------------------------------------

def _resolve(row: dict, videos: list[dict], masklet_batch: dict[Key, str]) -> dict:
    if row.get("error_class"):
        return row
    vid, cands = resolve_video(row["video_key"], videos)
    where = f"{row['source_file']} line {row['source_line']}"
    if vid is None:
        why = f"ambiguous, matches {', '.join(cands[:5])}" if cands else "no ingested video has this id, SHA-256, URI or file name"
        return {**row, "error_class": UNRESOLVED_VIDEO, "error_message": f"{where}: video {row['video_key']!r}: {why}"}
    key = (vid, row["masklet_type"], row["masklet_id"])
    if key not in masklet_batch:
        return {**row, "video_id": vid, "error_class": BAD_REVIEW,
                "error_message": f"{where}: video {vid} has no {row['masklet_type']} masklet {row['masklet_id']}"}
    return {**row, "video_id": vid, "batch_id": masklet_batch[key]}


def record_reviews(lake: Lake, batch_id: str, now: dt.datetime | None = None) -> dict:
    """Record every verdict row not recorded yet into ``masklet_reviews`` (see the module docstring).
    Returns ``{"new", "errors", "rows"}`` (the rows written by this call)."""
    now = now or _now()
    existing = lake.read_table("masklet_reviews", schema=MASKLET_REVIEWS,
                               columns=["review_id", "status", "error_class"]).to_pylist()
    done = {r["review_id"] for r in existing if r["status"] == "ok"}
    errors_seen = {(r["review_id"], r["error_class"]) for r in existing if r["status"] == "error"}
    videos = [v for v in lake.read_table("videos", schema=VIDEOS).to_pylist() if v.get("status") in (None, "ok")]
    mk = lake.read_table("masklets", schema=MASKLETS, columns=["video_id", "masklet_type", "masklet_id", "batch_id"])
    masklet_batch = {(m["video_id"], m["masklet_type"], m["masklet_id"]): m["batch_id"] for m in mk.to_pylist()}
    new: list[dict] = []
    for raw in read_verdicts(lake):
        if raw["review_id"] in done:
            continue
        row = _resolve(raw, videos, masklet_batch)
        row["status"] = "error" if row.get("error_class") else "ok"
        if row["status"] == "error":
            if (row["review_id"], row["error_class"]) in errors_seen:
                continue
            row["batch_id"] = batch_id
        row["recorded_at"] = now
        row["reviewed_at"] = row.get("reviewed_at") or (now if row["status"] == "ok" else None)
        if row["status"] == "ok":
            done.add(row["review_id"])
        else:
            errors_seen.add((row["review_id"], row["error_class"]))
        new.append(row)
    by_batch: dict[str, list[dict]] = {}
    for r in new:
        by_batch.setdefault(r["batch_id"], []).append(r)
    for b, rows in sorted(by_batch.items()):   # append-only: a new part named after what it holds
        part = "reviews." + sha256_json(sorted(r["review_id"] for r in rows))[:16]
        lake.write_part("masklet_reviews", b, part, to_table(rows, MASKLET_REVIEWS))
    return {"new": sum(r["status"] == "ok" for r in new), "errors": [r for r in new if r["status"] == "error"],
            "rows": new}


def latest_verdicts(rows: Iterable[dict]) -> dict[Key, dict]:
    """The latest ``ok`` ``masklet_reviews`` row per masklet."""
    ok = [r for r in rows if r.get("status") == "ok"]
    ok.sort(key=lambda r: (r["reviewed_at"], r["recorded_at"], r["source_file"], r["source_line"]))
    return {(r["video_id"], r["masklet_type"], r["masklet_id"]): r for r in ok}


def read_latest_verdicts(lake: Lake, batch_ids: list[str] | None = None) -> dict[Key, dict]:
    return latest_verdicts(lake.read_table("masklet_reviews", batches=batch_ids, schema=MASKLET_REVIEWS).to_pylist())

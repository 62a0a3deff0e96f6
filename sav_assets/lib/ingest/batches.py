"""Batch planning and claiming: which landed objects form the next ingestion batch, claimed exactly once.

Exactly once means neither twice nor never, and rests on *object versions*: an S3 object's ETag, or
a local file's size and modification time, always with the object's full URI (two sources may hold
the same relative key). The protocol has three steps, and only the last two write:

1. **Plan (pure).** :func:`plan_batch` lists the source and subtracts every version named by a batch
   manifest; what is left and settled is the plan. It writes nothing, so a schedule or sensor
   evaluation, or the UI's "Preview tick result", has no side effect. The batch id
   (``<yyyymmdd>-<hash of the versions>``) makes two plans of the same objects the same day the same
   batch (and Dagster's run key dedupes their runs). Files still being written (a temporary suffix, a
   hidden name, or, where a listing can show half-written files, modified within ``settle_seconds``)
   are left for a later plan.
2. **Claim (the run's first step).** :func:`claim_batch` writes the manifest
   ``batches/<batch_id>.json`` (a conditional create: the first manifest of a batch stays, with its
   ``claimed_at``), then claims each version with a conditional create of
   ``claims/<sha256 of uri+version>.json`` naming the batch (``ObjectStore.put_if_absent``: an
   ``O_EXCL``-like link locally, ``If-None-Match: *`` on S3). Only one batch wins a version; a batch
   owns the manifest's objects whose claim names it, and leaves the others to the batch that won them
   (two ticks around the moment a file settles, or across UTC midnight, plan two batches that
   overlap). Claiming again is idempotent, so a resumed batch gets back exactly what it owned, and
   claims a crash left unwritten. Planning counts a manifest's objects as taken even before their
   claims exist, so nothing is planned twice while a batch is being claimed.
3. **Finish.** A batch is *ingested* once its ``videos``, ``source_objects`` and ``video_quality``
   parts are in the lake (what ``raw_videos`` and ``video_quality`` write, each part atomically).
   :func:`unfinished_batches` lists claimed batches that are not: a crash of the run, a kill -9 or an
   S3 outage after the claim leaves one, and the next schedule/sensor tick re-requests it and the
   next plain ``sav-assets run`` resumes it. The lake, not the Dagster instance, is the record: it
   survives a lost ``DAGSTER_HOME``.

Content is claimed the same way (:func:`claim_contents`, ``claims/content/<sha256>.json``): two
batches that ingest the same bytes at the same time (two sources sharing a file) each read "not seen
yet" from the lake, but only the first claim keeps a ``videos`` row; the other batch records the
object as ``duplicate_content`` pointing at the kept video, and re-runs of either reach the same
answer. Manifests written before claims existed (no ``format`` field) still count as claiming their
objects.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass, field, replace

from sav_assets.lib.ingest.ingest_batch import IngestResult
from sav_assets.lib.store.lake import Lake
from sav_assets.lib.store.objects import safe_relpath
from sav_assets.lib.store.source import Source, SourceObject
from sav_assets.lib.util import sha256_text
from sav_assets.lib.video.errors import TAKEN_DOWN

PARTIAL_SUFFIXES = (".part", ".partial", ".tmp", ".crdownload", ".download", ".uploading", ".filepart", ".!sync")
MANIFEST_FORMAT = 2
INGESTION_TABLES = ("videos", "source_objects", "video_quality")   # a batch is ingested once all have its part


def is_partial_name(key: str) -> bool:
    """A name that says the file is still being written (or is hidden)."""
    name = key.rsplit("/", 1)[-1]
    return name.startswith(".") or name.startswith("~") or name.lower().endswith(PARTIAL_SUFFIXES)


@dataclass
class BatchPlan:
    batch_id: str
    objects: list[SourceObject]
    pending: list[SourceObject]     # seen but not yet settled (still being written)
    source_uri: str

    def manifest(self) -> dict:
        """The manifest this plan would claim (no ``claimed_at`` yet: :func:`claim_batch` adds it)."""
        return {"batch_id": self.batch_id, "source_uri": self.source_uri, "format": MANIFEST_FORMAT,
                "objects": [o.to_json() for o in self.objects]}


@dataclass
class BatchClaim:
    """What a run owns after claiming: the manifest, the objects whose claim names this batch, and
    ``lost`` (``{key: batch that won it}``) for the manifest's other objects."""

    batch_id: str
    manifest: dict
    objects: list[dict]
    lost: dict[str, str] = field(default_factory=dict)
    resumed: bool = False           # the manifest existed already (a resume or a re-run)

    def owned_manifest(self) -> dict:
        return {**self.manifest, "objects": self.objects}


@dataclass
class BatchStatus:
    batch_id: str
    claimed_at: str | None
    source_uri: str
    objects: int
    ingested: bool


def _version_token(uri: str, version: str) -> str:
    return f"{uri}\x00{version}"


def _token(o: SourceObject | dict) -> str:
    if isinstance(o, dict):
        return _version_token(o.get("uri") or o["key"], o["version"])
    return _version_token(o.uri, o.version)


def claim_key(o: SourceObject | dict) -> str:
    """``claims/<sha256 of uri + version>.json``: one key per object version, whatever the batch."""
    return f"claims/{sha256_text(_token(o))}.json"


def manifest_key(batch_id: str) -> str:
    return f"batches/{safe_relpath(batch_id)}.json"


def batch_id_for(objects: list[SourceObject], when: dt.datetime | None = None) -> str:
    """``<yyyymmdd>-<hash of the object versions>``: the same objects give the same id that day."""
    h = sha256_text("\n".join(sorted(_token(o) for o in objects)))[:10]
    when = when or dt.datetime.now(dt.timezone.utc)
    return f"{when:%Y%m%d}-{h}"


def _manifests(lake: Lake) -> list[dict]:
    docs = []
    for rel in lake.list("batches"):
        if not rel.endswith(".json"):
            continue
        try:
            doc = json.loads(lake.get_bytes(rel))
        except (ValueError, OSError):
            continue            # an unreadable manifest claims nothing
        if isinstance(doc, dict) and doc.get("batch_id"):
            docs.append(doc)
    return docs


def claimed_versions(lake: Lake) -> set[str]:
    """Object versions named by a batch manifest in the lake (taken, whichever batch wins the claim)."""
    return {_token(o) for doc in _manifests(lake) for o in doc.get("objects", [])}


def plan_batch(source: Source, lake: Lake, settle_seconds: float = 30.0, now: float | None = None,
               when: dt.datetime | None = None) -> BatchPlan | None:
    """The next batch: settled object versions that no batch manifest names, or None. Writes nothing."""
    now = time.time() if now is None else now
    claimed = claimed_versions(lake)
    ready, pending = [], []
    for o in source.list_objects():
        if _token(o) in claimed or is_partial_name(o.key):
            continue
        (ready if source.settled(o, now, settle_seconds) else pending).append(o)
    if not ready:
        return None
    return BatchPlan(batch_id=batch_id_for(ready, when), objects=ready, pending=pending, source_uri=source.uri)


def _now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _create_or_read(lake: Lake, key: str, doc: dict) -> tuple[dict, bool]:
    """``(the document at key, whether this call created it)``: a conditional create, else a read."""
    data = json.dumps(doc, indent=1, sort_keys=True).encode()
    if lake.store.put_if_absent(key, data, content_type="application/json"):
        return doc, True
    return json.loads(lake.get_bytes(key)), False


def claim_batch(lake: Lake, manifest: dict) -> BatchClaim:
    """Claim a planned (or existing) batch: its manifest first, then each object version. Idempotent."""
    batch_id = manifest["batch_id"]
    doc, created = _create_or_read(lake, manifest_key(batch_id),
                                   {**manifest, "format": MANIFEST_FORMAT,
                                    "claimed_at": manifest.get("claimed_at") or _now_iso()})
    owned, lost = [], {}
    for o in doc.get("objects", []):
        claim, _ = _create_or_read(lake, claim_key(o), {"batch_id": batch_id, "uri": o.get("uri"), "key": o["key"],
                                                        "version": o["version"], "claimed_at": _now_iso()})
        if claim.get("batch_id") == batch_id:
            owned.append(o)
        else:
            lost[o["key"]] = claim.get("batch_id")
    return BatchClaim(batch_id=batch_id, manifest=doc, objects=owned, lost=lost, resumed=not created)


def claim_contents(lake: Lake, batch_id: str, res: IngestResult) -> IngestResult:
    """Keep the batch's ``videos`` rows whose content this batch claimed first; turn the others into
    ``duplicate_content`` objects pointing at the video kept by the batch that won the content."""
    videos, lost = [], {}
    for v in res.videos:
        if v.get("error_class") == TAKEN_DOWN:   # a refusal claims no content: each upload is its own row
            videos.append(v)
            continue
        claim, _ = _create_or_read(lake, f"claims/content/{v['content_sha256']}.json",
                                   {"batch_id": batch_id, "video_id": v["video_id"], "claimed_at": _now_iso()})
        if claim.get("batch_id") == batch_id:
            videos.append(v)
        else:
            lost[v["video_id"]] = (v, claim.get("video_id"))
    if not lost:
        return res
    objects = []
    for o in res.objects:
        if o.get("disposition") == "video" and o.get("video_id") in lost:
            o = {**o, "disposition": "duplicate_content", "duplicate_of": lost[o["video_id"]][1], "video_id": None}
        objects.append(o)
    counts = dict(res.counts)
    for v, _owner in lost.values():
        key = "videos_ok" if v.get("status") == "ok" else "videos_quarantined"
        counts[key] = counts.get(key, 0) - 1
        counts["duplicate_content"] = counts.get("duplicate_content", 0) + 1
    return replace(res, videos=videos, objects=objects, counts=counts)


def tombstones(lake: Lake) -> dict[str, dict]:
    """Taken-down content: ``{content_sha256: takedowns row}`` (what :func:`ingest_batch` refuses)."""
    from sav_assets.lib.store.tables import TAKEDOWNS

    return {r["content_sha256"]: r for r in lake.read_table("takedowns", schema=TAKEDOWNS).to_pylist()}


def read_manifest(lake: Lake, batch_id: str) -> dict:
    rel = manifest_key(batch_id)
    if not lake.exists(rel):
        raise FileNotFoundError(f"no manifest for batch {batch_id!r} at {lake.uri(rel)}")
    return json.loads(lake.get_bytes(rel))


def batch_statuses(lake: Lake) -> list[BatchStatus]:
    """Every claimed batch, oldest claim first, with whether its ingestion tables are written."""
    done = [set(lake.batches(t)) for t in INGESTION_TABLES]
    out = [BatchStatus(batch_id=d["batch_id"], claimed_at=d.get("claimed_at"), source_uri=d.get("source_uri", ""),
                       objects=len(d.get("objects", [])), ingested=all(d["batch_id"] in s for s in done))
           for d in _manifests(lake)]
    return sorted(out, key=lambda s: (s.claimed_at or "", s.batch_id))


def unfinished_batches(lake: Lake) -> list[BatchStatus]:
    """Claimed batches whose ingestion never finished: to be resumed."""
    return [s for s in batch_statuses(lake) if not s.ingested]

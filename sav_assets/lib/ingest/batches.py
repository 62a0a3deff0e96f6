"""Batch planning: which landed objects form the next ingestion batch, claimed exactly once.

Exactly-once ingestion rests on *object versions*: an S3 object's ETag, or a local file's size and
modification time. A batch is the set of object versions not yet claimed by any earlier batch; its
manifest (``batches/<batch_id>.json`` in the lake) is written before a run is requested, and the
batch id is derived from the versions it holds, so two evaluations that see the same new objects
plan the same batch and Dagster's run key dedupes them. Files still being written (a temporary
suffix, a hidden name, or, where a listing can show half-written files, modified within
``settle_seconds``) are left for a later tick.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass

from sav_assets.lib.store.lake import Lake
from sav_assets.lib.store.objects import safe_relpath
from sav_assets.lib.store.source import Source, SourceObject
from sav_assets.lib.util import sha256_text

PARTIAL_SUFFIXES = (".part", ".partial", ".tmp", ".crdownload", ".download", ".uploading", ".filepart", ".!sync")


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
        return {"batch_id": self.batch_id, "source_uri": self.source_uri,
                "objects": [o.to_json() for o in self.objects]}


def _version_token(key: str, version: str) -> str:
    return f"{key}\x00{version}"


def batch_id_for(objects: list[SourceObject], when: dt.datetime | None = None) -> str:
    """``<yyyymmdd>-<hash of the object versions>``: the same objects give the same id that day."""
    h = sha256_text("\n".join(sorted(_version_token(o.key, o.version) for o in objects)))[:10]
    when = when or dt.datetime.now(dt.timezone.utc)
    return f"{when:%Y%m%d}-{h}"


def claimed_versions(lake: Lake) -> set[str]:
    """Object versions already claimed by a batch manifest in the lake."""
    seen: set[str] = set()
    for rel in lake.list("batches"):
        if not rel.endswith(".json"):
            continue
        try:
            doc = json.loads(lake.get_bytes(rel))
        except (ValueError, OSError):
            continue
        seen.update(_version_token(o["key"], o["version"]) for o in doc.get("objects", []))
    return seen


def plan_batch(source: Source, lake: Lake, settle_seconds: float = 30.0, now: float | None = None,
               when: dt.datetime | None = None) -> BatchPlan | None:
    """The next batch: settled object versions that no earlier batch claimed, or None."""
    now = time.time() if now is None else now
    claimed = claimed_versions(lake)
    ready, pending = [], []
    for o in source.list_objects():
        if _version_token(o.key, o.version) in claimed or is_partial_name(o.key):
            continue
        (ready if source.settled(o, now, settle_seconds) else pending).append(o)
    if not ready:
        return None
    return BatchPlan(batch_id=batch_id_for(ready, when), objects=ready, pending=pending, source_uri=source.uri)


def write_manifest(lake: Lake, plan: BatchPlan) -> str:
    """Claim the plan's objects: write ``batches/<batch_id>.json`` unless it exists already."""
    rel = f"batches/{plan.batch_id}.json"
    if lake.exists(rel):
        return lake.uri(rel)
    return lake.put_bytes(rel, json.dumps(plan.manifest(), indent=1, sort_keys=True).encode(),
                          content_type="application/json")


def read_manifest(lake: Lake, batch_id: str) -> dict:
    rel = f"batches/{safe_relpath(batch_id)}.json"
    if not lake.exists(rel):
        raise FileNotFoundError(f"no manifest for batch {batch_id!r} at {lake.uri(rel)}")
    return json.loads(lake.get_bytes(rel))

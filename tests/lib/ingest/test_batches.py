"""Batch planning and claiming: planning is pure (it writes nothing); a run claims each object version
with a conditional create that only one batch wins; a claimed batch that never finished is listed as
unfinished until its ingestion tables are written."""

from __future__ import annotations

import datetime as dt
import json
import os
import time

import pytest

from sav_assets.lib.ingest.batches import (
    batch_id_for,
    batch_statuses,
    claim_batch,
    claim_contents,
    claimed_versions,
    is_partial_name,
    plan_batch,
    read_manifest,
    unfinished_batches,
)
from sav_assets.lib.store.lake import Lake
from sav_assets.lib.store.source import Source, SourceObject

WHEN = dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc)


def _touch(path, data: bytes, age_s: float = 3600):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    t = time.time() - age_s
    os.utime(path, (t, t))


@pytest.mark.parametrize("name,partial", [("a.mp4", False), ("d/a.mp4.part", True), (".a.mp4", True),
                                          ("~a.mp4", True), ("A.MP4.CRDOWNLOAD", True), ("x/a.tmp", True)])
def test_partial_names(name, partial):
    assert is_partial_name(name) is partial


def test_batch_id_depends_on_versions_not_order():
    a = SourceObject("a.mp4", "/in/a.mp4", 1, "1:10", 0.0)
    b = SourceObject("b.mp4", "/in/b.mp4", 2, "2:20", 0.0)
    assert batch_id_for([a, b], WHEN) == batch_id_for([b, a], WHEN)
    assert batch_id_for([a, b], WHEN).startswith("20260301-")
    b2 = SourceObject("b.mp4", "/in/b.mp4", 2, "2:21", 0.0)
    assert batch_id_for([a, b2], WHEN) != batch_id_for([a, b], WHEN)


def test_plan_claim_and_replan(tmp_path):
    src, lake = Source(str(tmp_path / "in")), Lake(tmp_path / "lake")
    _touch(tmp_path / "in" / "a.mp4", b"a")
    _touch(tmp_path / "in" / "b.mp4.part", b"b")
    _touch(tmp_path / "in" / "c.mp4", b"c", age_s=0)        # still being copied
    plan = plan_batch(src, lake, settle_seconds=30, when=WHEN)
    assert [o.key for o in plan.objects] == ["a.mp4"] and [o.key for o in plan.pending] == ["c.mp4"]
    assert plan_batch(src, lake, settle_seconds=30, when=WHEN).batch_id == plan.batch_id   # nothing claimed yet
    claim = claim_batch(lake, plan.manifest())
    assert [o["key"] for o in claim.objects] == ["a.mp4"] and claim.lost == {} and not claim.resumed
    again = claim_batch(lake, plan.manifest())               # idempotent: the first manifest and claims stay
    assert [o["key"] for o in again.objects] == ["a.mp4"] and again.resumed
    assert again.manifest["claimed_at"] == claim.manifest["claimed_at"]
    doc = read_manifest(lake, plan.batch_id)
    assert doc["batch_id"] == plan.batch_id and doc["source_uri"] == src.uri
    assert [o["key"] for o in doc["objects"]] == ["a.mp4"]
    assert claimed_versions(lake) == {f"{plan.objects[0].uri}\x00{plan.objects[0].version}"}
    assert plan_batch(src, lake, settle_seconds=30, when=WHEN) is None
    assert plan_batch(src, lake, settle_seconds=0, when=WHEN).objects[0].key == "c.mp4"
    lake.put_bytes("batches/broken.json", b"{not json")      # an unreadable manifest claims nothing
    assert len(claimed_versions(lake)) == 1
    with pytest.raises(FileNotFoundError, match="no manifest"):
        read_manifest(lake, "19990101-nothing")


def test_planning_is_pure(tmp_path):
    """Planning (a sensor or schedule evaluation, the UI's preview) writes nothing: planning twice and
    claiming afterwards still claims every object (the old planner wrote the manifest itself)."""
    src, lake = Source(str(tmp_path / "in")), Lake(tmp_path / "lake")
    for name in ("a.mp4", "b.mp4", "sub/c.mp4"):
        _touch(tmp_path / "in" / name, name.encode())
    first = plan_batch(src, lake, settle_seconds=0, when=WHEN)
    second = plan_batch(src, lake, settle_seconds=0, when=WHEN)
    assert not (tmp_path / "lake").exists()                  # not a byte written, not even the folder
    assert second.batch_id == first.batch_id and len(second.objects) == 3
    assert [o["key"] for o in claim_batch(lake, second.manifest()).objects] == ["a.mp4", "b.mp4", "sub/c.mp4"]


def test_concurrent_planners_claim_every_version_exactly_once(tmp_path):
    """Two planners list the source at the same moment, one on each side of UTC midnight (so their batch
    ids differ), and claim concurrently, many times over: every version ends in exactly one batch."""
    import threading

    src, lake = Source(str(tmp_path / "in")), Lake(tmp_path / "lake")
    days = [dt.datetime(2026, 3, 1, 23, 59, 59, tzinfo=dt.timezone.utc), dt.datetime(2026, 3, 2, tzinfo=dt.timezone.utc)]
    expected: set[str] = set()
    for round_ in range(25):
        for i in range(4):
            _touch(tmp_path / "in" / f"r{round_}" / f"v{i}.mp4", f"{round_}-{i}".encode())
            expected.add(f"r{round_}/v{i}.mp4")
        plans = [plan_batch(src, lake, settle_seconds=0, when=d) for d in days]
        assert plans[0].batch_id != plans[1].batch_id and len(plans[0].objects) == 4
        barrier, claims = threading.Barrier(2), [None, None]

        def run(i, plans=plans, barrier=barrier, claims=claims):
            barrier.wait()
            claims[i] = claim_batch(lake, plans[i].manifest())

        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        owned = [{o["key"] for o in c.objects} for c in claims]
        assert not owned[0] & owned[1]                       # never twice
        assert owned[0] | owned[1] == {o.key for o in plans[0].objects}   # never lost
        assert plan_batch(src, lake, settle_seconds=0, when=days[0]) is None
    by_batch = {}
    for st in batch_statuses(lake):
        claim = claim_batch(lake, read_manifest(lake, st.batch_id))   # re-claiming changes no owner
        for o in claim.objects:
            assert o["key"] not in by_batch, o["key"]
            by_batch[o["key"]] = st.batch_id
    assert set(by_batch) == expected


def test_a_claimed_batch_is_unfinished_until_its_ingestion_tables_exist(tmp_path):
    import pyarrow as pa

    src, lake = Source(str(tmp_path / "in")), Lake(tmp_path / "lake")
    _touch(tmp_path / "in" / "a.mp4", b"a")
    plan = plan_batch(src, lake, settle_seconds=0, when=WHEN)
    claim_batch(lake, plan.manifest())                      # then the run was killed
    assert [b.batch_id for b in unfinished_batches(lake)] == [plan.batch_id]
    st = unfinished_batches(lake)[0]
    assert st.objects == 1 and st.source_uri == src.uri and st.claimed_at and not st.ingested
    tbl = pa.table({"x": [1]})
    lake.replace_batch("videos", plan.batch_id, tbl)
    lake.replace_batch("source_objects", plan.batch_id, tbl)
    assert [b.batch_id for b in unfinished_batches(lake)] == [plan.batch_id]   # video_quality still missing
    lake.replace_batch("video_quality", plan.batch_id, tbl)
    assert unfinished_batches(lake) == [] and batch_statuses(lake)[0].ingested


def test_content_is_claimed_once_across_concurrent_batches(tmp_path):
    """Two batches (two sources sharing a file) ingest the same content concurrently: the first claim
    keeps the video, the other batch records it as duplicate_content pointing at it; re-runs agree."""
    from sav_assets.lib.ingest.ingest_batch import IngestResult

    lake = Lake(tmp_path / "lake")

    def result(batch, vid):
        videos = [{"video_id": vid, "batch_id": batch, "content_sha256": "f" * 64, "status": "ok", "source_key": "x.mp4"},
                  {"video_id": f"other_{batch}", "batch_id": batch, "content_sha256": batch * 64, "status": "quarantined",
                   "source_key": "bad.mp4"}]
        objects = [{"batch_id": batch, "source_key": "x.mp4", "disposition": "video", "video_id": vid,
                    "content_sha256": "f" * 64, "duplicate_of": None},
                   {"batch_id": batch, "source_key": "bad.mp4", "disposition": "video", "video_id": f"other_{batch}",
                    "content_sha256": batch * 64, "duplicate_of": None}]
        return IngestResult(videos=videos, objects=objects, counts={"videos_ok": 1, "videos_quarantined": 1,
                                                                    "duplicate_content": 0})

    a = claim_contents(lake, "a", result("a", "x_from_a"))
    b = claim_contents(lake, "b", result("b", "x_from_b"))
    assert [v["video_id"] for v in a.videos] == ["x_from_a", "other_a"]
    assert [v["video_id"] for v in b.videos] == ["other_b"]
    lost = [o for o in b.objects if o["source_key"] == "x.mp4"][0]
    assert lost["disposition"] == "duplicate_content" and lost["duplicate_of"] == "x_from_a" and lost["video_id"] is None
    assert b.counts == {"videos_ok": 0, "videos_quarantined": 1, "duplicate_content": 1}
    again = claim_contents(lake, "a", result("a", "x_from_a"))   # a re-run of the winner keeps its video
    assert [v["video_id"] for v in again.videos] == ["x_from_a", "other_a"]


@pytest.mark.s3
def test_s3_objects_are_settled_at_once(s3_endpoint, tmp_path):
    import uuid

    import boto3

    bucket = f"land-{uuid.uuid4().hex[:8]}"
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="in/x.mp4", Body=b"x")
    s3.put_object(Bucket=bucket, Key="in/.git/config", Body=b"c")   # inside a hidden folder
    lake = Lake(tmp_path / "lake")
    plan = plan_batch(Source(f"s3://{bucket}/in"), lake, settle_seconds=3600, when=WHEN)
    assert [o.key for o in plan.objects] == ["x.mp4"] and plan.pending == []
    assert plan.objects[0].uri == f"s3://{bucket}/in/x.mp4" and '"' not in plan.objects[0].version
    claim = claim_batch(lake, plan.manifest())
    assert json.loads(lake.get_bytes(f"batches/{plan.batch_id}.json"))["objects"][0]["version"] == plan.objects[0].version
    assert [o["key"] for o in claim.objects] == ["x.mp4"]


@pytest.mark.s3
def test_s3_claims_are_conditional_creates(s3_endpoint):
    """The lake on S3: two batches planned across midnight claim the same object; one wins."""
    import uuid

    import boto3

    bucket = f"lake-{uuid.uuid4().hex[:8]}"
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="in/x.mp4", Body=b"x")
    lake, src = Lake(f"s3://{bucket}/lake"), Source(f"s3://{bucket}/in")
    p1 = plan_batch(src, lake, settle_seconds=0, when=WHEN)
    p2 = plan_batch(src, lake, settle_seconds=0, when=WHEN + dt.timedelta(days=1))
    c1, c2 = claim_batch(lake, p1.manifest()), claim_batch(lake, p2.manifest())
    assert [o["key"] for o in c1.objects] == ["x.mp4"] and c2.objects == [] and c2.lost == {"x.mp4": p1.batch_id}
    assert plan_batch(src, lake, settle_seconds=0) is None

"""Batch planning: settled, unclaimed object versions form the next batch; its manifest claims them."""

from __future__ import annotations

import datetime as dt
import json
import os
import time

import pytest

from sav_assets.lib.ingest.batches import (
    batch_id_for,
    claimed_versions,
    is_partial_name,
    plan_batch,
    read_manifest,
    write_manifest,
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
    uri = write_manifest(lake, plan)
    assert write_manifest(lake, plan) == uri                 # idempotent: the first manifest stays
    doc = read_manifest(lake, plan.batch_id)
    assert doc["batch_id"] == plan.batch_id and doc["source_uri"] == src.uri
    assert [o["key"] for o in doc["objects"]] == ["a.mp4"]
    assert claimed_versions(lake) == {f"a.mp4\x00{plan.objects[0].version}"}
    assert plan_batch(src, lake, settle_seconds=30, when=WHEN) is None
    assert plan_batch(src, lake, settle_seconds=0, when=WHEN).objects[0].key == "c.mp4"
    lake.put_bytes("batches/broken.json", b"{not json")      # an unreadable manifest claims nothing
    assert len(claimed_versions(lake)) == 1
    with pytest.raises(FileNotFoundError, match="no manifest"):
        read_manifest(lake, "19990101-nothing")


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
    write_manifest(lake, plan)
    assert json.loads(lake.get_bytes(f"batches/{plan.batch_id}.json"))["objects"][0]["version"] == plan.objects[0].version

"""The landing zone over a store, and videos opened through the store they live in: a source on one S3
endpoint, the lake on another (moto's real HTTP servers on loopback), so the lake's client cannot
see the source's bucket at all."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time

import pytest

from sav_assets.lib.store.lake import Lake
from sav_assets.lib.store.objects import S3Settings, UnsafeKeyError
from sav_assets.lib.store.source import Source, SourceOpener


def _touch(path, data: bytes, age_s: float = 3600):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    t = time.time() - age_s
    os.utime(path, (t, t))


def test_local_source_listing_semantics(tmp_path):
    root = tmp_path / "in"
    _touch(root / "a.mp4", b"a")
    _touch(root / "day" / "b.mp4", b"bb")
    _touch(root / ".hidden" / "c.mp4", b"c")          # inside a hidden folder: never ingested
    (root / "link.mp4").symlink_to(root / "a.mp4")     # links are never followed
    src = Source(str(root))
    objs = src.list_objects()
    assert [o.key for o in objs] == ["a.mp4", "day/b.mp4"]
    assert objs[1].uri == str(root / "day" / "b.mp4") and objs[1].version.startswith("2:")
    assert src.read_bytes("day/b.mp4") == b"bb" and src.head_metadata("a.mp4") == {}
    assert src.object_uri("day/b.mp4") == objs[1].uri
    with src.local_path(objs[1].uri) as p:
        assert p == objs[1].uri
    assert src.settled(objs[0], time.time(), 30) and not src.settled(objs[0], objs[0].mtime + 1, 30)
    with pytest.raises(UnsafeKeyError):
        src.read_bytes("../outside.mp4")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Source(str(tmp_path / "missing")).list_objects()


def test_opener_opens_each_object_through_a_source_of_its_folder(tmp_path):
    _touch(tmp_path / "in" / "d1" / "v1.mp4", b"one")
    _touch(tmp_path / "in" / "d2" / "v2.mp4", b"two")
    made = []

    def source_for(uri):
        made.append(uri)
        return Source(uri)

    opener = SourceOpener(source_for)
    videos = [{"video_id": "v1", "source_uri": str(tmp_path / "in" / "d1" / "v1.mp4")},
              {"video_id": "v2", "source_uri": str(tmp_path / "in" / "d2" / "v2.mp4")}]
    with opener.local_videos(videos) as paths:
        assert {k: open(p, "rb").read() for k, p in paths.items()} == {"v1": b"one", "v2": b"two"}
    with opener.local_path(videos[0]["source_uri"]) as p:
        assert open(p, "rb").read() == b"one"
    assert made == [str(tmp_path / "in" / "d1"), str(tmp_path / "in" / "d2")]   # one Source per folder


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def two_endpoints(s3_endpoint):
    """(source endpoint, lake endpoint): two S3 services that share nothing. The environment (so the
    lake) points at the test's usual moto server; the source is a moto server in another process
    (moto servers in one process share their buckets)."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
            if time.time() > deadline or proc.poll() is not None:
                raise RuntimeError("moto server did not start")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}", s3_endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _bucket_on(endpoint: str, bucket: str):
    client = S3Settings(endpoint_url=endpoint, region_name="us-east-1").client()
    client.create_bucket(Bucket=bucket)
    return client


@pytest.mark.s3
def test_video_opens_through_the_source_store_not_the_lake(two_endpoints, tmp_path):
    src_ep, lake_ep = two_endpoints
    import uuid

    landing = f"landing-{uuid.uuid4().hex[:8]}"
    src_client = _bucket_on(src_ep, landing)
    src_client.put_object(Bucket=landing, Key="in/day1/v.mp4", Body=b"video bytes")
    _bucket_on(lake_ep, "lake")
    lake = Lake("s3://lake/sav")                       # the environment's endpoint: the lake's
    uri = f"s3://{landing}/in/day1/v.mp4"
    with pytest.raises(Exception, match="NoSuchBucket|Not Found|404"):
        lake.store.client.head_object(Bucket=landing, Key="in/day1/v.mp4")   # the lake's client cannot see it

    settings = S3Settings(endpoint_url=src_ep, region_name="us-east-1")
    opener = SourceOpener(lambda folder: Source(folder, s3=settings))
    with opener.local_path(uri) as p:
        assert open(p, "rb").read() == b"video bytes"
    assert not os.path.exists(p)                       # the temporary download is gone
    src = Source(f"s3://{landing}/in", s3=settings)
    assert [o.key for o in src.list_objects()] == ["day1/v.mp4"]
    assert not src.store.partial_writes_visible and src.settled(src.list_objects()[0], 0.0, 30)


@pytest.mark.s3
def test_video_quality_reads_source_videos_with_the_source_resource(two_endpoints, tmp_path, make_video):
    """raw_videos + video_quality with the lake on one endpoint and the source on another: the quality
    asset opens each video through the source resource (it used the lake's S3 client before and failed)."""
    import uuid

    import dagster as dg

    from sav_assets.defs.ingest import IngestConfig, QualityConfig, raw_videos, video_quality
    from sav_assets.defs.partitions import batches
    from sav_assets.lib.ingest.batches import claim_batch, plan_batch
    from sav_assets.resources import LakeResource, SourceResource

    src_ep, lake_ep = two_endpoints
    landing, lake_bucket = f"landing-{uuid.uuid4().hex[:8]}", f"lake-{uuid.uuid4().hex[:8]}"
    _bucket_on(src_ep, landing).upload_file(str(make_video(seconds=2.0)), landing, "in/day1/clip.mp4")
    _bucket_on(lake_ep, lake_bucket)
    res = {"lake": LakeResource(root=f"s3://{lake_bucket}/sav"),
           "source": SourceResource(uri=f"s3://{landing}/in", endpoint_url=src_ep, settle_seconds=0)}
    lake = res["lake"].lake()
    plan = plan_batch(res["source"].source(), lake, settle_seconds=0)
    assert plan is not None and [o.key for o in plan.objects] == ["day1/clip.mp4"]
    claim_batch(lake, plan.manifest())
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(batches.name, [plan.batch_id])
        ctx = dg.build_asset_context(partition_key=plan.batch_id, instance=instance, resources=res)
        raw_videos(ctx, IngestConfig())
        ctx = dg.build_asset_context(partition_key=plan.batch_id, instance=instance, resources=res)
        out = video_quality(ctx, QualityConfig())
    videos = lake.read_table("videos").to_pylist()
    assert [(v["source_key"], v["status"]) for v in videos] == [("day1/clip.mp4", "ok")]
    rows = lake.read_table("video_quality").to_pylist()
    assert [r["video_id"] for r in rows] == [videos[0]["video_id"]]
    assert rows[0]["short_side"] == 240                 # measured from the decoded video itself
    assert out.metadata is not None

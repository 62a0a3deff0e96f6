"""Ingestion tells data errors from code errors: an object that vanished or cannot be read is an
``unreadable`` row and the batch goes on; a bug in our own code (a TypeError in probing, an
AttributeError reading metadata) or an unreachable object store fails the step, instead of quietly
recording every video of the batch as unreadable (claimed, and so never ingested again)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _video_util import make_video  # noqa: E402

from sav_assets.lib.ingest import ingest_batch as ib  # noqa: E402
from sav_assets.lib.store.source import Source  # noqa: E402
from sav_assets.lib.video.probe import ProbeLimits  # noqa: E402


def _batch(src_dir: Path, source: Source | None = None) -> tuple[Source, dict]:
    source = source or Source(str(src_dir))
    return source, {"objects": [o.to_json() for o in source.list_objects()]}


@pytest.fixture
def two_videos(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    make_video(src / "a.mp4", n=12)
    make_video(src / "b.mp4", n=12, w=176)
    return src


def test_a_vanished_object_is_an_unreadable_row_and_the_batch_goes_on(two_videos):
    source, manifest = _batch(two_videos)
    (two_videos / "b.mp4").unlink()                      # deleted between listing and ingestion
    logs: list[str] = []
    res = ib.ingest_batch(source, manifest, "b1", [], ProbeLimits(), workers=1, log=logs.append)
    assert res.counts["videos_ok"] == 1 and res.counts["unreadable"] == 1
    assert [v["source_key"] for v in res.videos] == ["a.mp4"]
    row = next(o for o in res.objects if o["source_key"] == "b.mp4")
    assert row["disposition"] == "unreadable" and row["video_id"] is None
    assert any("b.mp4" in m and "FileNotFoundError" in m for m in logs), logs


def test_a_bug_while_probing_fails_the_step(two_videos, monkeypatch):
    def buggy_probe(path, limits):
        raise TypeError("probe_file() got an unexpected keyword argument 'limit'")

    monkeypatch.setattr(ib, "probe_file", buggy_probe)
    source, manifest = _batch(two_videos)
    with pytest.raises(TypeError, match="unexpected keyword"):
        ib.ingest_batch(source, manifest, "b1", [], ProbeLimits(), workers=2)


def test_an_unreachable_store_fails_the_step_instead_of_marking_videos_unreadable(two_videos, monkeypatch):
    from botocore.exceptions import EndpointConnectionError

    source, manifest = _batch(two_videos)

    def outage(key):
        raise EndpointConnectionError(endpoint_url="http://127.0.0.1:9/landing")

    monkeypatch.setattr(source, "local_path", outage)
    with pytest.raises(EndpointConnectionError):
        ib.ingest_batch(source, manifest, "b1", [], ProbeLimits(), workers=1)


def test_sidecar_metadata_read_errors_are_data_and_bugs_are_not(two_videos, monkeypatch):
    source, manifest = _batch(two_videos)

    def gone(key):
        raise FileNotFoundError(f"{key}: no such object")

    monkeypatch.setattr(source, "head_metadata", gone)
    res = ib.ingest_batch(source, manifest, "b1", [], ProbeLimits(), workers=1)
    assert res.counts["videos_ok"] == 2 and all(v["sidecar_json"] is None for v in res.videos)

    def buggy(key):
        raise AttributeError("'NoneType' object has no attribute 'get'")

    monkeypatch.setattr(source, "head_metadata", buggy)
    with pytest.raises(AttributeError, match="NoneType"):
        ib.ingest_batch(source, manifest, "b1", [], ProbeLimits(), workers=1)


@pytest.mark.s3
def test_an_object_deleted_from_s3_is_an_unreadable_row(s3_endpoint, two_videos):
    import uuid

    import boto3

    bucket = f"land-{uuid.uuid4().hex[:8]}"
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket=bucket)
    for name in ("a.mp4", "b.mp4"):
        s3.put_object(Bucket=bucket, Key=f"in/{name}", Body=(two_videos / name).read_bytes())
    source, manifest = _batch(two_videos, Source(f"s3://{bucket}/in"))
    s3.delete_object(Bucket=bucket, Key="in/b.mp4")
    logs: list[str] = []
    res = ib.ingest_batch(source, manifest, "b1", [], ProbeLimits(), workers=1, log=logs.append)
    assert res.counts["videos_ok"] == 1 and res.counts["unreadable"] == 1
    assert next(o for o in res.objects if o["source_key"] == "b.mp4")["disposition"] == "unreadable"
    assert any("b.mp4" in m and "FileNotFoundError" in m for m in logs), logs

"""A file still being written is never ingested as a damaged video (and then again once complete):
ingestion hashes and sizes the bytes in one read and checks that the object is still the version the
batch claimed after probing it. An object that changed is recorded as ``changed`` (no ``videos`` row);
its new version is a new object for a later batch. ``bytes`` and ``content_sha256`` describe the same
bytes."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _video_util import make_video  # noqa: E402

from sav_assets.lib.ingest import ingest_batch as ib  # noqa: E402
from sav_assets.lib.store.source import Source  # noqa: E402
from sav_assets.lib.video.probe import ProbeLimits  # noqa: E402


@pytest.fixture
def landing(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    make_video(tmp_path / "full.mp4", n=24)
    return src, (tmp_path / "full.mp4").read_bytes()


def _manifest(source: Source) -> dict:
    return {"objects": [o.to_json() for o in source.list_objects()]}


def test_a_complete_file_has_bytes_and_hash_of_the_same_bytes(landing):
    src, data = landing
    (src / "v.mp4").write_bytes(data)
    source = Source(str(src))
    res = ib.ingest_batch(source, _manifest(source), "b1", [], ProbeLimits(), workers=1)
    [row] = res.videos
    assert (row["status"], row["bytes"], row["content_sha256"]) == ("ok", len(data), hashlib.sha256(data).hexdigest())


def test_a_copy_finished_after_it_was_claimed_is_left_for_the_next_batch(landing):
    src, data = landing
    (src / "v.mp4").write_bytes(data[: len(data) // 2])    # listed (claimed) half-copied
    source = Source(str(src))
    manifest = _manifest(source)
    (src / "v.mp4").write_bytes(data)                       # the copy finishes before ingestion reads it
    res = ib.ingest_batch(source, manifest, "b1", [], ProbeLimits(), workers=1)
    assert res.videos == []                                 # not a video of len/2 bytes hashed over len bytes
    [obj] = res.objects
    assert (obj["disposition"], obj["source_key"], obj["bytes"]) == ("changed", "v.mp4", len(data) // 2)
    assert res.counts["changed"] == 1 and res.counts["videos_ok"] == 0
    # the finished file is a new version: the next batch ingests it, once, as a good video
    res2 = ib.ingest_batch(source, _manifest(source), "b2", [], ProbeLimits(), workers=1)
    assert [(v["status"], v["bytes"]) for v in res2.videos] == [("ok", len(data))]


def test_a_file_growing_while_it_is_probed_is_not_recorded_truncated(landing, monkeypatch):
    src, data = landing
    (src / "v.mp4").write_bytes(data[: len(data) // 3])
    source = Source(str(src))
    manifest = _manifest(source)
    real_probe = ib.probe_file

    def probe_while_the_writer_appends(path, limits):
        res = real_probe(path, limits)                      # the partial file: a damaged video
        assert res.status == "quarantined"
        with open(src / "v.mp4", "ab") as fh:               # meanwhile the copy goes on
            fh.write(data[len(data) // 3:])
        return res

    monkeypatch.setattr(ib, "probe_file", probe_while_the_writer_appends)
    res = ib.ingest_batch(source, manifest, "b1", [], ProbeLimits(), workers=1)
    assert res.videos == [] and [o["disposition"] for o in res.objects] == ["changed"]

"""Nightly schedule and new-object sensor: one run per new object version, none on a second tick,
none for a file still being copied."""

import json
import os
import time

import dagster as dg

from sav_assets.defs.automation import new_videos_sensor, nightly_ingestion_schedule
from sav_assets.defs.partitions import batches
from sav_assets.lib.store.lake import Lake
from sav_assets.resources import LakeResource, SourceResource


def _write(path, data: bytes, age_s: float = 3600):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    t = time.time() - age_s
    os.utime(path, (t, t))


def _resources(src, lake_root):
    return {"lake": LakeResource(root=str(lake_root)), "source": SourceResource(uri=str(src), settle_seconds=30)}


def _eval_sensor(instance, res):
    with dg.build_sensor_context(instance=instance, resources=res) as ctx:
        return new_videos_sensor(ctx)


def test_sensor_one_run_per_new_version(tmp_path):
    src, root = tmp_path / "src", tmp_path / "lake"
    _write(src / "a.mp4", b"aaa")
    _write(src / "sub" / "b.mp4", b"bbb")
    _write(src / "c.mp4", b"ccc", age_s=0)          # still being copied: modified just now
    _write(src / "d.mp4.part", b"ddd")              # partial upload name
    _write(src / ".e.mp4", b"eee")                  # hidden temp file
    res = _resources(src, root)
    with dg.instance_for_test() as instance:
        r1 = _eval_sensor(instance, res)
        assert isinstance(r1, dg.SensorResult)
        assert len(r1.run_requests) == 1
        req = r1.run_requests[0]
        assert req.run_key == req.partition_key
        manifest = json.loads(Lake(root).get_bytes(f"batches/{req.partition_key}.json"))
        assert sorted(o["key"] for o in manifest["objects"]) == ["a.mp4", "sub/b.mp4"]
        assert r1.dynamic_partitions_requests[0].partition_keys == [req.partition_key]

        # second tick: nothing new (claimed), the half-copied file has not settled yet
        r2 = _eval_sensor(instance, res)
        assert isinstance(r2, dg.SkipReason)

        # the copy finishes (file settles): exactly one new batch, for c.mp4 only
        t = time.time() - 3600
        os.utime(src / "c.mp4", (t, t))
        r3 = _eval_sensor(instance, res)
        keys = json.loads(Lake(root).get_bytes(f"batches/{r3.run_requests[0].partition_key}.json"))["objects"]
        assert [o["key"] for o in keys] == ["c.mp4"]
        assert r3.run_requests[0].run_key != req.run_key

        # a new version of a.mp4 (rewritten) is a new object version
        _write(src / "a.mp4", b"aaa-v2", age_s=1800)
        r4 = _eval_sensor(instance, res)
        keys = json.loads(Lake(root).get_bytes(f"batches/{r4.run_requests[0].partition_key}.json"))["objects"]
        assert [o["key"] for o in keys] == ["a.mp4"]
        assert isinstance(_eval_sensor(instance, res), dg.SkipReason)


nightly_ingestion = nightly_ingestion_schedule("0 2 * * *")


def test_schedule_registers_partition_and_requests_run(tmp_path):
    src, root = tmp_path / "src", tmp_path / "lake"
    _write(src / "x.mp4", b"xxx")
    res = _resources(src, root)
    with dg.instance_for_test() as instance:
        ctx = dg.build_schedule_context(instance=instance, resources=res)
        req = nightly_ingestion(ctx)
        assert isinstance(req, dg.RunRequest)
        assert instance.has_dynamic_partition(batches.name, req.partition_key)
        assert req.run_key == req.partition_key
        again = nightly_ingestion(dg.build_schedule_context(instance=instance, resources=res))
        assert isinstance(again, dg.SkipReason)
    assert nightly_ingestion.cron_schedule == "0 2 * * *"
    assert nightly_ingestion.execution_timezone == "UTC"


def test_missing_source_is_a_skip_not_a_crash(tmp_path):
    res = _resources(tmp_path / "nope", tmp_path / "lake")
    with dg.instance_for_test() as instance:
        r = _eval_sensor(instance, res)
    assert isinstance(r, dg.SkipReason)
    assert "does not exist" in r.skip_message

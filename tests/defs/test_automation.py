"""Nightly schedule and new-object sensor: one run per new object version, none on a second tick,
none for a file still being copied; evaluating them (the UI's preview) writes nothing and registers no
partition; a claimed batch that never finished is requested again."""

import json
import os
import time

import dagster as dg
import pyarrow as pa

from sav_assets.defs.automation import claim_run_batch, new_videos_sensor, nightly_ingestion_schedule
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


def _launch(instance, res, req: dg.RunRequest) -> dict:
    """What the requested run's first step does (raw_videos claims the batch); the owned manifest."""
    plan = (req.run_config or {}).get("ops", {}).get("raw_videos", {}).get("config", {}).get("batch_plan", "")
    ctx = dg.build_asset_context(partition_key=req.partition_key, instance=instance)
    return claim_run_batch(ctx, res["lake"].lake(), plan)


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
        assert req.run_key == req.partition_key and req.tags["dagster/partition"] == req.partition_key
        assert r1.dynamic_partitions_requests[0].partition_keys == [req.partition_key]
        manifest = _launch(instance, res, req)
        assert sorted(o["key"] for o in manifest["objects"]) == ["a.mp4", "sub/b.mp4"]
        assert json.loads(Lake(root).get_bytes(f"batches/{req.partition_key}.json"))["batch_id"] == req.partition_key
        lk = Lake(root)
        for t in ("videos", "source_objects", "video_quality"):       # the run finished ingesting
            lk.replace_batch(t, req.partition_key, pa.table({"x": [1]}))

        # second tick: nothing new (claimed), the half-copied file has not settled yet
        r2 = _eval_sensor(instance, res)
        assert isinstance(r2, dg.SkipReason)

        # the copy finishes (file settles): exactly one new batch, for c.mp4 only
        t = time.time() - 3600
        os.utime(src / "c.mp4", (t, t))
        r3 = _eval_sensor(instance, res)
        assert [o["key"] for o in _launch(instance, res, r3.run_requests[0])["objects"]] == ["c.mp4"]
        assert r3.run_requests[0].run_key != req.run_key

        # a new version of a.mp4 (rewritten) is a new object version
        _write(src / "a.mp4", b"aaa-v2", age_s=1800)
        r4 = _eval_sensor(instance, res)
        assert [r.partition_key for r in r4.run_requests[:1]] == [r3.run_requests[0].partition_key]  # c: unfinished
        assert [o["key"] for o in _launch(instance, res, r4.run_requests[-1])["objects"]] == ["a.mp4"]
        for r in r4.run_requests:
            for t in ("videos", "source_objects", "video_quality"):
                lk.replace_batch(t, r.partition_key, pa.table({"x": [1]}))
        assert isinstance(_eval_sensor(instance, res), dg.SkipReason)


nightly_ingestion = nightly_ingestion_schedule("0 2 * * *")


def test_schedule_registers_partition_and_requests_run(tmp_path):
    src, root = tmp_path / "src", tmp_path / "lake"
    _write(src / "x.mp4", b"xxx")
    res = _resources(src, root)
    with dg.instance_for_test() as instance:
        ctx = dg.build_schedule_context(instance=instance, resources=res)
        [req] = nightly_ingestion(ctx)
        assert isinstance(req, dg.RunRequest) and req.run_key == req.partition_key
        assert not instance.has_dynamic_partition(batches.name, req.partition_key)   # the run registers it
        _launch(instance, res, req)
        assert instance.has_dynamic_partition(batches.name, req.partition_key)
        for t in ("videos", "source_objects", "video_quality"):
            Lake(root).replace_batch(t, req.partition_key, pa.table({"x": [1]}))
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


def test_preview_has_no_side_effects(tmp_path):
    """Evaluating the sensor and the schedule (the UI's "Preview tick result") twice writes nothing and
    registers no partition; a real tick afterwards still requests every new object."""
    src, root = tmp_path / "src", tmp_path / "lake"
    for name in ("a.mp4", "b.mp4", "sub/c.mp4"):
        _write(src / name, name.encode())
    res = _resources(src, root)
    with dg.instance_for_test() as instance:
        for _ in range(2):
            assert len(_eval_sensor(instance, res).run_requests) == 1
            assert len(nightly_ingestion(dg.build_schedule_context(instance=instance, resources=res))) == 1
        assert not root.exists()                                  # no manifest, no claim, no folder
        assert instance.get_dynamic_partitions(batches.name) == []
        tick = _eval_sensor(instance, res)                        # the real tick: its run claims
        manifest = _launch(instance, res, tick.run_requests[0])
        assert sorted(o["key"] for o in manifest["objects"]) == ["a.mp4", "b.mp4", "sub/c.mp4"]


def test_a_stranded_batch_is_requested_again(tmp_path):
    """A batch claimed by a run that then died (manifest and claims in the lake, no ingestion tables) is
    requested by every later tick until it finishes; not while a live run works on it; after a run of
    it ended, under a new run key (Dagster never launches a run key twice)."""
    src, root = tmp_path / "src", tmp_path / "lake"
    _write(src / "a.mp4", b"aaa")
    res = _resources(src, root)
    with dg.instance_for_test() as instance:
        first = _eval_sensor(instance, res).run_requests[0]
        _launch(instance, res, first)                             # claimed, then killed
        _write(src / "b.mp4", b"bbb")
        tick = _eval_sensor(instance, res)
        assert [r.partition_key for r in tick.run_requests][0] == first.partition_key
        assert tick.run_requests[0].run_key == first.run_key       # no run of it ever ended
        scheduled = nightly_ingestion(dg.build_schedule_context(instance=instance, resources=res))
        assert [r.partition_key for r in scheduled][0] == first.partition_key     # the schedule too

        run = instance.create_run_for_job(dg.Definitions(jobs=[_noop_job]).resolve_job_def("noop"),
                                          tags={"sav/batch": first.partition_key})
        instance.handle_run_event(run.run_id, _event(run, "PIPELINE_START"))
        tick = _eval_sensor(instance, res)                        # a live run works on it: not requested
        assert first.partition_key not in [r.partition_key for r in tick.run_requests]
        instance.report_run_failed(instance.get_run_by_id(run.run_id))
        tick = _eval_sensor(instance, res)
        assert tick.run_requests[0].partition_key == first.partition_key
        assert tick.run_requests[0].run_key == f"{first.partition_key}:retry-1"
        owned = _launch(instance, res, tick.run_requests[0])      # the resumed run: the manifest, no plan
        assert [o["key"] for o in owned["objects"]] == ["a.mp4"]


@dg.op
def _noop():
    pass


@dg.job(name="noop")
def _noop_job():
    _noop()


def _event(run, kind):
    return dg.DagsterEvent(event_type_value=kind, job_name=run.job_name, message=kind)

"""The compacted_tables asset: compacts what grew, and a failing table is a warning, not a failed run."""

import dagster as dg

from sav_assets.defs.analytics import compacted_tables
from sav_assets.lib.store import compaction
from sav_assets.lib.store.catalog import query, refresh_catalog
from sav_assets.lib.store.lake import Lake
from sav_assets.lib.store.tables import MASKLET_FRAMES, VIDEOS, to_table
from sav_assets.resources import LakeResource


def _lake_with_parts(root) -> Lake:
    lake = Lake(root)
    for b in ("b1", "b2"):
        lake.replace_batch("videos", b, to_table([{"video_id": f"{b}-v", "batch_id": b, "status": "ok"}], VIDEOS))
        lake.replace_batch("masklet_frames", b, to_table(
            [{"video_id": f"{b}-v", "batch_id": b, "masklet_id": 0, "masklet_type": "auto", "frame_idx": f,
              "counts": "x"} for f in (0, 4)], MASKLET_FRAMES))
    refresh_catalog(lake)
    return lake


def _materialize(root, config: dict, instance):
    batches = dg.DynamicPartitionsDefinition(name="batches")
    instance.add_dynamic_partitions(batches.name, ["b2"])
    return dg.materialize([compacted_tables], partition_key="b2", instance=instance, raise_on_error=False,
                          resources={"lake": LakeResource(root=str(root))},
                          run_config={"ops": {"compacted_tables": {"config": config}}})


def test_compacts_and_reports(tmp_path):
    lake = _lake_with_parts(tmp_path / "lake")
    with dg.instance_for_test() as instance:
        res = _materialize(lake.root, {"tables": ["videos", "masklet_frames"], "min_new_parts": 2}, instance)
        assert res.success
        md = res.asset_materializations_for_node("compacted_tables")[0].metadata
    assert md["masklet_frames/rows"].value == 4 and md["videos/rows"].value == 2
    assert md["failed_tables"].value == []
    assert compaction.read_pointer(lake, "masklet_frames")["rows"] == 4
    assert query(lake, "select count(*) n from masklet_frames").to_pylist() == [{"n": 4}]


def test_a_failing_table_is_a_warning_and_the_views_still_answer(tmp_path, monkeypatch):
    lake = _lake_with_parts(tmp_path / "lake")

    def boom(*a, **kw):
        raise OSError("disk full")

    monkeypatch.setattr(compaction, "_write_generation", boom)
    with dg.instance_for_test() as instance:
        res = _materialize(lake.root, {"tables": ["masklet_frames"], "min_new_parts": 1}, instance)
        assert res.success
        md = res.asset_materializations_for_node("compacted_tables")[0].metadata
    assert md["failed_tables"].value == ["masklet_frames"] and "disk full" in md["compaction"].value
    assert compaction.read_pointer(lake, "masklet_frames") is None
    assert query(lake, "select count(*) n from masklet_frames").to_pylist() == [{"n": 4}]


def test_unknown_table_fails_the_step(tmp_path):
    lake = _lake_with_parts(tmp_path / "lake")
    with dg.instance_for_test() as instance:
        res = _materialize(lake.root, {"tables": ["masklet_frames", "nope"]}, instance)
    assert not res.success
    assert compaction.read_pointer(lake, "masklet_frames") is None

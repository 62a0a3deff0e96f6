"""The code location loads, with the assets in groups, the checks, the schedule and the sensor."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_definitions_load_with_groups_and_checks():
    import dagster as dg

    from sav_assets.definitions import build_definitions

    with dg.instance_for_test():
        rd = build_definitions().get_repository_def()
    graph = rd.asset_graph
    groups = {k.to_user_string(): graph.get(k).group_name for k in graph.get_all_asset_keys()}
    assert groups == {
        "raw_videos": "ingestion", "video_quality": "ingestion",
        "masklets": "labeling", "sav_export": "labeling",
        "masklet_qc": "qc",
        "splits": "dataset", "eval_layout": "dataset", "training_shards": "dataset",
        "dataset_statistics": "analytics",
    }
    checks = {(c.asset_key.to_user_string(), c.name) for c in graph.asset_check_keys}
    for table in ("videos", "video_quality", "masklets", "masklet_frames", "masklet_qc", "splits", "shards"):
        assert any(name == f"gx_{table}" for _a, name in checks), table
    blocking = {k.name for k, d in rd.asset_checks_defs_by_key.items() for s in d.check_specs if s.blocking}
    assert {"gx_videos", "gx_masklet_qc", "gx_splits", "no_group_straddles_splits"} <= blocking
    assert rd.get_schedule_def("nightly_ingestion").cron_schedule == "0 2 * * *"
    assert rd.get_sensor_def("new_videos_sensor") is not None
    assert rd.get_job("sav_pipeline") is not None
    # the labeling step runs in the "gpu" concurrency pool: one labeling step per GPU at a time
    assert graph.get(next(k for k in graph.get_all_asset_keys() if k.to_user_string() == "masklets")).pools == {"gpu"}


def test_dagster_loads_the_workspace():
    """What `dagster dev` does first: load the code location from workspace.yaml."""
    out = subprocess.run([sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]

"""The code location loads, with the assets in groups, the checks, the schedule and the sensor.

Loaded in a fresh interpreter, as `dagster dev` does: Dagster keeps process-wide state about the
last instance it saw, which other in-process tests' temporary instances would leave behind."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = r"""
import json
from sav_assets.definitions import build_definitions
rd = build_definitions().get_repository_def()
g = rd.asset_graph
print(json.dumps({
    "groups": {k.to_user_string(): g.get(k).group_name for k in g.get_all_asset_keys()},
    "checks": sorted(k.name for k in g.asset_check_keys),
    "blocking": sorted(k.name for k, d in rd.asset_checks_defs_by_key.items() for s in d.check_specs if s.blocking),
    "cron": rd.get_schedule_def("nightly_ingestion").cron_schedule,
    "sensors": sorted(s.name for s in rd.sensor_defs),
    "jobs": sorted(j.name for j in rd.get_all_jobs()),
    "pools": [sorted(g.get(k).pools or []) for k in g.get_all_asset_keys() if k.to_user_string() == "masklets"][0],
}))
"""


def test_definitions_load_with_groups_and_checks():
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info["groups"] == {
        "raw_videos": "ingestion", "video_quality": "ingestion",
        "masklets": "labeling", "sav_export": "labeling",
        "masklet_qc": "qc",
        "splits": "dataset", "eval_layout": "dataset", "training_shards": "dataset",
        "dataset_statistics": "analytics", "compacted_tables": "analytics",
    }
    for table in ("videos", "video_quality", "masklets", "masklet_frames", "masklet_qc", "splits", "shards"):
        assert f"gx_{table}" in info["checks"], table
    assert {"gx_videos", "gx_masklet_qc", "gx_splits", "no_group_straddles_splits"} <= set(info["blocking"])
    assert info["cron"] == "0 2 * * *"
    assert "new_videos_sensor" in info["sensors"]
    assert "sav_pipeline" in info["jobs"]
    assert info["pools"] == ["gpu"]  # one labeling step per GPU at a time


def test_dagster_loads_the_workspace(tmp_path):
    """What `dagster dev` does first: load the code location from workspace.yaml.

    DAGSTER_HOME points at a fresh folder: on a clean clone the project's `.dagster_home` may not exist yet."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    out = subprocess.run([sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]

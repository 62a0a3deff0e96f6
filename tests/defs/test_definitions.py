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
    "code_versions": {k.to_user_string(): g.get(k).code_version for k in g.get_all_asset_keys()},
}))
"""


def _probe(**env) -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SAV_")}
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**clean, **env})
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_definitions_load_with_groups_and_checks():
    info = _probe()
    assert info["groups"] == {
        "raw_videos": "ingestion", "video_quality": "ingestion",
        "masklets": "labeling", "sav_export": "labeling",
        "masklet_qc": "qc",
        "splits": "dataset", "eval_layout": "dataset", "training_shards": "dataset",
        "dataset_statistics": "analytics", "compacted_tables": "analytics",
        "takedowns": "governance",
        "sam2_finetune": "training", "model_evaluation": "training",
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


def test_cron_and_labels_code_version_are_read_when_definitions_are_built():
    """SAV_INGEST_CRON sets the schedule; a model swap (another checkpoint, pin or config) changes the
    code_version of masklets, and only of masklets, so the UI marks the labels stale."""
    base = _probe()
    assert base["code_versions"]["masklets"]
    assert all(v is None for k, v in base["code_versions"].items() if k != "masklets")
    swapped = _probe(SAV_INGEST_CRON="30 3 * * 1", SAV_SAM2_CHECKPOINT="/models/sam2.1_hiera_small.pt",
                     SAV_SAM2_CHECKPOINT_SHA256="ab" * 32)
    assert swapped["cron"] == "30 3 * * 1"
    assert swapped["code_versions"]["masklets"] != base["code_versions"]["masklets"]
    assert _probe(SAV_SAM2_CONFIG="small")["code_versions"]["masklets"] != base["code_versions"]["masklets"]
    # the device does not change the labels' definition
    assert _probe(SAV_DEVICE="cpu")["code_versions"]["masklets"] == base["code_versions"]["masklets"]


def test_dg_check_and_list_defs(tmp_path):
    """`dg check defs` and `dg list defs` (dagster-dg-cli) load the project from pyproject's [tool.dg]."""
    import shutil

    dg_cli = shutil.which("dg") or str(Path(sys.executable).with_name("dg"))
    if not Path(dg_cli).exists():
        import pytest

        pytest.skip("dagster-dg-cli is not installed (make setup installs it with the dev extras)")
    home = tmp_path / "dagster_home"
    home.mkdir()
    env = {**os.environ, "DAGSTER_HOME": str(home), "VIRTUAL_ENV": str(Path(sys.executable).parents[1])}
    for args in (["check", "defs"], ["list", "defs", "--json"]):
        out = subprocess.run([dg_cli, *args], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    listed = out.stdout
    for name in ("raw_videos", "masklets", "dataset_statistics", "nightly_ingestion", "new_videos_sensor"):
        assert name in listed, name

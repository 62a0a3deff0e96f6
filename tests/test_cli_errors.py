"""`sav-assets run` refuses bad arguments with one clear line and exit code 2, before it claims anything.

Each case: the message names the problem, there is no traceback, no batch manifest is written and no
Dagster partition is registered (an unsafe or unknown batch id must never become a partition).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sav_assets.cli import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def env(tmp_path, monkeypatch, make_video):
    """A source folder with one small settled video, an empty lake root, a fresh DAGSTER_HOME."""
    src, root = tmp_path / "src", tmp_path / "lake"
    make_video(src / "clip.mp4", seconds=1, fps=8, width=96, height=64)
    old = time.time() - 3600
    os.utime(src / "clip.mp4", (old, old))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dh"))
    return {"src": src, "root": root, "tmp": tmp_path}


def _partitions() -> list[str]:
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        return list(instance.get_dynamic_partitions("batches"))


def _manifests(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "batches").glob("*.json")) if (root / "batches").is_dir() else []


def _refused(capsys, argv: list[str], *needles: str) -> str:
    rc = main(argv)
    out, err = capsys.readouterr()
    assert rc == 2, (out, err)
    assert "Traceback" not in err + out
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_unknown_asset_in_select_is_refused_before_planning(env, capsys):
    line = _refused(capsys, ["run", "--source", str(env["src"]), "--root", str(env["root"]),
                             "--select", "raw_videos masklts"], "--select", "'masklts'")
    assert "masklets" in line                      # the known assets are listed
    _refused(capsys, ["run", "--source", str(env["src"]), "--root", str(env["root"]),
                      "--select", "group:nope"], "--select", "group 'nope'")
    assert _manifests(env["root"]) == [] and _partitions() == []


def test_unknown_asset_through_the_real_command_line(env):
    # the installed entry point as a user types it: one line on stderr, exit code 2, no traceback
    r = subprocess.run([sys.executable, "-m", "sav_assets.cli", "run", "--source", str(env["src"]),
                        "--root", str(env["root"]), "--select", "nope+"],
                       capture_output=True, text=True, cwd=env["tmp"], timeout=300)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and r.stderr.strip().count("\n") == 0, r.stderr
    assert "unknown asset 'nope'" in r.stderr
    assert _manifests(env["root"]) == []


def test_source_that_is_a_file(env, capsys):
    f = env["src"] / "clip.mp4"
    _refused(capsys, ["run", "--source", str(f), "--root", str(env["root"])], "--source", str(f), "is a file")
    missing = env["tmp"] / "nowhere"
    _refused(capsys, ["run", "--source", str(missing), "--root", str(env["root"])], "--source", "does not exist")
    assert _manifests(env["root"]) == [] and not missing.exists()


@pytest.mark.parametrize("batch", ["../x", "a/b", "/etc/passwd", ".hidden", "x\ny", "", "b" * 200])
def test_unsafe_batch_id_is_refused_and_never_registered(env, capsys, batch):
    _refused(capsys, ["run", "--source", str(env["src"]), "--root", str(env["root"]), "--batch", batch,
                      "--select", "raw_videos"], "--batch")
    assert _partitions() == [] and not (env["tmp"] / "x").exists()


def test_unknown_batch_is_refused_and_never_registered(env, capsys):
    _refused(capsys, ["run", "--source", str(env["src"]), "--root", str(env["root"]), "--batch", "20240101-0123456789",
                      "--select", "raw_videos"], "--batch", "'20240101-0123456789'", "no manifest")
    assert _partitions() == []


def _cfg(tmp: Path, text: str) -> str:
    p = tmp / "run.yaml"
    p.write_text(text)
    return str(p)


def test_config_with_select_uses_only_the_selected_steps(env, capsys):
    # the file configures masklets too (not selected); raw_videos' own entry still applies: a tiny
    # max_bytes quarantines the video as over_limits
    cfg = _cfg(env["tmp"], "ops:\n  raw_videos: {config: {max_bytes: 10}}\n"
                           "  masklets: {config: {points_per_side: 8}}\n"
                           "  video_quality: {config: {sample_frames: 4}}\n")
    rc = main(["run", "--source", str(env["src"]), "--root", str(env["root"]), "--select", "raw_videos",
               "--config", cfg])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "masklets" in out and "video_quality" in out and "not selected" in out   # said, not silent
    from sav_assets.lib.store.catalog import query
    from sav_assets.lib.store.lake import Lake

    rows = query(Lake(env["root"]), "select source_key, status, error_class from videos").to_pylist()
    assert rows == [{"source_key": "clip.mp4", "status": "quarantined", "error_class": "over_limits"}]


@pytest.mark.parametrize("text,needles", [
    ("ops:\n  maskelts: {config: {points_per_side: 8}}\n", ["--config", "'maskelts'", "not a step"]),
    ("ops:\n  raw_videos: {config: {max_bytez: 8}}\n", ["--config", "max_bytez"]),
    ("ops: [1, 2\n", ["--config", "YAML"]),
    ("- just\n- a list\n", ["--config", "mapping"]),
])
def test_bad_config_is_refused_before_planning(env, capsys, text, needles):
    _refused(capsys, ["run", "--source", str(env["src"]), "--root", str(env["root"]), "--select", "raw_videos",
                      "--config", _cfg(env["tmp"], text)], *needles)
    assert _manifests(env["root"]) == [] and _partitions() == []


def test_missing_config_file(env, capsys):
    _refused(capsys, ["run", "--source", str(env["src"]), "--root", str(env["root"]),
                      "--config", str(env["tmp"] / "nope.yaml")], "--config", "nope.yaml")
    assert _manifests(env["root"]) == []

"""Packaging and the files `make` writes.

* The wheel alone works: it is built from a copy of the files the build declares (so nothing beside
  them leaks in), installed into a fresh virtualenv that borrows this venv's dependencies but not its
  editable ``sav_assets``, and then, from a folder outside the repository, ``sav-assets sql`` answers
  over a tiny lake (views from the packaged ``sql/``) and a GX suite (packaged ``expectations/``)
  passes a good table and fails a bad one.
* ``make demo`` / ``make test`` / ``make dev`` write the Dagster instance config (``sav-assets
  init-home``) before anything opens the instance, and CI runs the README's ``make test``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[1]
BUILD_INPUTS = ("pyproject.toml", "setup.py", "README.md", "sav_assets", "sql", "expectations")


def _run(cmd: list[str], cwd: Path, env: dict | None = None, timeout: int = 300) -> str:
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"{cmd} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in BUILD_INPUTS:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, src / name)
    out = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
          "-q", "-w", str(out), str(src)], cwd=src)
    (whl,) = out.glob("sav_assets-*.whl")
    return whl


def test_wheel_carries_sql_and_expectations(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder, ext in (("sql", "*.sql"), ("expectations", "*.json")):
        want = {f"sav_assets/{folder}/{p.relative_to(REPO / folder).as_posix()}"
                for p in (REPO / folder).rglob(ext)}
        assert want, folder
        assert want <= names, sorted(want - names)
    assert not any(n.startswith(("sql/", "expectations/")) for n in names), "data outside the package"


@pytest.fixture(scope="module")
def wheel_venv(wheel, tmp_path_factory) -> Path:
    """A fresh venv holding only the wheel; this venv's site-packages (dependencies) come in through a
    .pth line, which adds the folder without running its .pth files (so not the editable finder)."""
    v = tmp_path_factory.mktemp("venv") / "v"
    _run([sys.executable, "-m", "venv", "--without-pip", str(v)], cwd=v.parent)
    py = v / "bin" / "python"
    site = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     cwd=v.parent).strip())
    (site / "_parent_venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # --ignore-installed: the parent venv's editable sav-assets is visible, and must stay untouched
    _run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--ignore-installed",
          str(wheel)], cwd=v.parent)
    return v


def _env(tmp_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SAV_", "PYTHON"))}
    env["DAGSTER_HOME"] = str(tmp_path / "dh")
    env["HOME"] = str(tmp_path)
    return env


def test_installed_wheel_runs_sql_and_gx(wheel_venv, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = _env(tmp_path)
    py = str(wheel_venv / "bin" / "python")

    where = _run([py, "-c", "import sav_assets, sav_assets.lib.store.sqlfiles as s, sav_assets.lib.qc.gx as g; "
                  "print(sav_assets.__file__); print(s.SQL_DIR); print(g.EXPECTATIONS_DIR)"], outside, env)
    pkg, sql_dir, exp_dir = (Path(x) for x in where.split())
    for p in (pkg, sql_dir, exp_dir):
        assert wheel_venv in p.parents, f"{p} is not the wheel's copy"
    assert sql_dir.name == "sql" and exp_dir.name == "expectations"

    lake = tmp_path / "lake"
    part = lake / "tables" / "videos" / "b1" / "part-0.parquet"
    part.parent.mkdir(parents=True)
    pq.write_table(pa.table({"video_id": ["a", "b", "c"], "status": ["ok", "ok", "quarantined"]}), part)
    out = _run([str(wheel_venv / "bin" / "sav-assets"), "sql", "--root", str(lake), "--format", "csv",
                "select status, count(*) as n from videos group by 1 order by 1"], outside, env)
    assert '"ok",2' in out and '"quarantined",1' in out, out

    script = textwrap.dedent("""
        import pyarrow as pa
        from sav_assets.lib.qc.gx import validate_table
        good = pa.table({"video_id": ["a", "b"], "split": ["train", "val"], "group_key": ["g1", "g2"],
                         "config_hash": ["h", "h"]})
        bad = pa.table({"video_id": ["a", "a"], "split": ["train", "holdout"], "group_key": ["g1", None],
                        "config_hash": ["h", "h"]})
        g, b = validate_table("splits", good), validate_table("splits", bad)
        print(g.success, len(g.outcomes), b.success, sorted(o.expectation for o in b.failed))
    """)
    got = _run([py, "-c", script], outside, env).strip().splitlines()[-1]
    assert got.startswith("True 5 False"), got
    for expectation in ("expect_column_values_to_be_unique", "expect_column_values_to_be_in_set",
                        "expect_column_values_to_not_be_null"):
        assert expectation in got


def test_repo_checkout_reads_the_top_level_folders():
    from sav_assets.lib.qc.gx import EXPECTATIONS_DIR
    from sav_assets.lib.store.sqlfiles import SQL_DIR, shipped_dir

    assert SQL_DIR == REPO / "sql" and EXPECTATIONS_DIR == REPO / "expectations"
    assert shipped_dir("sql") == SQL_DIR
    assert not (REPO / "sav_assets" / "sql").exists(), "a packaged copy in the source tree would shadow sql/"


# --- the Makefile ---------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
@pytest.mark.parametrize(("target", "command"), [("demo", "sav-assets demo"), ("test", "-m pytest"),
                                                  ("dev", "dagster dev")])
def test_make_writes_the_instance_config_first(target, command):
    """`make demo/test/dev` write $DAGSTER_HOME/dagster.yaml (the gpu pool limit, see
    tests/defs/test_instance_config.py) before they run anything that opens the instance."""
    p = subprocess.run(["make", "-n", "-C", str(REPO), target], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    init = [i for i, line in enumerate(lines) if "sav-assets init-home" in line]
    run = [i for i, line in enumerate(lines) if command in line]
    assert init and run and init[0] < run[0], p.stdout


def test_ci_runs_the_readme_test_command():
    assert "make test" in (REPO / ".ci" / "run").read_text().split("\n", 3)[-1]
    readme = (REPO / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme

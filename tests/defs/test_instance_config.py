"""`sav-assets init-home`: the instance config `make` writes gives the `gpu` pool (masklets) a limit of 1,
and an existing dagster.yaml is never overwritten."""

import os
import subprocess
import sys

from sav_assets.cli import INSTANCE_CONFIG, main

PROBE = """
import dagster as dg
with dg.DagsterInstance.get() as instance:
    print(instance.get_concurrency_config().pool_config.default_pool_limit)
"""


def test_init_home_writes_pool_limit_once(tmp_path, monkeypatch, capsys):
    home = tmp_path / "home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    assert main(["init-home"]) == 0
    assert (home / "dagster.yaml").read_text() == INSTANCE_CONFIG
    assert "written" in capsys.readouterr().out
    # the instance Dagster loads from it limits every pool (the gpu one) to 1
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "DAGSTER_HOME": str(home)})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "1"
    # a user's own instance config is kept
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    assert main(["init-home"]) == 0
    assert (home / "dagster.yaml").read_text() == "telemetry:\n  enabled: false\n"
    assert "kept" in capsys.readouterr().out

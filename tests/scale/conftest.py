"""Run a multi-node Ray scenario (cluster_body.py) inside a private network namespace.

``unshare -n`` gives the body a network namespace of its own with only loopback up, so Ray cannot
advertise or listen on the machine's address: every node, port and dashboard is on 127.0.0.1 and
invisible outside. Teardown kills every process still in that namespace (Ray daemonises its nodes,
so they are not children of the body) and checks that no ``~/.ray/auth_token`` was left behind.
Without ``unshare`` or Ray the tests skip with the reason, except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

BODY = Path(__file__).with_name("cluster_body.py")


def _require(ok: bool, reason: str) -> None:
    if ok:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (required under CI=true)")
    pytest.skip(reason)


def _kill_namespace(netns: str) -> int:
    """SIGKILL every process whose network namespace is ``netns`` (only this test's own processes)."""
    killed = 0
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            if os.readlink(f"/proc/{pid}/ns/net") == netns and int(pid) != os.getpid():
                os.kill(int(pid), signal.SIGKILL)
                killed += 1
        except (FileNotFoundError, PermissionError, ProcessLookupError):
            continue
    return killed


@pytest.fixture()
def cluster_run(tmp_path):
    """``cluster_run("kill"|"clean")`` -> the body's result.json, as a dict."""
    _require(shutil.which("unshare") is not None and shutil.which("ip") is not None,
             "unshare/ip (util-linux, iproute2) not installed: the cluster needs a private network namespace")
    try:
        import ray  # noqa: F401
    except ImportError:
        _require(False, "Ray is not installed: pip install -e '.[ray]'")
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True)
    _require(probe.returncode == 0, f"unshare -n is not permitted here: {probe.stderr.strip()}")
    token = Path.home() / ".ray" / "auth_token"
    token_before = token.exists()
    netns = []

    def run(scenario: str) -> dict:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
               "DAGSTER_HOME": str(tmp_path / "dh"), "SAV_DEVICE": ""}
        env.pop("SAV_RAY_ADDRESS", None)
        (tmp_path / "dh").mkdir(exist_ok=True)
        cmd = f"ip link set lo up && exec {sys.executable} {BODY} {tmp_path} {scenario}"
        proc = subprocess.run(["unshare", "-n", "sh", "-c", cmd], env=env, capture_output=True, text=True, timeout=600)
        out = tmp_path / "result.json"
        if proc.returncode != 0 or not out.exists():
            pytest.fail(f"cluster body failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
        result = json.loads(out.read_text())
        netns.append(result["netns"])
        return result

    yield run
    for ns in netns:
        _kill_namespace(ns)
    assert token_before or not token.exists(), "a Ray auth token was left in ~/.ray"

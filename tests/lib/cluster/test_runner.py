"""lib/cluster: bin-packing whole items, the in-process default (Ray never imported), the shared-filesystem
guard, and a real embedded Ray: units collected as they finish, a unit whose worker dies every time is lost."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from sav_assets.lib.cluster.runner import (
    ClusterError,
    ClusterSettings,
    InlineRunner,
    connect,
    pack_units,
    require_shared,
)


def test_pack_units_keeps_items_whole_and_balances_weight():
    w = {"a": 100, "b": 90, "c": 30, "d": 30, "e": 20, "f": 10}
    units = pack_units(w, max_weight=100, min_units=2)
    assert len(units) == 3                                  # ceil(280 / 100)
    assert sorted(i for u in units for i in u.items) == sorted(w)   # every item once, never split
    assert sorted(u.weight for u in units) == [90, 90, 100]
    assert pack_units(w, 100, 2) == units                   # deterministic
    assert len(pack_units(w, 10_000, min_units=4)) == 4     # at least one unit per worker
    assert len(pack_units({"x": 5}, 1, min_units=8)) == 1   # never more units than items
    assert pack_units({}, 100) == []


def test_remote_cluster_with_a_local_root_fails_fast_unless_shared():
    remote = ClusterSettings(address="10.0.0.5:6379")
    with pytest.raises(ClusterError, match=r"the lake root /data/lake is a local path.*SAV_SHARED_FS=1"):
        require_shared(remote, {"lake": "/data/lake", "source": None})
    require_shared(remote, {"lake": None, "source": None})                       # s3:// roots
    require_shared(ClusterSettings(address="10.0.0.5:6379", shared_fs=True), {"lake": "/data/lake"})
    require_shared(ClusterSettings(address="local"), {"lake": "/data/lake"})    # same machine


def test_default_runs_inline_and_never_imports_ray():
    code = ("import sys\nfrom sav_assets.lib.cluster.runner import ClusterSettings, connect, pack_units\n"
            "r = connect(ClusterSettings())\n"
            "out = r.map(lambda items, k: [i * k for i in items], pack_units({'ab': 1, 'c': 1}, 1), (2,))\n"
            "print(sorted(x for o in out for x in o.result), r.kind, 'ray' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.split() == ["['abab',", "'cc']", "inline", "False"]
    assert isinstance(connect(ClusterSettings(address=None)), InlineRunner)


def _square_all(items, offset):
    return {i: int(i) ** 2 + offset for i in items}


def _die(items):
    os._exit(3)          # the worker process dies: Ray sees a crashed worker, not an exception


@pytest.mark.slow
def test_local_ray_runs_units_and_reports_a_unit_whose_retries_ran_out_as_lost():
    pytest.importorskip("ray")
    runner = connect(ClusterSettings(address="local", max_retries=1))
    try:
        assert os.environ["RAY_AUTH_MODE"] == "disabled"
        units = pack_units({str(i): 1 for i in range(6)}, 2)
        seen = []
        out = runner.map(_square_all, units, (1,), on_done=lambda o: seen.append(o.unit.index))
        assert sorted(seen) == [u.index for u in units]
        assert {k: v for o in out for k, v in o.result.items()} == {str(i): i * i + 1 for i in range(6)}
        assert all(o.lost is None and o.node and o.attempts == 1 for o in out)
        [lost] = runner.map(_die, units[:1])
        assert lost.result is None and "WorkerCrashedError" in lost.lost and lost.attempts == 2
    finally:
        runner.close()
    import ray

    assert not ray.is_initialized()

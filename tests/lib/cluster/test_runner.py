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


def _by_value() -> None:
    """Ray workers cannot import this test module: its functions travel by value."""
    ray = pytest.importorskip("ray")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _square_all(items, offset):
    return {i: int(i) ** 2 + offset for i in items}


def _die(items):
    os._exit(3)          # the worker process dies: Ray sees a crashed worker, not an exception


def _die_once(items, marker):
    """Dies on the first attempt (leaving ``marker``), succeeds on the retry."""
    if not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(3)
    return sorted(items)


@pytest.mark.slow
def test_local_ray_runs_units_and_reports_a_unit_whose_retries_ran_out_as_lost(tmp_path):
    _by_value()
    runner = connect(ClusterSettings(address="local", max_retries=1))
    try:
        assert os.environ["RAY_AUTH_MODE"] == "disabled"
        units = pack_units({str(i): 1 for i in range(6)}, 2)
        seen = []
        out = runner.map(_square_all, units, (1,), on_done=lambda o: seen.append(o.unit.index))
        assert sorted(seen) == [u.index for u in units]
        assert [o.lost for o in out] == [None] * len(units)
        assert {k: v for o in out for k, v in o.result.items()} == {str(i): i * i + 1 for i in range(6)}
        assert all(o.lost is None and o.node and o.attempts == 1 for o in out)
        [lost] = runner.map(_die, units[:1])
        assert lost.result is None and "WorkerCrashedError" in lost.lost and lost.attempts == 2
        [retried] = runner.map(_die_once, units[:1], (str(tmp_path / "died"),))
        assert retried.lost is None and retried.result == units[0].items and retried.attempts == 2
    finally:
        runner.close()
    import ray

    assert not ray.is_initialized()


@pytest.mark.slow
def test_local_starts_its_own_ray_even_when_another_cluster_is_advertised(monkeypatch):
    """``local`` never joins a cluster found in the environment (RAY_ADDRESS, a running ``ray start``,
    /tmp/ray/ray_current_cluster): Ray's own default would, and a test cluster in another network
    namespace or a user's cluster would then get this step's units (or hang it)."""
    _by_value()
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:9")      # nothing listens there
    runner = connect(ClusterSettings(address="local"))
    try:
        import ray

        assert runner.embedded and not ray.get_runtime_context().gcs_address.endswith(":9")
        [o] = runner.map(_square_all, pack_units({"3": 1}, 1), (0,))
        assert o.result == {"3": 9} and o.lost is None
    finally:
        runner.close()

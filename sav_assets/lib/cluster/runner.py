"""Run work units in-process or as Ray tasks: connect, bin-pack, submit, collect, lost units.

``connect(ClusterSettings(address=...))`` picks the runner once per step:

* ``address=None`` (``SAV_RAY_ADDRESS`` unset): :class:`InlineRunner`, units run one after the other
  in this process; Ray is never imported.
* ``"local"``: an embedded single-node Ray (``ray.init`` on 127.0.0.1) that uses every GPU and CPU of
  this machine; shut down by :meth:`RayRunner.close`. Always a new one: never a cluster Ray would
  otherwise find (``RAY_ADDRESS``, a running ``ray start``).
* ``"host:port"``: join an existing cluster as a driver (``ray start --head`` / ``--address``). Its
  workers run on other machines, so every path they write or read must be shared: a local lake or
  source root is refused before anything is submitted unless ``shared_fs`` declares one
  (:func:`require_shared`).

Items (videos, objects) are packed whole into units by weight (:func:`pack_units`: a video is never
split, the tracker carries state across its chunks). :meth:`Runner.map` submits one task per unit
(``num_gpus=1`` or ``num_cpus=1``; ``SPREAD`` scheduling, so units go to every node rather than
filling one first; ``max_retries``: a task whose node or worker dies is run again on another node),
collects each unit's small summary as it finishes (``on_done``) and turns a unit whose retries ran
out into :class:`UnitOutcome` with ``lost`` set; the caller records its unfinished items as failures
and the batch goes on. An exception raised by the unit's own code is a bug and is raised.

Ray's auth mode is set explicitly (``RAY_AUTH_MODE``, default ``disabled``): Ray 2.60 turns token auth
on by default and a stale ``~/.ray/auth_token`` otherwise breaks later clusters.
"""

from __future__ import annotations

import math
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

INLINE_NODE = "inline"


class ClusterError(RuntimeError):
    """The cluster cannot be used as configured (a local root with a remote cluster, Ray missing)."""


@dataclass(frozen=True)
class ClusterSettings:
    address: str | None = None   # None: in-process; "local": embedded Ray; "host:port": existing cluster
    shared_fs: bool = False      # a remote cluster's workers see the same local paths as this machine
    max_retries: int = 3         # times a unit is run again after its node or worker died
    auth_mode: str = "disabled"  # RAY_AUTH_MODE for the driver (and the embedded cluster)

    @property
    def remote(self) -> bool:
        return self.address not in (None, "", "local")


@dataclass
class Unit:
    index: int
    items: list[str]
    weight: float


@dataclass
class UnitOutcome:
    unit: Unit
    result: Any = None          # what the unit's function returned (a small summary)
    lost: str | None = None     # why the unit is lost, once its retries ran out
    node: str = INLINE_NODE     # Ray node id (or "inline")
    host: str = ""
    seconds: float = 0.0        # the successful attempt's wall time on its worker
    attempts: int = 1           # attempts Ray made (1 when unknown or never retried)


def pack_units(weights: dict[str, float], max_weight: float, min_units: int = 1) -> list[Unit]:
    """Whole items into units: ``max(min_units, ceil(total / max_weight))`` bins (never more than there
    are items), heaviest item first into the lightest bin; deterministic for the same input."""
    if not weights:
        return []
    total = sum(max(0.0, float(w)) for w in weights.values())
    n = max(1, min_units, math.ceil(total / max_weight) if max_weight > 0 else 1)
    n = min(n, len(weights))
    bins: list[list[str]] = [[] for _ in range(n)]
    load = [0.0] * n
    for key in sorted(weights, key=lambda k: (-float(weights[k]), k)):
        i = min(range(n), key=lambda j: (load[j], j))
        bins[i].append(key)
        load[i] += max(0.0, float(weights[key]))
    return [Unit(i, sorted(b), load[i]) for i, b in enumerate(bins) if b]


def require_shared(settings: ClusterSettings, local_roots: dict[str, str | None]) -> None:
    """Refuse a remote cluster when a root its workers use is a local path and no shared filesystem
    is declared: each worker would write to (or read from) its own disk. ``local_roots`` maps a name
    ("lake", "source") to the root's local path, or None when it is an object store."""
    if not settings.remote or settings.shared_fs:
        return
    local = {k: v for k, v in local_roots.items() if v is not None}
    if local:
        names = ", ".join(f"the {k} root {v}" for k, v in sorted(local.items()))
        raise ClusterError(
            f"SAV_RAY_ADDRESS={settings.address} is a remote Ray cluster, but {names} is a local path: its "
            "workers would write to their own disks. Use an s3:// lake and source, or set SAV_SHARED_FS=1 when "
            "every node mounts these paths at the same place.")


class InlineRunner:
    """Every unit in this process, one after the other (the default; Ray is never imported)."""

    kind = "inline"
    gpus = 0

    def workers(self, gpu: bool = False) -> int:
        return 1

    def map(self, fn: Callable, units: Sequence[Unit], args: tuple = (), *, gpu: bool = False,
            on_done: Callable[[UnitOutcome], None] | None = None) -> list[UnitOutcome]:
        out = []
        for unit in units:
            t0 = time.time()
            res = fn(unit.items, *args)
            o = UnitOutcome(unit, res, node=INLINE_NODE, host=socket.gethostname(), seconds=time.time() - t0)
            out.append(o)
            if on_done:
                on_done(o)
        return out

    def close(self) -> None:
        pass


def _run_unit(fn: Callable, items: list[str], *args) -> dict:
    """The Ray task body: the unit's function, plus where and how long it ran."""
    import ray

    t0 = time.time()
    res = fn(items, *args)
    return {"result": res, "node": ray.get_runtime_context().get_node_id(), "host": socket.gethostname(),
            "seconds": time.time() - t0, "attempts": _attempt() + 1}


def _attempt() -> int:
    """This task's attempt number (0: first), from the worker itself: Ray's state API would have to
    find the cluster again (``RAY_ADDRESS`` overrides the address given to it) and needs its dashboard."""
    import ray

    get = getattr(ray._private.worker.global_worker.core_worker, "get_current_task_attempt_number", None)
    return int(get()) if get else 0


def _lost_errors() -> tuple[type[BaseException], ...]:
    """Ray's errors for a task that could not finish for reasons outside its code (node or worker death,
    out of memory, nowhere to run): the unit is lost. ``RayTaskError`` (its own exception) is not here."""
    from ray import exceptions as rx

    return (rx.WorkerCrashedError, rx.NodeDiedError, rx.ObjectLostError, rx.OutOfMemoryError,
            rx.TaskUnschedulableError, rx.LocalRayletDiedError, rx.RaySystemError)


@dataclass
class RayRunner:
    """Units as Ray tasks on the cluster this driver joined (or the embedded one it started)."""

    settings: ClusterSettings
    embedded: bool = False
    kind: str = "ray"

    @property
    def gpus(self) -> int:
        import ray

        return int(ray.cluster_resources().get("GPU", 0))

    def workers(self, gpu: bool = False) -> int:
        """Units that can run at once: the cluster's GPUs (``gpu``) or its CPUs."""
        import ray

        return max(1, int(ray.cluster_resources().get("GPU" if gpu else "CPU", 1)))

    def map(self, fn: Callable, units: Sequence[Unit], args: tuple = (), *, gpu: bool = False,
            on_done: Callable[[UnitOutcome], None] | None = None) -> list[UnitOutcome]:
        import ray

        remote = ray.remote(_run_unit)
        tag = f"sav-{os.getpid()}-{time.time_ns()}"
        shared = [ray.put(a) for a in args]     # once per map, not once per unit
        pending = {}
        for unit in units:
            opts = {"num_gpus": 1, "num_cpus": 0} if gpu else {"num_cpus": 1}
            name = f"{tag}-unit{unit.index}"
            ref = remote.options(max_retries=self.settings.max_retries, name=name, scheduling_strategy="SPREAD",
                                 **opts).remote(fn, unit.items, *shared)
            pending[ref] = unit
        out: list[UnitOutcome] = []
        while pending:
            [ref], _ = ray.wait(list(pending), num_returns=1)
            unit = pending.pop(ref)
            try:
                r = ray.get(ref)
                o = UnitOutcome(unit, r["result"], node=r["node"], host=r["host"], seconds=r["seconds"],
                                attempts=r["attempts"])
            except _lost_errors() as e:
                o = UnitOutcome(unit, lost=f"{type(e).__name__}: {e}"[:1000], node="",
                                attempts=self.settings.max_retries + 1)
            out.append(o)
            if on_done:
                on_done(o)
        return out

    def close(self) -> None:
        import ray

        if self.embedded:
            ray.shutdown()


def connect(settings: ClusterSettings) -> InlineRunner | RayRunner:
    """The runner for ``settings.address``: in-process (None), embedded Ray ("local"), or a cluster."""
    if not settings.address:
        return InlineRunner()
    try:
        import ray
    except ImportError as e:
        raise ClusterError(f"SAV_RAY_ADDRESS={settings.address} needs Ray: pip install 'sav-assets[ray]'") from e
    os.environ["RAY_AUTH_MODE"] = settings.auth_mode
    if ray.is_initialized():
        return RayRunner(settings, embedded=False)
    if settings.address == "local":
        # address="local": a new Ray of our own; ray.init() would join any cluster it finds (RAY_ADDRESS,
        # a running `ray start`, /tmp/ray/ray_current_cluster)
        ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=True, dashboard_host="127.0.0.1",
                 log_to_driver=False, configure_logging=False)
        return RayRunner(settings, embedded=True)
    ray.init(address=settings.address, log_to_driver=False, configure_logging=False)
    return RayRunner(settings, embedded=True)   # the driver's connection closes with the step

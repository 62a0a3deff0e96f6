"""The body of the multi-node tests, run inside a private network namespace (see conftest.py).

``python cluster_body.py <workdir> <kill|clean>``: builds a small lake (generated videos, ingested and
quality-checked by the real asset bodies), labels it in-process (``SAV_RAY_ADDRESS`` unset), starts a
real 3-node Ray cluster on 127.0.0.1 (a head with no GPU, two nodes declaring one GPU each), labels a
copy of the same lake through the cluster with the real ``masklets`` asset and, for ``kill``, kills
one worker node (its raylet and every worker under it) while it runs a unit. Everything the test
asserts on is written to ``<workdir>/result.json``; the cluster is stopped (``ray stop --force``) at
the end whatever happens.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg

from sav_assets.defs.ingest import IngestConfig, QualityConfig, raw_videos, video_quality
from sav_assets.defs.label import LabelingConfig, masklets
from sav_assets.defs.partitions import batches
from sav_assets.lib.ingest.batches import claim_batch, plan_batch
from sav_assets.lib.ingest.demo import write_demo_corpus
from sav_assets.lib.store.lake import Lake
from sav_assets.lib.store.tables import LABEL_RUNS, MASKLET_FRAMES
from sav_assets.resources import LakeResource, SAM2Resource, SourceResource

RAY = str(Path(sys.executable).with_name("ray"))
HEAD_PORT = 6390
NODES = {  # name: (node manager port, first port of its own range)
    "head": (6400, 20000), "node_a": (6401, 21000), "node_b": (6402, 22000)}
LABELING = LabelingConfig(run_sam2=True, points_per_side=4, points_per_batch=16, pred_iou_thresh=0.0,
                          stability_score_thresh=0.0, max_objects=4, reseed_every=4, isolate_decode=False,
                          prefetch=False, cycle_check=False, min_area_frac=0.0, overlay_width=0, unit_frames=1)
SAM2 = SAM2Resource(config="tiny", image_size=128, device="auto")


def _ports(name: str) -> list[str]:
    nm, base = NODES[name]
    return [f"--node-manager-port={nm}", f"--object-manager-port={base}", f"--min-worker-port={base + 100}",
            f"--max-worker-port={base + 199}", f"--dashboard-agent-listen-port={base + 1}",
            f"--dashboard-agent-grpc-port={base + 2}", f"--metrics-export-port={base + 3}",
            f"--runtime-env-agent-port={base + 4}"]


def start_cluster() -> None:
    common = ["--node-ip-address=127.0.0.1", "--disable-usage-stats", "--num-cpus=1"]
    subprocess.run([RAY, "start", "--head", f"--port={HEAD_PORT}", "--num-gpus=0", "--include-dashboard=true",
                    "--dashboard-host=127.0.0.1", "--dashboard-port=8265", *common, *_ports("head")], check=True)
    for name in ("node_a", "node_b"):
        subprocess.run([RAY, "start", f"--address=127.0.0.1:{HEAD_PORT}", "--num-gpus=1",
                        f"--resources={json.dumps({name: 1})}", *common, *_ports(name)], check=True)


def _build_lake(base: Path, instance) -> tuple[str, Path]:
    src, root = base / "src", base / "base_lake"
    write_demo_corpus(src, n_videos=4, seconds=2.0, width=160, height=120, seed=7, include_bad=False)
    lake_res, source_res = LakeResource(root=str(root)), SourceResource(uri=str(src), settle_seconds=0)
    plan = plan_batch(source_res.source(), lake_res.lake(), settle_seconds=0)
    batch_id = claim_batch(lake_res.lake(), plan.manifest()).batch_id
    instance.add_dynamic_partitions(batches.name, [batch_id])
    ctx = dg.build_asset_context(partition_key=batch_id, instance=instance)
    raw_videos(context=ctx, config=IngestConfig(), lake=lake_res, source=source_res)
    ctx = dg.build_asset_context(partition_key=batch_id, instance=instance)
    video_quality(context=ctx, config=QualityConfig(min_short_side=100, min_duration_s=0.5, dup_max_hamming=0),
                  lake=lake_res, source=source_res)
    return batch_id, src


def _label(root: Path, src: Path, batch_id: str, instance) -> dict:
    ctx = dg.build_asset_context(partition_key=batch_id, instance=instance)
    res = masklets(context=ctx, config=LABELING, lake=LakeResource(root=str(root)),
                   source=SourceResource(uri=str(src), settle_seconds=0), sam2=SAM2)
    md = {k: getattr(v, "value", v) for k, v in res.metadata.items()}
    return {k: v for k, v in md.items() if isinstance(v, (int, float, str, bool)) and k not in ("sample_overlay", "filmstrips")}


def _tables(root: Path, batch_id: str) -> dict:
    lk = Lake(root)
    runs = lk.read_table("label_runs", batches=[batch_id], schema=LABEL_RUNS).to_pylist()
    frames = lk.read_table("masklet_frames", batches=[batch_id], schema=MASKLET_FRAMES).to_pylist()
    return {"label_runs": [{k: r[k] for k in ("video_id", "status", "error_class", "label_key")} for r in runs],
            "masklet_frames": sorted([r["video_id"], r["masklet_type"], r["masklet_id"], r["frame_idx"], r["counts"]]
                                     for r in frames),
            # a consolidated part is named by its generation: compared by folder
            "parts": sorted(re.sub(r"/consolidated/[^/]+$", "/consolidated/*", p)
                            for p in lk.table_parts("masklet_frames", [batch_id]))}


def _kill_node_while_running(node_name: str, done: threading.Event, out: dict) -> None:
    """Wait until a labeling unit runs on ``node_name``, then SIGKILL its raylet and everything under it."""
    import psutil
    from ray.util.state import list_nodes, list_tasks

    node_id = next(n.node_id for n in list_nodes(address="http://127.0.0.1:8265") if node_name in (n.resources_total or {}))
    while not done.is_set():
        running = [t for t in list_tasks(address="http://127.0.0.1:8265", filters=[("state", "=", "RUNNING")],
                                         raise_on_missing_output=False) if t.node_id == node_id and "-unit" in (t.name or "")]
        if running:
            time.sleep(2.0)   # the unit has started: the model is loading or labeling
            raylet = next(p for p in psutil.process_iter(["cmdline"])
                          if any(a == f"--node_manager_port={NODES[node_name][0]}" for a in (p.info["cmdline"] or [])))
            procs = [raylet, *raylet.children(recursive=True)]
            for p in procs:
                p.send_signal(signal.SIGKILL)
            out.update(killed_node=node_id, killed_pids=len(procs), killed_at=time.time())
            return
        time.sleep(0.2)


def main(workdir: str, scenario: str) -> None:
    base = Path(workdir)
    result: dict = {"netns": os.readlink("/proc/self/ns/net")}
    with dg.instance_for_test() as instance:
        batch_id, src = _build_lake(base, instance)
        for name in ("inline_lake", "ray_lake"):
            shutil.copytree(base / "base_lake", base / name)
        os.environ.pop("SAV_RAY_ADDRESS", None)
        t0 = time.time()
        result["inline_md"] = _label(base / "inline_lake", src, batch_id, instance)
        result["inline_s"] = time.time() - t0
        result["inline"] = _tables(base / "inline_lake", batch_id)
        try:
            start_cluster()
            os.environ.update(SAV_RAY_ADDRESS=f"127.0.0.1:{HEAD_PORT}", SAV_SHARED_FS="1")
            done, kill = threading.Event(), {}
            if scenario == "kill":
                threading.Thread(target=_kill_node_while_running, args=("node_b", done, kill), daemon=True).start()
            t0 = time.time()
            try:
                result["ray_md"] = _label(base / "ray_lake", src, batch_id, instance)
            finally:
                done.set()
            result["ray_s"], result["kill"] = time.time() - t0, kill
            result["ray"] = _tables(base / "ray_lake", batch_id)
            result["tasks"], result["head"] = _task_nodes()
        finally:
            subprocess.run([RAY, "stop", "--force"], check=False)
    (base / "result.json").write_text(json.dumps(result, default=str))


def _task_nodes() -> tuple[list[dict], str]:
    """Every attempt of every labeling unit (its node and attempt number) and the head's node id."""
    from ray.util.state import list_nodes, list_tasks

    head = next(n.node_id for n in list_nodes(address="http://127.0.0.1:8265") if n.is_head_node)
    tasks = [{"name": t.name, "node": t.node_id, "attempt": t.attempt_number, "state": t.state}
             for t in list_tasks(address="http://127.0.0.1:8265", limit=10_000, raise_on_missing_output=False)
             if "-unit" in (t.name or "")]
    return tasks, head


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

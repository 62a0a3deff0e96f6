"""``SAV_RAY_ADDRESS=local`` gives the same tables as the default in-process run: the real ``raw_videos``,
``video_quality`` and ``masklets`` asset bodies on the same demo corpus (bad files included), each run
into its own lake; every table's rows equal, column for column, except times, durations and paths."""

from __future__ import annotations

import re

import dagster as dg
import pytest

from sav_assets.defs.ingest import IngestConfig, QualityConfig, raw_videos, video_quality
from sav_assets.defs.label import LabelingConfig, masklets
from sav_assets.defs.partitions import batches
from sav_assets.lib.ingest.batches import claim_batch, plan_batch
from sav_assets.lib.ingest.demo import write_demo_corpus
from sav_assets.lib.store.lake import Lake
from sav_assets.resources import LakeResource, SAM2Resource, SourceResource

pytestmark = pytest.mark.slow

VOLATILE = re.compile(r"(_at$|seconds|_s$|_mb$|_uri$|path$)")
LABELING = LabelingConfig(run_sam2=True, points_per_side=4, points_per_batch=16, pred_iou_thresh=0.0,
                          stability_score_thresh=0.0, max_objects=4, reseed_every=4, isolate_decode=False,
                          prefetch=False, cycle_check=False, min_area_frac=0.0, overlay_width=0, unit_frames=1)


def _pipeline(root, src, instance) -> dict:
    lake_res, source_res = LakeResource(root=str(root)), SourceResource(uri=str(src), settle_seconds=0)
    plan = plan_batch(source_res.source(), lake_res.lake(), settle_seconds=0)
    batch_id = claim_batch(lake_res.lake(), plan.manifest()).batch_id
    instance.add_dynamic_partitions(batches.name, [batch_id])

    def ctx():
        return dg.build_asset_context(partition_key=batch_id, instance=instance)

    raw_videos(context=ctx(), config=IngestConfig(), lake=lake_res, source=source_res)
    video_quality(context=ctx(), config=QualityConfig(min_short_side=100, min_duration_s=0.5), lake=lake_res,
                  source=source_res)
    res = masklets(context=ctx(), config=LABELING, lake=lake_res, source=source_res,
                   sam2=SAM2Resource(config="tiny", image_size=128, device="cpu"))
    return {k: getattr(v, "value", v) for k, v in res.metadata.items()}


def _tables(root) -> dict[str, list[str]]:
    lake = Lake(root)
    out = {}
    for t in sorted({r.split("/")[1] for r in lake.list("tables") if r.endswith(".parquet")}):
        tbl = lake.read_table(t)
        cols = [c for c in tbl.column_names if not VOLATILE.search(c)]
        out[t] = sorted(repr([r[c] for c in cols]) for r in tbl.select(cols).to_pylist())
    return out


def test_local_ray_gives_the_same_tables_as_the_default(tmp_path, monkeypatch):
    pytest.importorskip("ray")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    src = tmp_path / "src"
    write_demo_corpus(src, n_videos=3, seconds=1.5, width=160, height=120, seed=5, include_bad=True)
    import torch

    threads = torch.get_num_threads()
    with dg.instance_for_test() as instance:
        monkeypatch.delenv("SAV_RAY_ADDRESS", raising=False)
        # Ray runs a num_cpus=1 unit with one torch thread; another thread count sums floats in another
        # order, and random-weight logits sit near the mask threshold: a few pixels would differ
        torch.set_num_threads(1)
        try:
            default_md = _pipeline(tmp_path / "default", src, instance)
        finally:
            torch.set_num_threads(threads)
        monkeypatch.setenv("SAV_RAY_ADDRESS", "local")
        local_md = _pipeline(tmp_path / "local", src, instance)
    default, local = _tables(tmp_path / "default"), _tables(tmp_path / "local")
    assert {"videos", "source_objects", "video_quality", "masklets", "masklet_frames", "label_runs"} <= set(default)
    assert set(local) == set(default)
    assert [t for t in default if local[t] != default[t]] == []
    assert len(default["label_runs"]) >= 3 and len(default["masklet_frames"]) > 0
    assert default_md["units"] == 1 and local_md["units"] == 3          # one unit per video on Ray
    assert "inline" in default_md["throughput_by_node"] and "inline" not in local_md["throughput_by_node"]

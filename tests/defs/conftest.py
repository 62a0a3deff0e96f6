"""A tiny local lake built by calling every asset body directly (``dg.build_asset_context``), in graph
order, on one batch of the demo corpus: 3 short 320x240 videos with exact SA-V manual masks (imported,
so no SAM 2 run is needed), an empty file and a non-video file. Each asset's MaterializeResult is kept
for the per-module tests (test_ingest.py, test_label.py, ...) to assert on."""

from __future__ import annotations

import dagster as dg
import pytest

from sav_assets.defs.analytics import CompactionConfig, compacted_tables, dataset_statistics
from sav_assets.defs.dataset import ShardsConfig, SplitsConfig, eval_layout, splits, training_shards
from sav_assets.defs.ingest import IngestConfig, QualityConfig, raw_videos, video_quality
from sav_assets.defs.label import LabelingConfig, masklets, sav_export
from sav_assets.defs.partitions import batches
from sav_assets.defs.qc import QCConfig, masklet_qc
from sav_assets.lib.ingest.batches import claim_batch, plan_batch
from sav_assets.resources import LakeResource, SAM2Resource, SourceResource

# thresholds opened for 2 s, 320x240 demo videos
QUALITY = QualityConfig(min_short_side=200, min_duration_s=1.0, dup_max_hamming=0)


class TinyLake:
    def __init__(self, base, instance):
        from sav_assets.lib.ingest.demo import write_demo_corpus

        self.src, self.root = base / "src", base / "lake"
        write_demo_corpus(self.src, n_videos=3, seconds=2.0, width=320, height=240, seed=5, include_bad=True)
        self.instance = instance
        self.lake_res = LakeResource(root=str(self.root))
        self.source_res = SourceResource(uri=str(self.src), settle_seconds=0)
        plan = plan_batch(self.source_res.source(), self.lake_res.lake(), settle_seconds=0)
        self.batch_id = claim_batch(self.lake_res.lake(), plan.manifest()).batch_id
        instance.add_dynamic_partitions(batches.name, [self.batch_id])
        self.lake = self.lake_res.lake()
        self.results: dict[str, dg.MaterializeResult] = {}

    def context(self, **kw):
        return dg.build_asset_context(partition_key=self.batch_id, instance=self.instance, **kw)

    def run(self, asset, **kwargs) -> dg.MaterializeResult:
        """Call the asset body with a context and the resources it asks for; keep and return its result."""
        resources = {"lake": self.lake_res, "source": self.source_res, "sam2": SAM2Resource()}
        res = asset(context=self.context(), **{k: resources[k] for k in asset.required_resource_keys if k in resources}, **kwargs)
        assert isinstance(res, dg.MaterializeResult)
        self.results[asset.key.to_user_string()] = res
        return res

    def md(self, asset_name: str) -> dict:
        """The metadata of an asset's result, values unwrapped (MetadataValue.value), by key."""
        return {k: getattr(v, "value", v) for k, v in (self.results[asset_name].metadata or {}).items()}


def run_pipeline(t: TinyLake) -> None:
    """Every asset body of one batch, in order, on imported SA-V masks (no SAM 2): ingest to shards."""
    t.run(raw_videos, config=IngestConfig())
    t.run(video_quality, config=QUALITY)
    t.run(masklets, config=LabelingConfig(run_sam2=False))
    t.run(sav_export)
    t.run(masklet_qc, config=QCConfig())
    t.run(splits, config=SplitsConfig(val_target=1))
    t.run(eval_layout)
    t.run(training_shards, config=ShardsConfig(window=4))


@pytest.fixture(scope="session")
def tiny_lake(tmp_path_factory):
    base = tmp_path_factory.mktemp("tiny_lake")
    with dg.instance_for_test() as instance:
        t = TinyLake(base, instance)
        run_pipeline(t)
        t.run(compacted_tables, config=CompactionConfig(min_new_parts=1))
        t.run(dataset_statistics)
        yield t


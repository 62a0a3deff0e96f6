"""One source for every tunable: each run-config class shows the lib's defaults (never null standing for
"the library default") and builds exactly the lib's default object."""

import dataclasses

import pytest

from sav_assets.defs.analytics import CompactionConfig
from sav_assets.defs.dataset import ShardsConfig, SplitsConfig
from sav_assets.defs.ingest import IngestConfig, QualityConfig
from sav_assets.defs.label import LabelingConfig
from sav_assets.defs.qc import QCConfig
from sav_assets.defs.training import EvaluationConfig, FinetuneRunConfig
from sav_assets.defs.tunables import lib_default
from sav_assets.lib.dataset.sampler import SamplerConfig
from sav_assets.lib.dataset.selection import train_inputs
from sav_assets.lib.dataset.shards import ShardConfig
from sav_assets.lib.dataset.splits import SplitConfig
from sav_assets.lib.ingest.ingest_batch import ingest_batch
from sav_assets.lib.ingest.quality import QualityThresholds
from sav_assets.lib.label.batch import label_batch
from sav_assets.lib.label.config import LabelerConfig
from sav_assets.lib.label.runners import run_labeling
from sav_assets.lib.qc.masklet_qc import QCThresholds
from sav_assets.lib.store.compaction import DEFAULT_TABLES, compact_table
from sav_assets.lib.train.finetune import FinetuneConfig
from sav_assets.lib.train.registry import EvaluationPolicy
from sav_assets.lib.video.probe import ProbeLimits

# (run config, lib dataclass, how the run config builds it, run-config names of renamed lib fields)
PAIRS = [
    (IngestConfig, ProbeLimits, lambda c: c.probe_limits(), {"timeout_s": "probe_timeout_s",
                                                             "memory_mb": "probe_memory_mb"}),
    (QualityConfig, QualityThresholds, lambda c: c.thresholds(), {}),
    (LabelingConfig, LabelerConfig, lambda c: c.labeler_config(), {}),
    (QCConfig, QCThresholds, lambda c: c.thresholds(), {}),
    (SplitsConfig, SplitConfig, lambda c: c.split_config(), {}),
    (ShardsConfig, ShardConfig, lambda c: c.shard_config(), {}),
    (FinetuneRunConfig, FinetuneConfig, lambda c: c.finetune_config(), {}),
    (EvaluationConfig, EvaluationPolicy, lambda c: c.policy(), {}),
]
# run-config fields fed to a lib function's keyword instead of a dataclass
KEYWORDS = [
    (IngestConfig, "workers", ingest_batch, "workers"),
    (LabelingConfig, "run_sam2", label_batch, "run_sam2"),
    (LabelingConfig, "unit_frames", run_labeling, "unit_frames"),
    (ShardsConfig, "include_random_weight_masklets", train_inputs, "include_random_weights"),
    (CompactionConfig, "memory_limit", compact_table, "memory_limit"),
    # the training clips (lib/dataset/sampler.py); the rest of SamplerConfig comes from the model and seed
    (FinetuneRunConfig, "clip_min_frames", SamplerConfig, "min_frames"),
    (FinetuneRunConfig, "clip_max_frames", SamplerConfig, "max_frames"),
    (FinetuneRunConfig, "clip_max_masklets", SamplerConfig, "max_masklets"),
]
# run-config fields that are not a lib default, each with the reason
OWN = {
    (LabelingConfig, "prompts_uri"), (LabelingConfig, "annotation_prefix"), (LabelingConfig, "max_videos"),
    (CompactionConfig, "tables"), (CompactionConfig, "min_new_parts"),  # the pipeline's policy, not compact_table's
    (IngestConfig, "batch_plan"),   # the plan a schedule/sensor request carries to the run that claims it
}


def _as_config(value):
    return list(value) if isinstance(value, tuple) else value


@pytest.mark.parametrize("config_cls,lib_cls,build,renamed", PAIRS, ids=[p[0].__name__ for p in PAIRS])
def test_every_lib_field_is_in_the_run_config_with_its_default(config_cls, lib_cls, build, renamed):
    fields = config_cls.model_fields
    lib_defaults = lib_cls()
    for f in dataclasses.fields(lib_cls):
        name = renamed.get(f.name, f.name)
        assert name in fields, f"{config_cls.__name__} lacks {lib_cls.__name__}.{f.name}"
        assert fields[name].default == _as_config(getattr(lib_defaults, f.name)), (config_cls.__name__, name)
        assert fields[name].description, f"{config_cls.__name__}.{name} has no description for the Launchpad"
    # and building the lib object from a default run config gives the lib's default object
    assert build(config_cls()) == lib_defaults


def test_no_run_config_field_is_unaccounted_for():
    """Every field is a lib dataclass field, a lib keyword default, or listed in OWN: nothing is null
    standing for "the library default"."""
    covered = {(c, renamed.get(f.name, f.name)) for c, lib, _b, renamed in PAIRS for f in dataclasses.fields(lib)}
    covered |= {(c, name) for c, name, _fn, _kw in KEYWORDS} | OWN
    for cls in {p[0] for p in PAIRS} | {CompactionConfig}:
        for name in cls.model_fields:
            assert (cls, name) in covered, f"{cls.__name__}.{name}: default not from the lib"


@pytest.mark.parametrize("config_cls,name,fn,kw", KEYWORDS, ids=[k[1] for k in KEYWORDS])
def test_keyword_defaults_come_from_the_lib_function(config_cls, name, fn, kw):
    assert config_cls.model_fields[name].default == lib_default(fn, kw)


def test_compaction_defaults():
    c = CompactionConfig()
    assert c.tables == list(DEFAULT_TABLES) and c.memory_limit == lib_default(compact_table, "memory_limit")


def test_run_config_values_reach_the_lib_object():
    cfg = LabelingConfig(points_per_side=8, cycle_check=False).labeler_config()
    assert (cfg.points_per_side, cfg.cycle_check) == (8, False)
    limits = IngestConfig(probe_timeout_s=5.0, probe_memory_mb=512).probe_limits()
    assert (limits.timeout_s, limits.memory_mb) == (5.0, 512)
    assert QualityConfig(licence_allowlist=["mit"]).thresholds().licence_allowlist == ("mit",)
    assert SplitsConfig(stratify_by=["environment"]).split_config().stratify_by == ("environment",)


def test_training_run_config_values_reach_the_lib_objects():
    assert FinetuneRunConfig(steps=5, lr=0.01).finetune_config() == FinetuneConfig(steps=5, lr=0.01)
    policy = EvaluationConfig(auto_promote=True, margin=0.1).policy()
    assert policy == EvaluationPolicy(auto_promote=True, margin=0.1)
    assert policy.choose(0.2, {"a": 0.25, "b": 0.35, "c": 0.31}) == ("b", 0.35)
    assert policy.choose(0.2, {"a": 0.25}) is None                        # under the margin
    assert EvaluationPolicy(margin=0.0).choose(0.2, {"a": 0.9}) is None   # no auto_promote: never

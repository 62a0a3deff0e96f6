"""The asset checks, called directly on the tiny lake: the GX contracts and the leak/uniqueness checks
pass on good rows and report what they looked at; the yield checks turn a batch whose passed videos
gave no masklet (and QC over zero masklets) from green into a warning or an error."""

import os
from types import SimpleNamespace

import dagster as dg
import pytest

from sav_assets.defs.checks import (
    GX_TABLES,
    gx_checks,
    manifest_matches_shards,
    no_group_straddles_splits,
    video_ids_unique_across_batches,
)


def _ctx(tiny_lake):
    return dg.build_op_context(partition_key=tiny_lake.batch_id, instance=tiny_lake.instance,
                               resources={"lake": tiny_lake.lake_res})


def test_gx_contracts_pass_on_the_tiny_lake(tiny_lake):
    assert len(gx_checks) == len(GX_TABLES)
    for check in gx_checks:
        res = check(_ctx(tiny_lake))
        assert res.passed, (check.check_key.name, res.metadata["results"].value)
        assert res.metadata["expectations"].value > 0 and res.metadata["failed_expectations"].value == 0


def test_leak_uniqueness_and_manifest_checks(tiny_lake):
    res = video_ids_unique_across_batches(lake=tiny_lake.lake_res)
    assert res.passed and res.metadata["duplicates"].value == 0
    res = no_group_straddles_splits(lake=tiny_lake.lake_res)
    assert res.passed and res.metadata["straddling_groups"].value == 0
    res = manifest_matches_shards(_ctx(tiny_lake))
    assert res.passed and res.metadata["shards"].value >= 1


# ---------------------------------------------------------------------------------------------
# an empty result is not green: a batch whose passed videos yield no masklet


@pytest.fixture(scope="module")
def unlabeled(tmp_path_factory):
    """A tiny lake whose 3 videos pass quality but come without SA-V annotations, labeled by a SAM 2
    stand-in that finds nothing (as random weights on real videos do). ``relabel(...)`` runs the
    masklets asset again with another model / outcome."""
    import sav_assets.lib.ingest.demo as demo
    from sav_assets.defs.ingest import IngestConfig, raw_videos, video_quality
    from sav_assets.defs.label import LabelingConfig, masklets
    from sav_assets.lib.label import labeler as lab
    from sav_assets.lib.label.config import LabelResult
    from sav_assets.resources import SAM2Resource

    from .conftest import QUALITY, TinyLake

    def corpus_without_annotations(out_dir, **kw):
        summary = write_demo_corpus(out_dir, **kw)
        for p in summary["annotations"]:
            os.remove(p)
        return summary

    write_demo_corpus = demo.write_demo_corpus
    with pytest.MonkeyPatch.context() as mp, dg.instance_for_test() as instance:
        mp.setattr(demo, "write_demo_corpus", corpus_without_annotations)
        t = TinyLake(tmp_path_factory.mktemp("unlabeled"), instance)
        t.run(raw_videos, config=IngestConfig())
        t.run(video_quality, config=QUALITY)

        runs = iter(range(1000))

        def relabel(random_weights=True, outcome=None):     # another config digest: never skipped as done
            loaded = SimpleNamespace(model_name="sam2.1_hiera_tiny", checkpoint_sha256=None,
                                     config_sha256=f"c{next(runs)}",
                                     random_weights=random_weights, spec=SimpleNamespace(seed=0), precision="fp32")

            def nothing_found(loaded_, path, video, cfg, prompts=None):
                if outcome is not None:
                    raise outcome
                return LabelResult([], [], {"frames_labeled": 12})

            mp.setattr(SAM2Resource, "load", lambda self: loaded)
            mp.setattr(lab, "label_video", nothing_found)
            return t.run(masklets, config=LabelingConfig(run_sam2=True))

        t.relabel = relabel
        yield t


def test_passed_videos_without_masklets_warn_with_random_weights_and_fail_otherwise(unlabeled):
    from sav_assets.defs.checks import passed_videos_have_masklets

    unlabeled.relabel(random_weights=True)
    assert unlabeled.md("masklets")["videos_labeled"] == 3 and unlabeled.md("masklets")["dagster/row_count"] == 0
    res = passed_videos_have_masklets(_ctx(unlabeled))
    assert not res.passed and res.severity == dg.AssetCheckSeverity.WARN
    assert "random weights" in res.description and "0 masklets" in res.description
    assert res.metadata["videos_passed_quality"].value == 3 and res.metadata["videos_labeled"].value == 3
    assert res.metadata["masklets"].value == 0 and res.metadata["random_weights"].value is True

    unlabeled.relabel(random_weights=False)          # a real checkpoint that finds nothing: an error
    res = passed_videos_have_masklets(_ctx(unlabeled))
    assert not res.passed and res.severity == dg.AssetCheckSeverity.ERROR
    assert "0 masklets" in res.description and "random weights" not in res.description


def test_a_batch_where_every_video_failed_to_label_fails_its_check(unlabeled):
    from sav_assets.defs.checks import passed_videos_have_masklets
    from sav_assets.lib.label.config import LabelingFailed

    unlabeled.relabel(random_weights=True, outcome=LabelingFailed("oom", "CUDA out of memory even with offloading"))
    res = passed_videos_have_masklets(_ctx(unlabeled))
    assert not res.passed and res.severity == dg.AssetCheckSeverity.ERROR   # even with random weights
    assert "no video was labeled" in res.description and "oom: 3" in res.description
    assert res.metadata["videos_failed"].value == 3


def test_a_bug_while_labeling_fails_the_masklets_step(unlabeled):
    with pytest.raises(TypeError, match="unexpected keyword"):
        unlabeled.relabel(outcome=TypeError("label_video() got an unexpected keyword argument 'mode'"))


def test_qc_over_zero_masklets_is_not_green(unlabeled):
    from sav_assets.defs.checks import masklet_qc_has_masklets
    from sav_assets.defs.qc import QCConfig, masklet_qc

    unlabeled.relabel(random_weights=True)
    unlabeled.run(masklet_qc, config=QCConfig())
    md = unlabeled.md("masklet_qc")
    assert md["masklets_checked"] == 0 and md["pass_rate"] == "no masklets"
    res = masklet_qc_has_masklets(_ctx(unlabeled))
    assert not res.passed and res.severity == dg.AssetCheckSeverity.WARN
    assert "no masklets" in res.description and res.metadata["masklets_checked"].value == 0


def test_the_yield_checks_pass_on_a_labeled_batch(tiny_lake):
    from sav_assets.defs.checks import masklet_qc_has_masklets, passed_videos_have_masklets

    res = passed_videos_have_masklets(_ctx(tiny_lake))
    assert res.passed and res.metadata["masklets"].value > 0 and res.metadata["videos_passed_quality"].value == 3
    res = masklet_qc_has_masklets(_ctx(tiny_lake))
    assert res.passed and res.metadata["masklets_checked"].value == res.metadata["masklets"].value > 0

"""sam2_finetune and model_evaluation on a tiny lake of their own (3 demo videos, imported manual masks,
shards and val layout as in tests/defs/conftest.py): the fine-tune registers a content-addressed
checkpoint and a re-run with the same inputs is skipped; the evaluation compares the current model with
the candidate and promotes it; the promotion changes masklets' code_version and a re-run of masklets
relabels the video with the promoted model."""

from __future__ import annotations

import dagster as dg
import pytest

from sav_assets.defs.label import LabelingConfig, labels_code_version, masklets
from sav_assets.defs.training import EvaluationConfig, FinetuneRunConfig, model_evaluation, sam2_finetune
from sav_assets.lib.store.tables import LABEL_RUNS
from sav_assets.lib.train import registry
from sav_assets.resources import SAM2Resource

from .conftest import TinyLake

FT = FinetuneRunConfig(steps=2, lr=1e-3, warmup_steps=1, freeze_image_encoder=True, point_prob=0.0,
                       clip_min_frames=2, clip_max_frames=2, clip_max_masklets=1, save_every=0)
LABEL = LabelingConfig(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, max_objects=2,
                       cycle_check=False, max_videos=1, overlay_width=0)


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    from sav_assets.defs.dataset import ShardsConfig, SplitsConfig, eval_layout, splits, training_shards
    from sav_assets.defs.ingest import IngestConfig, raw_videos, video_quality
    from sav_assets.defs.qc import QCConfig, masklet_qc

    from .conftest import QUALITY

    with dg.instance_for_test() as instance:
        t = TinyLake(tmp_path_factory.mktemp("train_lake"), instance)
        t.sam2 = SAM2Resource(image_size=128, device="cpu", registry_root=str(t.root))
        t.run(raw_videos, config=IngestConfig())
        t.run(video_quality, config=QUALITY)
        t.run(masklets, config=LabelingConfig(run_sam2=False))
        t.run(masklet_qc, config=QCConfig())
        t.run(splits, config=SplitsConfig(val_target=1))
        t.run(eval_layout)
        t.run(training_shards, config=ShardsConfig(window=4))
        yield t


def _call(t, asset, config):
    res = asset(context=t.context(), config=config, lake=t.lake_res, sam2=t.sam2, **(
        {"source": t.source_res} if "source" in asset.required_resource_keys else {}))
    return {k: getattr(v, "value", v) for k, v in (res.metadata or {}).items()}


def _runs(t):
    return t.lake.read_table("label_runs", batches=[t.batch_id], schema=LABEL_RUNS).to_pylist()


def test_finetune_evaluate_promote_relabel(lake):
    t = lake
    before = _call(t, masklets, LABEL)            # random weights
    assert before["videos_labeled"] == 1
    key_before = {r["video_id"]: r["label_key"] for r in _runs(t) if r["status"] == "labeled"}
    version_before = labels_code_version(t.sam2.spec())

    md = _call(t, sam2_finetune, FT)
    assert md["steps"] == 2 and md["shards"] >= 1 and "loss" in md["loss_curve"]
    sha = md["sha256"]
    row = registry.get_model(t.lake, sha)
    assert row["checkpoint_uri"].endswith(f"models/checkpoints/{sha}.pt") and row["parent_sha256"] is None
    assert row["promoted"] is False and row["steps"] == 2
    # from random weights the run trains ONE mask per object (FinetuneConfig.resolved) and records it
    assert row["multimask_tracking"] is False and md["tracking"] == "single mask"
    again = _call(t, sam2_finetune, FT)
    assert again["skipped"] is True and again["sha256"] == sha

    ev = _call(t, model_evaluation, EvaluationConfig(auto_promote=True, margin=-1.0))
    assert ev["promoted"] == sha and ev["videos"] >= 1
    assert "| current |" in ev["jf_table"] and f"| {sha[:12]} |" in ev["jf_table"]
    assert registry.current_labeling_model(t.lake)["sha256"] == sha
    assert t.sam2.spec().checkpoint_sha256 == sha
    assert labels_code_version(t.sam2.spec()) != version_before      # the UI shows masklets stale

    assert t.sam2.spec().multimask_tracking is False    # the labeler tracks the way the model was trained

    t.sam2 = SAM2Resource(image_size=128, device="cpu", registry_root=str(t.root))   # a fresh load
    tracker = t.sam2.load().model
    assert tracker.multimask_output_for_tracking is False
    assert tracker.sam_mask_decoder.dynamic_multimask_via_stability is False
    after = _call(t, masklets, LABEL)
    assert after["videos_labeled"] == 1 and after["videos_skipped_already_labeled"] == 0
    runs = {r["video_id"]: r for r in _runs(t) if r["status"] == "labeled"}
    vid = next(iter(key_before))
    assert runs[vid]["label_key"] != key_before[vid] and runs[vid]["random_weights"] is False

    # item 6: the random-weight labels survive the relabel beside the promoted model's; the plain
    # table and its view hold the promoted model's only; model_evaluation compares the two label sets
    from sav_assets.lib.store.catalog import query
    cur = query(t.lake, "select distinct checkpoint_sha256 c, random_weights r from masklets where video_id = ? "
                        "and label_key is not null", [vid]).to_pylist()
    assert cur == [{"c": sha, "r": False}]
    sets = query(t.lake, "select label_key, current, random_weights from label_sets where video_id = ? "
                         "order by current", [vid]).to_pylist()
    assert sets == [{"label_key": key_before[vid], "current": False, "random_weights": True},
                    {"label_key": runs[vid]["label_key"], "current": True, "random_weights": False}]
    ev2 = _call(t, model_evaluation, EvaluationConfig())
    assert f"| {vid} | {runs[vid]['label_key'][:16]} | {key_before[vid][:16]} |" in ev2["label_sets"]


def test_the_cli_runs_the_training_group_without_a_batch(lake, tmp_path, capsys):
    """`sav-assets run --select model_evaluation` (global assets only): one run, no batch claimed or
    needed; it used to print "nothing new" (no batch to run) or fail on the batch partition key. The
    promoted model is read from --root's models table."""
    import json

    from sav_assets.cli import main

    t = lake
    cfg = tmp_path / "eval.yaml"
    cfg.write_text(json.dumps({"resources": {"sam2": {"config": {"device": "cpu", "image_size": 128}}},
                               "ops": {"model_evaluation": {"config": {"max_videos": 1}}}}))
    batches_before = sorted(p.name for p in (t.root / "batches").glob("*.json"))
    rc = main(["run", "--root", str(t.root), "--source", str(t.src), "--select", "model_evaluation",
               "--config", str(cfg)])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "nothing new" not in out and "succeeded;" in out and "(batch" not in out
    assert sorted(p.name for p in (t.root / "batches").glob("*.json")) == batches_before
    with dg.DagsterInstance.get() as instance:
        ev = instance.get_latest_materialization_event(dg.AssetKey("model_evaluation"))
    md = ev.asset_materialization.metadata
    assert md["videos"].value == 1 and 0.0 <= md["current_jf"].value <= 1.0
    assert md["promoted"].value == ""        # no unpromoted candidate: nothing to promote

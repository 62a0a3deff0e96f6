"""The whole graph through the CLI on a local folder mixing valid videos, corrupt files and non-video
files: one `videos` row per video file with the right status, nothing added by a second run, every
stage's tables and files present, and the same rows after re-running the batch."""

import json
import shutil

import pytest
from conftest import SHARED_DATA

from sav_assets.cli import main
from sav_assets.lib.store.catalog import query
from sav_assets.lib.store.lake import Lake

pytestmark = pytest.mark.slow

FAST_CONFIG = """
resources:
  sam2:
    config:
      image_size: 256
      device: cpu
ops:
  video_quality:
    config:
      min_short_side: 720     # the stricter HD profile: bedroom (540p) fails quality
  masklets:
    config:
      points_per_side: 4
      pred_iou_thresh: 0.0
      stability_score_thresh: 0.0
      max_objects: 3
      reseed_every: 0
      cycle_check: false
  splits:
    config:
      val_target: 1
  compacted_tables:
    config:
      min_new_parts: 1
"""


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    import os

    base = tmp_path_factory.mktemp("e2e")
    src, root = base / "src", base / "lake"
    from sav_assets.lib.ingest.demo import write_demo_corpus

    write_demo_corpus(src, n_videos=2, seconds=5.0, width=1280, height=720, seed=3, include_bad=True)
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared test data not found at {SHARED_DATA}")
    shared = SHARED_DATA / "videos"
    shutil.copy(shared / "bedroom.mp4", src / "bedroom.mp4")              # real, but 540p: fails quality
    data = (shared / "01_dog.mp4").read_bytes()
    (src / "cut_dog.mp4").write_bytes(data[: len(data) // 3])            # cut mid-stream
    (src / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64)  # header only
    cfg = base / "run.yaml"
    cfg.write_text(FAST_CONFIG)
    env = {"DAGSTER_HOME": str(base / "dagster_home")}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    rc = main(["run", "--source", str(src), "--root", str(root), "--config", str(cfg)])
    yield {"src": src, "root": root, "rc": rc, "cfg": cfg, "lake": Lake(root)}
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _q(lake, sql):
    return query(lake, sql).to_pylist()


def test_run_succeeds_and_videos_table_is_exact(pipeline):
    assert pipeline["rc"] == 0
    lake = pipeline["lake"]
    rows = {r["source_key"]: r for r in _q(lake, "select * from videos")}
    video_files = sorted(p.name for p in pipeline["src"].iterdir() if p.suffix == ".mp4")
    assert sorted(rows) == video_files  # exactly one row per video file, none for notes.txt / sidecars
    assert rows["sav_900000.mp4"]["status"] == "ok"
    assert rows["sav_900000.mp4"]["video_id"] == "sav_900000"
    assert rows["bedroom.mp4"]["status"] == "ok"
    assert rows["broken_empty.mp4"]["error_class"] == "empty_file"
    assert rows["not_really.mp4"]["error_class"] == "not_a_container"
    assert rows["cut_dog.mp4"]["status"] == "quarantined"
    assert rows["cut_dog.mp4"]["error_class"] in ("decode_error", "truncated")
    assert rows["clip.mp4"]["status"] == "quarantined"
    objs = {r["source_key"]: r["disposition"] for r in _q(lake, "select * from source_objects")}
    assert objs["notes.txt"] == "non_video"
    assert objs["sav_900000_manual.json"] == "annotation"


def test_quality_and_labels(pipeline):
    lake = pipeline["lake"]
    q = {r["video_id"]: r for r in _q(lake, "select * from video_quality")}
    assert q["sav_900000"]["passed"], q["sav_900000"]["reasons"]
    bedroom = [r for r in q.values() if r["video_id"].startswith("bedroom")][0]
    assert not bedroom["passed"] and "low_resolution" in bedroom["reasons"]
    types = {r["masklet_type"]: r["n"] for r in _q(lake, "select masklet_type, count(*) n from masklets group by 1")}
    assert types.get("manual", 0) >= 3          # the demo's exact ground truth, imported
    assert types.get("auto", 0) >= 1            # SAM 2 (random weights, opened-up thresholds)
    runs = _q(lake, "select * from label_runs where status = 'labeled'")
    assert {r["video_id"] for r in runs} == {"sav_900000", "sav_900001"}
    assert all(r["random_weights"] for r in runs)
    # frame indices of SAM 2 masklets sit on the 6 fps grid of the 24 fps demo videos
    bad = _q(lake, "select count(*) n from masklet_frames where masklet_type = 'auto' and frame_idx % 4 <> 0")
    assert bad == [{"n": 0}]


def test_downstream_outputs(pipeline):
    lake = pipeline["lake"]
    root = pipeline["root"]
    assert (root / "exports" / "sav" / "sav_900000_manual.json").exists()
    doc = json.loads((root / "exports" / "sav" / "sav_900000_manual.json").read_text())
    assert doc["video_id"] == "sav_900000" and doc["masklet_num"] == len(doc["masklet_id"])
    assert _q(lake, "select count(*) n from masklet_qc")[0]["n"] > 0
    splits = _q(lake, "select split, count(*) n from splits group by 1")
    assert sum(r["n"] for r in splits) == 2
    assert (root / "reports" / "statistics.md").exists()
    # compacted copies sit behind the views and hold exactly the batch parts' rows
    for table in ("masklet_frames", "masklets", "videos"):
        assert (root / "compacted" / table / "CURRENT.json").exists(), table
        n_parts = lake.read_table(table).num_rows
        assert _q(lake, f"select count(*) n from {table}")[0]["n"] == n_parts, table


def test_second_run_adds_nothing_and_rerun_is_idempotent(pipeline):
    lake = pipeline["lake"]
    before = _q(lake, "select video_id, status, error_class from videos order by 1")
    n_masklets = _q(lake, "select count(*) n from masklets")[0]["n"]
    assert main(["run", "--source", str(pipeline["src"]), "--root", str(pipeline["root"])]) == 0
    assert _q(lake, "select video_id, status, error_class from videos order by 1") == before
    batch = lake.batches("videos")
    assert len(batch) == 1
    # re-running the same batch replaces its rows; labeling skips finished videos
    assert main(["run", "--source", str(pipeline["src"]), "--root", str(pipeline["root"]), "--batch", batch[0],
                 "--config", str(pipeline["cfg"])]) == 0
    assert _q(lake, "select video_id, status, error_class from videos order by 1") == before
    assert _q(lake, "select count(*) n from masklets")[0]["n"] == n_masklets
    assert _q(lake, "select count(*) n from (select video_id from videos group by 1 having count(*) > 1)") == [{"n": 0}]


def test_sql_cli(pipeline, capsys):
    assert main(["sql", "--root", str(pipeline["root"]), "select masklet_type, count(*) from masklets group by 1"]) == 0
    assert "masklet_type" in capsys.readouterr().out
    assert main(["sql", "--root", str(pipeline["root"]), "delete from videos"]) == 2
    assert "read-only" in capsys.readouterr().err
    assert main(["sql", "--root", str(pipeline["root"]), "--format", "json", "select count(*) n from videos"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["n"] == 7


def test_compact_cli_force_and_drop(pipeline, capsys):
    root, lake = pipeline["root"], pipeline["lake"]
    n = _q(lake, "select count(*) n from masklet_frames")[0]["n"]
    pointer = root / "compacted" / "masklet_frames" / "CURRENT.json"
    gen = json.loads(pointer.read_text())["generation"]
    assert main(["compact", "--root", str(root), "--table", "masklet_frames"]) == 0
    assert "nothing new" in capsys.readouterr().out
    assert main(["compact", "--root", str(root), "--table", "masklet_frames", "--force"]) == 0
    assert json.loads(pointer.read_text())["generation"] != gen
    assert _q(lake, "select count(*) n from masklet_frames")[0]["n"] == n
    assert main(["compact", "--root", str(root), "--table", "masklet_frames", "--drop"]) == 0
    assert not pointer.exists() and not any((root / "compacted" / "masklet_frames").glob("*/*.parquet"))
    assert _q(lake, "select count(*) n from masklet_frames")[0]["n"] == n
    assert main(["compact", "--root", str(root), "--table", "nope"]) == 1
    assert "unknown table" in capsys.readouterr().err


def test_blocking_qc_contract_stops_splits_and_shards_in_the_same_run(pipeline, monkeypatch, tmp_path):
    import dagster as dg

    import sav_assets.lib.qc.gx as gxv

    # a masklet_qc contract the current rows break (they would need to be empty)
    suites = tmp_path / "expectations"
    shutil.copytree(gxv.EXPECTATIONS_DIR, suites)
    doc = json.loads((suites / "masklet_qc.json").read_text())
    doc["expectations"].append({"type": "expect_table_row_count_to_equal", "kwargs": {"value": 0}})
    (suites / "masklet_qc.json").write_text(json.dumps(doc))
    monkeypatch.setattr(gxv, "EXPECTATIONS_DIR", suites)

    lake = pipeline["lake"]
    batch = lake.batches("videos")[0]
    instance = dg.DagsterInstance.get()
    before = {k: instance.get_latest_materialization_event(dg.AssetKey(k)).run_id
              for k in ("masklet_qc", "splits", "training_shards")}
    rc = main(["run", "--root", str(pipeline["root"]), "--source", str(pipeline["src"]), "--batch", batch,
               "--select", "masklet_qc+"])
    assert rc == 1  # the blocking check failed the run
    after = {k: instance.get_latest_materialization_event(dg.AssetKey(k)).run_id
             for k in ("masklet_qc", "splits", "training_shards")}
    assert after["masklet_qc"] != before["masklet_qc"]          # QC ran and wrote its rows
    assert after["splits"] == before["splits"]                  # ...but nothing downstream did
    assert after["training_shards"] == before["training_shards"]

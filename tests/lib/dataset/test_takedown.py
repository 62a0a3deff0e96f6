"""Takedown on a real two-batch lake (demo corpus, imported SA-V masks, every asset body called as the
pipeline would): the video has labels in both batches and shard samples; afterwards SQL and a plain
`webdataset` read find nothing of it, everything else is unchanged (rows, untouched files' bytes, other
videos' splits and samples), the same bytes under another name are refused, a rerun changes nothing,
and an interrupted takedown finishes when run again."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dagster as dg
import pytest
from defs.conftest import QUALITY, TinyLake, run_pipeline

from sav_assets.defs.analytics import CompactionConfig, compacted_tables, dataset_statistics
from sav_assets.defs.ingest import IngestConfig, raw_videos, video_quality
from sav_assets.defs.partitions import batches
from sav_assets.defs.qc import QCConfig, masklet_qc
from sav_assets.lib.dataset import takedown as td
from sav_assets.lib.dataset.publisher import verify_manifest
from sav_assets.lib.ingest.batches import claim_batch, plan_batch
from sav_assets.lib.ingest.demo import write_demo_video
from sav_assets.lib.label.batch import label_batch
from sav_assets.lib.store.catalog import query
from sav_assets.lib.store.tables import SCHEMAS

VIDEO_TABLES = [t for t, s in SCHEMAS.items() if "video_id" in s.names and t not in ("takedowns", "source_objects")]


def new_batch(t: TinyLake) -> str:
    plan = plan_batch(t.source_res.source(), t.lake, settle_seconds=0)
    t.batch_id = claim_batch(t.lake, plan.manifest()).batch_id
    t.instance.add_dynamic_partitions(batches.name, [t.batch_id])
    return t.batch_id


def rows_without(lake, table: str, vids: set[str]) -> list:
    rows = [r for r in lake.read_table(table, schema=SCHEMAS[table]).to_pylist() if r.get("video_id") not in vids]
    return sorted(json.dumps(r, sort_keys=True, default=str) for r in rows)


def shard_samples(lake) -> dict[str, dict]:
    """Every sample of every published shard, read with plain webdataset: key -> {member: bytes}."""
    import webdataset as wds

    out = {}
    for m in sorted(Path(lake.local_path("shards")).glob("*/manifest.json")):
        doc = json.loads(m.read_text())
        urls = [str(m.parent / s["shard"]) for s in doc["shards"]]
        if not urls:              # every sample of that manifest was taken down
            continue
        for s in wds.WebDataset(urls, shardshuffle=False, empty_check=False):
            out[s["__key__"]] = {k: v for k, v in s.items() if not k.startswith("__")}
    return out


def file_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name not in ("sav.duckdb", "sav.duckdb.lock")}


@pytest.fixture(scope="module")
def lake2(tmp_path_factory):
    base = tmp_path_factory.mktemp("takedown_lake")
    with dg.instance_for_test() as instance:
        t = TinyLake(base, instance)
        run_pipeline(t)                                   # batch 1: sav_900000..02
        b1 = t.batch_id
        for i in (3, 4, 5):                               # batch 2: three more videos
            write_demo_video(t.src / "b2", i, seconds=2.0, width=320, height=240, seed=6)
        b2 = new_batch(t)
        run_pipeline(t)
        lk = t.lake
        train = [r["video_id"] for r in lk.read_table("splits").to_pylist() if r["split"] == "train"
                 and r["batch_id"] == b1]
        sampled = {json.loads(s["meta.json"])["video_id"] for s in shard_samples(lk).values()}
        target = sorted(set(train) & sampled)[0]
        # the target is relabeled in batch 2 too (its SA-V file imported again): labels in two batches
        vrow = next(v for v in lk.read_table("videos").to_pylist() if v["video_id"] == target)
        from sav_assets.lib.label.config import LabelerConfig
        label_batch(lk, b2, [vrow], {target: {"manual": str(t.src / f"{target}_manual.json")}},
                    lambda: None, LabelerConfig(), run_sam2=False, log=lambda m: None)
        t.run(masklet_qc, config=QCConfig())
        t.run(compacted_tables, config=CompactionConfig(min_new_parts=1))
        t.run(dataset_statistics)
        yield t, target, b1, b2


def test_takedown_removes_everything_derived_and_nothing_else(lake2, tmp_path):
    t, target, b1, b2 = lake2
    lk = t.lake
    sha = next(v["content_sha256"] for v in lk.read_table("videos").to_pylist() if v["video_id"] == target)
    for table in ("masklets", "masklet_frames", "sav_annotations", "masklet_qc"):
        found = {r["batch_id"] for r in lk.read_table(table).to_pylist() if r["video_id"] == target}
        assert found == {b1, b2}, table                     # labels in two batches
    assert query(lk, "select count(*) n from splits where video_id = ?", [target]).to_pylist() == [{"n": 1}]
    before_rows = {tb: rows_without(lk, tb, {target}) for tb in VIDEO_TABLES + ["shards"]}
    before_samples = shard_samples(lk)
    assert any(json.loads(s["meta.json"])["video_id"] == target for s in before_samples.values())
    assert sorted(r["key"] for r in lk.read_table("shard_samples").to_pylist()) == sorted(before_samples)
    before_files = file_bytes(t.root)
    before_splits = {r["video_id"]: r for r in lk.read_table("splits").to_pylist() if r["video_id"] != target}

    rep = td.takedown(lk, target, reason="subject asked", requested_by="legal@example.org")
    assert rep.video_ids == [target] and not rep.already and rep.content_sha256 == sha
    assert rep.rows_removed["masklets"] > 0 and rep.rows_removed["videos"] == 1 and rep.samples_removed > 0
    assert rep.compacted_rows_removed["masklet_frames"] > 0 and rep.statistics

    # SQL: nothing of it in any table; the tombstone and the marked ingestion record only
    for table in VIDEO_TABLES:
        n = query(lk, f"select count(*) n from {table} where video_id = ?", [target]).to_pylist()[0]["n"]
        assert n == 0, table
    assert query(lk, "select video_id, content_sha256, reason, requested_by from takedowns").to_pylist() == [
        {"video_id": target, "content_sha256": sha, "reason": "subject asked", "requested_by": "legal@example.org"}]
    objs = query(lk, "select disposition from source_objects where content_sha256 = ?", [sha]).to_pylist()
    assert objs == [{"disposition": "taken_down"}]
    # everything else: the same rows; other videos' splits did not move
    for table, rows in before_rows.items():
        if table not in ("shards", "shard_samples"):
            assert rows_without(lk, table, {target}) == rows, table
    assert {r["video_id"]: r for r in lk.read_table("splits").to_pylist()} == before_splits

    # shards: a plain webdataset read finds none of its samples, every other sample byte for byte
    after_samples = shard_samples(lk)
    assert not any(json.loads(s["meta.json"])["video_id"] == target for s in after_samples.values())
    assert after_samples == {k: s for k, s in before_samples.items()
                             if json.loads(s["meta.json"])["video_id"] != target}
    for prefix in {Path(p).parent.name for p in rep.shards_rewritten}:
        assert verify_manifest(lk, f"shards/{prefix}") == []
    manifests = {m.parent.name: json.loads(m.read_text()) for m in Path(lk.local_path("shards")).glob("*/manifest.json")}
    shard_rows = lk.read_table("shards").to_pylist()
    assert sorted((r["batch_id"], r["shard"], r["sha256"], r["samples"]) for r in shard_rows) == sorted(
        (b, s["shard"], s["sha256"], s["samples"]) for b, m in manifests.items() for s in m["shards"])
    # shard_samples: the other videos' samples, each naming the (possibly renamed) shard that holds it
    tars = {(b, s["shard"]): s for b, m in manifests.items() for s in m["shards"]}
    sample_rows = lk.read_table("shard_samples").to_pylist()
    assert sorted(r["key"] for r in sample_rows) == sorted(after_samples)
    assert all((r["batch_id"], r["shard"]) in tars and r["video_id"] != target for r in sample_rows)

    # files: no path names it, no text mentions it; files it was not in keep their bytes
    after_files = file_bytes(t.root)
    assert not [p for p in after_files if target in p]
    texts = {p: b for p, b in after_files.items() if p.endswith((".txt", ".jsonl", ".json", ".md", ".html"))
             and not p.startswith(("batches/", "claims/"))}
    assert not [p for p, b in texts.items() if target.encode() in b]
    changed = {p for p in before_files if p in after_files and after_files[p] != before_files[p]}
    allowed = set(rep.files_rewritten) | {"reports/statistics.md", "reports/statistics.png"}
    allowed |= {p for p in changed if p.startswith(("tables/", "compacted/", "shards/"))}
    assert changed <= allowed
    for p in changed:
        if p.endswith(".parquet") and not p.startswith(("tables/shards/", "tables/shard_samples/",
                                                        "compacted/shard_samples/")):   # only files that held the video
            assert holds(before_files[p], target), p
    untouched_parts = [p for p in before_files if p.startswith("tables/") and p.endswith(".parquet")
                       and not holds(before_files[p], target)
                       and not p.startswith(("tables/shards/", "tables/shard_samples/"))]
    assert untouched_parts and all(after_files[p] == before_files[p] for p in untouched_parts)
    assert target not in Path(t.root / "reports/statistics.md").read_text()

    # idempotent: a second takedown finds the tombstone and changes nothing
    again = td.takedown(lk, sha, reason="again", requested_by="x")
    assert again.already and again.rows_removed == {} and not again.shards_rewritten and not again.files_removed
    assert {p: b for p, b in file_bytes(t.root).items() if not p.startswith("reports/")} == \
        {p: b for p, b in after_files.items() if not p.startswith("reports/")}
    assert query(lk, "select count(*) n from takedowns").to_pylist() == [{"n": 1}]

    # the same bytes under another name, in a new batch: refused with a clear row
    (t.src / "b3").mkdir()
    shutil.copyfile(objs_uri(lk, sha), t.src / "b3" / "holiday_clip.mp4")
    b3 = new_batch(t)
    md = {k: getattr(v, "value", v) for k, v in t.run(raw_videos, config=IngestConfig()).metadata.items()}
    assert md["taken_down_refused"] == 1 and md["videos_ok"] == 0
    row = query(lk, "select video_id, status, error_class, error_message, content_sha256 from videos "
                    "where batch_id = ?", [b3]).to_pylist()
    assert len(row) == 1 and row[0]["status"] == "quarantined" and row[0]["error_class"] == "taken_down"
    assert row[0]["content_sha256"] == sha and "taken down" in row[0]["error_message"]
    assert "subject asked" in row[0]["error_message"] and row[0]["video_id"].startswith("holiday_clip_")
    obj = query(lk, "select disposition from source_objects where batch_id = ? and source_key like '%holiday%'",
                [b3]).to_pylist()
    assert obj == [{"disposition": "taken_down"}]
    t.run(video_quality, config=QUALITY)
    assert query(lk, "select count(*) n from video_quality where batch_id = ?", [b3]).to_pylist() == [{"n": 0}]


def holds(parquet: bytes, vid: str) -> bool:
    import io

    import pyarrow.parquet as pq

    tbl = pq.read_table(io.BytesIO(parquet))
    return any(vid in tbl[c].to_pylist() for c in ("video_id", "duplicate_of") if c in tbl.column_names)


def objs_uri(lk, sha: str) -> str:
    return next(o["source_uri"] for o in lk.read_table("source_objects").to_pylist() if o["content_sha256"] == sha)


def test_unknown_target_is_a_clear_error(lake2):
    t, *_ = lake2
    with pytest.raises(td.TakedownError, match="no video matches 'no_such_video'"):
        td.takedown(t.lake, "no_such_video", reason="r", requested_by="x")
    with pytest.raises(td.TakedownError, match="no video with content SHA-256 0{64}"):
        td.takedown(t.lake, "0" * 64, reason="r", requested_by="x")


def test_interrupted_takedown_finishes_when_run_again(lake2, monkeypatch):
    t, target, b1, b2 = lake2
    lk = t.lake
    other = sorted({json.loads(s["meta.json"])["video_id"] for s in shard_samples(lk).values()} - {target})[0]
    uri = next(v["source_uri"] for v in lk.read_table("videos").to_pylist() if v["video_id"] == other)

    def crash(*a, **k):
        raise RuntimeError("killed midway")

    monkeypatch.setattr(td, "_rewrite_all_shards", crash)       # tables done, shards not yet
    with pytest.raises(RuntimeError, match="killed midway"):
        td.takedown(lk, uri, reason="by URI", requested_by="ops")
    assert query(lk, "select count(*) n from masklets where video_id = ?", [other]).to_pylist() == [{"n": 0}]
    assert any(json.loads(s["meta.json"])["video_id"] == other for s in shard_samples(lk).values())
    monkeypatch.undo()
    rep = td.takedown(lk, other, reason="by URI", requested_by="ops")
    assert rep.already and rep.samples_removed > 0 and rep.shards_rewritten
    assert not any(json.loads(s["meta.json"])["video_id"] == other for s in shard_samples(lk).values())
    assert query(lk, "select requested_as, reason from takedowns where video_id = ?", [other]).to_pylist() == [
        {"requested_as": uri, "reason": "by URI"}]


def test_request_files_in_the_lake(lake2):
    t, *_ = lake2
    lk = t.lake
    lk.put_bytes("takedowns/requests/r1.json", json.dumps({"target": "nobody_here", "reason": "x"}).encode())
    out = td.apply_requests(lk)
    assert out == [{"file": "r1.json", "target": "nobody_here", "status": "rejected",
                    "detail": "no video matches 'nobody_here' (not a video_id, source URI or key, or content "
                              "SHA-256 of this lake)"}]
    assert not lk.exists("takedowns/requests/r1.json")
    assert "nobody_here" in json.loads(lk.get_bytes("takedowns/rejected/r1.json"))["request"]

"""WebDataset shards: plain-webdataset readability, exact masks, manifest, determinism, crash safety."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_DATA as DATA
from conftest import needs_shared

from sav_assets.lib.dataset.shards import (
    ShardConfig,
    export_sav_train,
    read_manifest,
    sample_key,
    verify_manifest,
    write_shards,
)
from sav_assets.lib.sav import rle
from sav_assets.lib.store import tables
from sav_assets.lib.store.lake import Lake

SAV_MANUAL = DATA / "sav_example" / "sav_000001_manual.json"
NOW = datetime(2025, 1, 1, tzinfo=timezone.utc)


def make_video(path: Path, n: int, h: int, w: int, fps: int = 24) -> None:
    import av

    rng = np.random.default_rng(n)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"crf": "18", "preset": "ultrafast", "bf": "0"}
        base = rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
        for k in range(n):
            img = np.roll(base, k, axis=1)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def synthetic_rows(vid: str, n_frames: int, h: int, w: int, n_obj: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for mid in range(n_obj):
        for ann, f in enumerate(range(0, n_frames, 4)):
            m = np.zeros((h, w), np.uint8)
            if rng.random() > 0.2:                           # sometimes invisible
                y, x = rng.integers(0, h - 8), rng.integers(0, w - 8)
                m[y: y + rng.integers(3, 8), x: x + rng.integers(3, 8)] = 1
            r = rle.encode(m)
            rows.append({"video_id": vid, "masklet_id": mid, "masklet_type": "auto", "ann_idx": ann,
                         "frame_idx": f, "size": r["size"], "counts": r["counts"], "visible": bool(m.any())})
    return rows


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    h, w = 48, 64
    spec = {"vid_a": 33, "vid.b": 17, "vid_short": 5}            # 9, 5 and 2 annotated frames
    paths, frames = {}, {}
    for i, (vid, n) in enumerate(spec.items()):
        p = d / f"{i}.mp4"
        make_video(p, n, h, w)
        paths[vid] = str(p)
        frames[vid] = synthetic_rows(vid, n, h, w, n_obj=2 + i, seed=i)
    masklets = {vid: [{"video_id": vid, "masklet_id": m, "masklet_type": "auto"}
                      for m in sorted({r["masklet_id"] for r in rows})] for vid, rows in frames.items()}
    masklets["vid_a"] = masklets["vid_a"][:1]                       # only masklet 0 passed QC
    videos = [{"video_id": v} for v in spec]
    return videos, frames, masklets, paths


CFG = ShardConfig(window=4, stride=2, shard_max_samples=2)


def run(tmp: Path, corpus, cfg=CFG, prefix="shards/v1", lake=None):
    videos, frames, masklets, paths = corpus
    lake = lake or Lake(tmp / "lake")
    return lake, write_shards(lake, prefix, videos, frames, masklets, paths, cfg, now=NOW, batch_id="v1")


def test_shards_readable_by_plain_webdataset(tmp_path, corpus):
    import webdataset as wds

    lake, res = run(tmp_path, corpus)
    # vid_a: 9 annotated frames, window 4 stride 2 -> starts 0,2,4 ; vid.b: 5 frames -> start 0
    assert res["samples"] == 4 and res["shards"] == 2 and res["videos"] == 2
    assert res["skipped"] == [{"video_id": "vid_short", "reason": "2 annotated frames < window"}]
    urls = [str(lake.local_path(f"shards/v1/{s['shard']}")) for s in res["manifest"]["shards"]]
    samples = list(wds.WebDataset(urls, shardshuffle=False))
    keys = [s["__key__"] for s in samples]                     # videos in video_id order
    assert keys == [sample_key("vid.b", 0), "vid_a_000000", "vid_a_000008", "vid_a_000016"]
    assert "." not in keys[0] and json.loads(samples[0]["meta.json"])["video_id"] == "vid.b"
    for s in samples:
        assert {k for k in s if not k.startswith("__")} == {"f00.jpg", "f01.jpg", "f02.jpg", "f03.jpg",
                                                              "masks.json", "meta.json"}
    # webdataset's own decoder handles the members too
    dec = next(iter(wds.WebDataset(urls, shardshuffle=False).decode("rgb8")))
    assert dec["f00.jpg"].shape == (48, 64, 3) and dec["meta.json"]["video_id"] == "vid.b"


def test_loader_masks_decode_to_source_rles(tmp_path, corpus):
    from sav_assets.lib.dataset.loader import ShardDataset

    _, frames, _, _ = corpus
    lake, res = run(tmp_path, corpus)
    ds = ShardDataset.from_manifest(lake, "shards/v1")
    import torch

    assert isinstance(ds, torch.utils.data.IterableDataset)
    items = list(ds)
    assert len(items) == res["samples"]
    src = {(r["video_id"], r["masklet_id"], r["frame_idx"]): r for rows in frames.values() for r in rows}
    for it in items:
        meta = it["meta"]
        T = len(meta["frame_idx"])
        assert it["frames"].dtype == torch.uint8 and tuple(it["frames"].shape) == (T, 48, 64, 3)
        assert tuple(it["masks"].shape) == (T, len(meta["masklet_id"]), 48, 64)
        if meta["video_id"] == "vid_a":
            assert meta["masklet_id"] == [0]                          # masklet filter applied
        for t, f in enumerate(meta["frame_idx"]):
            for j, m in enumerate(meta["masklet_id"]):
                r = src[(meta["video_id"], m, f)]
                assert np.array_equal(it["masks"][t, j].numpy(), rle.decode(r))
                assert meta["visible"][t][j] == r["visible"]
    raw = next(s for s in ShardDataset.from_manifest(lake, "shards/v1").pipeline()
               if s["__key__"] == "vid_a_000000")
    raw = json.loads(raw["masks.json"])
    r0 = src[("vid_a", 0, 0)]
    assert raw["rles"][0][0] == {"size": r0["size"], "counts": r0["counts"]}   # stored verbatim


@needs_shared
def test_real_sav_rles_round_trip(tmp_path):
    from sav_assets.lib.dataset.loader import decode_sample

    doc = json.loads(SAV_MANUAL.read_text())
    h, w = int(doc["video_height"]), int(doc["video_width"])
    video = tmp_path / "sav.mp4"
    make_video(video, 13, h, w)
    rows = [{"video_id": "sav_000001", "masklet_id": doc["masklet_id"][j], "ann_idx": a, "frame_idx": 4 * a,
             "size": r["size"], "counts": r["counts"]}
            for a, fr in enumerate(doc["masklet"][:4]) for j, r in enumerate(fr)]
    lake = Lake(tmp_path / "lake")
    res = write_shards(lake, "shards/sav", [{"video_id": "sav_000001"}], {"sav_000001": rows}, None,
                       {"sav_000001": str(video)}, ShardConfig(window=4), now=NOW)
    assert res["samples"] == 1
    with tarfile.open(lake.local_path("shards/sav/train-000000.tar")) as tf:
        members = {m.name.split(".", 1)[1]: tf.extractfile(m).read() for m in tf.getmembers()}
    item = decode_sample(members, as_torch=False)
    assert item["frames"].shape == (4, h, w, 3)
    for a in range(4):
        for j, r in enumerate(doc["masklet"][a]):
            assert np.array_equal(item["masks"][a, j], rle.decode(r))
            assert rle.encode(item["masks"][a, j]) == {"size": r["size"], "counts": r["counts"]}


def test_manifest_and_rows(tmp_path, corpus):
    lake, res = run(tmp_path, corpus)
    m = read_manifest(lake, "shards/v1")
    assert m == res["manifest"] and m["config"]["window"] == 4 and m["videos"] == 2
    assert verify_manifest(lake, "shards/v1") == []
    for s in m["shards"]:
        data = lake.get_bytes(f"shards/v1/{s['shard']}")
        assert hashlib.sha256(data).hexdigest() == s["sha256"] and len(data) == s["bytes"]
        with tarfile.open(fileobj=io.BytesIO(data)) as tf:
            infos = tf.getmembers()
        assert {i.mtime for i in infos} == {0} and {i.mode for i in infos} == {0o444}
        assert all(not i.pax_headers for i in infos)
        members = sum(512 + -(-i.size // 512) * 512 for i in infos)
        assert len(data) == -(-(members + 1024) // 10240) * 10240           # size estimate is exact
        assert len({i.name.split(".", 1)[0] for i in infos}) == s["samples"]
    assert [s["shard"] for s in m["shards"]] == ["train-000000.tar", "train-000001.tar"]
    tbl = tables.to_table(res["rows"], tables.SHARDS)
    assert tbl.column("samples").to_pylist() == [2, 2] and tbl.column("split").to_pylist() == ["train"] * 2
    assert tbl.column("stride").to_pylist() == [2, 2]
    assert tables.SCHEMAS["shards"] is tables.SHARDS


def test_deterministic_rerun(tmp_path, corpus):
    lake1, r1 = run(tmp_path / "a", corpus)
    lake2, r2 = run(tmp_path / "b", corpus)
    _, r3 = run(tmp_path, corpus, lake=lake1)                    # re-run in place
    assert r1["manifest"] == r2["manifest"] == r3["manifest"]
    for s in r1["manifest"]["shards"]:
        assert lake1.get_bytes(f"shards/v1/{s['shard']}") == lake2.get_bytes(f"shards/v1/{s['shard']}")
    assert lake1.get_bytes("shards/v1/manifest.json") == lake2.get_bytes("shards/v1/manifest.json")
    assert lake1.list("shards/v1") == lake2.list("shards/v1")


def _fail_after(monkeypatch, n_ok: int):
    """Let ``n_ok`` shards publish, then crash while publishing the next one."""
    from sav_assets.lib.dataset import publisher

    real = publisher.publish_file
    calls = {"n": 0}

    def flaky(lake, rel, tmp):
        calls["n"] += 1
        if calls["n"] > n_ok:
            raise OSError("injected crash while publishing a shard")
        return real(lake, rel, tmp)

    monkeypatch.setattr(publisher, "publish_file", flaky)


def test_crash_leaves_no_manifest_entry_for_partial_shard(tmp_path, corpus, monkeypatch):
    lake = Lake(tmp_path / "lake")
    with monkeypatch.context() as mp:
        _fail_after(mp, 1)
        with pytest.raises(OSError, match="injected"):
            run(tmp_path, corpus, lake=lake)
    assert read_manifest(lake, "shards/v1") is None                       # nothing published
    assert lake.list("shards/v1") == ["shards/v1/train-000000.tar"]        # only the whole first shard
    assert not list((tmp_path / "lake").rglob("*.tmp"))
    _, res = run(tmp_path, corpus, lake=lake)                              # the re-run completes
    assert verify_manifest(lake, "shards/v1") == [] and res["shards"] == 2


def test_crash_during_rerun_never_leaves_a_lying_manifest(tmp_path, corpus, monkeypatch):
    lake, first = run(tmp_path, corpus)
    # same inputs: the old manifest stays valid through a crash
    with monkeypatch.context() as mp:
        _fail_after(mp, 1)
        with pytest.raises(OSError):
            run(tmp_path, corpus, lake=lake)
    assert read_manifest(lake, "shards/v1") == first["manifest"] and verify_manifest(lake, "shards/v1") == []
    # different bytes: the old manifest is withdrawn before its shard is overwritten
    other = ShardConfig(window=4, stride=2, shard_max_samples=2, jpeg_quality=40)
    with monkeypatch.context() as mp:
        _fail_after(mp, 1)
        with pytest.raises(OSError):
            run(tmp_path, corpus, cfg=other, lake=lake)
    assert read_manifest(lake, "shards/v1") is None


def test_rotation_by_bytes_and_orphan_cleanup(tmp_path, corpus):
    lake, big = run(tmp_path, corpus, cfg=ShardConfig(window=4, stride=2, shard_max_samples=1))
    assert big["shards"] == 4
    cfg = ShardConfig(window=4, stride=2, shard_max_bytes=40_000)
    _, res = run(tmp_path, corpus, cfg=cfg, lake=lake)
    assert 1 < res["shards"] < 4
    for s in res["manifest"]["shards"]:
        assert s["bytes"] <= 40_000 or s["samples"] == 1
    # shards of the older 4-shard run that the new manifest does not list are gone
    assert lake.list("shards/v1") == sorted(
        [f"shards/v1/{s['shard']}" for s in res["manifest"]["shards"]] + ["shards/v1/manifest.json"])


def test_max_side_resizes_frames_and_masks(tmp_path, corpus):
    from sav_assets.lib.dataset.loader import ShardDataset

    lake, _ = run(tmp_path, corpus, cfg=ShardConfig(window=4, max_side=32))
    it = next(iter(ShardDataset.from_manifest(lake, "shards/v1")))
    assert tuple(it["frames"].shape[1:3]) == (24, 32) and tuple(it["masks"].shape[2:]) == (24, 32)
    assert it["meta"]["source_height"] == 48


def test_worker_sharding(tmp_path, corpus):
    import torch

    from sav_assets.lib.dataset.loader import ShardDataset

    lake, res = run(tmp_path, corpus, cfg=ShardConfig(window=4, stride=2, shard_max_samples=1))
    dl = torch.utils.data.DataLoader(ShardDataset.from_manifest(lake, "shards/v1"), batch_size=None,
                                     num_workers=2)
    keys = [it["meta"]["__key__"] for it in dl]
    assert sorted(keys) == sorted(s["first_key"] for s in res["manifest"]["shards"])   # each once


@needs_shared
def test_export_sav_train(tmp_path, corpus):
    videos, _, _, paths = corpus
    doc = json.loads(SAV_MANUAL.read_text())
    lake = Lake(tmp_path / "lake")
    out = export_sav_train(lake, "exports/sav_train", videos[:2], paths,
                           {"vid_a": {"manual": doc, "auto": {"masklet": []}}})
    assert out["videos"] == 1 and out["skipped"] == [{"video_id": "vid.b", "reason": "no manual annotations"}]
    # SAM 2's layout: the 24 fps frames (vid_a: 33 frames at 24 fps), <video>_manual.json, the file list
    assert [Path(k).name for k in out["files"]] == [f"{j:05d}.jpg" for j in range(33)] + ["vid_a_manual.json"]
    assert lake.get_bytes("exports/sav_train/JPEGImages_24fps/vid_a/00032.jpg")[:2] == b"\xff\xd8"
    assert json.loads(lake.get_bytes("exports/sav_train/annotations/vid_a_manual.json")) == doc
    assert lake.get_bytes("exports/sav_train/sav_train.txt") == b"vid_a\n"


def test_undecodable_or_short_video_is_recorded_not_fatal(tmp_path, corpus):
    videos, frames, masklets, paths = corpus
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all")
    rows_long = synthetic_rows("vid_long", 41, 48, 64, n_obj=1, seed=9)    # annotations up to frame 40
    lake = Lake(tmp_path / "lake")
    res = write_shards(lake, "shards/v1", videos + [{"video_id": "vid_bad"}, {"video_id": "vid_long"}],
                       {**frames, "vid_bad": frames["vid_a"], "vid_long": rows_long},
                       masklets, {**paths, "vid_bad": str(bad), "vid_long": paths["vid_a"]},   # vid_a has 33
                       CFG, now=NOW)
    reasons = {s["video_id"]: s for s in res["skipped"]}
    assert "InvalidDataError" in reasons["vid_bad"]["reason"] or "Error" in reasons["vid_bad"]["reason"]
    assert "MissingFramesError" in reasons["vid_long"]["reason"]
    assert reasons["vid_long"]["samples_written"] == 3       # windows inside the decodable frames are kept
    assert res["samples"] == 4 + 3 and verify_manifest(lake, "shards/v1") == []


def test_manual_and_auto_masklets_with_the_same_id_stay_apart(tmp_path, corpus):
    from sav_assets.lib.dataset.loader import ShardDataset

    _, frames, _, paths = corpus
    auto = [r for r in frames["vid_a"] if r["masklet_id"] == 0]
    manual = [dict(r, masklet_type="manual", counts=rle.empty(48, 64)["counts"], visible=False) for r in auto]
    lake = Lake(tmp_path / "lake")
    write_shards(lake, "s", [{"video_id": "vid_a"}], {"vid_a": auto + manual},
                 {"vid_a": [{"masklet_id": 0, "masklet_type": "auto"}, {"masklet_id": 0, "masklet_type": "manual"}]},
                 paths, ShardConfig(window=4), now=NOW)
    it = next(iter(ShardDataset.from_manifest(lake, "s")))
    assert it["meta"]["masklet_id"] == [0, 0] and it["meta"]["masklet_type"] == ["auto", "manual"]
    assert it["masks"][:, 1].sum() == 0 and it["masks"][:, 0].sum() > 0


def test_tar_writer_bytes_match_stock_webdataset_writer():
    import webdataset as wds

    from sav_assets.lib.dataset.publisher import _TarWriter

    sample = {"__key__": "k_000000", "f00.jpg": b"x" * 70001, "masks.json": b"{}", "meta.json": b"[1]"}
    outs = []
    for cls in (wds.TarWriter, _TarWriter):
        buf = io.BytesIO()
        w = cls(buf, encoder=False, compress=False, mtime=0, user="sav", group="sav", mode=0o444)
        w.write(sample)
        w.write(dict(sample, __key__="k_000001"))
        w.close()
        outs.append(buf.getvalue())
    assert outs[0] == outs[1] and len(outs[0]) % 10240 == 0


def test_shard_publisher_context_post_hook_and_abort(tmp_path):
    from sav_assets.lib.dataset.publisher import ShardPublisher

    lake = Lake(tmp_path / "lake")
    samples = [{"__key__": f"k_{i:06d}", "meta.json": b"[%d]" % i} for i in range(5)]
    posted = []
    with ShardPublisher(lake, "p", "val", max_samples=2, post=posted.append,
                        manifest_extra=lambda: {"note": len(posted)}) as pub:
        for s in samples:
            pub.write(s)
    assert [e["shard"] for e in posted] == ["val-000000.tar", "val-000001.tar", "val-000002.tar"]
    assert [e["samples"] for e in pub.entries] == [2, 2, 1] and posted == pub.entries
    m = read_manifest(lake, "p")
    assert m == pub.manifest and m["samples"] == 5 and m["note"] == 3 and m["split"] == "val"
    assert verify_manifest(lake, "p") == [] and "k_000004" == m["shards"][2]["last_key"]
    # an error inside the block: the open shard is dropped, no manifest, the old one stays
    with pytest.raises(RuntimeError, match="boom"):
        with ShardPublisher(lake, "p", "val", max_samples=2) as pub2:
            pub2.write(samples[0])
            raise RuntimeError("boom")
    assert read_manifest(lake, "p") == m and pub2.manifest is None
    assert not list((tmp_path / "lake").rglob("*.tmp"))

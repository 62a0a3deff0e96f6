"""lib/util.py: the one SHA-256, atomic-write and Markdown-table helpers."""

from __future__ import annotations

import hashlib
import os

import pyarrow as pa
import pytest

from sav_assets.lib import util


def test_sha256_helpers_agree_with_hashlib(tmp_path):
    data = os.urandom(3 * 1024 + 7)
    f = tmp_path / "blob"
    f.write_bytes(data)
    want = hashlib.sha256(data).hexdigest()
    assert util.sha256_bytes(data) == want
    assert util.sha256_file(f, chunk=1000) == want          # several chunks
    assert util.sha256_text("ab") == hashlib.sha256(b"ab").hexdigest()
    assert util.sha256_json({"b": 1, "a": [1, 2]}) == util.sha256_json({"a": [1, 2], "b": 1})


def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "sub" / "x.json"
    util.atomic_write_bytes(target, b"old")
    util.atomic_write_bytes(target, b"new", fsync=False)
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in target.parent.iterdir()) == ["x.json"]


def test_atomic_copy_failure_keeps_old_file(tmp_path):
    target = tmp_path / "x.bin"
    target.write_bytes(b"old")
    with pytest.raises(FileNotFoundError):
        util.atomic_copy(tmp_path / "missing", target)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.bin"]
    src = tmp_path / "src"
    src.write_bytes(b"payload")
    util.atomic_copy(src, target)
    assert target.read_bytes() == b"payload"


def test_markdown_table_from_rows_and_arrow():
    rows = [{"name": "a|b", "x": 0.123456}, {"name": None, "x": 2}]
    md = util.markdown_table(rows)
    assert md.splitlines() == ["| name | x |", "| --- | --- |", "| a\\|b | 0.1235 |", "|  | 2 |"]
    assert util.markdown_table(pa.Table.from_pylist(rows)) == md
    many = util.markdown_table([{"i": i} for i in range(5)], max_rows=2)
    assert many.endswith("_3 more rows_") and "| 1 |" in many and "| 2 |" not in many
    assert util.markdown_table([]) == "_(no columns)_"


def test_counts_table_largest_first():
    md = util.counts_table({"b": 1, "a": 3, "c": 1}, "reason", "videos")
    assert md.splitlines()[2:] == ["| a | 3 |", "| b | 1 |", "| c | 1 |"]
    assert md.splitlines()[0] == "| reason | videos |"


# ---- published files honour the umask ---------------------------------------------------------


@pytest.fixture(params=[(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)], ids=["022", "077", "002"])
def umask(request):
    """The process umask set for the test (restored afterwards) and the mode a new file should get."""
    mask, mode = request.param
    old = os.umask(mask)
    try:
        yield mode
    finally:
        os.umask(old)


def _mode(path) -> int:
    return os.stat(path).st_mode & 0o777


def test_atomic_writes_honour_the_umask(tmp_path, umask):
    # a temporary file is created owner-only (0600); the published file must not keep that mode
    util.atomic_write_bytes(tmp_path / "a.json", b"{}")
    util.atomic_write_bytes(tmp_path / "a.json", b"{}")        # replacing keeps the umask's mode
    (tmp_path / "src").write_bytes(b"x")
    util.atomic_copy(tmp_path / "src", tmp_path / "sub" / "copy.bin")
    assert {p.name: _mode(p) for p in [tmp_path / "a.json", tmp_path / "sub" / "copy.bin"]} == \
        {"a.json": umask, "copy.bin": umask}


def test_published_lake_files_are_readable_by_the_umask(tmp_path, umask, monkeypatch):
    """A table part, a batch manifest, an SA-V export, a shard and its manifest in a local lake get
    0666 & ~umask like any file a tool writes, so a training job running as another user reads them."""
    from sav_assets.lib.dataset.publisher import ShardPublisher
    from sav_assets.lib.sav import exports
    from sav_assets.lib.store.lake import Lake

    root = tmp_path / "lake"
    lake = Lake(root)
    lake.write_part("videos", "b1", "part-0", pa.table({"video_id": ["v1"]}))
    lake.put_bytes("batches/20240101-abc.json", b'{"objects": []}', content_type="application/json")
    monkeypatch.setattr(exports, "build_sav_docs", lambda *a, **k: {("v1", "manual"): {"video_id": "v1"}})
    assert len(exports.export_sav_all(lake)) == 1
    with ShardPublisher(lake, "shards/p", "train", max_samples=1) as pub:
        pub.write({"__key__": "k_000000", "meta.json": b"[0]"})
    (tmp_path / "elsewhere.bin").write_bytes(b"x")      # a file published from outside the lake's folder
    lake.store.move_file("previews/v1.png", tmp_path / "elsewhere.bin")
    modes = {p.relative_to(root).as_posix(): _mode(p) for p in root.rglob("*") if p.is_file()}
    for rel in ["tables/videos/b1/part-0.parquet", "batches/20240101-abc.json", "exports/sav/v1_manual.json",
                "shards/p/train-000000.tar", "shards/p/manifest.json", "previews/v1.png"]:
        assert modes.pop(rel) == umask, rel
    assert all(m == umask for m in modes.values()), modes


def test_union_find_roots_are_the_smallest_id_whatever_the_order():
    uf = util.UnionFind()
    uf.union("c", "d")
    uf.union("d", "b")
    uf.union("x", "y")
    assert {uf.find(v) for v in "bcd"} == {"b"}
    assert uf.find("y") == "x" and uf.find("lonely") == "lonely"
    other = util.UnionFind()
    for a, b in [("x", "y"), ("d", "b"), ("c", "d")]:
        other.union(b, a)
    assert all(uf.find(v) == other.find(v) for v in "bcdxy")

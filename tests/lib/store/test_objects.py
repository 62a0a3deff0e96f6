"""One contract, two backends: every test here runs on a LocalStore and on an S3Store (moto's real HTTP
server on loopback), except the few that are about one backend's mechanics."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sav_assets.lib.store.objects import (
    LocalStore,
    ObjectStore,
    S3Settings,
    S3Store,
    UnsafeKeyError,
    open_store,
    split_object_uri,
    store_for_object,
)


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def store(request, tmp_path) -> ObjectStore:
    if request.param == "local":
        return LocalStore(tmp_path / "root")
    import uuid

    import boto3

    endpoint = request.getfixturevalue("s3_endpoint")
    bucket = f"bkt-{uuid.uuid4().hex[:12]}"      # moto's state outlives one server: a fresh bucket per test
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
    return open_store(f"s3://{bucket}/some/prefix")


def _no_temp_files(root: Path) -> bool:
    return not [p for p in root.rglob("*") if p.name.endswith(".tmp")]


def test_put_get_exists_delete_and_uris(store):
    assert isinstance(store, ObjectStore)
    uri = store.put("a/b/c.txt", b"hello", content_type="text/plain")
    assert uri == store.uri("a/b/c.txt") and uri.startswith(store.uri() + "/")
    assert store.key_for_uri(uri) == "a/b/c.txt"
    assert store.get("a/b/c.txt") == b"hello" and store.exists("a/b/c.txt")
    assert not store.exists("a/b/missing.txt")
    store.put("a/b/c.txt", b"replaced")
    assert store.get("a/b/c.txt") == b"replaced"
    store.delete("a/b/c.txt")
    store.delete("a/b/c.txt")                     # deleting a missing object is fine
    assert not store.exists("a/b/c.txt") and store.list() == []


def test_listing_is_sorted_relative_and_skips_temp_files(store):
    for key in ["t/x/2.bin", "t/x/10.bin", "t/a.bin", "u/z.bin", "t/x/.part-0.parquet.abc.tmp"]:
        store.put(key, key.encode())
    assert store.list() == ["t/a.bin", "t/x/10.bin", "t/x/2.bin", "u/z.bin"]
    assert store.list("t/x") == ["t/x/10.bin", "t/x/2.bin"]
    assert store.list("nothing/here") == []
    objs = store.list_objects("u")
    assert [(o.key, o.uri, o.size) for o in objs] == [("u/z.bin", store.uri("u/z.bin"), 7)]
    assert objs[0].version and objs[0].mtime > 0 and objs[0].metadata == {}
    info = store.info("u/z.bin")
    assert (info.key, info.size, info.version) == ("u/z.bin", 7, objs[0].version)


def test_signatures_change_when_an_object_is_rewritten(store):
    store.put("t/p.parquet", b"one")
    first = store.signatures("t")
    assert list(first) == ["t/p.parquet"] and first["t/p.parquet"].startswith("3:")
    store.put("t/p.parquet", b"two")            # same name, same size, other bytes
    if isinstance(store, LocalStore):           # mtime_ns can repeat within a clock tick: make it move
        st = os.stat(store.uri("t/p.parquet"))
        os.utime(store.uri("t/p.parquet"), ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert store.signatures("t")["t/p.parquet"] != first["t/p.parquet"]


def test_files_and_trees(store, tmp_path):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    (src / "one.txt").write_bytes(b"1")
    (src / "sub" / "two.txt").write_bytes(b"22")
    store.put_file("f/one.txt", src / "one.txt")
    assert store.get("f/one.txt") == b"1"
    assert store.put_tree("tree", src) == ["tree/one.txt", "tree/sub/two.txt"]
    assert store.list("tree") == ["tree/one.txt", "tree/sub/two.txt"]
    dest = tmp_path / "got.txt"
    store.get_file("tree/sub/two.txt", dest)
    assert dest.read_bytes() == b"22"

    with store.write_tree("written") as out:
        Path(out, "deep").mkdir()
        Path(out, "deep", "w.txt").write_bytes(b"w")
    assert store.list("written") == ["written/deep/w.txt"] and store.get("written/deep/w.txt") == b"w"

    store.delete_prefix("tree")
    assert store.list("tree") == [] and store.list("written") == ["written/deep/w.txt"]
    with pytest.raises(UnsafeKeyError):
        store.delete_prefix("")


def test_staging_path_and_move_file_publish(store, tmp_path):
    tmp = store.staging_path("shards/s-000000.tar", tmp_path)
    Path(tmp).write_bytes(b"tar bytes")
    assert store.list("shards") == []           # a staged file is not an object yet
    uri = store.move_file("shards/s-000000.tar", tmp)
    assert uri == store.uri("shards/s-000000.tar") and not os.path.exists(tmp)
    assert store.get("shards/s-000000.tar") == b"tar bytes"


def test_local_path_gives_a_file_and_cleans_up(store):
    store.put("tables/t/b1/part-0.parquet", b"PAR1")
    with store.local_path("tables/t/b1/part-0.parquet") as p:
        assert open(p, "rb").read() == b"PAR1"
        assert Path(p).parent.name == "b1"      # the key's folders survive (DuckDB reads batch names from them)
    with store.local_path(store.uri("tables/t/b1/part-0.parquet")) as p2:   # a full URI works too
        assert open(p2, "rb").read() == b"PAR1"
    if isinstance(store, S3Store):
        assert not os.path.exists(p) and not os.path.exists(p2)   # temporary downloads are gone
    else:
        assert p == store.uri("tables/t/b1/part-0.parquet")        # the file itself, never a copy


@pytest.mark.parametrize("bad", ["../escape", "a/../../escape", "/etc/passwd", "a\x00b"])
def test_traversal_is_refused(store, bad):
    for op in (lambda: store.put(bad, b"x"), lambda: store.get(bad), lambda: store.exists(bad),
               lambda: store.delete(bad), lambda: store.local_path(bad).__enter__()):
        with pytest.raises(UnsafeKeyError):
            op()


def test_uri_outside_the_store_is_refused(store, tmp_path):
    other = "s3://another-bucket/x.mp4" if isinstance(store, S3Store) else str(tmp_path / "elsewhere" / "x.mp4")
    with pytest.raises(UnsafeKeyError, match="not under this store"):
        store.key_for_uri(other)
    with pytest.raises(UnsafeKeyError):
        store.local_path(other).__enter__()
    # a sibling whose name starts like the root is outside too
    with pytest.raises(UnsafeKeyError):
        store.key_for_uri(store.uri() + "-sibling/x")


def test_arrow_filesystem_reads_what_put_wrote(store):
    buf = io.BytesIO()
    pq.write_table(pa.table({"a": [1, 2, 3]}), buf)
    store.put("tables/t/b1/part-0.parquet", buf.getvalue())
    fs, base = store.arrow_filesystem()
    assert pq.read_table(f"{base}/tables/t/b1/part-0.parquet", filesystem=fs)["a"].to_pylist() == [1, 2, 3]


def test_local_put_is_atomic(tmp_path, monkeypatch):
    store = LocalStore(tmp_path)
    store.put("x/f.bin", b"old")

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        store.put("x/f.bin", b"new")
    with pytest.raises(OSError, match="disk full"):
        store.put_file("x/f.bin", tmp_path / "x" / "f.bin")
    monkeypatch.undo()
    assert store.get("x/f.bin") == b"old" and _no_temp_files(tmp_path)


def test_local_listing_never_follows_symlinks(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"s")
    root = tmp_path / "root"
    root.mkdir()
    (root / "link.txt").symlink_to(outside / "secret.txt")
    (root / "linkdir").symlink_to(outside, target_is_directory=True)
    (root / "real.txt").write_bytes(b"r")
    assert LocalStore(root).list() == ["real.txt"]


@pytest.mark.s3
def test_s3_user_metadata_and_explicit_client(s3_endpoint):
    import boto3

    client = S3Settings(endpoint_url=s3_endpoint, region_name="us-east-1").client()
    client.create_bucket(Bucket="meta")     # (one test uses this bucket)
    client.put_object(Bucket="meta", Key="p/v.mp4", Body=b"v", Metadata={"licence": "cc-by-4.0"})
    store = open_store("s3://meta/p/", client=client)
    assert isinstance(store, S3Store) and store.client is client and store.uri() == "s3://meta/p"
    assert store.head_metadata("v.mp4") == {"licence": "cc-by-4.0"}
    assert store.list_objects(with_metadata=True)[0].metadata == {"licence": "cc-by-4.0"}
    assert store.local_root is None and not store.partial_writes_visible
    assert boto3.client("s3", endpoint_url=s3_endpoint).get_object(Bucket="meta", Key="p/v.mp4")["Body"].read() == b"v"


def test_open_store_and_object_uris(tmp_path):
    local = open_store(tmp_path / "lake")
    assert isinstance(local, LocalStore) and local.local_root == (tmp_path / "lake").resolve()
    assert local.partial_writes_visible and local.head_metadata is not None
    assert split_object_uri("s3://b/p/q/v.mp4") == ("s3://b/p/q", "v.mp4")
    assert split_object_uri("s3://b/v.mp4") == ("s3://b", "v.mp4")
    assert split_object_uri("/data/in/v.mp4") == ("/data/in", "v.mp4")
    assert split_object_uri("v.mp4") == (".", "v.mp4")
    with pytest.raises(ValueError, match="without an object key"):
        split_object_uri("s3://bucket-only/")
    s, key = store_for_object(str(tmp_path / "in" / "v.mp4"))
    assert isinstance(s, LocalStore) and s.uri(key) == str(tmp_path / "in" / "v.mp4")


def test_put_if_absent_only_the_first_writer_wins(store):
    """The conditional create that batch claims rest on: O_EXCL-like locally, ``If-None-Match: *`` on S3."""
    assert store.put_if_absent("claims/a.json", b'{"batch_id": "first"}') is True
    assert store.put_if_absent("claims/a.json", b'{"batch_id": "second"}') is False
    assert store.get("claims/a.json") == b'{"batch_id": "first"}'       # the loser changed nothing
    assert store.list("claims") == ["claims/a.json"]                   # and left no temporary file behind


def test_put_if_absent_under_contention_has_one_winner(store):
    from concurrent.futures import ThreadPoolExecutor

    for round_ in range(5):
        key = f"claims/k{round_}.json"
        with ThreadPoolExecutor(8) as pool:
            won = list(pool.map(lambda i, k=key: store.put_if_absent(k, f"writer-{i}".encode()), range(8)))
        assert won.count(True) == 1, won
        assert store.get(key) == f"writer-{won.index(True)}".encode()
    assert store.list("claims") == [f"claims/k{i}.json" for i in range(5)]
    if store.local_root is not None:
        assert _no_temp_files(store.local_root)

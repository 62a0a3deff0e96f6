"""compacted_tables and dataset_statistics, called directly on the tiny lake (both describe the whole lake)."""

from sav_assets.lib.store.catalog import query


def test_compacted_tables(tiny_lake):
    m = tiny_lake.md("compacted_tables")
    assert m["failed_tables"] == []
    n = tiny_lake.lake.read_table("masklet_frames").num_rows
    assert m["masklet_frames/rows"] == n > 0
    assert (tiny_lake.root / "compacted" / "masklet_frames" / "CURRENT.json").exists()
    assert query(tiny_lake.lake, "select count(*) n from masklet_frames").to_pylist() == [{"n": n}]
    assert "| masklet_frames | compacted |" in m["compaction"]


def test_dataset_statistics(tiny_lake):
    m = tiny_lake.md("dataset_statistics")
    report = (tiny_lake.root / "reports" / "statistics.md").read_text()
    assert m["statistics"] == report and "Masklet types" in report
    assert (tiny_lake.root / "reports" / "statistics.png").read_bytes()[:4] == b"\x89PNG"
    assert m["plots"].startswith("![statistics](data:image/png;base64,")
    assert m["split_sizes/rows"] == 2                                   # train and val
    assert m["masklets_per_video/rows"] >= 1 and m["videos_by_status/rows"] >= 1

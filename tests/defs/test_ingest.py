"""raw_videos and video_quality, called directly on the tiny lake: tables, standard metadata, counts."""

from sav_assets.defs.metadata import table_schema


def test_raw_videos(tiny_lake):
    m = tiny_lake.md("raw_videos")
    rows = {r["source_key"]: r for r in tiny_lake.lake.read_table("videos").to_pylist()}
    assert m["dagster/row_count"] == len(rows) == 5           # 3 demo videos, the empty file, the fake mp4
    assert [c.name for c in m["dagster/column_schema"].columns] == [c.name for c in table_schema("videos").columns]
    assert m["videos_ok"] == 3 and m["videos_quarantined"] == 2
    assert rows["broken_empty.mp4"]["error_class"] == "empty_file"
    assert "empty_file" in m["quarantine_by_error_class"] and m["non_video_skipped"] >= 1
    assert m["batch_id"] == tiny_lake.batch_id
    assert f"tables/videos/{tiny_lake.batch_id}/" in m["videos/path"]
    assert "sav_900000" in m["videos/preview"]


def test_video_quality(tiny_lake):
    m = tiny_lake.md("video_quality")
    rows = tiny_lake.lake.read_table("video_quality").to_pylist()
    assert m["dagster/row_count"] == m["videos_assessed"] == len(rows) == 3
    assert m["videos_passed"] == 3 and m["videos_rejected"] == 0, [r["reasons"] for r in rows]
    assert m["rejections_by_reason"] == "_none_"
    assert {c.name for c in m["dagster/column_schema"].columns} >= {"video_id", "passed", "reasons"}

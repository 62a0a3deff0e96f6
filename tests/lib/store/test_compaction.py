"""Compaction of lake tables (sav_assets/lib/store/compaction.py) and the DuckDB views over compacted tables.

Everything here runs real DuckDB and pyarrow over real Parquet files in a temporary lake (and, for the
``s3`` tests, a moto S3 server on loopback). The invariant under test: the views return exactly the
rows of the batch parts (the source of truth), whatever has been compacted, written, rewritten or
deleted since, as soon as the catalog is refreshed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sav_assets.lib.store import catalog
from sav_assets.lib.store.compaction import (
    BATCH_COLUMN,
    SORT_KEYS,
    CompactionError,
    compact_table,
    drop_compaction,
    pointer_rel,
    read_pointer,
    table_layout,
)
from sav_assets.lib.store.lake import SCHEMA_BATCH, Lake
from sav_assets.lib.store.tables import MASKLET_FRAMES, SCHEMAS, VIDEOS, to_table

T = "masklet_frames"
KEYS = list(SORT_KEYS[T])
ORDER = "video_id, masklet_type, masklet_id, frame_idx, batch_id, counts"
SCHEMA_PART = f"tables/{T}/{SCHEMA_BATCH}/empty.parquet"


def _frames(batch: str, videos, n_frames: int = 3, tag: str = "") -> pa.Table:
    """Rows of one batch, written deliberately out of sort order (reverse masklet ids and frames)."""
    rows = []
    for v in videos:
        for mtype in ("manual", "auto"):
            for m in (2, 1, 0):
                for f in range(n_frames - 1, -1, -1):
                    rows.append({"video_id": v, "batch_id": batch, "masklet_id": m, "masklet_type": mtype,
                                 "ann_idx": f, "frame_idx": 4 * f, "size": [480, 640],
                                 "counts": f"{tag}{batch}:{v}:{mtype}:{m}:{f}", "area": 100 + f,
                                 "bbox": [1.0, 2.0, 3.0, float(f)], "visible": f % 2 == 0,
                                 "predicted_iou": 0.5, "stability_score": 0.25})
    return to_table(rows, MASKLET_FRAMES)


def _compact(lake: Lake, table: str = T, **kw):
    return compact_table(lake, table, log=lambda _m: None, **kw)


def _view(lake: Lake, table: str = T, order: str = ORDER) -> pa.Table:
    catalog.refresh_catalog(lake)
    return catalog.query(lake, f"select * from {table} order by {order}")


def _rows(tbl: pa.Table) -> list[dict]:
    return tbl.to_pylist()


def _generations(lake: Lake, table: str = T) -> set[str]:
    d = lake.local_path(f"compacted/{table}")
    return {p.name for p in d.iterdir() if p.is_dir()} if d.exists() else set()


def _key(r: dict) -> tuple:
    return (r["video_id"], r["masklet_type"], r["masklet_id"], r["frame_idx"], r["batch_id"])


def _three_batches(lake: Lake) -> dict[str, pa.Table]:
    batches = {"b1": _frames("b1", ["v3", "v1"]), "b2": _frames("b2", ["v2", "v5"]),
               "b3": _frames("b3", ["v4", "v1"])}       # v1 appears in two batches
    for b, tbl in batches.items():
        lake.replace_batch(T, b, tbl)
    return batches


def _compacted_three_batches(tmp_path) -> tuple[Lake, dict[str, pa.Table]]:
    """A lake with three batches, viewed once, then compacted."""
    lake = Lake(tmp_path)
    batches = _three_batches(lake)
    _view(lake)
    assert _compact(lake).compacted
    return lake, batches


def _expected(*tbls: pa.Table) -> list[dict]:
    """The rows the view should return: the given tables, in the view's ORDER."""
    rows = [r for t in tbls for r in t.to_pylist()]
    return sorted(rows, key=lambda r: (r["video_id"], r["masklet_type"], r["masklet_id"], r["frame_idx"],
                                       r["batch_id"], r["counts"]))


def _no_duplicates(tbl: pa.Table) -> None:
    keys = [_key(r) for r in tbl.to_pylist()]
    assert len(keys) == len(set(keys))


# ---- 1. compaction keeps the view identical ------------------------------------------------------


def test_compaction_keeps_view_rows_and_writes_sorted_files(tmp_path):
    lake = Lake(tmp_path)
    batches = _three_batches(lake)
    before = _view(lake)
    assert _rows(before) == _expected(*batches.values())

    res = _compact(lake)
    assert res.compacted and res.reason == "compacted"
    assert (res.rows, res.source_parts, res.batches, res.files) == (before.num_rows, 3, 3, 1)

    after = _view(lake)
    assert after.schema == before.schema
    assert after.equals(before)
    assert BATCH_COLUMN not in after.column_names
    assert after.column_names == SCHEMAS[T].names

    # the view really reads the compacted generation now
    con = catalog.connect(lake, read_only=False)           # the file views (ad hoc SQL reads datasets)
    try:
        view_sql = con.execute(f"select sql from duckdb_views() where view_name = '{T}'").fetchone()[0]
    finally:
        con.close()
    assert f"compacted/{T}/{res.generation}/" in view_sql

    # the pointer: the generation, its files, and the version of every source part
    ptr = json.loads(lake.get_bytes(pointer_rel(T)))
    assert ptr == read_pointer(lake, T)
    assert ptr["generation"] == res.generation
    assert ptr["files"] == [f"compacted/{T}/{res.generation}/data_0.parquet"]
    assert all(lake.exists(f) for f in ptr["files"])
    part_sigs = {r: v for r, v in lake.signatures(f"tables/{T}").items() if SCHEMA_BATCH not in r}
    assert ptr["sources"] == part_sigs
    assert sorted(ptr["sources"]) == [f"tables/{T}/{b}/part-0.parquet" for b in ("b1", "b2", "b3")]
    assert ptr["rows"] == before.num_rows
    assert ptr["sort_by"] == KEYS

    layout = table_layout(lake, T)
    assert layout.is_compacted and layout.generation == res.generation
    assert layout.compacted == ptr["files"]
    assert layout.fresh_batches == ["b1", "b2", "b3"]
    assert layout.stale_batches == []
    assert layout.parts == [SCHEMA_PART]
    assert layout.parts_match_schema

    # the compacted file: sorted by SORT_KEYS, every row tagged with the batch it came from
    comp = pq.read_table(str(lake.local_path(ptr["files"][0])))
    assert comp.column_names == SCHEMAS[T].names + [BATCH_COLUMN]
    rows = comp.to_pylist()
    sort_tuples = [tuple(r[k] for k in KEYS) for r in rows]
    assert sort_tuples == sorted(sort_tuples)
    assert all(r[BATCH_COLUMN] == r["batch_id"] for r in rows)
    assert {r[BATCH_COLUMN] for r in rows} == {"b1", "b2", "b3"}
    # same rows as the parts, types included
    # DuckDB marks columns without nulls NOT NULL in the compacted file: compare names and types
    assert [(f.name, f.type) for f in comp.drop_columns([BATCH_COLUMN]).schema] == [
        (f.name, f.type) for f in MASKLET_FRAMES]
    assert _expected(comp.drop_columns([BATCH_COLUMN])) == _expected(*batches.values())


def test_compaction_into_several_files_is_globally_sorted(tmp_path):
    lake = Lake(tmp_path)
    all_parts = []
    for i in range(4):
        tbl = _frames(f"b{i}", [f"v{j:03d}" for j in range(i, 240, 4)], n_frames=8)
        lake.replace_batch(T, f"b{i}", tbl)
        all_parts.append(tbl)
    before = _view(lake)
    res = _compact(lake, row_group_size=2048, file_size="16KB")
    assert res.compacted and res.files > 1
    files = read_pointer(lake, T)["files"]
    assert len(files) == res.files
    files = sorted(files, key=lambda f: int(Path(f).stem.split("_")[1]))     # data_0, data_1, ...
    comp = pa.concat_tables([pq.read_table(str(lake.local_path(f))) for f in files])
    assert comp.num_rows == res.rows == before.num_rows
    sort_tuples = [tuple(r[k] for k in KEYS) for r in comp.select(KEYS).to_pylist()]
    assert sort_tuples == sorted(sort_tuples)
    assert comp[BATCH_COLUMN].to_pylist() == comp["batch_id"].to_pylist()
    assert _view(lake).equals(before)


def test_compaction_of_unsorted_table_and_timestamps(tmp_path):
    """A table without SORT_KEYS (videos) is sorted by video_id; timestamps keep their UTC type."""
    import datetime as dt

    lake = Lake(tmp_path)
    t0 = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.timezone.utc)
    for b, ids in (("b1", ["c", "a"]), ("b2", ["b"])):
        lake.replace_batch("videos", b, to_table([
            {"video_id": i, "batch_id": b, "status": "ok", "bytes": 10, "video_fps": 24.0,
             "ingested_at": t0 + dt.timedelta(seconds=ord(i))} for i in ids], VIDEOS))
    before = _view(lake, "videos", "video_id")
    res = _compact(lake, "videos")
    assert res.compacted
    assert read_pointer(lake, "videos")["sort_by"] == ["video_id"]
    comp = pq.read_table(str(lake.local_path(read_pointer(lake, "videos")["files"][0])))
    assert comp["video_id"].to_pylist() == ["a", "b", "c"]
    assert comp.schema.field("ingested_at").type == VIDEOS.field("ingested_at").type
    after = _view(lake, "videos", "video_id")
    assert after.equals(before)


# ---- 2. new batches after compaction ---------------------------------------------------------------


@pytest.mark.parametrize("how", ["write_part", "replace_batch"])
def test_new_batch_after_compaction_is_visible_once(tmp_path, how):
    lake, batches = _compacted_three_batches(tmp_path)
    new = _frames("b4", ["v1", "v9"])
    if how == "write_part":
        lake.write_part(T, "b4", "part-0", new)
    else:
        lake.replace_batch(T, "b4", new)

    view = _view(lake)
    assert _rows(view) == _expected(*batches.values(), new)
    _no_duplicates(view)

    layout = table_layout(lake, T)
    assert layout.fresh_batches == ["b1", "b2", "b3"]
    assert "b4" not in layout.fresh_batches and "b4" not in layout.stale_batches
    assert layout.parts == [SCHEMA_PART, f"tables/{T}/b4/part-0.parquet"]

    # compacting again folds it in: same rows, now all fresh
    assert _compact(lake).compacted
    assert table_layout(lake, T).fresh_batches == ["b1", "b2", "b3", "b4"]
    assert _view(lake).equals(view)


def test_extra_part_in_compacted_batch_is_read_from_parts(tmp_path):
    lake, batches = _compacted_three_batches(tmp_path)
    extra = _frames("b2", ["v7"])
    lake.write_part(T, "b2", "part-1", extra)
    layout = table_layout(lake, T)
    assert layout.stale_batches == ["b2"]
    assert layout.parts == [SCHEMA_PART, f"tables/{T}/b2/part-0.parquet", f"tables/{T}/b2/part-1.parquet"]
    view = _view(lake)
    assert _rows(view) == _expected(*batches.values(), extra)
    _no_duplicates(view)


# ---- 3. a compacted batch rewritten -------------------------------------------------------------


def test_rewritten_batch_replaces_its_compacted_rows(tmp_path):
    lake, batches = _compacted_three_batches(tmp_path)
    part = f"tables/{T}/b2/part-0.parquet"
    sig_before = lake.signatures(f"tables/{T}")[part]

    new_b2 = _frames("b2", ["v2"], n_frames=2, tag="re-")   # fewer rows, other counts: other size
    lake.replace_batch(T, "b2", new_b2)
    assert lake.signatures(f"tables/{T}")[part] != sig_before
    assert lake.list(f"tables/{T}/b2") == [part]          # same file name as before

    layout = table_layout(lake, T)
    assert layout.fresh_batches == ["b1", "b3"]
    assert layout.stale_batches == ["b2"]
    assert layout.parts == [SCHEMA_PART, part]

    view = _view(lake)
    assert _rows(view) == _expected(batches["b1"], new_b2, batches["b3"])
    _no_duplicates(view)
    b2_counts = catalog.query(lake, f"select counts from {T} where batch_id = 'b2'")["counts"].to_pylist()
    assert b2_counts and all(c.startswith("re-") for c in b2_counts)

    # a stale batch triggers compaction even below min_new_parts; afterwards it is fresh again
    res = _compact(lake, min_new_parts=100)
    assert res.compacted
    layout = table_layout(lake, T)
    assert layout.fresh_batches == ["b1", "b2", "b3"] and layout.stale_batches == []
    assert layout.parts == [SCHEMA_PART]
    assert _view(lake).equals(view)


def test_rewrite_with_identical_content_keeps_rows(tmp_path):
    """A re-run that writes the very same rows (same size) must not lose or double the batch."""
    lake = Lake(tmp_path)
    batches = _three_batches(lake)
    before = _view(lake)
    assert _compact(lake).compacted
    lake.replace_batch(T, "b1", batches["b1"])
    view = _view(lake)
    assert view.equals(before)
    _no_duplicates(view)


# ---- 4. a batch deleted after compaction ----------------------------------------------------------


def test_deleted_batch_disappears(tmp_path):
    lake, batches = _compacted_three_batches(tmp_path)
    for rel in lake.list(f"tables/{T}/b2"):
        lake.delete(rel)
    view = _view(lake)
    assert _rows(view) == _expected(batches["b1"], batches["b3"])
    assert "b2" not in table_layout(lake, T).fresh_batches
    # recompacting drops it from the generation too
    assert _compact(lake).compacted
    assert sorted({r.split("/")[2] for r in read_pointer(lake, T)["sources"]}) == ["b1", "b3"]
    assert _view(lake).equals(view)


def test_all_batches_deleted_after_compaction(tmp_path):
    lake = Lake(tmp_path)
    _three_batches(lake)
    _view(lake)
    assert _compact(lake).compacted
    for b in ("b1", "b2", "b3"):
        for rel in lake.list(f"tables/{T}/{b}"):
            lake.delete(rel)
    assert _view(lake).num_rows == 0
    res = _compact(lake)
    assert not res.compacted
    assert _view(lake).num_rows == 0


# ---- 5. when compaction is skipped ---------------------------------------------------------------


def test_skips_force_and_errors(tmp_path):
    lake = Lake(tmp_path)
    assert not _compact(lake).compacted                      # empty table: nothing to do
    _three_batches(lake)
    catalog.refresh_catalog(lake)                            # writes the _schema part: not a new part
    assert not _compact(lake, min_new_parts=4).compacted     # 3 new parts < 4
    first = _compact(lake, min_new_parts=3)
    assert first.compacted

    again = _compact(lake)
    assert not again.compacted and "nothing new" in again.reason
    assert read_pointer(lake, T)["generation"] == first.generation

    lake.replace_batch(T, "b4", _frames("b4", ["v8"]))
    skipped = _compact(lake, min_new_parts=2)
    assert not skipped.compacted and "min_new_parts" in skipped.reason
    assert read_pointer(lake, T)["generation"] == first.generation
    assert table_layout(lake, T).parts == [SCHEMA_PART, f"tables/{T}/b4/part-0.parquet"]

    second = _compact(lake, min_new_parts=1)
    assert second.compacted and second.generation != first.generation
    # incremental: only the new batch is sorted, into a second segment; the first is not read
    assert second.source_parts == 1 and second.batches == 1 and second.segments == 2
    assert [sg["generation"] for sg in read_pointer(lake, T)["segments"]] == [first.generation, second.generation]

    assert not _compact(lake).compacted
    forced = _compact(lake, force=True)
    assert forced.compacted and forced.generation not in (first.generation, second.generation)
    assert forced.source_parts == 4 and forced.segments == 1 and forced.reason == "compacted"
    assert read_pointer(lake, T)["generation"] == forced.generation

    with pytest.raises(CompactionError, match="unknown table"):
        _compact(lake, "no_such_table")
    with pytest.raises(CompactionError, match="compression"):
        _compact(lake, force=True, compression="brotli-9000")
    assert read_pointer(lake, T)["generation"] == forced.generation


# ---- 6. crash safety ---------------------------------------------------------------------------


def _no_temp_files(root: Path) -> bool:
    return not [p for p in root.rglob("*") if p.name.endswith(".tmp")]


def test_failure_writing_pointer_keeps_previous_generation(tmp_path, monkeypatch):
    lake = Lake(tmp_path)
    batches = _three_batches(lake)
    _view(lake)
    first = _compact(lake)
    new = _frames("b4", ["v6"])
    lake.replace_batch(T, "b4", new)
    before = _view(lake)
    assert _rows(before) == _expected(*batches.values(), new)
    ptr_bytes = lake.get_bytes(pointer_rel(T))

    seen_at_failure = {}
    real_put = Lake.put_bytes

    def failing_put(self, rel, data, content_type=None):
        if rel == pointer_rel(T):
            seen_at_failure["generations"] = _generations(self)
            seen_at_failure["files"] = sorted(p.name for p in self.local_path(f"compacted/{T}").rglob("*.parquet"))
            raise OSError("disk full")
        return real_put(self, rel, data, content_type)

    monkeypatch.setattr(Lake, "put_bytes", failing_put)
    with pytest.raises(CompactionError, match="previous generation kept"):
        _compact(lake)
    monkeypatch.undo()

    # the new generation's files had been written when the pointer failed ...
    assert len(seen_at_failure["generations"]) == 2
    assert first.generation in seen_at_failure["generations"]
    assert len(seen_at_failure["files"]) == 2
    # ... and are gone now; the pointer and the previous generation are untouched
    assert _generations(lake) == {first.generation}
    assert lake.get_bytes(pointer_rel(T)) == ptr_bytes
    assert _no_temp_files(tmp_path)
    assert table_layout(lake, T).fresh_batches == ["b1", "b2", "b3"]
    assert _view(lake).equals(before)

    # the next compaction works
    res = _compact(lake)
    assert res.compacted and _generations(lake) == {first.generation, res.generation}
    assert _view(lake).equals(before)


def test_duckdb_failure_during_copy_keeps_previous_generation(tmp_path):
    lake = Lake(tmp_path)
    _three_batches(lake)
    _view(lake)
    first = _compact(lake)
    lake.replace_batch(T, "b4", _frames("b4", ["v6"]))
    before = _view(lake)
    ptr_bytes = lake.get_bytes(pointer_rel(T))
    with pytest.raises(CompactionError) as ei:
        _compact(lake, file_size="not-a-size")
    assert isinstance(ei.value.__cause__, duckdb.Error)
    assert _generations(lake) == {first.generation}
    assert lake.get_bytes(pointer_rel(T)) == ptr_bytes
    assert _view(lake).equals(before)


def test_failed_first_compaction_leaves_plain_table(tmp_path, monkeypatch):
    lake = Lake(tmp_path)
    batches = _three_batches(lake)
    before = _view(lake)
    real_put = Lake.put_bytes

    def failing_put(self, rel, data, content_type=None):
        if rel == pointer_rel(T):
            raise OSError("disk full")
        return real_put(self, rel, data, content_type)

    monkeypatch.setattr(Lake, "put_bytes", failing_put)
    with pytest.raises(CompactionError):
        _compact(lake)
    monkeypatch.undo()
    assert read_pointer(lake, T) is None
    assert _generations(lake) == set()
    assert not table_layout(lake, T).is_compacted
    assert _rows(_view(lake)) == _expected(*batches.values())
    assert _view(lake).equals(before)


def test_batch_removed_while_compacting_is_retried_once(tmp_path, monkeypatch):
    """A batch deleted between listing and reading (e.g. a concurrent re-run) makes the real COPY fail;
    compaction lists again and succeeds without that batch. A second failure is an error."""
    from sav_assets.lib.store import compaction

    lake = Lake(tmp_path)
    batches = _three_batches(lake)
    real = compaction._write_generation
    calls = []

    def deleting_first(lake_, table, sources, *a, **kw):
        calls.append(sorted(sources))
        if len(calls) == 1:
            for rel in lake.table_parts(T, ["b2"]):
                lake.delete(rel)
        return real(lake_, table, sources, *a, **kw)

    monkeypatch.setattr(compaction, "_write_generation", deleting_first)
    res = _compact(lake)
    assert res.compacted and len(calls) == 2 and not any("/b2/" in r for r in calls[1])
    assert res.batches == 2 and len(_generations(lake)) == 1
    assert _rows(_view(lake)) == _expected(batches["b1"], batches["b3"])

    def always_failing(*a, **kw):
        raise OSError("disk full")

    monkeypatch.setattr(compaction, "_write_generation", always_failing)
    with pytest.raises(CompactionError, match="disk full"):
        _compact(lake, force=True)


def test_orphan_generation_is_removed_by_next_compaction(tmp_path):
    lake = Lake(tmp_path)
    _three_batches(lake)
    before = _view(lake)
    first = _compact(lake)
    # what a crash of a process killed mid-compaction leaves behind: a folder no pointer names
    orphan = "20000101T000000Z-deadbeef"
    lake.put_bytes(f"compacted/{T}/{orphan}/data_0.parquet", b"partial")
    assert _view(lake).equals(before)                       # never read
    lake.replace_batch(T, "b4", _frames("b4", ["v6"]))
    second = _compact(lake)
    assert _generations(lake) == {first.generation, second.generation}


# ---- 7. old generations -------------------------------------------------------------------------


def test_only_current_and_previous_generation_kept(tmp_path):
    lake = Lake(tmp_path)
    _three_batches(lake)
    before = _view(lake)
    g1 = _compact(lake).generation
    g2 = _compact(lake, force=True).generation
    after_g2 = _view(lake)                                   # views now name g2's files
    assert after_g2.equals(before)
    g3 = _compact(lake, force=True).generation
    assert len({g1, g2, g3}) == 3
    assert _generations(lake) == {g2, g3}
    assert not lake.list(f"compacted/{T}/{g1}")
    assert lake.exists(pointer_rel(T)) and read_pointer(lake, T)["generation"] == g3
    # views defined before the last switch (on g2) still work without a refresh
    con = catalog.connect(lake)
    try:
        assert con.sql(f"select * from {T} order by {ORDER}").to_arrow_table().equals(before)
    finally:
        con.close()
    assert _view(lake).equals(before)

    drop_compaction(lake, T)
    assert read_pointer(lake, T) is None and _generations(lake) == set()
    assert _view(lake).equals(before)


# ---- 8. schema drift -----------------------------------------------------------------------------


def test_part_with_missing_column_after_compaction(tmp_path):
    lake, batches = _compacted_three_batches(tmp_path)
    assert table_layout(lake, T).parts_match_schema

    old = _frames("b5", ["v1", "v6"]).drop_columns(["counts", "stability_score"])
    path = lake.local_path(f"tables/{T}/b5/part-0.parquet")
    path.parent.mkdir(parents=True)
    pq.write_table(old, str(path))

    layout = table_layout(lake, T)
    assert not layout.parts_match_schema
    assert f"tables/{T}/b5/part-0.parquet" in layout.parts

    view = _view(lake, order="video_id, masklet_type, masklet_id, frame_idx, batch_id")
    assert view.column_names == SCHEMAS[T].names
    assert view.num_rows == sum(t.num_rows for t in batches.values()) + old.num_rows
    _no_duplicates(view)
    b5 = [r for r in view.to_pylist() if r["batch_id"] == "b5"]
    assert len(b5) == old.num_rows
    assert all(r["counts"] is None and r["stability_score"] is None for r in b5)
    assert all(r["area"] is not None for r in b5)
    others = [r for r in view.to_pylist() if r["batch_id"] != "b5"]
    assert sorted(others, key=_key) == sorted(_expected(*batches.values()), key=_key)

    # compacting the drifted part in keeps the view the same
    assert _compact(lake).compacted
    assert table_layout(lake, T).parts_match_schema
    assert _view(lake, order="video_id, masklet_type, masklet_id, frame_idx, batch_id").equals(view)


def test_compacting_parts_that_all_lack_a_column_keeps_the_view_columns(tmp_path):
    """A column added to the schema after the parts were written: the view has it (NULL), in its
    schema position, before and after compaction."""
    lake = Lake(tmp_path)
    for b in ("b1", "b2"):
        lake.write_part(T, b, "part-0", _frames(b, ["v1", "v2"]).drop_columns(["counts"]))
    order = "video_id, masklet_type, masklet_id, frame_idx, batch_id"
    before = _view(lake, order=order)
    assert before.column_names == SCHEMAS[T].names
    assert before["counts"].null_count == before.num_rows
    assert _compact(lake).compacted
    after = _view(lake, order=order)
    assert after.column_names == SCHEMAS[T].names
    assert after.to_pylist() == before.to_pylist()


# ---- 9. read-only SQL over a compacted lake ------------------------------------------------------


def test_read_only_sql_over_compacted_lake(tmp_path):
    lake = Lake(tmp_path)
    batches = _three_batches(lake)
    _view(lake)
    res = _compact(lake)
    catalog.refresh_catalog(lake)
    n = sum(t.num_rows for t in batches.values())
    assert catalog.query(lake, f"select count(*) as n from {T}").to_pylist() == [{"n": n}]
    assert catalog.query(lake, f"select count(*) as n from {T} where video_id = 'v1'").to_pylist() == [
        {"n": batches["b1"].num_rows // 2 + batches["b3"].num_rows // 2}]
    assert catalog.query(lake, f"select batch_id, count(*) n from {T} where video_id = ? group by 1 order by 1",
                         ["v1"]).to_pylist() == [{"batch_id": "b1", "n": 18}, {"batch_id": "b3", "n": 18}]
    # ad hoc SQL opens no file by path, not even the lake's own: only the views read them
    direct = lake.uri(read_pointer(lake, T)["files"][0])
    assert pq.read_metadata(direct).num_rows == res.rows
    with pytest.raises(duckdb.PermissionException):
        catalog.query(lake, f"select count(*) n from read_parquet('{direct}')")

    target = tmp_path / "compacted" / "out.parquet"
    for bad in [f"copy {T} to '{target}'", f"copy (select * from {T}) to '{tmp_path}/tables/x.parquet'",
                f"drop view {T}", f"create table t as select * from {T}", f"select 1; delete from {T}"]:
        with pytest.raises(catalog.ReadOnlyViolation):
            catalog.query(lake, bad)
    assert not target.exists() and not (tmp_path / "tables" / "x.parquet").exists()
    with pytest.raises(Exception, match="(?i)permission|disabled"):
        catalog.query(lake, "select * from read_csv('/etc/passwd')")


# ---- lake paths that need quoting ---------------------------------------------------------------


def test_compaction_in_lake_whose_path_has_a_quote(tmp_path):
    """The views quote every path; compaction must too (a home folder like /home/o'brien)."""
    lake = Lake(tmp_path / "o'brien" / "lake")
    batches = _three_batches(lake)
    before = _view(lake)
    assert _rows(before) == _expected(*batches.values())
    res = _compact(lake)
    assert res.compacted
    assert _view(lake).equals(before)


def test_batch_name_with_quote_is_filtered_when_stale(tmp_path):
    lake = Lake(tmp_path)
    b = "it's"
    old = _frames(b, ["v1", "v2"])
    other = _frames("b2", ["v3"])
    lake.replace_batch(T, b, old)
    lake.replace_batch(T, "b2", other)
    _view(lake)
    assert _compact(lake).compacted
    comp = pq.read_table(str(lake.local_path(read_pointer(lake, T)["files"][0])))
    assert set(comp[BATCH_COLUMN].to_pylist()) == {b, "b2"}
    new = _frames(b, ["v1"], tag="re-")
    lake.replace_batch(T, b, new)
    assert table_layout(lake, T).stale_batches == [b]
    assert _rows(_view(lake)) == _expected(new, other)


# ---- 10. S3 -------------------------------------------------------------------------------------



@pytest.mark.s3
def test_s3_compaction_query_and_rewrite(s3_endpoint, tmp_path):
    import boto3

    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="lake")
    lake = Lake("s3://lake/sav")
    b1, b2 = _frames("b1", ["v2", "v1"]), _frames("b2", ["v1", "v3"])
    lake.replace_batch(T, "b1", b1)
    lake.replace_batch(T, "b2", b2)

    def view():
        return catalog.query(lake, f"select * from {T} order by {ORDER}")

    before = view()
    assert _rows(before) == _expected(b1, b2)

    res = _compact(lake)
    assert res.compacted and res.rows == before.num_rows
    ptr = read_pointer(lake, T)
    assert all(lake.exists(f) for f in ptr["files"])
    assert sorted(ptr["sources"]) == [f"tables/{T}/b1/part-0.parquet", f"tables/{T}/b2/part-0.parquet"]
    assert table_layout(lake, T).fresh_batches == ["b1", "b2"]
    after = view()                                          # no _schema part written yet
    assert BATCH_COLUMN not in after.column_names
    assert after.equals(before)
    assert catalog.refresh_catalog(lake) is None            # writes the _schema parts on S3
    assert view().equals(before)
    assert catalog.query(lake, f"select count(*) n from {T}").to_pylist() == [{"n": before.num_rows}]

    # rewrite b1: its compacted rows are filtered, the new part is read instead
    new_b1 = _frames("b1", ["v1"], n_frames=2, tag="re-")
    lake.replace_batch(T, "b1", new_b1)
    layout = table_layout(lake, T)
    assert layout.stale_batches == ["b1"] and layout.fresh_batches == ["b2"]
    rewritten = view()
    assert _rows(rewritten) == _expected(new_b1, b2)
    _no_duplicates(rewritten)

    # a new batch and a deleted one
    b3 = _frames("b3", ["v4"])
    lake.replace_batch(T, "b3", b3)
    for rel in lake.list(f"tables/{T}/b2"):
        lake.delete(rel)
    assert _rows(view()) == _expected(new_b1, b3)

    # recompacting: everything fresh again, same rows; the old generation is kept, older ones dropped
    second = _compact(lake)
    assert second.compacted
    layout = table_layout(lake, T)
    assert layout.fresh_batches == ["b1", "b3"] and layout.stale_batches == []
    assert _rows(view()) == _expected(new_b1, b3)
    third = _compact(lake, force=True)
    gens = {k.split("/")[2] for k in lake.list(f"compacted/{T}") if k.count("/") >= 3}
    assert gens == {second.generation, third.generation}
    assert _rows(view()) == _expected(new_b1, b3)
    with pytest.raises(catalog.ReadOnlyViolation):
        catalog.query(lake, f"copy {T} to 'x.parquet'")
    assert not os.path.exists("x.parquet")

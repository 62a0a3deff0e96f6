"""SA-V JSON export of the lake's tables: the imported sample comes back byte for byte, in the lake
or under another destination."""

from __future__ import annotations

import json

import pytest
from conftest import SHARED_DATA

from sav_assets.lib.sav.annotations import import_sav
from sav_assets.lib.sav.exports import export_sav_all
from sav_assets.lib.store.lake import Lake
from sav_assets.lib.store.tables import MASKLET_FRAMES, MASKLETS, SAV_ANNOTATIONS, to_table

SAMPLE = SHARED_DATA / "sav_example" / "sav_000001_manual.json"


def _lake_with_sample(tmp_path) -> tuple[Lake, str]:
    """A lake holding SA-V's sample manual file, imported; and the file's text."""
    if not SAMPLE.is_file():
        pytest.skip(f"shared sample missing: {SAMPLE}")
    text = SAMPLE.read_text()
    header, masklets, frames = import_sav(json.loads(text), source_uri=str(SAMPLE))
    lake = Lake(tmp_path / "lake")
    for name, rows, schema in (("sav_annotations", [header], SAV_ANNOTATIONS), ("masklets", masklets, MASKLETS),
                               ("masklet_frames", frames, MASKLET_FRAMES)):
        lake.replace_batch(name, "b1", to_table([{**r, "batch_id": "b1"} for r in rows], schema))
    return lake, text


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_export_sav_all_gives_back_the_imported_file(tmp_path):
    lake, text = _lake_with_sample(tmp_path)
    written = export_sav_all(lake)
    assert len(written) == 1 and lake.get_bytes("exports/sav/sav_000001_manual.json").decode() == text
    other = export_sav_all(lake, dest=str(tmp_path / "out"), video_ids=["sav_000001"])
    assert len(other) == 1 and (tmp_path / "out" / "sav_000001_manual.json").read_text() == text
    assert export_sav_all(lake, dest=str(tmp_path / "none"), video_ids=["nope"]) == []


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_exported_header_is_current_not_the_imported_files(tmp_path):
    """``video_split`` comes from the ``splits`` table (the latest assignment), ``video_environment``
    from the sidecar (``video_quality``); the imported file's own values only where neither has one."""
    import datetime as dt

    from sav_assets.lib.store.tables import SPLITS, VIDEO_QUALITY

    lake, text = _lake_with_sample(tmp_path)
    t0 = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
    lake.replace_batch("splits", "s1", to_table([
        {"video_id": "sav_000001", "batch_id": "s1", "split": "test", "assigned_at": t0},
        {"video_id": "sav_000001", "batch_id": "s2", "split": "val", "assigned_at": t0 + dt.timedelta(days=1)},
        {"video_id": "other", "batch_id": "s2", "split": "train", "assigned_at": t0}], SPLITS))
    export_sav_all(lake)
    doc = json.loads(lake.get_bytes("exports/sav/sav_000001_manual.json"))
    assert (doc["video_split"], doc["video_environment"]) == ("val", "Indoor")   # no sidecar: the file's
    lake.replace_batch("video_quality", "b1", to_table(
        [{"video_id": "sav_000001", "batch_id": "b1", "video_environment": "Outdoor"}], VIDEO_QUALITY))
    export_sav_all(lake)
    out = lake.get_bytes("exports/sav/sav_000001_manual.json").decode()
    doc = json.loads(out)
    assert (doc["video_split"], doc["video_environment"]) == ("val", "Outdoor")
    assert list(doc) == list(json.loads(text))          # same keys, same order; only the two values differ
    assert out == text.replace('"video_environment": "Indoor"', '"video_environment": "Outdoor"').replace(
        '"video_split": "train"', '"video_split": "val"')

"""sql/stats/*.sql over small hand-made tables written through Lake: known answers."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from sav_assets.lib.dataset.statistics import (
    run_stats,
    stat_info,
    stat_names,
    stats_markdown,
    stats_plots_png,
)
from sav_assets.lib.store import tables
from sav_assets.lib.store.catalog import SQL_DIR, connect, refresh_catalog
from sav_assets.lib.store.lake import Lake

T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)
EXPECTED = {"videos_by_status", "rejection_reasons", "masklets_per_video", "size_bucket_mix", "occlusion_rate",
            "reappearance_rate", "masklet_types", "qc_pass_rates", "split_sizes", "review_agreement"}


def rows_of(tbl):
    return tbl.to_pylist()


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    lake = Lake(tmp_path_factory.mktemp("lake"))
    videos = [{"video_id": f"v{i}", "status": "ok", "ingested_at": T0} for i in range(6)]
    videos.append({"video_id": "q1", "status": "quarantined", "ingested_at": T0})
    videos.append({"video_id": "v0", "status": "ok", "ingested_at": T0 + timedelta(days=1)})   # re-ingested
    lake.replace_batch("videos", "b1", tables.to_table(videos[:7], tables.VIDEOS))
    lake.replace_batch("videos", "b2", tables.to_table(videos[7:], tables.VIDEOS))
    quality = [
        {"video_id": "v0", "passed": True, "reasons": [], "evaluated_at": T0},
        {"video_id": "v1", "passed": True, "reasons": [], "evaluated_at": T0},
        {"video_id": "v2", "passed": True, "reasons": [], "evaluated_at": T0},
        {"video_id": "v3", "passed": False, "reasons": ["blurry", "too_short"], "evaluated_at": T0},
        {"video_id": "v4", "passed": False, "reasons": ["blurry"], "evaluated_at": T0},
        # v4 was first rejected for resolution, then re-evaluated: only the latest verdict counts
        {"video_id": "v4", "passed": False, "reasons": ["low_resolution"], "evaluated_at": T0 - timedelta(days=1)},
    ]                                                                 # v5: not evaluated yet
    lake.replace_batch("video_quality", "b1", tables.to_table(quality, tables.VIDEO_QUALITY))

    def m(vid, mid, mtype, bucket, changes, source=None):
        return {"video_id": vid, "masklet_id": mid, "masklet_type": mtype, "masklet_size_bucket": bucket,
                "masklet_visibility_changes": changes,
                "source": source or ("sav_import" if mtype == "manual" else "sam2_auto")}

    masklets = [
        m("v0", 0, "manual", "small", 0), m("v0", 1, "manual", "large", 1), m("v0", 2, "auto", "medium", 2),
        m("v0", 3, "auto", "medium", 0),
        m("v1", 0, "auto", "large", 3), m("v1", 1, "auto", "small", 0),
        m("v2", 0, "manual", "medium", 0), m("v2", 5, "prompted", "large", 0, "sam2_prompted"),
    ]
    lake.replace_batch("masklets", "b1", tables.to_table(masklets, tables.MASKLETS))
    qc = [{"video_id": r["video_id"], "masklet_id": r["masklet_id"], "masklet_type": r["masklet_type"],
           "passed": True, "reasons": [], "evaluated_at": T0} for r in masklets]
    qc[2].update(passed=False, reasons=["flicker", "fragmented"])
    qc[3].update(passed=False, reasons=["flicker"])
    qc[4].update(passed=False, reasons=["duplicate"])
    lake.replace_batch("masklet_qc", "b1", tables.to_table(qc, tables.SCHEMAS["masklet_qc"]))
    splits = [{"video_id": "v0", "split": "train", "assigned_at": T0},
              {"video_id": "v1", "split": "train", "assigned_at": T0},
              {"video_id": "v2", "split": "val", "assigned_at": T0}]
    lake.replace_batch("splits", "b1", tables.to_table(splits, tables.SPLITS))
    refresh_catalog(lake)
    con = connect(lake)
    try:
        return run_stats(con)
    finally:
        con.close()


def test_every_file_has_title_and_reference():
    assert set(stat_names()) == EXPECTED
    for name in stat_names():
        lines = (SQL_DIR / "stats" / f"{name}.sql").read_text().splitlines()
        assert lines[0].startswith("-- title: ") and lines[1].startswith("-- reference: ")
        assert stat_info(name)["title"] and stat_info(name)["reference"]


def test_all_statistics_run(results):
    assert set(results) == EXPECTED
    for name, tbl in results.items():
        assert "error" not in tbl.column_names, (name, tbl.to_pylist())


def test_videos_by_status(results):
    got = {r["status"]: (r["videos"], r["share"]) for r in rows_of(results["videos_by_status"])}
    assert got == {"accepted": (3, 0.4286), "rejected": (2, 0.2857), "quarantined": (1, 0.1429),
                   "not_evaluated": (1, 0.1429)}


def test_rejection_reasons(results):
    assert rows_of(results["rejection_reasons"]) == [
        {"reason": "blurry", "videos": 2, "share_of_rejected": 1.0},
        {"reason": "too_short", "videos": 1, "share_of_rejected": 0.5},
    ]


def test_masklets_per_video(results):
    got = {r["masklet_type"]: r for r in rows_of(results["masklets_per_video"])}
    assert list(got) == ["all", "auto", "manual", "prompted"]
    assert (got["all"]["videos"], got["all"]["masklets"], got["all"]["mean_per_video"]) == (3, 8, 2.67)
    assert got["all"]["max_per_video"] == 4 and got["all"]["median_per_video"] == 2.0
    assert got["all"]["sav_reference"] == 12.6 and got["manual"]["sav_reference"] == 3.8
    assert (got["auto"]["videos"], got["auto"]["mean_per_video"]) == (2, 2.0)
    assert got["prompted"]["sav_reference"] is None


def test_size_bucket_mix(results):
    got = [(r["masklet_size_bucket"], r["masklets"], r["share"], r["manual"], r["auto"])
           for r in rows_of(results["size_bucket_mix"])]
    assert got == [("small", 2, 0.25, 1, 1), ("medium", 3, 0.375, 1, 2), ("large", 3, 0.375, 1, 1)]


def test_occlusion_and_reappearance(results):
    occ = {r["masklet_type"]: (r["masklets"], r["occluded"], r["rate"], r["sav_reference"])
           for r in rows_of(results["occlusion_rate"])}
    assert occ["all"] == (8, 3, 0.375, 0.277)
    assert occ["manual"] == (3, 1, 0.3333, 0.425)
    assert occ["auto"] == (4, 2, 0.5, None)
    re = {r["masklet_type"]: (r["reappearing"], r["rate"]) for r in rows_of(results["reappearance_rate"])}
    assert re["all"] == (2, 0.25) and re["auto"] == (2, 0.5) and re["manual"] == (0, 0.0)


def test_masklet_types(results):
    got = [(r["masklet_type"], r["source"], r["masklets"], r["videos"], r["share"], r["sav_reference_share"])
           for r in rows_of(results["masklet_types"])]
    assert got == [("auto", "sam2_auto", 4, 2, 0.5, 0.7036), ("manual", "sav_import", 3, 2, 0.375, 0.2964),
                   ("prompted", "sam2_prompted", 1, 1, 0.125, None)]


def test_qc_pass_rates(results):
    auto = [(r["reason"], r["masklets"], r["flagged"], r["passed"], r["pass_rate"])
            for r in rows_of(results["qc_pass_rates"]) if r["masklet_type"] == "auto"]
    assert auto == [("(all checks)", 4, 0, 1, 0.25), ("flicker", 4, 2, 2, 0.5),
                    ("duplicate", 4, 1, 3, 0.75), ("fragmented", 4, 1, 3, 0.75)]
    manual = [r for r in rows_of(results["qc_pass_rates"]) if r["masklet_type"] == "manual"]
    assert [(r["reason"], r["pass_rate"]) for r in manual] == [("(all checks)", 1.0)]


def test_split_sizes(results):
    got = [(r["split"], r["videos"], r["share"], r["masklets"], r["sav_reference_videos"])
           for r in rows_of(results["split_sizes"])]
    assert got == [("train", 2, 0.6667, 6, 50583), ("val", 1, 0.3333, 2, 155)]


def test_markdown_and_png(results):
    md = stats_markdown(results)
    assert "### Videos by status" in md and "| status | videos | share |" in md and "SA-V reference" in md
    png = stats_plots_png(results)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and 5_000 < len(png) < 400_000


def test_missing_view_is_reported_not_raised(tmp_path):
    import duckdb

    con = duckdb.connect()
    res = run_stats(con, ["split_sizes"])
    assert res["split_sizes"].column_names == ["error"]
    assert "_(no rows)_" not in stats_markdown(res)
    stats_plots_png(res)

"""Human verdicts: files in <root>/reviews/ -> masklet_reviews rows -> what reaches splits and shards,
and the reviewer-vs-QC agreement statistic. A real local lake with real Parquet and DuckDB."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from sav_assets.lib.dataset.selection import accepted, eval_ground_truth
from sav_assets.lib.store.lake import Lake
from sav_assets.lib.store.tables import MASKLET_QC, MASKLET_REVIEWS, MASKLETS, VIDEO_QUALITY, VIDEOS, to_table

T0 = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
SHA1, SHA2 = "1" * 64, "2" * 64


def make_lake(root) -> Lake:
    """Two videos of batch b1: v1 (auto 1 passes QC, auto 2 fails), v2 (manual 1 passes)."""
    lk = Lake(str(root))
    videos = [{"video_id": "street_cam_aa11", "source_uri": f"{root}/src/Street Cam.mp4",
               "source_key": "Street Cam.mp4", "content_sha256": SHA1, "status": "ok"},
              {"video_id": "sav_000002", "source_uri": f"{root}/src/sav_000002.mp4", "source_key": "sav_000002.mp4",
               "content_sha256": SHA2, "status": "ok"}]
    lk.write_part("videos", "b1", "part-0", to_table(videos, VIDEOS))
    lk.write_part("video_quality", "b1", "part-0", to_table(
        [{"video_id": v["video_id"], "passed": True, "reasons": [], "licence": lic}
         for v, lic in zip(videos, ["cc-by-4.0", None])], VIDEO_QUALITY))
    ms = [("street_cam_aa11", "auto", 1, True), ("street_cam_aa11", "auto", 2, False), ("sav_000002", "manual", 1, True)]
    lk.write_part("masklets", "b1", "part-0", to_table(
        [{"video_id": v, "masklet_type": t, "masklet_id": i, "batch_id": "b1"} for v, t, i, _ in ms], MASKLETS))
    lk.write_part("masklet_qc", "b1", "part-0", to_table(
        [{"video_id": v, "masklet_type": t, "masklet_id": i, "batch_id": "b1", "passed": p,
          "reasons": [] if p else ["flicker"], "evaluated_at": T0} for v, t, i, p in ms], MASKLET_QC))
    return lk


def reviews(lk: Lake) -> list[dict]:
    return lk.read_table("masklet_reviews", schema=MASKLET_REVIEWS).to_pylist()


def test_verdicts_by_name_and_sha_override_qc_and_bad_rows_are_recorded(tmp_path):
    from sav_assets.lib.qc.reviews import record_reviews

    lk = make_lake(tmp_path / "lake")
    assert accepted(lk).keys == {("street_cam_aa11", "auto", 1), ("sav_000002", "manual", 1)}
    lk.put_bytes("reviews/ana.jsonl", "\n".join([
        json.dumps({"file_name": "Street Cam.mp4", "masklet_type": "auto", "masklet_id": 1, "verdict": "reject",
                    "note": "leaks", "reviewer": "ana", "reviewed_at": "2025-02-01T10:00:00Z"}),
        json.dumps({"video": "nope.mp4", "masklet_type": "auto", "masklet_id": 1, "verdict": "reject"}),
        json.dumps({"video_id": "sav_000002", "masklet_type": "auto", "masklet_id": 9, "verdict": "reject"}),
        json.dumps({"video_id": "sav_000002", "masklet_type": "manual", "masklet_id": 1, "verdict": "maybe"}),
        "{not json",
    ]).encode())
    lk.put_bytes("reviews/bo.csv", (f"content_sha256,masklet_type,masklet_id,verdict,reviewer\n"
                                    f"{SHA1},auto,2,accept,bo\n").encode())
    res = record_reviews(lk, "b2")
    assert res["new"] == 2
    rows = reviews(lk)
    ok = sorted((r["video_id"], r["masklet_type"], r["masklet_id"], r["verdict"], r["reviewer"], r["batch_id"],
                 r["video_key"]) for r in rows if r["status"] == "ok")
    assert ok == [("street_cam_aa11", "auto", 1, "reject", "ana", "b1", "Street Cam.mp4"),
                  ("street_cam_aa11", "auto", 2, "accept", "bo", "b1", SHA1)]
    assert next(r for r in rows if r["verdict"] == "reject")["reviewed_at"] == dt.datetime(
        2025, 2, 1, 10, tzinfo=dt.timezone.utc)
    errors = sorted((r["source_line"], r["error_class"], r["batch_id"]) for r in rows if r["status"] == "error")
    assert errors == [(2, "unresolved_video", "b2"), (3, "bad_review", "b2"), (4, "bad_review", "b2"),
                      (5, "bad_review", "b2")]
    msgs = {r["source_line"]: r["error_message"] for r in rows if r["status"] == "error"}
    assert "nope.mp4" in msgs[2] and "no manual" not in msgs[3] and "masklet 9" in msgs[3]
    assert "verdict" in msgs[4] and "invalid JSON" in msgs[5]

    # the next run records nothing twice
    assert record_reviews(lk, "b3") == {"new": 0, "errors": [], "rows": []}
    assert len(reviews(lk)) == len(rows)

    acc = accepted(lk)
    assert acc.keys == {("street_cam_aa11", "auto", 2), ("sav_000002", "manual", 1)}
    assert acc.failed[("street_cam_aa11", "auto", 1)] == ["rejected_by_reviewer"]
    assert [m["masklet_id"] for m in acc.masklets if m["video_id"] == "street_cam_aa11"] == [2]
    # QC's own rows are as they were
    qc = {(r["masklet_id"]): r["passed"] for r in lk.read_table("masklet_qc", schema=MASKLET_QC).to_pylist()
          if r["video_id"] == "street_cam_aa11"}
    assert qc == {1: True, 2: False}


def test_the_latest_verdict_wins_and_a_rejected_manual_masklet_leaves_the_ground_truth(tmp_path):
    from sav_assets.lib.qc.reviews import record_reviews

    lk = make_lake(tmp_path / "lake")
    row = {"video_id": "sav_000002", "masklet_type": "manual", "masklet_id": 1}
    lk.put_bytes("reviews/a.jsonl", (json.dumps({**row, "verdict": "reject", "reviewed_at": "2025-03-01T00:00:00"})
                                     + "\n").encode())
    lk.put_bytes("reviews/b.jsonl", (json.dumps({**row, "verdict": "accept", "reviewed_at": "2025-02-01T00:00:00"})
                                     + "\n").encode())
    record_reviews(lk, "b1")
    acc = accepted(lk)
    assert ("sav_000002", "manual", 1) not in acc.keys
    frames = [{"video_id": "sav_000002", "masklet_type": "manual", "masklet_id": 1, "frame_idx": 0}]
    gt, left_out = eval_ground_truth(frames, ["sav_000002"], acc)
    assert gt == {"sav_000002": []}
    assert left_out[0]["masklet_id"] == 1 and "rejected_by_reviewer" in left_out[0]["reason"]
    lk.put_bytes("reviews/c.jsonl", (json.dumps({**row, "verdict": "accept", "reviewed_at": "2025-04-01T00:00:00"})
                                     + "\n").encode())
    record_reviews(lk, "b1")
    assert ("sav_000002", "manual", 1) in accepted(lk).keys


def test_an_unresolved_verdict_is_resolved_once_the_video_is_ingested(tmp_path):
    from sav_assets.lib.qc.reviews import record_reviews

    lk = make_lake(tmp_path / "lake")
    lk.put_bytes("reviews/a.jsonl", json.dumps({"file_name": "late.mp4", "masklet_type": "auto", "masklet_id": 1,
                                                "verdict": "reject"}).encode())
    assert [r["error_class"] for r in record_reviews(lk, "b1")["errors"]] == ["unresolved_video"]
    assert record_reviews(lk, "b1")["errors"] == []          # the same error is recorded once
    lk.write_part("videos", "b2", "part-0", to_table([{"video_id": "late_x", "source_key": "late.mp4",
                                                       "source_uri": "/s/late.mp4", "status": "ok"}], VIDEOS))
    lk.write_part("masklets", "b2", "part-0", to_table([{"video_id": "late_x", "masklet_type": "auto",
                                                         "masklet_id": 1, "batch_id": "b2"}], MASKLETS))
    res = record_reviews(lk, "b2")
    assert res["new"] == 1 and res["rows"][0]["batch_id"] == "b2" and res["rows"][0]["video_id"] == "late_x"


def test_review_agreement_statistic(tmp_path):
    from sav_assets.lib.dataset.statistics import run_stats
    from sav_assets.lib.qc.reviews import record_reviews
    from sav_assets.lib.store.catalog import connect

    lk = make_lake(tmp_path / "lake")
    lk.put_bytes("reviews/a.csv", (b"video_id,masklet_type,masklet_id,verdict\n"
                                   b"street_cam_aa11,auto,1,reject\nstreet_cam_aa11,auto,2,accept\n"
                                   b"sav_000002,manual,1,accept\n"))
    record_reviews(lk, "b1")
    con = connect(lk, read_only=False)
    try:
        rows = {r["masklet_type"]: r for r in run_stats(con, ["review_agreement"])["review_agreement"].to_pylist()}
    finally:
        con.close()
    assert rows["auto"] == {"masklet_type": "auto", "reviewed": 2, "rejected": 1, "qc_passed_human_rejected": 1,
                            "qc_failed_human_accepted": 1, "no_qc_verdict": 0, "agreement": pytest.approx(0.0)}
    assert rows["manual"]["agreement"] == pytest.approx(1.0) and rows["manual"]["qc_passed_human_rejected"] == 0


def test_licence_view_answers_what_is_under_a_licence_in_one_query(tmp_path):
    import duckdb

    from sav_assets.lib.store.catalog import query, refresh_catalog
    from sav_assets.lib.store.tables import SHARD_SAMPLES, SPLITS

    lk = make_lake(tmp_path / "lake")
    lk.write_part("splits", "b1", "part-0", to_table([{"video_id": "street_cam_aa11", "split": "train"},
                                                      {"video_id": "sav_000002", "split": "val"}], SPLITS))
    lk.write_part("shard_samples", "b1", "part-0", to_table(
        [{"key": f"street_cam_aa11_{i:06d}", "shard": f"train-00000{i // 2}.tar", "batch_id": "b1",
          "video_id": "street_cam_aa11", "split": "train", "start_frame": i, "frames": 8, "masklets": 2}
         for i in range(3)], SHARD_SAMPLES))
    want = [{"licence": "(none)", "videos": 1, "videos_passed_quality": 1, "masklets": 1, "train_videos": 0,
             "val_videos": 1, "test_videos": 0, "shard_samples": 0, "videos_in_shards": 0},
            {"licence": "cc-by-4.0", "videos": 1, "videos_passed_quality": 1, "masklets": 2, "train_videos": 1,
             "val_videos": 0, "test_videos": 0, "shard_samples": 3, "videos_in_shards": 1}]
    assert query(lk, "SELECT * FROM licence ORDER BY licence").to_pylist() == want     # sav-assets sql
    db = refresh_catalog(lk)                                                              # duckdb sav.duckdb
    con = duckdb.connect(db, read_only=True)
    try:
        con.execute(f"SET file_search_path = '{lk.local_path('')}'")
        assert con.execute("SELECT licence, masklets FROM licence WHERE licence = 'cc-by-4.0'").fetchall() == [
            ("cc-by-4.0", 2)]
    finally:
        con.close()

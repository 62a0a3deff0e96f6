"""`sav-assets review accept|reject`: one verdict file per call under <root>/reviews/, recorded by the
next masklet_qc run; unknown videos and masklets are one-line usage errors with nothing written."""

from __future__ import annotations

import json

from sav_assets.cli import main
from sav_assets.lib.dataset.selection import accepted
from sav_assets.lib.qc.reviews import record_reviews
from tests.lib.qc.test_reviews import SHA1, make_lake


def test_review_cli_writes_a_verdict_that_the_next_run_honours(tmp_path, capsys):
    root = tmp_path / "lake"
    lk = make_lake(root)
    assert main(["review", "reject", "Street Cam.mp4", "auto", "1", "--root", str(root), "--note", "leaks",
                 "--reviewer", "ana"]) == 0
    assert "reject street_cam_aa11 auto 1" in capsys.readouterr().out
    assert main(["review", "accept", SHA1, "auto", "2", "--root", str(root)]) == 0
    files = lk.list("reviews")
    assert len(files) == 2 and all(f.startswith("reviews/cli-") and f.endswith(".jsonl") for f in files)
    rows = [json.loads(lk.get_bytes(f)) for f in files]
    first = next(r for r in rows if r["verdict"] == "reject")
    assert {k: first[k] for k in ("video", "masklet_type", "masklet_id", "note", "reviewer")} == {
        "video": "street_cam_aa11", "masklet_type": "auto", "masklet_id": 1, "note": "leaks", "reviewer": "ana"}

    assert record_reviews(lk, "b1")["new"] == 2
    assert accepted(lk).keys == {("street_cam_aa11", "auto", 2), ("sav_000002", "manual", 1)}


def test_review_cli_refuses_unknown_video_and_masklet(tmp_path, capsys):
    root = tmp_path / "lake"
    lk = make_lake(root)
    assert main(["review", "reject", "nope.mp4", "auto", "1", "--root", str(root)]) == 2
    assert "no ingested video" in capsys.readouterr().err
    assert main(["review", "reject", "sav_000002", "auto", "7", "--root", str(root)]) == 2
    assert "has no auto masklet 7" in capsys.readouterr().err
    assert lk.list("reviews") == []

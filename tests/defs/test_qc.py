"""masklet_qc, called directly on the tiny lake: rows, verdicts, the review export, standard metadata."""

import json

from sav_assets.defs.qc import QCConfig
from sav_assets.lib.qc.masklet_qc import QCThresholds


def test_masklet_qc(tiny_lake):
    m = tiny_lake.md("masklet_qc")
    rows = tiny_lake.lake.read_table("masklet_qc").to_pylist()
    failing = [r for r in rows if not r["passed"]]
    assert m["dagster/row_count"] == m["masklets_checked"] == len(rows) > 0
    assert m["masklets_failed"] == len(failing) and m["masklets_passed"] == len(rows) - len(failing)
    assert m["pass_rate"] == round((len(rows) - len(failing)) / len(rows), 4)
    review = (tiny_lake.root / "exports" / "review" / tiny_lake.batch_id / "failing_masklets.jsonl").read_text()
    lines = [json.loads(x) for x in review.splitlines()]
    assert len(lines) == len(failing) and all(x["reasons"] for x in lines)
    for r in failing:
        for code in r["reasons"]:
            assert f"| {code} |" in m["failures_by_reason"]
    assert m["review_export"].endswith("failing_masklets.jsonl")


def test_qc_config_shows_the_thresholds_that_run():
    assert QCConfig().thresholds() == QCThresholds()
    assert QCConfig().min_temporal_iou == QCThresholds().min_temporal_iou  # not None

"""The review page in a real headless browser (Debian's chromium driven by Playwright, no downloaded
browser): it loads from the lake, shows the filmstrips decoded, and a reject clicked on it, downloaded
and dropped in <root>/reviews/, is read back by the next run and keeps that video out of the splits.

Without /usr/bin/chromium the test is skipped with the reason, except under CI=true, where it fails."""

from __future__ import annotations

import os
import shutil

import dagster as dg
import pytest

CHROMIUM = os.environ.get("SAV_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


def _browser_or_skip():
    if not os.path.exists(CHROMIUM):
        msg = f"no chromium at {CHROMIUM} (apt-get install chromium; `make setup` does it)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip("playwright is not installed (pip install -e .[dev])")
    return sync_playwright


@pytest.mark.timeout(600)
def test_review_page_in_a_real_browser_and_its_verdicts_reach_the_splits(tmp_path):
    sync_playwright = _browser_or_skip()
    from sav_assets.defs.dataset import SplitsConfig, splits
    from sav_assets.defs.ingest import IngestConfig, raw_videos, video_quality
    from sav_assets.defs.label import LabelingConfig, masklets
    from sav_assets.defs.qc import QCConfig, masklet_qc
    from sav_assets.lib.store.tables import MASKLET_QC, MASKLET_REVIEWS, SPLITS
    from tests.defs.conftest import QUALITY, TinyLake

    with dg.instance_for_test() as instance:
        t = TinyLake(tmp_path, instance)
        t.run(raw_videos, config=IngestConfig())
        t.run(video_quality, config=QUALITY)
        t.run(masklets, config=LabelingConfig(run_sam2=False))
        t.run(masklet_qc, config=QCConfig())
        page_uri = t.md("masklet_qc")["review_page"]
        assert page_uri.endswith(f"exports/review/{t.batch_id}/index.html")
        qc = t.lake.read_table("masklet_qc", schema=MASKLET_QC).to_pylist()
        by_video: dict[str, list] = {}
        for r in qc:
            by_video.setdefault(r["video_id"], []).append(r)
        assert len(by_video) >= 2
        victim = sorted(by_video)[0]

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
            try:
                page = browser.new_page(accept_downloads=True)
                page.goto(f"file://{page_uri}")
                page.wait_for_load_state("load")
                widths = page.eval_on_selector_all(
                    "img.strip", "els => els.map(e => e.complete ? e.naturalWidth : -1)")
                assert len(widths) >= len(by_video) and all(w > 0 for w in widths), widths
                assert page.locator("section h2").all_inner_texts()[0] in by_video
                buttons = page.locator(f'section[id="{victim}"] button.reject')
                assert buttons.count() == len(by_video[victim])
                for i in range(buttons.count()):
                    buttons.nth(i).click()
                cmd = page.locator(f'section[id="{victim}"] code.cmd').first.inner_text()
                assert cmd.startswith(f"sav-assets review reject {victim} ")
                assert page.locator("#count").inner_text() == str(len(by_video[victim]))
                with page.expect_download() as dl:
                    page.click("#download")
                download = dl.value
                assert download.suggested_filename == f"verdicts-{t.batch_id}.jsonl"
                dropped = t.root / "reviews" / download.suggested_filename
                dropped.parent.mkdir(parents=True, exist_ok=True)
                download.save_as(str(dropped))
            finally:
                browser.close()

        t.run(masklet_qc, config=QCConfig())          # the next run reads the verdicts back
        assert t.md("masklet_qc")["reviews_recorded"] == len(by_video[victim])
        recorded = t.lake.read_table("masklet_reviews", schema=MASKLET_REVIEWS).to_pylist()
        assert {(r["video_id"], r["verdict"], r["status"]) for r in recorded} == {(victim, "reject", "ok")}
        t.run(splits, config=SplitsConfig(val_target=1))
        assigned = {r["video_id"] for r in t.lake.read_table("splits", schema=SPLITS).to_pylist()}
        assert victim not in assigned and assigned == set(by_video) - {victim}

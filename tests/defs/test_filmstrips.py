"""Filmstrips on the tiny lake: the masklets and masklet_qc metadata show the first strips as embedded
PNG images, every labeled video has its strip under exports/previews/<batch>/, QC verdicts are in the
legends after masklet_qc, and each failing masklet has its own strip under exports/review/<batch>/."""

import base64
import json
import re

from sav_assets.lib.label.overlay import png_text


def _images(md: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)\)", md)]


def test_masklets_and_masklet_qc_metadata_show_filmstrips(tiny_lake):
    labeled = sorted({r["video_id"] for r in tiny_lake.lake.read_table("masklets").to_pylist()})
    assert labeled
    for asset in ("masklets", "masklet_qc"):
        md = tiny_lake.md(asset)
        assert md["filmstrips_written"] == len(labeled) and "filmstrips_failed" not in md
        pngs = _images(md["filmstrips"])
        assert len(pngs) == min(3, len(labeled))
        assert all(p[:8] == b"\x89PNG\r\n\x1a\n" and len(p) < 400_000 for p in pngs)
        assert md["filmstrips_folder"].endswith(f"exports/previews/{tiny_lake.batch_id}")
        for vid in labeled[:3]:
            assert f"**{vid}**" in md["filmstrips"]


def test_previews_carry_the_qc_verdicts_and_failing_masklets_have_review_strips(tiny_lake):
    root, batch = tiny_lake.root, tiny_lake.batch_id
    qc = tiny_lake.lake.read_table("masklet_qc").to_pylist()
    for vid in {r["video_id"] for r in qc}:
        legend = json.loads(png_text((root / "exports" / "previews" / batch / f"{vid}.png").read_bytes())["legend"])
        mine = [r for r in qc if r["video_id"] == vid]
        assert len(legend) == len(mine)                                   # every masklet has its line
        for r in mine:
            verdict = "passed" if r["passed"] else "FAILED " + ",".join(r["reasons"])
            assert f"{r['masklet_type']} #{r['masklet_id']}: {verdict}" in legend
    failing = [r for r in qc if not r["passed"]]
    strips = sorted(p.name for p in (root / "exports" / "review" / batch).glob("*.png"))
    assert strips == sorted(f"{r['video_id']}.{r['masklet_type']}.{r['masklet_id']}.png" for r in failing)
    assert tiny_lake.md("masklet_qc")["review_strips"] == len(failing)

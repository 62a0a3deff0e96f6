"""The evaluation layout is on SA-V's 24 fps timeline (issue 9, item 1), like the training export.

Same synthetic videos as ``test_sav_loader_alignment.py`` (a square whose x position encodes the
presentation time), labeled by a "perfect labeler" on the labeler's own grid. In the written layout,
mask PNGs are named ``{4k:05d}`` (annotated frame k), JPEG ``j`` shows the video at the instant
``j / 24``, and every mask lies on the square of the JPEG of the same name. Before, names were source
frame indices: at 30 fps JPEG 00030 showed t = 1.0 s where SA-V's layout (and vos_inference, which
reads the folder as a 24 fps sequence) means t = 1.25 s, and masks sat at 00005, 00010, ...
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from test_sav_loader_alignment import CASES, SPEED, _label_perfectly, _write_video, _x, _x_in_image

from sav_assets.lib.sav.eval_layout import ANN_DIR, JPEG_DIR, check_layout, write_eval_layout


@pytest.mark.parametrize("case", ["24fps", "25fps", "29.97fps", "30fps", "vfr"])
def test_eval_layout_is_on_the_24fps_timeline(tmp_path, case):
    rate, pts = CASES[case]
    path = tmp_path / f"{case}.mp4"
    _write_video(path, pts, rate)
    video = {"video_id": f"v_{case.replace('.', '_')}", "video_fps": float(rate), "video_frame_count": len(pts)}
    _, frames, rel_pts = _label_perfectly(path, video)
    out = tmp_path / "layout"
    summary = write_eval_layout(out, "val", [video], {video["video_id"]: frames}, {video["video_id"]: str(path)})
    assert summary["video_ids"] == [video["video_id"]], summary["skipped"]
    assert check_layout(out, "val") == []

    vid = video["video_id"]
    pngs = sorted(p.name for p in (out / ANN_DIR / vid / "000").iterdir())
    n_ann = len({f["ann_idx"] for f in frames})
    assert pngs == [f"{4 * k:05d}.png" for k in range(n_ann)]
    jpegs = sorted((out / JPEG_DIR / vid).iterdir())
    assert [p.name for p in jpegs] == [f"{j:05d}.jpg" for j in range(4 * (n_ann - 1) + 1)]

    gaps = np.diff(rel_pts)
    tol = SPEED * float(gaps.max()) / 2 + 1.5          # nearest source frame to the instant, plus JPEG blur
    for p in jpegs:
        j = int(p.stem)
        img = np.asarray(Image.open(p).convert("L"))
        assert abs(_x_in_image(img) - _x(j / 24)) <= tol, (case, j)
        png = out / ANN_DIR / vid / "000" / f"{j:05d}.png"
        if png.exists():
            mask = np.asarray(Image.open(png)) > 0
            cols = np.flatnonzero(mask.any(axis=0))
            assert abs(cols[0] - _x_in_image(img)) <= 1.5, (case, j)

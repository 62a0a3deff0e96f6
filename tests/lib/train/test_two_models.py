"""Labels of two models coexist (issue 11 item 6): a relabel with another model keeps the previous labels
(archived per video and label key, lib/label/batch.py), the plain tables and their views hold one label
set per video (the latest, after a relabel the promoted model's) and never double count, ``all_masklets``
/ ``all_masklet_frames`` / ``label_sets`` show both, and ``compare_label_sets`` compares them. Real SAM 2.1
tiny (random weights, two seeds: two models), 128 px, CPU; real DuckDB views."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("sam2")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _video_util import make_video  # noqa: E402

from sav_assets.lib.label.batch import label_batch  # noqa: E402
from sav_assets.lib.label.config import LabelerConfig  # noqa: E402
from sav_assets.lib.label.model import ModelSpec, load_model  # noqa: E402
from sav_assets.lib.store.catalog import query, refresh_catalog  # noqa: E402
from sav_assets.lib.store.consolidation import consolidate_label_batch  # noqa: E402
from sav_assets.lib.store.lake import Lake  # noqa: E402

CFG = LabelerConfig(points_per_side=4, points_per_batch=16, pred_iou_thresh=0.0, stability_score_thresh=0.0,
                    max_objects=3, reseed_every=0, chunk_frames=64, isolate_decode=False, prefetch=False,
                    cycle_check=False, min_area_frac=0.0)
DROP = {"created_at"}


@pytest.fixture(scope="module")
def models():
    return (load_model(ModelSpec(config="tiny", image_size=128, device="cpu", seed=0)),
            load_model(ModelSpec(config="tiny", image_size=128, device="cpu", seed=1)))


def _videos(folder: Path) -> list[dict]:
    folder.mkdir(exist_ok=True)
    out = []
    for i, name in enumerate(("va", "vb")):
        v = make_video(folder / f"{name}.mp4", n=12, w=96, h=72, fps=24, late_square_from=6)
        out.append({**v, "video_id": name, "content_sha256": f"{i}" * 64, "source_uri": str(folder / f"{name}.mp4"),
                    "batch_id": "b1", "status": "ok"})
    return out


def _label(lake, videos, loaded):
    s = label_batch(lake, "b1", videos, {}, lambda: loaded, CFG, log=lambda m: None)
    consolidate_label_batch(lake, "b1", log=lambda m: None)     # as the masklets asset does
    return s


def _rows(lake, table):
    return sorted(({k: v for k, v in r.items() if k not in DROP} for r in lake.read_table(table).to_pylist()),
                  key=lambda r: (r["video_id"], r["masklet_type"], r["masklet_id"], r.get("ann_idx", -1)))


def _one(lake, sql):
    return query(lake, sql).to_pylist()


def test_a_relabel_with_another_model_keeps_both_and_the_views_show_the_current_one(tmp_path, models):
    a, b = models
    lake, videos = Lake(tmp_path / "lake"), _videos(tmp_path / "src")
    assert _label(lake, videos, a).labeled == ["va", "vb"]
    a_masklets, a_frames = _rows(lake, "masklets"), _rows(lake, "masklet_frames")
    key_a = {r["label_key"] for r in a_masklets}
    assert len(key_a) == 2 and a_masklets and a_frames

    s = _label(lake, videos, b)
    assert s.labeled == ["va", "vb"]                   # another model: relabeled, not skipped
    b_masklets, b_frames = _rows(lake, "masklets"), _rows(lake, "masklet_frames")
    key_b = {r["label_key"] for r in b_masklets}
    assert key_b.isdisjoint(key_a) and len(key_b) == 2
    # the previous model's labels survive, row for row, in the archive (frames carry their label key)
    assert _rows(lake, "masklets_archive") == a_masklets
    arc_frames = _rows(lake, "masklet_frames_archive")
    by_key = {(m["video_id"], m["masklet_type"], m["masklet_id"]): m["label_key"] for m in a_masklets}
    assert [{k: v for k, v in f.items() if k != "label_key"} for f in arc_frames] == a_frames
    assert all(f["label_key"] == by_key[(f["video_id"], f["masklet_type"], f["masklet_id"])] for f in arc_frames)
    # both survive consolidation: one merged file per batch and table
    assert all("/consolidated/" in r for r in lake.table_parts("masklets_archive"))

    # views: plain tables never double count, all_* show both models, label_sets one row per set
    na, nb, fa, fb = len(a_masklets), len(b_masklets), len(a_frames), len(b_frames)
    assert _one(lake, "select count(*) n, count(distinct label_key) k from masklets") == [{"n": nb, "k": 2}]
    assert _one(lake, "select count(*) n from masklet_frames") == [{"n": fb}]
    assert _one(lake, "select count(*) n, count(*) filter (where current) c from all_masklets") == [
        {"n": na + nb, "c": nb}]
    assert _one(lake, "select count(*) n, count(*) filter (where current) c, count(distinct label_key) k "
                      "from all_masklet_frames") == [{"n": fa + fb, "c": fb, "k": 4}]
    sets = _one(lake, "select video_id, label_key, current, masklets from label_sets order by video_id, current")
    assert [(r["video_id"], r["current"], r["label_key"] in key_b) for r in sets] == [
        ("va", False, False), ("va", True, True), ("vb", False, False), ("vb", True, True)]
    assert sum(r["masklets"] for r in sets) == na + nb
    # the sav.duckdb file users open has the same views
    import duckdb
    con = duckdb.connect(refresh_catalog(lake), read_only=True)
    try:
        con.execute(f"SET file_search_path = '{lake.local_path('')}'")
        assert con.sql("select count(*) from all_masklets").fetchall()[0][0] == na + nb
        assert con.sql("select count(*) from masklets").fetchall()[0][0] == nb
    finally:
        con.close()

    # the two label sets compared per video
    from sav_assets.lib.train.evaluate import compare_label_sets
    cmp = compare_label_sets(lake)
    assert [r["video_id"] for r in cmp] == ["va", "vb"]
    for r in cmp:
        assert r["auto_current"] == sum(1 for m in b_masklets if m["video_id"] == r["video_id"])
        assert r["auto_previous"] == sum(1 for m in a_masklets if m["video_id"] == r["video_id"])
        assert 0.0 <= r["jf_previous_vs_current"] <= 1.0 and r["jf_manual_current"] is None
        assert r["current_model"] == r["previous_model"] == "sam2.1_hiera_tiny@random"   # two seeds, no checkpoint
        assert r["current_key"] in {k[:16] for k in key_b} and r["previous_key"] in {k[:16] for k in key_a}

    # back to the first model: its labels come back from the archive, SAM 2 is not run, nothing doubles
    s = _label(lake, videos, a)
    assert s.labeled == [] and sorted(s.skipped) == ["va", "vb"]
    assert _rows(lake, "masklets") == a_masklets and _rows(lake, "masklet_frames") == a_frames
    keys = Counter(r["label_key"] for r in _rows(lake, "masklets_archive"))   # both sets archived, once each
    assert keys == Counter(r["label_key"] for r in a_masklets + b_masklets)
    assert _one(lake, "select count(*) n, count(*) filter (where current) c from all_masklets") == [
        {"n": na + nb, "c": na}]


def test_an_interrupted_relabel_never_archives_half_written_labels(tmp_path, models):
    from sav_assets.lib.label.batch import archive_current
    from sav_assets.lib.store.tables import MASKLETS, to_table

    a, b = models
    lake, videos = Lake(tmp_path / "lake"), _videos(tmp_path / "src")[:1]
    _label(lake, videos, a)
    a_masklets = _rows(lake, "masklets")
    prev = lake.part_rows("label_runs", "b1", "va.sam2").to_pylist()[0]
    # the relabel's first steps, then a crash: the archive is committed, the current masklets part was
    # rewritten (here: emptied), the label_runs marker still names the first model
    assert archive_current(lake, "b1", "va", prev) is True
    lake.write_part("masklets", "b1", "va.sam2", to_table([], MASKLETS))
    assert archive_current(lake, "b1", "va", prev) is False      # already archived: not overwritten
    s = _label(lake, videos, b)                                   # the re-run
    assert s.labeled == ["va"]
    assert _rows(lake, "masklets_archive") == a_masklets           # the first model's labels, intact
    assert {r["label_key"] for r in _rows(lake, "masklets")} != {prev["label_key"]}

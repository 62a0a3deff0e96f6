"""`sav-assets review correct VIDEO MASKLET_ID --frame T --point X,Y[,L] ... | --box ...`: one correction
file under <root>/reviews/ that the next run applies (real SAM 2.1 tiny, random weights, 128 px, CPU);
anything the next run would refuse is a one-line usage error, exit code 2, nothing written."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("sam2")

from sav_assets.cli import main  # noqa: E402
from sav_assets.lib.label.corrections import apply_corrections  # noqa: E402
from sav_assets.lib.qc.reviews import review_items  # noqa: E402
from sav_assets.lib.store.tables import MASKLET_EDITS, VIDEOS, to_table  # noqa: E402
from tests.lib.label.test_corrections import CFG, GRID, T_ANN, _frames, _masklets, labeled, loaded  # noqa: E402,F401


@pytest.fixture()
def lake_with_videos(labeled):  # noqa: F811 (the imported fixture)
    """The labeled lake of the corrections tests, with its ``videos`` row (the CLI resolves names there)."""
    lake, video = labeled
    lake.write_part("videos", "b1", "part-0", to_table([video], VIDEOS))
    return lake, video


def _apply(lake, video, model):
    return apply_corrections(lake, "b1", [video], review_items(lake), lambda: model, CFG, log=lambda m: None)


def test_review_correct_writes_a_file_that_the_next_run_applies(lake_with_videos, loaded, capsys):  # noqa: F811
    lake, video = lake_with_videos
    root = str(lake.store.local_root)
    before_m, before_f = _masklets(lake, "synth"), _frames(lake, "synth")
    mtype, mid = min(before_m)
    t = GRID[T_ANN]
    assert main(["review", "correct", "synth.mp4", str(mid), "--frame", str(t), "--point", "80,50",
                 "--point", "20,20,0", "--masklet-type", mtype, "--reviewer", "ana", "--note", "leaks",
                 "--root", root]) == 0
    out = capsys.readouterr().out
    assert f"correct synth {mtype} masklet {mid} from frame {t}: written to" in out
    assert "applied by the next masklets run of batch b1: sav-assets run --batch b1" in out
    (f,) = lake.list("reviews")
    (row,) = [json.loads(line) for line in lake.get_bytes(f).decode().splitlines()]
    assert {k: row[k] for k in ("kind", "video", "masklet_type", "masklet_id", "frame_idx", "points", "labels",
                                "box", "reviewer", "note")} == {
        "kind": "correction", "video": "synth", "masklet_type": mtype, "masklet_id": mid, "frame_idx": t,
        "points": [[80.0, 50.0], [20.0, 20.0]], "labels": [1, 0], "box": None, "reviewer": "ana", "note": "leaks"}

    s = _apply(lake, video, loaded)                 # the next run
    assert (s.applied, s.errors, s.masklets) == (1, [], [("synth", mtype, mid)])
    after_f = _frames(lake, "synth")
    assert after_f[(mtype, mid, T_ANN)] != before_f[(mtype, mid, T_ANN)]
    assert _masklets(lake, "synth")[(mtype, mid)]["masklet_edited_frame_count"] == 1
    (e,) = lake.read_table("masklet_edits", schema=MASKLET_EDITS).to_pylist()
    assert (e["status"], e["masklet_id"], e["frame_idx"], e["reviewer"], e["note"]) == ("applied", mid, t, "ana", "leaks")
    assert json.loads(e["prompt_json"]) == {"points": [[80.0, 50.0], [20.0, 20.0]], "labels": [1, 0], "box": None}

    # a new object, named by its content SHA-256, with a box
    assert main(["review", "correct", "ab" * 32, "new", "--frame", str(GRID[2]), "--box", "10,80,40,110",
                 "--root", root]) == 0
    assert "new object from frame" in capsys.readouterr().out
    assert _apply(lake, video, loaded).applied == 1
    (new,) = set(_masklets(lake, "synth")) - set(before_m)
    assert new == ("prompted", max(k[1] for k in before_m) + 1)


def test_review_correct_refuses_what_the_next_run_would_refuse(lake_with_videos, capsys):
    lake, _video = lake_with_videos
    root = str(lake.store.local_root)
    mtype, mid = min(_masklets(lake, "synth"))
    t = str(GRID[T_ANN])
    cases = [
        (["nope.mp4", str(mid), "--frame", t, "--point", "1,1"], "no ingested video has the id"),
        (["synth", "999", "--frame", t, "--point", "1,1"], f"video synth has no {mtype} masklet 999"),
        (["synth", str(mid), "--frame", "5", "--point", "1,1"], "frame 5 is not an annotated frame"),
        (["synth", str(mid), "--frame", "400", "--point", "1,1"], "frame 400 is out of range"),
        (["synth", str(mid), "--frame", t, "--point", "500,10"], "point [500.0, 10.0] is outside the 160x120 frame"),
        (["synth", str(mid), "--frame", t, "--box", "10,10,170,50"], "is outside the 160x120 frame"),
        (["synth", str(mid), "--frame", t, "--point", "80"], "--point '80': expected 2 or 3 comma-separated numbers"),
        (["synth", str(mid), "--frame", t, "--point", "80,50,2"], "the label is 1 (object) or 0 (background)"),
        (["synth", str(mid), "--frame", t, "--box", "1,2,3"], "--box '1,2,3': expected 4 comma-separated numbers"),
        (["synth", str(mid), "--frame", t], "give at least one --point or a --box"),
        (["synth", "abc", "--frame", t, "--point", "1,1"], "MASKLET_ID 'abc': expected an integer or 'new'"),
        (["synth", str(mid), "--frame", "x", "--point", "1,1"], "--frame 'x': expected a frame index"),
        (["synth", str(mid), "--frame", t, "--point", "1,1", "--masklet-type", "manual"],
         "manual masklets are imported, not tracked by SAM 2"),
    ]
    for argv, needle in cases:
        typed = argv if "--masklet-type" in argv else [*argv, "--masklet-type", mtype]
        assert main(["review", "correct", *typed, "--root", root]) == 2, argv
        err = capsys.readouterr().err
        assert needle in err and err.count("\n") == 1 and err.startswith("sav-assets review: error: "), (argv, err)
    with pytest.raises(SystemExit) as exc:             # argparse's own errors: one line too
        main(["review", "correct", "synth", str(mid), "--point", "1,1", "--root", root])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err == "sav-assets review correct: error: the following arguments are required: --frame\n"
    assert lake.list("reviews") == []

"""Prompt planning: snapping to the annotation grid, first prompt vs corrections, bad prompts."""

from __future__ import annotations

import pytest

from sav_assets.lib.label.config import LabelingFailed
from sav_assets.lib.label.planning import plan_prompts, point_inputs, snap
from sav_assets.lib.label.prompts import Prompt
from sav_assets.lib.video.errors import BAD_PROMPT

GRID = list(range(0, 32, 4))  # 32 frames at 24 fps: every 4th frame is annotated


def test_snap_to_the_nearest_annotated_frame_earlier_on_a_tie():
    assert [snap(GRID, f) for f in (0, 1, 2, 3, 17, 18, 29, 31)] == [0, 0, 0, 1, 4, 4, 7, 7]


def test_plan_first_prompt_starts_a_masklet_later_ones_correct_it(caplog):
    prompts = [
        Prompt("v", 24, 1, [[80.0, 50.0]], [1], None),          # correction (given out of order)
        Prompt("v", 0, 1, [[38.0, 50.0]], [1], None),
        Prompt("v", 17, 7, None, None, [10.0, 80.0, 40.0, 110.0]),
        Prompt("other", 0, 9, [[1.0, 1.0]], [1], None),          # another video's: ignored
    ]
    plan = plan_prompts(prompts, "v", GRID, 32, 120, 160)
    assert sorted(plan.by_frame) == [0, 4, 6]
    assert [(p.obj_id, p.is_new) for p in plan.at(0)] == [(1, True)]
    assert [(p.obj_id, p.is_new, p.prompt.frame_idx) for p in plan.at(4)] == [(7, True, 17)]
    assert [(p.obj_id, p.is_new) for p in plan.at(6)] == [(1, False)]
    assert plan.at(3) == []
    assert plan.next_free_id == 8  # automatic masklets are numbered after the prompted objects
    assert plan_prompts([], "v", GRID, 32, 120, 160).next_free_id == 0
    assert "ignoring 1 prompts" in caplog.text


@pytest.mark.parametrize("bad, what", [
    (Prompt("v", 0, 1, [[210.0, 10.0]], [1], None), "outside the 160x120 frame"),
    (Prompt("v", 0, 1, None, None, [0.0, 0.0, 20.0, 130.0]), "outside the 160x120 frame"),
    (Prompt("v", 999, 1, [[1.0, 1.0]], [1], None), "the video has 32 frames"),
])
def test_bad_prompts_are_classified(bad, what):
    with pytest.raises(LabelingFailed, match=what) as ei:
        plan_prompts([bad], "v", GRID, 32, 120, 160)
    assert ei.value.error_class == BAD_PROMPT


def test_two_prompts_of_one_object_on_one_annotated_frame_are_refused():
    two = [Prompt("v", 16, 1, [[1.0, 1.0]], [1], None), Prompt("v", 17, 1, [[2.0, 2.0]], [1], None)]
    with pytest.raises(LabelingFailed, match="fall on annotated frame 16") as ei:
        plan_prompts(two, "v", GRID, 32, 120, 160)
    assert ei.value.error_class == BAD_PROMPT


def test_point_inputs_scale_to_the_model_input_and_put_the_box_first():
    pytest.importorskip("torch")
    pin = point_inputs(Prompt("v", 0, 1, [[80.0, 60.0]], [0], [0.0, 0.0, 160.0, 120.0]), 120, 160, 128, "cpu")
    assert pin["point_coords"].tolist() == [[[0.0, 0.0], [128.0, 128.0], [64.0, 64.0]]]
    assert pin["point_labels"].tolist() == [[2, 3, 0]]

"""Prompt files: JSON Lines, JSON list and both CSV layouts, with line-numbered validation errors."""

from __future__ import annotations

import json

import pytest

from sav_assets.lib.label.prompts import Prompt, load_prompts, validate_prompt

JSONL = """\
{"video_id": "v1", "frame_idx": 12, "obj_id": 2, "box": [100, 80, 260, 300]}
# a comment line

{"video_id": "v1", "frame_idx": 0, "obj_id": 1, "points": [[410, 220], [300, 100]], "labels": [1, 0]}
{"video_id": "v2", "frame_idx": 5, "obj_id": 1, "points": [[1.5, 2.5]]}
"""


def test_jsonl_parsed_grouped_and_sorted():
    out = load_prompts(JSONL)
    assert sorted(out) == ["v1", "v2"]
    assert out["v1"] == [
        Prompt("v1", 0, 1, [[410.0, 220.0], [300.0, 100.0]], [1, 0], None),
        Prompt("v1", 12, 2, None, None, [100.0, 80.0, 260.0, 300.0]),
    ]
    assert out["v2"][0].labels == [1]  # labels default to positive


def test_json_list_bytes_and_file(tmp_path):
    items = [{"video_id": "a", "frame_idx": 3, "obj_id": 7, "points": [[1, 2]], "labels": [1],
              "box": [0, 0, 10, 10]}]
    assert load_prompts(json.dumps(items).encode())["a"][0].box == [0.0, 0.0, 10.0, 10.0]
    assert load_prompts(json.dumps({"prompts": items}, indent=2))["a"][0].obj_id == 7
    f = tmp_path / "p.json"
    f.write_text(json.dumps(items))
    assert load_prompts(str(f)) == load_prompts(json.dumps(items))
    g = tmp_path / "p.jsonl"
    g.write_text(JSONL)
    assert load_prompts(g) == load_prompts(JSONL)


def test_csv_json_cells():
    text = ('video_id,frame_idx,obj_id,points,labels,box\n'
            'v1,0,1,"[[410,220],[300,100]]","[1,0]",\n'
            'v1,12,2,,,"[100,80,260,300]"\n')
    out = load_prompts(text)["v1"]
    assert out[0].points == [[410.0, 220.0], [300.0, 100.0]] and out[0].labels == [1, 0]
    assert out[1].box == [100.0, 80.0, 260.0, 300.0] and out[1].points is None


def test_csv_point_per_row_merged(tmp_path):
    text = ("video_id,frame_idx,obj_id,x,y,label,x0,y0,x1,y1\n"
            "v1,0,1,410,220,1,,,,\n"
            "v1,0,1,300,100,0,,,,\n"
            "v1,4,3,,,,5,6,50,60\n")
    f = tmp_path / "p.csv"
    f.write_text(text)
    out = load_prompts(f)["v1"]
    assert out[0] == Prompt("v1", 0, 1, [[410.0, 220.0], [300.0, 100.0]], [1, 0], None)
    assert out[1] == Prompt("v1", 4, 3, None, None, [5.0, 6.0, 50.0, 60.0])


@pytest.mark.parametrize("line,needle", [
    ('{"video_id": "v", "frame_idx": -1, "obj_id": 1, "points": [[1, 2]]}', "frame_idx must be >= 0"),
    ('{"video_id": "v", "frame_idx": 0, "obj_id": 1}', "needs points or a box"),
    ('{"video_id": "v", "frame_idx": 0, "obj_id": 1, "points": [[1, 2]], "labels": [1, 1]}', "one 0/1 label"),
    ('{"video_id": "v", "frame_idx": 0, "obj_id": 1, "points": [[1, 2]], "labels": [2]}', "must be 0 or 1"),
    ('{"video_id": "v", "frame_idx": 0, "obj_id": 1, "box": [10, 10, 5, 20]}', "x0 < x1"),
    ('{"video_id": "v", "frame_idx": 0, "obj_id": 1, "points": [[1]]}', "must be [x, y]"),
    ('{"video_id": "", "frame_idx": 0, "obj_id": 1, "points": [[1, 2]]}', "video_id"),
    ('{"video_id": "v", "frame_idx": 0, "obj_id": 1, "points": [[1, NaN]]}', "finite"),
    ('{"video_id": "v", "frame_idx": 0, "obj_id": "x", "points": [[1, 2]]}', "obj_id must be an integer"),
    ('{"video_id": "v", "frame_idx": 0, "obj_id": 1, "points": [[1, 2]], "mask": 1}', "unknown prompt fields"),
    ('{"video_id": "v", "frame_idx": 0, "obj_id": 1, "points": [[1, 2]]', "invalid JSON"),
])
def test_bad_jsonl_line_reports_line_number(line, needle):
    good = '{"video_id": "v", "frame_idx": 0, "obj_id": 9, "points": [[1, 2]]}'
    with pytest.raises(ValueError, match="line 3") as ei:
        load_prompts(f"{good}\n\n{line}\n{good.replace('9', '8')}\n")
    assert needle in str(ei.value)


def test_duplicates_and_csv_errors_name_their_line():
    dup = ('{"video_id": "v", "frame_idx": 0, "obj_id": 1, "points": [[1, 2]]}\n'
           '{"video_id": "v", "frame_idx": 0, "obj_id": 1, "box": [0, 0, 3, 3]}\n')
    with pytest.raises(ValueError, match="line 2: duplicate"):
        load_prompts(dup)
    with pytest.raises(ValueError, match="line 3"):
        load_prompts("video_id,frame_idx,obj_id,x,y,label\nv,0,1,1,2,1\nv,0,1,abc,2,1\n")
    with pytest.raises(ValueError, match="needs columns"):
        load_prompts("video,frame,x,y\nv,0,1,2\n")
    with pytest.raises(ValueError, match="item 1"):
        load_prompts(json.dumps([{"video_id": "v", "frame_idx": 0, "obj_id": 1, "points": [[1, 2]]},
                                 {"video_id": "v", "frame_idx": 0, "obj_id": 2}]))
    with pytest.raises(ValueError, match="not found"):
        load_prompts("/nonexistent/prompts.jsonl")
    assert load_prompts("") == {}


def test_validate_prompt_direct():
    p = validate_prompt({"video_id": " v ", "frame_idx": 2.0, "obj_id": 3, "box": [1, 2, 3, 4]})
    assert p == Prompt("v", 2, 3, None, None, [1.0, 2.0, 3.0, 4.0])
    assert p.to_dict()["box"] == [1.0, 2.0, 3.0, 4.0]
    with pytest.raises(ValueError, match="labels given without points"):
        validate_prompt({"video_id": "v", "frame_idx": 0, "obj_id": 1, "labels": [1], "box": [0, 0, 1, 1]})

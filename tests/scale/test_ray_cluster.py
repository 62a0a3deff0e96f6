"""The real ``masklets`` asset on a real 3-node Ray cluster (loopback, private network namespace).

A head with no GPU and two nodes declaring one GPU each (the model itself runs on the CPU here: a
node's declared GPU is only a slot); four short generated videos labeled by random-weight SAM 2.1
tiny at a 128 px input, one unit per video. With a node killed while it runs a unit, the run still
succeeds: the unit is retried on the other node, every video has one ``labeled`` row and its masklets
once, nothing ran on the head, and the labels equal the in-process run's.
"""

from __future__ import annotations

from collections import Counter

import pytest

pytestmark = pytest.mark.slow


def _check_same_labels_once(res: dict) -> None:
    inline, ray = res["inline"], res["ray"]
    runs = Counter((r["video_id"], r["status"]) for r in ray["label_runs"])
    videos = {r["video_id"] for r in inline["label_runs"]}
    assert len(videos) == 4 and all(r["status"] == "labeled" for r in inline["label_runs"])
    assert runs == Counter({(v, "labeled"): 1 for v in videos})       # exactly one labeled row per video
    assert sorted((r["video_id"], r["label_key"]) for r in ray["label_runs"]) == \
        sorted((r["video_id"], r["label_key"]) for r in inline["label_runs"])
    # a masklet frame is (video, type, id, frame): imported SA-V ids overlap SAM 2's, so the type is part of it
    keys = [tuple(f[:4]) for f in ray["masklet_frames"]]
    assert len(keys) == len(set(keys)) > 0                            # masklets exactly once
    assert ray["parts"] == inline["parts"]                            # a retried unit rewrote its parts by name
    assert {f[1] for f in ray["masklet_frames"]} == {"auto", "manual"}   # SAM 2's and the imported SA-V ones
    assert ray["masklet_frames"] == inline["masklet_frames"]          # same masks, RLE for RLE
    md = res["ray_md"]
    assert md["videos_labeled"] + md["videos_skipped_already_labeled"] >= 4 and md["videos_failed"] == 0
    assert md["units"] == 4 and md["units_lost"] == 0
    assert "| node |" in md["throughput_by_node"]
    assert res["tasks"] and all(t["node"] != res["head"] for t in res["tasks"])   # nothing ran on the head


def test_killed_worker_node_is_retried_and_labels_equal_the_in_process_run(cluster_run):
    res = cluster_run("kill")
    assert res["kill"].get("killed_node"), "no unit ran on node_b before the run ended"
    _check_same_labels_once(res)
    assert res["ray_md"]["units_retried"] >= 1
    assert max(t["attempt"] for t in res["tasks"]) >= 1                # a second attempt of some unit
    killed = [t for t in res["tasks"] if t["node"] == res["kill"]["killed_node"] and t["state"] == "FAILED"]
    assert killed, res["tasks"]


def test_real_sam2_through_the_cluster_without_faults(cluster_run):
    res = cluster_run("clean")
    _check_same_labels_once(res)
    assert res["ray_md"]["units_retried"] == 0
    nodes = {t["node"] for t in res["tasks"]}
    assert len(nodes) == 2, res["tasks"]           # both GPU nodes took units

"""`sav-assets takedown` on a real one-batch lake (demo corpus, imported SA-V masks, asset bodies called as
the pipeline would), checked with `sav-assets sql`: by content SHA-256 and by source URI, unknown targets
(exit code 2, one line), idempotence; and the `takedowns` asset serving a request file in the lake."""

from __future__ import annotations

import json

import dagster as dg
import pytest
from defs.conftest import QUALITY, TinyLake

from sav_assets.cli import main
from sav_assets.defs.dataset import ShardsConfig, SplitsConfig, splits, training_shards
from sav_assets.defs.ingest import IngestConfig, raw_videos, video_quality
from sav_assets.defs.label import LabelingConfig, masklets
from sav_assets.defs.qc import QCConfig, masklet_qc
from sav_assets.defs.takedown import TakedownConfig, takedowns


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    with dg.instance_for_test() as instance:
        t = TinyLake(tmp_path_factory.mktemp("cli_takedown"), instance)
        t.run(raw_videos, config=IngestConfig())
        t.run(video_quality, config=QUALITY)
        t.run(masklets, config=LabelingConfig(run_sam2=False))
        t.run(masklet_qc, config=QCConfig())
        t.run(splits, config=SplitsConfig(val_target=1))
        t.run(training_shards, config=ShardsConfig(window=4))
        yield t


def sql(capsys, root, query: str) -> list[dict]:
    capsys.readouterr()
    assert main(["sql", "--root", str(root), "--format", "json", query]) == 0
    return json.loads(capsys.readouterr().out)


def test_cli_takedown_by_sha_and_uri(tiny, capsys):
    root = tiny.root
    videos = sql(capsys, root, "select video_id, source_uri, content_sha256 from videos where status = 'ok' "
                               "order by video_id")
    first, second = videos[0], videos[1]
    assert sql(capsys, root, f"select count(*) n from masklets where video_id = '{first['video_id']}'")[0]["n"] > 0

    assert main(["takedown", first["content_sha256"], "--reason", "licence withdrawn", "--by", "alice",
                 "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"taken down: {first['video_id']} (content {first['content_sha256']})")
    assert "rows removed:" in out and "masklets" in out
    for table in ("videos", "video_quality", "masklets", "masklet_frames", "masklet_qc", "splits"):
        assert sql(capsys, root, f"select count(*) n from {table} where video_id = '{first['video_id']}'") == \
            [{"n": 0}], table
    assert sql(capsys, root, "select video_id, reason, requested_by from takedowns") == [
        {"video_id": first["video_id"], "reason": "licence withdrawn", "requested_by": "alice"}]
    assert sql(capsys, root, f"select count(*) n from masklets where video_id = '{second['video_id']}'")[0]["n"] > 0

    # again, by its source URI: already taken down, nothing more to do, exit 0
    assert main(["takedown", first["source_uri"], "--reason", "again", "--root", str(root), "--format", "json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["already"] is True and again["rows_removed"] == {} and again["shards_rewritten"] == 0

    # a video by its source URI
    assert main(["takedown", second["source_uri"], "--reason", "privacy", "--root", str(root)]) == 0
    assert capsys.readouterr().out.startswith(f"taken down: {second['video_id']}")
    assert sql(capsys, root, "select count(*) n from takedowns") == [{"n": 2}]


def test_cli_takedown_unknown_target(tiny, capsys):
    capsys.readouterr()
    assert main(["takedown", "not_a_video", "--reason", "x", "--root", str(tiny.root)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == ("sav-assets takedown: error: no video matches 'not_a_video' (not a video_id, source URI "
                           "or key, or content SHA-256 of this lake)")
    assert main(["takedown", "f" * 64, "--reason", "x", "--root", str(tiny.root)]) == 2
    assert f"no video with content SHA-256 {'f' * 64}" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:             # --reason is required
        main(["takedown", "sav_900000", "--root", str(tiny.root)])
    assert e.value.code == 2


def test_takedowns_asset_serves_request_files(tiny, capsys):
    lk = tiny.lake
    left = sql(capsys, tiny.root, "select video_id from videos where status = 'ok' and video_id not in "
                                  "(select video_id from takedowns) order by video_id")
    assert left, "an earlier test took every video down"
    vid = left[0]["video_id"]
    lk.put_bytes("takedowns/requests/2026-01-02.json", json.dumps(
        [{"target": vid, "reason": "court order", "requested_by": "legal"}, {"target": "nobody", "reason": "x"}]).encode())
    res = tiny.run(takedowns, config=TakedownConfig())
    md = tiny.md("takedowns")
    assert md["taken_down"] == 1 and md["rejected"] == 1
    assert f"| 2026-01-02.json | {vid} | done |" in md["requests"]
    assert res is not None and not lk.exists("takedowns/requests/2026-01-02.json")
    rejected = json.loads(lk.get_bytes("takedowns/rejected/2026-01-02.json"))
    assert rejected["errors"] == ["no video matches 'nobody' (not a video_id, source URI or key, or content SHA-256 "
                                  "of this lake)"]
    assert sql(capsys, tiny.root, f"select reason, requested_by from takedowns where video_id = '{vid}'") == [
        {"reason": "court order", "requested_by": "legal"}]
    assert sql(capsys, tiny.root, f"select count(*) n from masklets where video_id = '{vid}'") == [{"n": 0}]
    with pytest.raises(dg.Failure, match="no video matches 'ghost'"):
        tiny.run(takedowns, config=TakedownConfig(targets=["ghost"], reason="x"))

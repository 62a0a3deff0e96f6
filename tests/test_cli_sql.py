"""`sav-assets sql`: a missing root is a clear error that creates nothing, CSV prints nested columns
as JSON, every call refreshes the catalog file, a user's open session does not get in the way, and
without a query it is an interactive read-only shell (issue 8, items 1 and 7)."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import textwrap

import duckdb
import pyarrow as pa

from sav_assets.cli import main
from sav_assets.lib.store import catalog
from sav_assets.lib.store.compaction import compact_table
from sav_assets.lib.store.lake import Lake
from sav_assets.lib.store.tables import VIDEOS, to_table


def _videos(ids, batch):
    return to_table([{"video_id": i, "batch_id": batch, "status": "ok", "content_sha256": f"{n:064d}",
                      "bytes": 10} for n, i in enumerate(ids)], VIDEOS)


def test_missing_root_is_a_clear_error_and_creates_nothing(tmp_path, capsys):
    missing = tmp_path / "nope" / "lake"
    assert main(["sql", "--root", str(missing), "select 1"]) == 2
    err = capsys.readouterr().err
    assert f"no lake at {missing}" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    assert main(["sql", "--root", str(a_file), "select 1"]) == 2
    assert "no lake at" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


def test_csv_prints_list_and_struct_columns_as_json(tmp_path, capsys):
    lake = Lake(tmp_path)
    lake.replace_batch("videos", "b1", _videos(["a"], "b1"))
    sql = ("select 'a' as id, [1, 2] as xs, {'k': 'v', 'n': [3]} as s, map {'m': 1} as m, "
           "null::int[] as empty, 1.5 as f")
    assert main(["sql", "--root", str(tmp_path), "--format", "csv", sql]) == 0
    out = capsys.readouterr().out
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 1
    assert rows[0]["id"] == "a" and rows[0]["f"] == "1.5"
    assert json.loads(rows[0]["xs"]) == [1, 2]
    assert json.loads(rows[0]["s"]) == {"k": "v", "n": [3]}
    assert json.loads(rows[0]["m"]) in ([["m", 1]], {"m": 1})
    assert rows[0]["empty"] == ""


def test_sql_refreshes_the_catalog_views(tmp_path, capsys):
    """A plain `duckdb sav.duckdb` session sees what the last `sav-assets sql` saw."""
    lake = Lake(tmp_path)
    lake.replace_batch("videos", "b1", _videos(["a", "b"], "b1"))
    catalog.refresh_catalog(lake)
    assert compact_table(lake, "videos", force=True).compacted
    catalog.refresh_catalog(lake)
    lake.replace_batch("videos", "b1", _videos(["a"], "b1"))            # rewritten after compaction
    lake.replace_batch("videos", "b2", _videos(["c"], "b2"))
    capsys.readouterr()
    assert main(["sql", "--root", str(tmp_path), "--format", "json", "select count(*) n from videos"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"n": 2}]
    con = duckdb.connect(str(tmp_path / "sav.duckdb"), read_only=True)
    try:
        con.execute(f"SET file_search_path = '{tmp_path}'")
        assert con.execute("select video_id from videos order by 1").fetchall() == [("a",), ("c",)]
    finally:
        con.close()


HOLDER = textwrap.dedent("""
    import sys, duckdb
    con = duckdb.connect(sys.argv[1])
    print("ready", flush=True)
    sys.stdin.readline()
""")


def test_sql_works_while_a_user_session_holds_the_catalog(tmp_path, capsys):
    lake = Lake(tmp_path)
    lake.replace_batch("videos", "b1", _videos(["a", "b"], "b1"))
    db = catalog.refresh_catalog(lake)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, db], cwd=tmp_path, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == "ready"
        lake.replace_batch("videos", "b2", _videos(["c"], "b2"))
        assert main(["sql", "--root", str(tmp_path), "--format", "json", "select count(*) n from videos"]) == 0
        captured = capsys.readouterr()
        assert json.loads(captured.out) == [{"n": 3}]
        assert "could not" not in captured.err
    finally:
        holder.communicate("\n", timeout=60)


def test_without_a_query_it_is_an_interactive_read_only_shell(tmp_path, capsys, monkeypatch):
    lake = Lake(tmp_path)
    lake.replace_batch("videos", "b1", _videos(["a", "b"], "b1"))
    script = ("select count(*) as n\n  from videos;\n"
              f"copy videos to '{tmp_path}/x.csv';\n"
              "select nonsense from nowhere;\n"
              "select video_id from videos order by 1; select 42 as answer\n")
    monkeypatch.setattr(sys, "stdin", io.StringIO(script))
    assert main(["sql", "--root", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    out, err = captured.out, captured.err
    assert "n\n-\n2\n(1 row)" in out
    assert "refused: COPY" in err
    assert "nowhere" in err
    assert "video_id\n--------\na       \nb       \n(2 rows)" in out
    assert "answer" in out and "42" in out                  # the last statement needs no ';' at EOF
    assert not (tmp_path / "x.csv").exists()


def test_format_helper_keeps_flat_csv_unchanged():
    from sav_assets.cli import _format

    tbl = pa.table({"a": [1, None], "b": ["x", "y,z"]})
    assert _format(tbl, "csv") == '"a","b"\n1,"x"\n,"y,z"\n'

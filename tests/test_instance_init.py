"""The Dagster instance is initialised once, under a file lock, before anything concurrent opens it.

Four processes opening a fresh SQLite ``DAGSTER_HOME`` together each try to create the storage tables
and stamp alembic: some die with ``table ... already exists`` and the home can be left with two alembic
heads, after which *every* later open fails (dagster#27390). ``sav-assets init-home`` and every CLI
entry that opens the instance (``run``, ``batches``) first write ``dagster.yaml`` if missing and open
the instance once under an exclusive lock on ``$DAGSTER_HOME/.sav-instance.lock``.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from sav_assets.cli import INSTANCE_CONFIG, main

OPEN = """
import dagster as dg
with dg.DagsterInstance.get() as instance:
    print("runs", len(instance.get_runs()))
"""
STORAGE_DBS = ("history/runs.db", "history/runs/index.db", "schedules/schedules.db")


def _env(home: Path) -> dict:
    return {**os.environ, "DAGSTER_HOME": str(home)}


def _alembic_heads(db: Path) -> list[str]:
    with sqlite3.connect(db) as con:
        return [r[0] for r in con.execute("select version_num from alembic_version")]


def _waits_for_flock(pid: int) -> bool:
    """Whether ``pid`` is blocked waiting for a flock (a ``->`` line of /proc/locks)."""
    return any(line.split()[1:3] == ["->", "FLOCK"] and line.split()[5] == str(pid)
               for line in Path("/proc/locks").read_text().splitlines())


def _spawn(cmds: list[list[str]], home: Path) -> list[subprocess.CompletedProcess]:
    procs = [subprocess.Popen(c, env=_env(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for c in cmds]
    outs = []
    for c, p in zip(cmds, procs):
        out, err = p.communicate(timeout=300)
        outs.append(subprocess.CompletedProcess(c, p.returncode, out, err))
    return outs


def test_concurrent_cli_entries_on_a_fresh_home(tmp_path):
    """Rounds of four CLI processes (two ``run`` over an empty source, two ``batches``) each opening a
    fresh DAGSTER_HOME at the same time: every one exits 0 and the home stays usable afterwards."""
    source = tmp_path / "source"
    source.mkdir()
    cli = [sys.executable, "-m", "sav_assets.cli"]
    for rnd in range(3):
        home, lake = tmp_path / f"dh{rnd}", tmp_path / f"lake{rnd}"
        cmds = [[*cli, "run", "--source", str(source), "--root", str(lake)],
                [*cli, "batches", "--root", str(lake)]] * 2
        for p in _spawn(cmds, home):
            assert p.returncode == 0, f"round {rnd}: {p.args[3]} exited {p.returncode}:\n{p.stderr[-3000:]}"
        assert (home / "dagster.yaml").read_text() == INSTANCE_CONFIG
        for db in STORAGE_DBS:
            assert len(_alembic_heads(home / db)) == 1, db
        again = subprocess.run([sys.executable, "-c", OPEN], env=_env(home), capture_output=True, text=True,
                               timeout=120)
        assert again.returncode == 0, again.stderr[-3000:]
        assert again.stdout.split()[-2:] == ["runs", "0"]


def test_init_home_leaves_an_initialised_reusable_instance(tmp_path, monkeypatch, capsys):
    """After ``init-home`` the storage exists (one alembic head per database), and four raw Dagster
    processes opening it together, with no lock of ours, all succeed."""
    home = tmp_path / "home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    assert main(["init-home"]) == 0
    out = capsys.readouterr().out
    assert "written" in out and "storage initialised" in out, out
    heads = {db: _alembic_heads(home / db) for db in STORAGE_DBS}
    assert all(len(h) == 1 for h in heads.values()), heads
    for p in _spawn([[sys.executable, "-c", OPEN]] * 4, home):
        assert p.returncode == 0, p.stderr[-3000:]
        assert p.stdout.split()[-2:] == ["runs", "0"]
    # a second init-home keeps the config and the storage as they are
    assert main(["init-home"]) == 0
    assert "kept as it was" in capsys.readouterr().out
    assert {db: _alembic_heads(home / db) for db in STORAGE_DBS} == heads


def test_init_home_waits_for_the_lock(tmp_path):
    """While another process holds ``$DAGSTER_HOME/.sav-instance.lock``, init-home blocks on it (seen in
    /proc/locks) and creates nothing; it finishes once the lock is released."""
    home = tmp_path / "home"
    home.mkdir()
    with open(home / ".sav-instance.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        p = subprocess.Popen([sys.executable, "-m", "sav_assets.cli", "init-home"], env=_env(home),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 240
        while not _waits_for_flock(p.pid):         # the CLI imported and is now blocked on our lock
            assert p.poll() is None, p.communicate()
            assert time.monotonic() < deadline, "init-home never reached the lock"
            time.sleep(0.2)
        assert not (home / "history").exists() and not (home / "dagster.yaml").exists()
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-3000:]
    assert (home / "dagster.yaml").read_text() == INSTANCE_CONFIG
    assert all(len(_alembic_heads(home / db)) == 1 for db in STORAGE_DBS)

"""A PostgreSQL-backed Dagster instance: the pipeline's runs and events land in PostgreSQL.

A throwaway cluster (Debian's ``postgresql``: ``initdb`` / ``pg_ctl``, as the ``postgres`` user when
we are root) listens on 127.0.0.1 with its socket in a temporary folder. ``sav-assets init-home
--postgres-url`` writes a dagster.yaml that points at it (scheme ``postgresql+psycopg2``: SQLAlchemy 2.1
maps plain ``postgresql://`` to psycopg 3) and the ``sav-assets run`` CLI runs the whole pipeline on a
one-video demo corpus; the run, its materializations and the batch partition are then read back from
PostgreSQL, by SQL and through ``DagsterInstance``, and no SQLite run storage was created.

Skipped, with the reason, only when the server binaries are absent and ``CI`` is unset; under
``CI=true`` (where ``make test`` installs them through ``make sysdeps``) their absence is a failure.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "sav_assets.cli"]


def _missing(reason: str):
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason} (CI is set: `make sysdeps` must install it)")
    pytest.skip(reason)


def _pg_bindir() -> Path | None:
    """The folder of ``initdb`` / ``pg_ctl``: on PATH, or Debian's /usr/lib/postgresql/<version>/bin."""
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).resolve().parent
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
                    key=lambda p: int(p.parents[1].name) if p.parents[1].name.isdigit() else 0)
    return debian[-1].parent if debian else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _check(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=kw.pop("timeout", 120), **kw)
    assert p.returncode == 0, f"{cmd} exited {p.returncode}:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p


@pytest.fixture(scope="module")
def postgres_url():
    """A fresh PostgreSQL cluster on 127.0.0.1 with an empty ``dagster`` database; yields its URL."""
    bindir = _pg_bindir()
    if bindir is None:
        _missing("PostgreSQL server binaries (initdb, pg_ctl) not found; `make sysdeps` installs Debian's postgresql")
    pytest.importorskip("dagster_postgres", reason="dagster-postgres not installed (pip install -e '.[dev]')")
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []   # initdb refuses root
    if as_user and shutil.which("runuser") is None:
        _missing("running as root needs runuser to start PostgreSQL as the postgres user")
    base = Path(tempfile.mkdtemp(prefix="sav-pg-"))   # not under pytest's 0700 root folder: postgres reads it
    if as_user:
        shutil.chown(base, "postgres", "postgres")
    data, port = base / "data", _free_port()
    try:
        _check([*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
                "--no-sync", "-E", "UTF8"])
        _check([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "server.log"), "-w",
                "-t", "60", "-o", f"-h 127.0.0.1 -p {port} -k {base} -F", "start"], timeout=90)
        import psycopg2

        con = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
        con.autocommit = True
        with con.cursor() as cur:
            cur.execute("CREATE DATABASE dagster")
        con.close()
        yield f"postgresql://postgres@127.0.0.1:{port}/dagster"
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                           capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


def _sql(url: str, query: str, *params) -> list[tuple]:
    import psycopg2

    con = psycopg2.connect(url)
    try:
        with con.cursor() as cur:
            cur.execute(query, params)
            return cur.fetchall()
    finally:
        con.close()


def test_init_home_refuses_a_url_that_is_not_postgres(tmp_path, monkeypatch, capsys):
    from sav_assets.cli import main

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dh"))
    assert main(["init-home", "--postgres-url", "mysql://u@h/db"]) == 2
    assert "--postgres-url 'mysql://u@h/db': expected postgresql://" in capsys.readouterr().err
    assert not (tmp_path / "dh" / "dagster.yaml").exists()


def test_pipeline_runs_are_recorded_in_postgres(postgres_url, tmp_path):
    home, lake, corpus = tmp_path / "dh", tmp_path / "lake", tmp_path / "corpus"
    env = {**os.environ, "DAGSTER_HOME": str(home), "SAV_DATA_ROOT": str(lake)}
    out = _check([*CLI, "init-home", "--postgres-url", postgres_url], env=env).stdout
    assert "written (PostgreSQL storage)" in out and "storage initialised" in out, out
    config = (home / "dagster.yaml").read_text()
    assert f"postgres_url: {postgres_url.replace('postgresql://', 'postgresql+psycopg2://')}" in config
    assert "default_limit: 1" in config
    # init-home created dagster's tables in PostgreSQL, and no SQLite storage in DAGSTER_HOME
    tables = {r[0] for r in _sql(postgres_url, "select tablename from pg_tables where schemaname = 'public'")}
    assert {"runs", "event_logs", "jobs", "alembic_version"} <= tables, tables
    # the same URL again keeps the file; a different one is refused rather than overwriting it
    assert "kept as it was" in _check([*CLI, "init-home", "--postgres-url", postgres_url], env=env).stdout
    other = subprocess.run([*CLI, "init-home", "--postgres-url", postgres_url + "x"], env=env,
                           capture_output=True, text=True, timeout=120)
    assert other.returncode == 2 and "exists with another config" in other.stderr, other.stderr
    assert (home / "dagster.yaml").read_text() == config

    _check([*CLI, "demo", "--out", str(corpus), "--videos", "1", "--seconds", "1", "--no-bad"], env=env)
    run = _check([*CLI, "run", "--source", str(corpus), "--root", str(lake), "--config",
                  str(REPO / "configs" / "demo.yaml")], env=env, timeout=900)
    run_id = next(line.split()[1] for line in run.stdout.splitlines() if line.startswith("run "))
    assert f"run {run_id} succeeded" in run.stdout, run.stdout[-3000:]

    # by SQL: the run row, its batch tag and the masklets materialization are PostgreSQL rows
    rows = _sql(postgres_url, "select status from runs where run_id = %s", run_id)
    assert rows == [("SUCCESS",)]
    batch = _sql(postgres_url, "select value from run_tags where run_id = %s and key = 'sav/batch'", run_id)
    assert len(batch) == 1
    mats = _sql(postgres_url, "select count(*) from event_logs where run_id = %s and dagster_event_type = "
                "'ASSET_MATERIALIZATION' and asset_key = %s", run_id, '["masklets"]')
    assert mats == [(1,)]
    assert not (home / "history").exists() and not (home / "schedules").exists()

    # through Dagster: the instance that dagster.yaml describes is the PostgreSQL one and sees the run
    import dagster as dg
    from dagster_postgres import PostgresRunStorage

    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        (rec,) = instance.get_run_records(dg.RunsFilter(run_ids=[run_id]))
        assert rec.dagster_run.status == dg.DagsterRunStatus.SUCCESS
        assert rec.dagster_run.tags["sav/batch"] == batch[0][0]
        assert batch[0][0] in instance.get_dynamic_partitions("batches")
        ev = instance.get_latest_materialization_event(dg.AssetKey("masklets"))
        assert ev is not None and ev.run_id == run_id

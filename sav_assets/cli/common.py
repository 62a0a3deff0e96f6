"""What every `sav-assets` command shares: the Dagster home, its instance config and its one-time
initialisation, the lake from the resources, usage errors (one line, exit code 2) and table printing.

The instance is initialised once, under an exclusive lock, before anything concurrent opens it: four
processes opening a fresh SQLite ``DAGSTER_HOME`` together each create the storage tables and stamp
alembic, some die with ``table ... already exists`` and the home can be left with two alembic heads,
after which every open fails (dagster#27390). :func:`init_home` (``sav-assets init-home``, and the first
thing ``run`` and ``batches`` do) takes ``$DAGSTER_HOME/.sav-instance.lock``, writes ``dagster.yaml`` if
it is missing and opens the instance once, which creates or checks its storage (SQLite files, or the
tables of a PostgreSQL instance); an initialised instance opens in a few milliseconds."""

from __future__ import annotations

import json
import os
from pathlib import Path

# The Dagster instance config for a fresh DAGSTER_HOME (`sav-assets init-home`, for installs without make):
# Dagster 1.13 sets pool limits with `concurrency: pools: default_limit`; `gpu` (the masklets step) is the
# only pool, so it runs one step at a time unless the instance says otherwise.
INSTANCE_CONFIG = """\
# Written by `sav-assets init-home` (only when missing): edit freely.
concurrency:
  pools:
    default_limit: 1   # every pool, i.e. `gpu` (the masklets step): one at a time per GPU
"""


def _dagster_home() -> str:
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        home = str(Path.cwd() / ".dagster_home")
        os.environ["DAGSTER_HOME"] = home
    Path(home).mkdir(parents=True, exist_ok=True)
    return home


INSTANCE_LOCK = ".sav-instance.lock"


def instance_config(postgres_url: str | None = None) -> str:
    """The dagster.yaml ``init-home`` writes: the pool limit, and a PostgreSQL storage when a URL is given.

    SQLAlchemy 2.1 maps a plain ``postgresql://`` to psycopg 3, which dagster-postgres does not bring:
    the URL's scheme becomes ``postgresql+psycopg2``. A password left out of the URL is read by libpq
    from ``PGPASSWORD`` or ``~/.pgpass``."""
    if postgres_url is None:
        return INSTANCE_CONFIG
    import yaml

    scheme, sep, rest = postgres_url.partition("://")
    if not sep or scheme not in ("postgres", "postgresql", "postgresql+psycopg2") or not rest:
        raise UsageError(f"--postgres-url {postgres_url!r}: expected postgresql://[user[:password]@]host"
                         "[:port]/database")
    storage = {"storage": {"postgres": {"postgres_url": f"postgresql+psycopg2://{rest}"}}}
    return INSTANCE_CONFIG + "# The run, event log and schedule storage: PostgreSQL (dagster-postgres)\n" + \
        yaml.safe_dump(storage, default_flow_style=False)


def init_home(postgres_url: str | None = None) -> tuple[Path, bool]:
    """``$DAGSTER_HOME/dagster.yaml`` (unless one is there) and the instance's storage, created once under
    an exclusive lock on ``$DAGSTER_HOME/.sav-instance.lock``; returns the config path and whether it was
    written. With ``postgres_url`` an existing dagster.yaml must already say the same (never overwritten)."""
    import fcntl

    import dagster as dg

    from sav_assets.lib.util import atomic_write_bytes

    home = Path(_dagster_home())
    path = home / "dagster.yaml"
    text = instance_config(postgres_url)
    with open(home / INSTANCE_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)          # released when the file closes, or the process dies
        written = not path.exists()
        if written:
            atomic_write_bytes(path, text.encode())
        elif postgres_url is not None and path.read_text() != text:
            raise UsageError(f"{path} exists with another config: add the storage there yourself or remove "
                             "it (README: More than one process: PostgreSQL instance)")
        with dg.DagsterInstance.get():            # the first open creates (or migrates-checks) the storage
            pass
    return path, written


def cmd_init_home(args) -> int:
    path, written = init_home(getattr(args, "postgres_url", None))
    what = "PostgreSQL storage" if getattr(args, "postgres_url", None) else "pools: default_limit 1"
    print(f"{path} {f'written ({what})' if written else 'kept as it was'}; instance storage initialised")
    return 0


def _lake(root: str | None):
    from sav_assets.resources import LakeResource

    return LakeResource(root=root).lake()


class UsageError(Exception):
    """A bad command-line argument: :func:`main` prints it as one line and exits with code 2 (no traceback)."""


def _format(tbl, fmt: str) -> str:
    import io

    if fmt == "json":
        return json.dumps(tbl.to_pylist(), default=str, indent=1)
    if fmt == "csv":
        import pyarrow.csv as pacsv

        buf = io.BytesIO()
        pacsv.write_csv(_nested_as_json(tbl), buf)
        return buf.getvalue().decode()
    rows = tbl.to_pylist()
    cols = tbl.column_names
    cells = [[("" if r[c] is None else str(r[c])) for c in cols] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]
    line = "  ".join(c.ljust(w) for c, w in zip(cols, widths))
    sep = "  ".join("-" * w for w in widths)
    body = ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join([line, sep, *body, f"({len(rows)} row{'s' if len(rows) != 1 else ''})"])


def _nested_as_json(tbl):
    """List, struct and map columns as JSON text (CSV has no nested values); other columns as they are."""
    import pyarrow as pa

    cols = [pa.array([None if v is None else json.dumps(v, default=str) for v in col.to_pylist()], pa.string())
            if pa.types.is_nested(col.type) else col for col in tbl.columns]
    return pa.table(cols, names=tbl.column_names)

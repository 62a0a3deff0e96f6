"""What every `sav-assets` command shares: the Dagster home and its instance config, the lake from
the resources, usage errors (one line, exit code 2) and table printing."""

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


def init_home() -> Path:
    """``$DAGSTER_HOME/dagster.yaml`` with the pool limit, unless a dagster.yaml is there already."""
    path = Path(_dagster_home()) / "dagster.yaml"
    if not path.exists():
        path.write_text(INSTANCE_CONFIG)
    return path


def cmd_init_home(args) -> int:
    existed = (Path(_dagster_home()) / "dagster.yaml").exists()
    path = init_home()
    print(f"{path} {'kept as it was' if existed else 'written (pools: default_limit 1)'}")
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

"""`sav-assets sql`: read-only SQL over the lake's views, one query or an interactive shell."""

from __future__ import annotations

import sys

from sav_assets.cli.common import _format, _lake


def cmd_sql(args) -> int:
    """Read-only SQL over the lake's views: one query, or a shell reading statements from stdin."""
    from sav_assets.lib.store.catalog import connect, refresh_catalog

    lk = _lake(args.root)
    try:
        has_tables = bool(lk.list("tables"))
    except Exception as e:  # e.g. a bucket that does not exist: the user's input, said in one line
        print(f"error: cannot read the lake at {lk.root}: {e}", file=sys.stderr)
        return 2
    if not has_tables:
        print(f"error: no lake at {lk.root}: nothing under tables/ (write one with `sav-assets run --root ...`, "
              "or pass --root / set SAV_DATA_ROOT)", file=sys.stderr)
        return 2
    try:
        refresh_catalog(lk)          # keeps <root>/sav.duckdb current for plain `duckdb` sessions
    except OSError as e:             # a lake this user may read but not write: query it anyway
        print(f"note: {lk.root}/sav.duckdb not refreshed: {e}", file=sys.stderr)
    con = connect(lk, read_only=True)
    try:
        if args.query is None:
            return _sql_shell(con, lk.root, args.format)
        return _sql_run(con, args.query, args.format)
    finally:
        con.close()


def _sql_run(con, sql: str, fmt: str) -> int:
    """Run (read-only) and print; 2 when refused, 1 for an SQL error (DuckDB's message, no traceback)."""
    import duckdb
    import pyarrow as pa

    from sav_assets.lib.store.catalog import ReadOnlyViolation, run_read_only

    try:
        tbl = run_read_only(con, sql)
    except ReadOnlyViolation as e:
        print(f"refused: {e}", file=sys.stderr)
        return 2
    except (duckdb.Error, pa.ArrowException) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(_format(tbl, fmt))
    return 0


def _sql_shell(con, root: str, fmt: str) -> int:
    """An interactive read-only shell: statements end with ';' (or the end of input), ``.tables``, ``.quit``."""
    tty = sys.stdin.isatty()
    if tty:
        print(f"sav-assets sql: read-only SQL over {root} (SELECT / EXPLAIN; end a statement with ';'; "
              ".tables lists the views, .quit leaves)", file=sys.stderr)
    buf: list[str] = []
    while True:
        if tty:
            print("sav> " if not buf else " ..> ", end="", file=sys.stderr, flush=True)
        line = sys.stdin.readline()
        if not line or (not buf and line.strip() in (".quit", ".exit", "\\q")):
            break
        if not buf and line.strip() == ".tables":
            line = "select table_name from information_schema.tables where not starts_with(table_name, '__') order by 1;"
        buf.append(line)
        if line.rstrip().endswith(";"):
            _sql_shell_run(con, "".join(buf), fmt)
            buf = []
    if "".join(buf).strip():
        _sql_shell_run(con, "".join(buf), fmt)
    return 0


def _sql_shell_run(con, text: str, fmt: str) -> None:
    """Each statement of ``text`` on its own, so every result is printed."""
    import duckdb

    try:
        statements = [st.query for st in con.extract_statements(text)]
    except (duckdb.Error, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return
    for sql in statements:
        _sql_run(con, sql, fmt)

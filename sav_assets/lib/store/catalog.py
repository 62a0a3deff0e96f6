"""DuckDB over the lake: views named after the tables, SQL loaded from ``sql/``, read-only ad hoc SQL.

A lake in a local folder (its store has a ``local_root``) gets a persistent ``<root>/sav.duckdb``
whose views glob the Parquet parts, so ``duckdb data/sav.duckdb -c "select * from videos"`` sees every
batch written so far. A lake without a local folder (S3) is queried in-process: each table is a
pyarrow dataset over the store's pyarrow filesystem (``pyarrow.fs.S3FileSystem``, honouring
``AWS_ENDPOINT_URL``), registered under the table's name, so no DuckDB extension is downloaded.
"""

from __future__ import annotations

import contextlib
import fcntl
import re
from pathlib import Path

import duckdb
import pyarrow as pa

from sav_assets.lib.store.compaction import BATCH_COLUMN, COMPACTED, TableLayout, table_layout
from sav_assets.lib.store.lake import SCHEMA_BATCH, Lake
from sav_assets.lib.store.sqlfiles import SQL_DIR, literal, literal_list, render, sql_text  # noqa: F401 (sql_text: public here too)
from sav_assets.lib.store.tables import SCHEMAS

DB_NAME = "sav.duckdb"
_IDENT = re.compile(r"^[a-z_][a-z0-9_]*$")
READ_ONLY_TYPES = {"SELECT", "EXPLAIN"}


class ReadOnlyViolation(ValueError):
    """An ad hoc statement that would write, copy or otherwise leave the read-only path."""


def _in_list(items) -> str:
    return ", ".join(literal(i) for i in items) or "'/'"     # '/' is never a batch folder name


def _compacted_view_sql(name: str, layout: TableLayout, compacted: str, parts: str) -> str:
    stale = f" WHERE {BATCH_COLUMN} NOT IN ({_in_list(layout.stale_batches)})" if layout.stale_batches else ""
    return render("table_view_compacted.sql", name=name, compacted=compacted, stale_filter=stale, parts=parts)


def _local_compacted_view_sql(lake: Lake, name: str, layout: TableLayout) -> str:
    schema_part = f"{Lake.table_dir(name)}/{SCHEMA_BATCH}/empty.parquet"
    parts = [schema_part] + [r for r in layout.parts if r != schema_part]
    union = "false" if layout.parts_match_schema else "true"   # unify by name only when a part differs
    return _compacted_view_sql(
        name, layout, f"read_parquet({literal_list(lake.uri(r) for r in layout.compacted)})",
        f"read_parquet({literal_list(lake.uri(r) for r in parts)}, union_by_name = {union})")


def _db_path(lake: Lake) -> Path | None:
    """``<root>/sav.duckdb`` for a lake in a local folder; None for one without (S3)."""
    root = lake.store.local_root
    return root / DB_NAME if root is not None else None


def _create_file_views(con: duckdb.DuckDBPyConnection, lake: Lake) -> None:
    """Views over the Parquet files themselves (a local lake's ``sav.duckdb``)."""
    for name in SCHEMAS:
        assert _IDENT.match(name), name
        layout = table_layout(lake, name)
        if layout.is_compacted:
            con.execute(_local_compacted_view_sql(lake, name, layout))
        else:
            con.execute(render("table_view.sql", name=name, files=literal(lake.table_glob(name))))


def _register_arrow_tables(con: duckdb.DuckDBPyConnection, lake: Lake) -> None:
    """Each table as pyarrow datasets over the store's filesystem (a lake without a local folder)."""
    import pyarrow.dataset as ds

    fs, base = lake.arrow_filesystem()
    for name, schema in SCHEMAS.items():
        layout = table_layout(lake, name)
        if layout.is_compacted:
            # the compacted files for unchanged batches, the parts for the rest (as the local view does)
            con.register(f"__compacted_{name}", ds.dataset([f"{base}/{r}" for r in layout.compacted],
                                                           filesystem=fs, format="parquet"))
            con.register(f"__parts_{name}", ds.dataset([f"{base}/{r}" for r in layout.parts],
                                                       filesystem=fs, format="parquet", schema=schema))
            con.execute(_compacted_view_sql(name, layout, f"__compacted_{name}", f"__parts_{name}"))
            continue
        dataset = ds.dataset(f"{base}/tables/{name}", filesystem=fs, format="parquet",
                             schema=schema) if layout.parts else schema.empty_table()
        con.register(name, dataset)


def ensure_schemas(lake: Lake) -> None:
    for name, schema in SCHEMAS.items():
        lake.ensure_schema(name, schema)


@contextlib.contextmanager
def _lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(str(path) + ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def refresh_catalog(lake: Lake) -> str | None:
    """(Re)create the views in ``<root>/sav.duckdb`` (local lakes). Returns the file path.

    For an S3 lake nothing is written: ``connect`` builds the views in memory each time.
    """
    ensure_schemas(lake)
    db = _db_path(lake)
    if db is None:
        return None
    with _lock(db):
        con = duckdb.connect(str(db))
        try:
            _create_file_views(con, lake)
        finally:
            con.close()
    return str(db)


def connect(lake: Lake, read_only: bool = True) -> duckdb.DuckDBPyConnection:
    """A connection with every table view; read-only ones may only read the lake's own files."""
    db = _db_path(lake)
    if db is None:
        con = duckdb.connect(":memory:")
        _register_arrow_tables(con, lake)
    else:
        if not db.exists():
            refresh_catalog(lake)
        con = duckdb.connect(str(db), read_only=read_only)
    # Parquet footers are cached per connection (DuckDB re-reads a footer whose file changed).
    con.execute("SET parquet_metadata_cache = true")
    if read_only:
        if db is not None:
            con.execute(f"SET allowed_directories = [{literal(lake.uri('tables'))}, "
                        f"{literal(lake.uri(COMPACTED))}]")
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
    return con


def check_read_only(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as e:
        raise ReadOnlyViolation(f"could not parse SQL: {e}") from e
    if not statements:
        raise ReadOnlyViolation("no SQL statement given")
    for st in statements:
        kind = str(st.type).rsplit(".", 1)[-1]
        if kind not in READ_ONLY_TYPES:
            raise ReadOnlyViolation(
                f"{kind} statements are refused: ad hoc SQL is read-only (SELECT / EXPLAIN over the views)"
            )


def query(lake: Lake, sql: str, params: list | dict | None = None) -> pa.Table:
    """Run read-only SQL over the lake's views and return an Arrow table."""
    con = connect(lake, read_only=True)
    try:
        check_read_only(con, sql)
        statements = con.extract_statements(sql)
        result = None
        for st in statements:
            result = con.execute(st.query, params) if params else con.sql(st.query)
        return result.to_arrow_table() if result is not None else pa.table({})
    finally:
        con.close()


def run_sql_file(con: duckdb.DuckDBPyConnection, rel: str, params: list | dict | None = None) -> pa.Table:
    """Execute one SQL file from ``sql/`` with bound parameters and return Arrow."""
    text = sql_text(rel)
    return (con.execute(text, params) if params else con.sql(text)).to_arrow_table()

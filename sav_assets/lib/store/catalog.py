"""DuckDB over the lake: views named after the tables, SQL loaded from ``sql/``, read-only ad hoc SQL.

Three ways in, one set of view templates (``sql/table_view*.sql``):

* ``<root>/sav.duckdb`` (a lake in a local folder) is for people: ``duckdb sav.duckdb`` run from the
  lake root answers SQL at once. Its views name files *relative to the lake root* (a copied or moved
  lake still answers; DuckDB resolves them against its working directory or ``file_search_path``),
  and it is written in DuckDB's v1.0.0 storage format, which every DuckDB >= 1.0 opens (the
  ``duckdb-cli`` on PyPI is 1.x). :func:`refresh_catalog` builds a new file in a temporary folder and
  renames it over the old one, so a user's open session (even a read-write one, which holds DuckDB's
  lock on the file) never blocks the pipeline: it keeps the catalog it opened.
* ``connect(lake)`` / :func:`query` (ad hoc SQL, ``sav-assets sql``) is read-only by construction: an
  in-memory connection where each table is a pyarrow dataset over the store's filesystem, registered
  under the table's name, then ``enable_external_access = false`` with *no* allowed directory or path
  and the configuration locked. DuckDB itself opens no file by name: ``COPY ... TO``, ``EXPORT``,
  ``ATTACH``, ``INSTALL``, ``read_csv('/etc/passwd')`` fail inside DuckDB, and :func:`check_read_only`
  refuses every statement but a SELECT (an ``EXPLAIN [ANALYZE]`` is judged by what it explains) before
  anything runs. The same path serves S3 lakes (``pyarrow.fs.S3FileSystem``, no DuckDB extension).
* ``connect(lake, read_only=False)`` is for the pipeline's own SQL files (checks, statistics): views
  over the Parquet files through DuckDB's own reader (faster at scale), not sandboxed; S3 lakes use
  the pyarrow datasets there too. Both connections are built from the lake as it is when they open.

After the table views, each of the three gets the views of ``sql/views/*.sql`` (views over views,
such as the ``licence`` ledger).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

import duckdb
import pyarrow as pa

from sav_assets.lib.store.compaction import BATCH_COLUMN, TableLayout, table_layout
from sav_assets.lib.store.lake import SCHEMA_BATCH, Lake
from sav_assets.lib.store.sqlfiles import SQL_DIR, literal, literal_list, render, sql_text  # noqa: F401 (sql_text: public here too)
from sav_assets.lib.store.tables import SCHEMAS
from sav_assets.lib.util import atomic_copy

DB_NAME = "sav.duckdb"
# The storage format of sav.duckdb: the oldest DuckDB 2.x can write, readable by every DuckDB >= 1.0.
STORAGE_VERSION = "v1.0.0"
_IDENT = re.compile(r"^[a-z_][a-z0-9_]*$")
READ_ONLY_TYPES = {"SELECT"}
_EXPLAIN_WORDS = {"EXPLAIN", "ANALYZE", "ANALYSE", "VERBOSE"}


class ReadOnlyViolation(ValueError):
    """An ad hoc statement that would write, copy or otherwise leave the read-only path."""


# ---- view SQL ---------------------------------------------------------------------------------

def _in_list(items) -> str:
    return ", ".join(literal(i) for i in items) or "'/'"     # '/' is never a batch folder name


def _compacted_view_sql(name: str, layout: TableLayout, segments: list[str], parts: str) -> str:
    """``segments[i]`` reads segment ``i``'s files; each drops its batches that are dead or changed since."""
    selects = []
    for source, (_files, drop) in zip(segments, layout.segments, strict=True):
        where = f" WHERE {BATCH_COLUMN} NOT IN ({_in_list(drop)})" if drop else ""
        selects.append(f"SELECT * FROM {source}{where}")
    compacted = selects[0][len("SELECT * FROM "):] if len(selects) == 1 else f"({' UNION ALL BY NAME '.join(selects)})"
    return render("table_view_compacted.sql", name=name, compacted=compacted, stale_filter="", parts=parts)


def _file_compacted_view_sql(name: str, layout: TableLayout, path: Callable[[str], str]) -> str:
    schema_part = f"{Lake.table_dir(name)}/{SCHEMA_BATCH}/empty.parquet"
    parts = [schema_part] + [r for r in layout.parts if r != schema_part]
    union = "false" if layout.parts_match_schema else "true"   # unify by name only when a part differs
    return _compacted_view_sql(
        name, layout, [f"read_parquet({literal_list(path(r) for r in files)})" for files, _ in layout.segments],
        f"read_parquet({literal_list(path(r) for r in parts)}, union_by_name = {union})")


def _create_file_views(con: duckdb.DuckDBPyConnection, lake: Lake, path: Callable[[str], str]) -> None:
    """Views over the Parquet files themselves; ``path`` maps a lake-relative key to what the view names."""
    for name in SCHEMAS:
        assert _IDENT.match(name), name
        layout = table_layout(lake, name)
        if layout.is_compacted:
            con.execute(_file_compacted_view_sql(name, layout, path))
            continue
        union = "false" if layout.parts_match_schema else "true"
        if layout.consolidated:        # the live files by name: a merged part and its sources never both
            schema_part = f"{Lake.table_dir(name)}/{SCHEMA_BATCH}/empty.parquet"
            files = literal_list(path(r) for r in [schema_part] + [r for r in layout.parts if r != schema_part])
        else:
            files = literal(path(Lake.table_dir(name)) + "/*/*.parquet")
        con.execute(render("table_view.sql", name=name, files=files, union=union))


def _create_derived_views(con: duckdb.DuckDBPyConnection) -> None:
    """Views over the table views (``sql/views/*.sql``, e.g. the ``licence`` ledger), after the tables."""
    for path in sorted((SQL_DIR / "views").glob("*.sql")):
        con.execute(path.read_text())


def _register_arrow_tables(con: duckdb.DuckDBPyConnection, lake: Lake) -> None:
    """Each table as pyarrow datasets over the store's filesystem (DuckDB opens no file itself)."""
    import pyarrow.dataset as ds

    fs, base = lake.arrow_filesystem()
    for name, schema in SCHEMAS.items():
        layout = table_layout(lake, name, check_schema=False)   # the datasets carry the schema: nothing written
        if layout.is_compacted:
            # the compacted files for unchanged batches, the parts for the rest (as the file views do)
            for i, (files, _drop) in enumerate(layout.segments):
                con.register(f"__compacted_{name}_{i}", ds.dataset([f"{base}/{r}" for r in files],
                                                                   filesystem=fs, format="parquet"))
            con.register(f"__parts_{name}", ds.dataset([f"{base}/{r}" for r in layout.parts],
                                                       filesystem=fs, format="parquet", schema=schema))
            con.execute(_compacted_view_sql(name, layout, [f"__compacted_{name}_{i}" for i in range(len(layout.segments))],
                                            f"__parts_{name}"))
            continue
        src = [f"{base}/{r}" for r in layout.parts] if layout.consolidated else f"{base}/tables/{name}"
        dataset = ds.dataset(src, filesystem=fs, format="parquet", schema=schema) if layout.parts else schema.empty_table()
        con.register(name, dataset)


# ---- the catalog file -------------------------------------------------------------------------

def ensure_schemas(lake: Lake) -> None:
    for name, schema in SCHEMAS.items():
        lake.ensure_schema(name, schema)


def _db_path(lake: Lake) -> Path | None:
    """``<root>/sav.duckdb`` for a lake in a local folder; None for one without (S3)."""
    root = lake.store.local_root
    return root / DB_NAME if root is not None else None


@contextlib.contextmanager
def _lock(path: Path):
    """Serialises the pipeline's own refreshes (``sav.duckdb.lock``; users never open it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(str(path) + ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def refresh_catalog(lake: Lake) -> str | None:
    """Write ``<root>/sav.duckdb`` anew with the current views (local lakes). Returns the file path.

    Built in a temporary folder (views bound through a link to the root, so they name relative
    paths whatever the root's name) and copied over the old file atomically: no DuckDB lock on
    ``sav.duckdb`` is ever taken. For an S3 lake nothing is written: ``connect`` builds the views in
    memory each time.
    """
    ensure_schemas(lake)
    db = _db_path(lake)
    if db is None:
        return None
    with _lock(db), tempfile.TemporaryDirectory(prefix="sav-catalog-") as tmp:
        link = Path(tmp) / "lake"
        link.symlink_to(db.parent, target_is_directory=True)
        built = Path(tmp) / DB_NAME
        con = duckdb.connect(str(built), config={"storage_compatibility_version": STORAGE_VERSION})
        try:
            con.execute(f"SET file_search_path = {literal(link)}")
            _create_file_views(con, lake, path=lambda rel: rel)
            _create_derived_views(con)
        finally:
            con.close()
        atomic_copy(built, db)
    return str(db)


# ---- connections ------------------------------------------------------------------------------

def connect(lake: Lake, read_only: bool = True) -> duckdb.DuckDBPyConnection:
    """An in-memory connection with every table view, built from the lake as it is now.

    ``read_only=True`` (ad hoc SQL): the sandbox described in the module docstring.
    ``read_only=False`` (the pipeline's own SQL files): DuckDB's Parquet reader over the files.
    """
    con = duckdb.connect(":memory:")
    if read_only or lake.store.local_root is None:
        _register_arrow_tables(con, lake)
    else:
        ensure_schemas(lake)
        _create_file_views(con, lake, path=lake.uri)
        # Parquet footers are cached per connection (DuckDB re-reads a footer whose file changed).
        con.execute("SET parquet_metadata_cache = true")
    _create_derived_views(con)
    if read_only:
        # spills go to a private folder DuckDB creates only when needed (not ./.tmp), then lock down
        spill = os.path.join(tempfile.gettempdir(), f"sav-duckdb-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        con.execute(f"SET temp_directory = {literal(spill)}")
        con.execute("SET allow_persistent_secrets = false")
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
    return con


def _statement_kind(con: duckdb.DuckDBPyConnection, st) -> str:
    """The statement's type; an ``EXPLAIN [ANALYZE] [(options)]`` gets the type of what it explains."""
    try:
        kind = st.type.name
    except ValueError as e:                  # a statement type the Python enum does not know
        raise ReadOnlyViolation(f"unknown statement type ({e})") from e
    if kind != "EXPLAIN":
        return kind
    inner = _explained_text(st.query)
    try:
        statements = con.extract_statements(inner)
    except (duckdb.Error, ValueError) as e:
        raise ReadOnlyViolation(f"could not parse the explained statement: {e}") from e
    if len(statements) != 1:
        raise ReadOnlyViolation("EXPLAIN of anything but one statement is refused")
    return _statement_kind(con, statements[0])


def _explained_text(sql: str) -> str:
    """``sql`` without its leading ``EXPLAIN``, ``ANALYZE`` and ``(options)`` (comments skipped)."""
    tokens = duckdb.tokenize(sql)
    bounds = [t[0] for t in tokens] + [len(sql)]
    depth = 0
    for i, (start, kind) in enumerate(tokens):
        text = sql[start:bounds[i + 1]].strip()
        if kind == duckdb.token_type.comment:
            continue
        if kind == duckdb.token_type.operator and text in ("(", ")"):
            depth += 1 if text == "(" else -1
            continue
        if depth or text.upper() in _EXPLAIN_WORDS:
            continue
        return sql[start:]
    return ""


def check_read_only(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Refuse ``sql`` unless every statement in it is a SELECT (or an EXPLAIN of one)."""
    try:
        statements = con.extract_statements(sql)
    except (duckdb.Error, ValueError) as e:
        raise ReadOnlyViolation(f"could not parse SQL: {e}") from e
    if not statements:
        raise ReadOnlyViolation("no SQL statement given")
    for st in statements:
        kind = _statement_kind(con, st)
        if kind not in READ_ONLY_TYPES:
            raise ReadOnlyViolation(
                f"{kind} statements are refused: ad hoc SQL is read-only (SELECT / EXPLAIN over the views)"
            )


def run_read_only(con: duckdb.DuckDBPyConnection, sql: str, params: list | dict | None = None) -> pa.Table:
    """Check ``sql`` and run it on a read-only ``connect(lake)`` connection; the last result as Arrow."""
    check_read_only(con, sql)
    result = None
    for st in con.extract_statements(sql):
        result = con.sql(st.query, params=params or None)
    return result.to_arrow_table() if result is not None else pa.table({})


def query(lake: Lake, sql: str, params: list | dict | None = None) -> pa.Table:
    """Run read-only SQL over the lake's views and return an Arrow table."""
    con = connect(lake, read_only=True)
    try:
        return run_read_only(con, sql, params)
    finally:
        con.close()


def run_sql_file(con: duckdb.DuckDBPyConnection, rel: str, params: list | dict | None = None) -> pa.Table:
    """Execute one SQL file from ``sql/`` with bound parameters and return Arrow."""
    text = sql_text(rel)
    return (con.execute(text, params) if params else con.sql(text)).to_arrow_table()

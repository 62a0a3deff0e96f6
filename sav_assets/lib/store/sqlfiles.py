"""SQL kept in ``sql/``: reading a file, filling a template's ``{{placeholders}}``, quoting literals.

Placeholders are only ever filled with identifiers, paths and options chosen by sav-assets (quoted
with :func:`literal`); values from users are bound as parameters instead.
"""

from __future__ import annotations

from pathlib import Path

SQL_DIR = Path(__file__).resolve().parents[3] / "sql"


def sql_text(rel: str) -> str:
    path = (SQL_DIR / rel).resolve()
    if SQL_DIR.resolve() not in path.parents:
        raise ValueError(f"SQL file outside sql/: {rel}")
    return path.read_text()


def render(rel: str, **values: str) -> str:
    """``sql/<rel>`` with each ``{{key}}`` replaced by ``values[key]``."""
    text = sql_text(rel)
    for k, v in values.items():
        text = text.replace("{{" + k + "}}", v)
    return text


def literal(value) -> str:
    """A single-quoted SQL string literal."""
    return "'" + str(value).replace("'", "''") + "'"


def literal_list(values) -> str:
    """A DuckDB list literal of strings: ``['a', 'b']``."""
    return "[" + ", ".join(literal(v) for v in values) + "]"

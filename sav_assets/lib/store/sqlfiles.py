"""SQL kept in ``sql/``: reading a file, filling a template's ``{{placeholders}}``, quoting literals.

Placeholders are only ever filled with identifiers, paths and options chosen by sav-assets (quoted
with :func:`literal`); values from users are bound as parameters instead.

Where ``sql/`` (and ``expectations/``) are: :func:`shipped_dir` is the one lookup. The folders live at
the top of the repository, where users read and edit them; a wheel carries them inside the package
(``sav_assets/sql``, ``sav_assets/expectations``: setup.py maps them in). A source checkout and an
editable install read the repository's folders, a wheel install its packaged copy.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parents[2]        # .../sav_assets


def shipped_dir(name: str) -> Path:
    """The data folder ``name`` (``sql`` or ``expectations``): the packaged copy inside an installed
    wheel, else the repository's top-level folder (source checkout, editable install)."""
    packaged = _PACKAGE / name
    return packaged if packaged.is_dir() else _PACKAGE.parent / name


SQL_DIR = shipped_dir("sql")


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

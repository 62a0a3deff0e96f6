"""What an asset body reports after it wrote a table: Dagster's standard table metadata
(``dagster/row_count``, ``dagster/column_schema`` from the pyarrow schema in ``lib/store/tables.py``),
the table's location and a preview, counts as Markdown; and the DuckDB view refresh."""

import dagster as dg
import pyarrow as pa

from sav_assets.lib.store.catalog import refresh_catalog
from sav_assets.lib.store.lake import Lake
from sav_assets.lib.store.tables import SCHEMAS
from sav_assets.lib.util import counts_table, markdown_table


def table_schema(name: str) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(f.name, str(f.type)) for f in SCHEMAS[name]])


def table_metadata(name: str, tbl: pa.Table, uri: str | None = None, preview_cols: list[str] | None = None,
                   preview_rows: int = 10) -> dict:
    """Standard metadata of the table an asset owns (row count and column schema, as the UI shows them),
    plus ``<name>/path`` and ``<name>/preview`` (the first rows of ``preview_cols``)."""
    md = {
        "dagster/row_count": dg.MetadataValue.int(tbl.num_rows),
        "dagster/column_schema": dg.MetadataValue.table_schema(table_schema(name)),
    }
    if uri:
        md[f"{name}/path"] = dg.MetadataValue.path(uri)
    if preview_cols and tbl.num_rows:
        cols = [c for c in preview_cols if c in tbl.column_names]
        md[f"{name}/preview"] = dg.MetadataValue.md(markdown_table(tbl.select(cols), max_rows=preview_rows))
    return md


def counts_md(counts: dict, key: str, value: str) -> dg.MetadataValue:
    """Counts as a Markdown table, largest first; ``_none_`` when there are none."""
    return dg.MetadataValue.md(counts_table(counts, key, value) if counts else "_none_")


def refresh_views(context, lake: Lake) -> None:
    """Keep ``sav.duckdb`` views current; a lake folder this run cannot write to is a warning, not a failure."""
    try:
        refresh_catalog(lake)
    except Exception as e:  # e.g. a read-only or full lake folder: the tables are written, only the views lag
        context.log.warning(f"could not refresh DuckDB views in {lake.root}: {e}")

"""Shared glue: the batch partitions and metadata helpers for asset bodies."""


import dagster as dg
import pyarrow as pa

from sav_assets.lib.store.catalog import markdown_table, refresh_catalog
from sav_assets.lib.store.lake import Lake
from sav_assets.lib.store.tables import SCHEMAS

batches = dg.DynamicPartitionsDefinition(name="batches")


def table_schema(name: str) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(f.name, str(f.type)) for f in SCHEMAS[name]])


def table_metadata(name: str, tbl: pa.Table, uri: str | None = None, preview_cols: list[str] | None = None,
                   preview_rows: int = 10) -> dict:
    md = {
        f"{name}/rows": dg.MetadataValue.int(tbl.num_rows),
        f"{name}/schema": dg.MetadataValue.table_schema(table_schema(name)),
    }
    if uri:
        md[f"{name}/path"] = dg.MetadataValue.path(uri)
    if preview_cols and tbl.num_rows:
        cols = [c for c in preview_cols if c in tbl.column_names]
        md[f"{name}/preview"] = dg.MetadataValue.md(markdown_table(tbl.select(cols), preview_rows))
    return md


def counts_markdown(counts: dict, key: str = "what", value: str = "count") -> str:
    lines = [f"| {key} | {value} |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    return "\n".join(lines)


def refresh_views(context, lake: Lake) -> None:
    """Keep ``sav.duckdb`` views current; a lock held by a user's session is a warning, not a failure."""
    try:
        refresh_catalog(lake)
    except Exception as e:  # e.g. another process holds the DuckDB file open for writing
        context.log.warning(f"could not refresh DuckDB views in {lake.root}: {e}")


def other_batches(lake: Lake, table: str, batch_id: str) -> list[str]:
    return [b for b in lake.batches(table) if b != batch_id]

"""dataset_statistics: every sql/stats/*.sql query over all batches, as Markdown tables and a PNG."""

import base64

import dagster as dg

from sav_assets.defs.common import batches, refresh_views
from sav_assets.defs.dataset import eval_layout, training_shards
from sav_assets.defs.labeling import sav_export
from sav_assets.lib.store.compaction import DEFAULT_TABLES
from sav_assets.lib.store.tables import SCHEMAS
from sav_assets.resources import LakeResource


class CompactionConfig(dg.Config):
    tables: list[str] = list(DEFAULT_TABLES)
    min_new_parts: int = 8          # compact a table once this many parts were written since its last compaction
    memory_limit: str = "2GB"       # DuckDB memory for the sort; it spills to a temporary folder beyond


@dg.asset(
    partitions_def=batches,
    group_name="analytics",
    kinds={"duckdb", "parquet"},
    deps=[training_shards, eval_layout, sav_export],
    description="Keeps the big tables fast to query: once enough parts were written since the last "
                "compaction, rewrites each table into a few files sorted by video (compacted/<table>/) that "
                "the DuckDB views read instead of the batch parts. The batch parts stay the source of truth; "
                "`sav-assets compact` does the same by hand.",
)
def compacted_tables(context: dg.AssetExecutionContext, config: CompactionConfig,
                     lake: LakeResource) -> dg.MaterializeResult:
    from sav_assets.lib.store.compaction import CompactionError, compact_table

    unknown = sorted(set(config.tables) - set(SCHEMAS))
    if unknown:
        raise dg.Failure(f"compacted_tables: unknown table(s) {unknown}; tables: {', '.join(SCHEMAS)}")
    lk = lake.lake()
    lines = ["| table | result | rows | files | MB | seconds |", "| --- | --- | ---: | ---: | ---: | ---: |"]
    md: dict = {}
    failed = []
    for table in config.tables:
        try:
            res = compact_table(lk, table, min_new_parts=config.min_new_parts, memory_limit=config.memory_limit,
                                log=context.log.info)
        except CompactionError as e:
            # the views keep reading the previous generation and the parts: slower, never wrong
            context.log.warning(str(e))
            failed.append(table)
            lines.append(f"| {table} | FAILED: {str(e)[:200]} | | | | |")
            continue
        lines.append(f"| {table} | {res.reason} | {res.rows:,} | {res.files} | {res.bytes / 1e6:.1f} | "
                     f"{res.seconds:.1f} |")
        if res.compacted:
            md[f"{table}/rows"] = res.rows
            md[f"{table}/generation"] = res.generation
    refresh_views(context, lk)
    md["compaction"] = dg.MetadataValue.md("\n".join(lines))
    md["failed_tables"] = dg.MetadataValue.json(failed)
    md["compacted_root"] = dg.MetadataValue.path(lk.uri("compacted"))
    return dg.MaterializeResult(metadata=md)


@dg.asset(
    partitions_def=batches,
    group_name="analytics",
    kinds={"duckdb"},
    deps=[training_shards, eval_layout, sav_export, compacted_tables],
    description="DuckDB statistics over all batches (sql/stats/*.sql): videos by status and rejection reason, "
                "masklets per video, size-bucket mix, occlusion and reappearance rates, masklet types, QC pass "
                "rates, split sizes; with SA-V's published figures as a reference column.",
)
def dataset_statistics(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    from sav_assets.lib.store.catalog import connect, refresh_catalog
    from sav_assets.lib.dataset.statistics import run_stats, stats_markdown, stats_plots_png

    lk = lake.lake()
    refresh_catalog(lk)
    con = connect(lk)
    try:
        results = run_stats(con)
    finally:
        con.close()
    png = stats_plots_png(results)
    md_text = stats_markdown(results)
    lk.put_bytes("reports/statistics.md", md_text.encode(), "text/markdown")
    lk.put_bytes("reports/statistics.png", png, "image/png")
    md = {"statistics": dg.MetadataValue.md(md_text),
          "plots": dg.MetadataValue.md(f"![statistics](data:image/png;base64,{base64.b64encode(png).decode()})"),
          "report": dg.MetadataValue.path(lk.uri("reports/statistics.md"))}
    for name, tbl in results.items():
        md[f"{name}/rows"] = tbl.num_rows
    return dg.MaterializeResult(metadata=md)

"""compacted_tables and dataset_statistics: the two assets that describe the whole lake.

Both are partitioned by batch on purpose, although what they write covers every batch: they run at
the end of each batch's run of the (partitioned) pipeline job, after that batch's tables were
written, so the statistics and the compacted copies are current when a batch's run finishes, and a
batch's materialization history shows what the lake looked like after it. Materializing any batch
gives the same result for the lake as it is; nothing they write is keyed by the batch.
"""

import base64

import dagster as dg
from pydantic import Field

from sav_assets.defs.metadata import refresh_views
from sav_assets.defs.partitions import batches
from sav_assets.defs.tunables import lib_default, lib_field
from sav_assets.lib.store.compaction import DEFAULT_TABLES, compact_table
from sav_assets.lib.store.tables import SCHEMAS
from sav_assets.lib.util import markdown_table
from sav_assets.resources import LakeResource


class CompactionConfig(dg.Config):
    """Which tables to compact, and when. ``min_new_parts`` is the pipeline's own policy (8 parts, so that
    compaction runs every few batches, not after each); ``sav-assets compact`` uses the lib's (1)."""

    tables: list[str] = Field(default=list(DEFAULT_TABLES), description="tables to compact")
    min_new_parts: int = Field(default=8, description="compact a table once this many parts were written "
                               f"since its last compaction (the lib's default: "
                               f"{lib_default(compact_table, 'min_new_parts')})")
    memory_limit: str = lib_field(compact_table, "memory_limit", "DuckDB memory for the sort; it spills to a "
                                  "temporary folder beyond")


@dg.asset(
    partitions_def=batches,
    group_name="analytics",
    kinds={"duckdb", "parquet"},
    deps=["training_shards", "eval_layout", "sav_export"],
    description="Keeps the big tables fast to query: once enough parts were written since the last "
                "compaction, rewrites each table into a few files sorted by video (compacted/<table>/) that "
                "the DuckDB views read instead of the batch parts. The batch parts stay the source of truth; "
                "`sav-assets compact` does the same by hand. Whole lake, run at the end of each batch's run.",
)
def compacted_tables(context: dg.AssetExecutionContext, config: CompactionConfig,
                     lake: LakeResource) -> dg.MaterializeResult:
    from sav_assets.lib.store.compaction import CompactionError

    unknown = sorted(set(config.tables) - set(SCHEMAS))
    if unknown:
        raise dg.Failure(f"compacted_tables: unknown table(s) {unknown}; tables: {', '.join(SCHEMAS)}")
    lk = lake.lake()
    rows: list[dict] = []
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
            rows.append({"table": table, "result": f"FAILED: {str(e)[:200]}"})
            continue
        rows.append({"table": table, "result": res.reason, "rows": f"{res.rows:,}", "files": res.files,
                     "MB": f"{res.bytes / 1e6:.1f}", "seconds": f"{res.seconds:.1f}"})
        if res.compacted:
            md[f"{table}/rows"] = res.rows
            md[f"{table}/generation"] = res.generation
    refresh_views(context, lk)
    md["compaction"] = dg.MetadataValue.md(
        markdown_table(rows, ["table", "result", "rows", "files", "MB", "seconds"], max_rows=max(1, len(rows))))
    md["failed_tables"] = dg.MetadataValue.json(failed)
    md["compacted_root"] = dg.MetadataValue.path(lk.uri("compacted"))
    return dg.MaterializeResult(metadata=md)


@dg.asset(
    partitions_def=batches,
    group_name="analytics",
    kinds={"duckdb"},
    deps=["training_shards", "eval_layout", "sav_export", "compacted_tables"],
    description="DuckDB statistics over all batches (sql/stats/*.sql): videos by status and rejection reason, "
                "masklets per video, size-bucket mix, occlusion and reappearance rates, masklet types, QC pass "
                "rates, split sizes; with SA-V's published figures as a reference column. Whole lake, "
                "rewritten at the end of each batch's run (reports/statistics.md).",
)
def dataset_statistics(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    from sav_assets.lib.dataset.statistics import run_stats, stats_markdown, stats_plots_png
    from sav_assets.lib.store.catalog import connect, refresh_catalog

    lk = lake.lake()
    refresh_catalog(lk)
    con = connect(lk, read_only=False)          # our own SQL files: DuckDB reads the Parquet files itself
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

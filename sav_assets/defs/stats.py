"""dataset_statistics: every sql/stats/*.sql query over all batches, as Markdown tables and a PNG."""

import base64

import dagster as dg

from sav_assets.defs.common import batches
from sav_assets.defs.dataset import eval_layout, training_shards
from sav_assets.defs.labeling import sav_export
from sav_assets.resources import LakeResource


@dg.asset(
    partitions_def=batches,
    group_name="analytics",
    kinds={"duckdb"},
    deps=[training_shards, eval_layout, sav_export],
    description="DuckDB statistics over all batches (sql/stats/*.sql): videos by status and rejection reason, "
                "masklets per video, size-bucket mix, occlusion and reappearance rates, masklet types, QC pass "
                "rates, split sizes; with SA-V's published figures as a reference column.",
)
def dataset_statistics(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    from sav_assets.lib.catalog import connect, refresh_catalog
    from sav_assets.lib.stats import run_stats, stats_markdown, stats_plots_png

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

"""Table contracts as asset checks: each GX suite in expectations/ validates the batch's rows.

Blocking checks stop downstream assets in the same run, and downstream automation only proceeds
when upstream blocking checks passed (AutomationCondition.all_deps_blocking_checks_passed).
"""


import dagster as dg

from sav_assets.resources import LakeResource

# table -> (asset it belongs to, blocking)
GX_TABLES: dict[str, tuple[str, bool]] = {
    "videos": ("raw_videos", True),
    "video_quality": ("video_quality", True),
    "masklets": ("masklets", True),
    "masklet_frames": ("masklets", True),
    "masklet_qc": ("masklet_qc", True),
    "splits": ("splits", True),
    "shards": ("training_shards", False),
}


def gx_table_check(table: str, asset: str, blocking: bool) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=asset,
        name=f"gx_{table}",
        blocking=blocking,
        description=f"Great Expectations suite expectations/{table}.json over the batch's `{table}` rows.",
    )
    def _check(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> dg.AssetCheckResult:
        from sav_assets.lib.qc.gx import validate_table
        from sav_assets.lib.store.tables import SCHEMAS

        lk = lake.lake()
        batches = [context.partition_key] if context.has_partition_key else None
        tbl = lk.read_table(table, batches=batches, schema=SCHEMAS[table])
        res = validate_table(table, tbl)
        return dg.AssetCheckResult(
            passed=res.success,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "rows": res.rows,
                "expectations": len(res.outcomes),
                "failed_expectations": len(res.failed),
                "results": dg.MetadataValue.md(res.markdown()),
            },
        )

    return _check


gx_checks = [gx_table_check(t, a, b) for t, (a, b) in GX_TABLES.items()]


@dg.asset_check(asset="raw_videos", name="video_ids_unique_across_batches", blocking=True,
                description="No video_id or content hash appears in two batches (exactly-once ingestion).")
def video_ids_unique_across_batches(lake: LakeResource) -> dg.AssetCheckResult:
    from sav_assets.lib.store.catalog import connect, refresh_catalog, run_sql_file

    lk = lake.lake()
    refresh_catalog(lk)
    con = connect(lk, read_only=False)          # our own SQL files: DuckDB reads the Parquet files itself
    try:
        dups = run_sql_file(con, "checks/duplicate_videos.sql").to_pylist()
    finally:
        con.close()
    return dg.AssetCheckResult(passed=not dups, metadata={"duplicates": len(dups),
                                                          "sample": dg.MetadataValue.json(dups[:10])})


@dg.asset_check(asset="splits", name="no_group_straddles_splits", blocking=True,
                description="No near-duplicate cluster or source group has videos in two splits (leak check).")
def no_group_straddles_splits(lake: LakeResource) -> dg.AssetCheckResult:
    from sav_assets.lib.dataset.splits import group_keys, straddling_groups
    from sav_assets.lib.store.tables import SPLITS, VIDEO_QUALITY

    lk = lake.lake()
    quality = lk.read_table("video_quality", schema=VIDEO_QUALITY).to_pylist()
    groups = group_keys([r["video_id"] for r in quality], {r["video_id"]: r["duplicate_of"] for r in quality},
                        {r["video_id"]: r["source_group"] for r in quality})
    bad = straddling_groups(lk.read_table("splits", schema=SPLITS).to_pylist(), groups)
    return dg.AssetCheckResult(passed=not bad, metadata={"straddling_groups": len(bad),
                                                         "sample": dg.MetadataValue.json(bad[:10])})


@dg.asset_check(asset="training_shards", name="manifest_matches_shards",
                description="Every shard in the batch's manifest exists with the recorded size and SHA-256.")
def manifest_matches_shards(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> dg.AssetCheckResult:
    from sav_assets.lib.dataset.shards import read_manifest, verify_manifest

    lk = lake.lake()
    prefix = f"shards/{context.partition_key}"
    manifest = read_manifest(lk, prefix)
    if manifest is None:
        return dg.AssetCheckResult(passed=True, metadata={"note": "no shards for this batch (no train videos)"})
    problems = verify_manifest(lk, prefix)
    return dg.AssetCheckResult(passed=not problems, metadata={"shards": len(manifest.get("shards", [])),
                                                              "problems": dg.MetadataValue.json(problems[:20])})

"""Table contracts as asset checks: each GX suite in expectations/ validates the batch's rows.

Blocking checks stop downstream assets in the same run, and downstream automation only proceeds
when upstream blocking checks passed (AutomationCondition.all_deps_blocking_checks_passed).

An empty result is not green: ``passed_videos_have_masklets`` fails a batch whose videos passed
quality but gave no masklet (ERROR and blocking; WARN when SAM 2 ran with random weights, with the
reason in the result's description), and ``masklet_qc_has_masklets`` warns when QC judged nothing.
"""

from collections import Counter

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


# An empty result is not green: "tried on three real 720p videos with no checkpoint, the run labeled for
# 88 minutes, produced 0 masklets and ended with every check passed and QC pass_rate 1.0".


def _batch_rows(lk, table: str, batch: str | None) -> list[dict]:
    from sav_assets.lib.store.tables import SCHEMAS

    return lk.read_table(table, batches=[batch] if batch else None, schema=SCHEMAS[table]).to_pylist()


def _videos_passed(lk, batch: str | None) -> int:
    ok = {r["video_id"] for r in _batch_rows(lk, "videos", batch) if r["status"] == "ok"}
    return len({r["video_id"] for r in _batch_rows(lk, "video_quality", batch) if r["passed"]} & ok)


def masklet_yield_verdict(passed: int, masklets: int, runs: list[dict]) -> tuple[bool, str, str]:
    """``(passed, severity, description)`` for a batch with ``passed`` videos that passed quality,
    ``masklets`` masklets of any type and its ``label_runs`` rows: nothing labeled at all is an error;
    labeled videos without a single masklet are an error too, only a warning with random weights."""
    if not passed or masklets:
        return True, "ERROR", f"{masklets} masklets from {passed} videos that passed quality"
    labeled = [r for r in runs if r["status"] == "labeled"]
    if not labeled:
        failed = Counter(r["error_class"] for r in runs if r["status"] == "failed")
        why = (f"{sum(failed.values())} failed ({', '.join(f'{k}: {n}' for k, n in sorted(failed.items()))})"
               if failed else "SAM 2 did not run (run_sam2=false) and no SA-V annotations were found")
        return False, "ERROR", f"{passed} videos passed quality but no video was labeled: {why}; 0 masklets"
    msg = f"{len(labeled)} of {passed} videos that passed quality were labeled and gave 0 masklets"
    if all(r["random_weights"] for r in labeled):
        return False, "WARN", (msg + ": SAM 2 ran with random weights (no SAV_SAM2_CHECKPOINT), which find "
                               "nothing on real videos; set a checkpoint to get masks")
    return False, "ERROR", msg + " (model " + ", ".join(sorted({str(r['model_name']) for r in labeled})) + ")"


@dg.asset_check(asset="masklets", name="passed_videos_have_masklets", blocking=True,
                description="The videos of the batch that passed quality gave at least one masklet. A batch "
                            "with none fails: ERROR (blocking) when no video was labeled or a real checkpoint "
                            "found nothing; WARN when SAM 2 ran with random weights (the reason is in the "
                            "result's description).")
def passed_videos_have_masklets(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> dg.AssetCheckResult:
    lk = lake.lake()
    batch = context.partition_key if context.has_partition_key else None
    passed = _videos_passed(lk, batch)
    runs = _batch_rows(lk, "label_runs", batch)
    n = len(_batch_rows(lk, "masklets", batch))
    ok, severity, why = masklet_yield_verdict(passed, n, runs)
    labeled = [r for r in runs if r["status"] == "labeled"]
    return dg.AssetCheckResult(passed=ok, severity=dg.AssetCheckSeverity[severity], description=why, metadata={
        "videos_passed_quality": passed, "videos_labeled": len(labeled), "masklets": n,
        "videos_failed": sum(r["status"] == "failed" for r in runs),
        "random_weights": bool(labeled) and all(r["random_weights"] for r in labeled)})


@dg.asset_check(asset="masklet_qc", name="masklet_qc_has_masklets",
                description="QC judged at least one masklet when videos passed quality: a pass rate over zero "
                            "masklets is not a pass (WARN).")
def masklet_qc_has_masklets(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> dg.AssetCheckResult:
    lk = lake.lake()
    batch = context.partition_key if context.has_partition_key else None
    passed = _videos_passed(lk, batch)
    checked = len(_batch_rows(lk, "masklet_qc", batch))
    n = len(_batch_rows(lk, "masklets", batch))
    ok = checked > 0 or passed == 0
    why = (f"{checked} masklets judged" if checked else
           f"no masklets: QC judged nothing for {passed} videos that passed quality; its pass rate means nothing")
    return dg.AssetCheckResult(passed=ok, severity=dg.AssetCheckSeverity.WARN, description=why,
                               metadata={"masklets_checked": checked, "masklets": n, "videos_passed_quality": passed})

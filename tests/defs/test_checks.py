"""The asset checks, called directly on the tiny lake: the GX contracts and the leak/uniqueness checks
pass on good rows and report what they looked at."""

import dagster as dg

from sav_assets.defs.checks import (
    GX_TABLES,
    gx_checks,
    manifest_matches_shards,
    no_group_straddles_splits,
    video_ids_unique_across_batches,
)


def _ctx(tiny_lake):
    return dg.build_op_context(partition_key=tiny_lake.batch_id, instance=tiny_lake.instance,
                               resources={"lake": tiny_lake.lake_res})


def test_gx_contracts_pass_on_the_tiny_lake(tiny_lake):
    assert len(gx_checks) == len(GX_TABLES)
    for check in gx_checks:
        res = check(_ctx(tiny_lake))
        assert res.passed, (check.check_key.name, res.metadata["results"].value)
        assert res.metadata["expectations"].value > 0 and res.metadata["failed_expectations"].value == 0


def test_leak_uniqueness_and_manifest_checks(tiny_lake):
    res = video_ids_unique_across_batches(lake=tiny_lake.lake_res)
    assert res.passed and res.metadata["duplicates"].value == 0
    res = no_group_straddles_splits(lake=tiny_lake.lake_res)
    assert res.passed and res.metadata["straddling_groups"].value == 0
    res = manifest_matches_shards(_ctx(tiny_lake))
    assert res.passed and res.metadata["shards"].value >= 1

"""takedowns: the UI's and the lake's way to take a video down (``sav-assets takedown`` is the CLI's).

Runs at the end of each batch's pipeline run (after ``dataset_statistics``), so a request file
dropped in ``<lake>/takedowns/requests/*.json`` (``{"target": ..., "reason": ..., "requested_by": ...}``)
is honoured by the next run; in the Launchpad, ``targets`` + ``reason`` take videos down at once.
The work is :func:`sav_assets.lib.dataset.takedown.takedown`; a request file naming no video is moved
to ``takedowns/rejected/`` with the error (a warning here), a Launchpad target naming none fails the run.
"""

import dagster as dg
from pydantic import Field

from sav_assets.defs.partitions import batches
from sav_assets.lib.util import markdown_table
from sav_assets.resources import LakeResource


class TakedownConfig(dg.Config):
    """Videos to take down now, besides the request files in the lake."""

    targets: list[str] = Field(default=[], description="video_id, source URI or key, or content SHA-256 of each "
                                                        "video to take down")
    reason: str = Field(default="", description="why (kept in the takedowns table); required with targets")
    requested_by: str = Field(default="dagster UI", description="who asks (kept in the takedowns table)")


@dg.asset(
    partitions_def=batches,
    group_name="governance",
    kinds={"parquet"},
    deps=["dataset_statistics"],
    description="Takedowns: each requested video (takedowns/requests/*.json in the lake, or the run config) is "
                "removed from every table, shard, export and statistic; its content SHA-256 is tombstoned in the "
                "takedowns table, so ingestion refuses the same bytes under any name.",
)
def takedowns(context: dg.AssetExecutionContext, config: TakedownConfig, lake: LakeResource) -> dg.MaterializeResult:
    from sav_assets.lib.dataset.takedown import TakedownError, apply_requests, takedown

    lk = lake.lake()
    if config.targets and not config.reason.strip():
        raise dg.Failure("takedowns: a reason is required with targets")
    rows = []
    for target in config.targets:
        try:
            rep = takedown(lk, target, config.reason, config.requested_by, log=context.log.info)
        except TakedownError as e:
            raise dg.Failure(f"takedowns: {e}") from e
        rows.append({"file": "(run config)", "target": target, "status": "done",
                     "detail": f"videos {', '.join(rep.video_ids)}"})
    rows += apply_requests(lk, log=context.log.info)
    for r in rows:
        if r["status"] != "done":
            context.log.warning(f"takedown request {r['file']}: {r['detail']}")
    return dg.MaterializeResult(metadata={
        "requests": dg.MetadataValue.md(markdown_table(rows, ["file", "target", "status", "detail"])
                                        if rows else "_none_"),
        "taken_down": sum(1 for r in rows if r["status"] == "done"),
        "rejected": sum(1 for r in rows if r["status"] != "done"),
        "tombstones": lk.read_table("takedowns", columns=["content_sha256"]).num_rows,
    })

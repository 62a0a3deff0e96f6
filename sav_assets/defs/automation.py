"""The pipeline job, the nightly ingestion schedule and the new-object sensor.

Both the schedule and the sensor plan a batch of object versions no earlier batch claimed, write
its manifest to the lake, register the batch as a dynamic partition and request one run whose run
key is the batch id: a second tick that sees the same objects plans nothing (they are claimed) and
a duplicate request would be dropped by its run key.

The schedule's cron is part of its definition, so it cannot be read at run time: ``build_definitions``
(sav_assets/definitions.py) reads it (``resources.ingest_cron``: ``SAV_INGEST_CRON``) when the code
location loads and builds the schedule with ``nightly_ingestion_schedule(cron)``. Nothing here reads
the environment at import.
"""

import dagster as dg

from sav_assets.defs.partitions import batches
from sav_assets.resources import LakeResource, SourceResource

PIPELINE_JOB = "sav_pipeline"

sav_pipeline = dg.define_asset_job(
    PIPELINE_JOB,
    selection=dg.AssetSelection.all(),
    description="Every stage for one ingestion batch: probe, quality, labels, QC, splits, shards, statistics.",
    tags={"sav/kind": "pipeline"},
)


def plan_request(lake: LakeResource, source: SourceResource, log) -> tuple[str | None, str]:
    """Plan and record the next batch; returns (batch_id or None, a human message)."""
    from sav_assets.lib.ingest.batches import plan_batch, write_manifest

    lk = lake.lake()
    src = source.source()
    try:
        plan = plan_batch(src, lk, settle_seconds=source.settle_seconds)
    except FileNotFoundError as e:
        return None, str(e)
    if plan is None:
        return None, f"no new objects under {src.uri}"
    write_manifest(lk, plan)
    msg = f"batch {plan.batch_id}: {len(plan.objects)} new object(s)"
    if plan.pending:
        msg += f"; {len(plan.pending)} still being written, left for a later tick"
    log.info(msg)
    return plan.batch_id, msg


def _run_request(batch_id: str) -> dg.RunRequest:
    return dg.RunRequest(run_key=batch_id, partition_key=batch_id, tags={"sav/batch": batch_id})


def nightly_ingestion_schedule(cron: str) -> dg.ScheduleDefinition:
    """The nightly schedule on ``cron`` (UTC); built when the definitions are built."""

    @dg.schedule(
        name="nightly_ingestion",
        cron_schedule=cron,
        execution_timezone="UTC",
        job=sav_pipeline,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Every night ({cron} UTC; SAV_INGEST_CRON to change, read when the code location loads) "
                    "ingest what landed at SAV_SOURCE_URI as one new batch and run the whole graph for it.",
    )
    def nightly_ingestion(context: dg.ScheduleEvaluationContext, lake: LakeResource, source: SourceResource):
        batch_id, msg = plan_request(lake, source, context.log)
        if batch_id is None:
            return dg.SkipReason(msg)
        if not context.instance.has_dynamic_partition(batches.name, batch_id):
            context.instance.add_dynamic_partitions(batches.name, [batch_id])
        return _run_request(batch_id)

    return nightly_ingestion


@dg.sensor(
    name="new_videos_sensor",
    job=sav_pipeline,
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Between nightly runs, pick up settled new objects at SAV_SOURCE_URI every 5 minutes "
                "(off by default; turn it on in the UI).",
)
def new_videos_sensor(context: dg.SensorEvaluationContext, lake: LakeResource, source: SourceResource):
    batch_id, msg = plan_request(lake, source, context.log)
    if batch_id is None:
        return dg.SkipReason(msg)
    return dg.SensorResult(
        run_requests=[_run_request(batch_id)],
        dynamic_partitions_requests=[batches.build_add_request([batch_id])],
    )

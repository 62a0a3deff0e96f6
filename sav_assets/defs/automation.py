"""The pipeline job, the nightly ingestion schedule and the new-object sensor.

Evaluating the schedule or the sensor has no side effect (the UI's "Preview tick result" included): a
tick plans (``lib/ingest/batches.plan_batch`` only reads) and returns run requests. Each request
carries its plan in the run config of ``raw_videos`` (``batch_plan``), has the batch id as run key
and partition key (tag ``dagster/partition`` set here, so that the request needs no partition that
does not exist yet), and the run's first step claims the batch (:func:`claim_run_batch`: manifest,
conditional claim per object version, then the dynamic partition). The sensor also asks the daemon to
add the partition, which it does only for a tick that really requests runs.

A tick first re-requests every claimed batch whose ingestion never finished (its manifest is in the
lake, its ``videos``/``source_objects``/``video_quality`` parts are not) and that no live run is
working on: a crashed tick, a run killed with kill -9 or an S3 outage never strands a batch. The
first request of a batch has the batch id as run key; a re-request after finished runs of that batch
has ``<batch id>:retry-<n>`` (n = how many runs of it ended), because Dagster never launches a run key
it launched before; repeated ticks while nothing changed ask for the same key and are deduped.

A run launched by ``sav-assets run`` records its process (tags ``sav/host``, ``sav/pid``,
``sav/pid_started``); killed with kill -9 it stays ``STARTED`` in the instance. Such a run counts as
gone (:func:`is_orphaned`), and the next CLI run of its batch marks it failed (:func:`fail_orphaned_runs`).

The schedule's cron is part of its definition, so it cannot be read at run time: ``build_definitions``
(sav_assets/definitions.py) reads it (``resources.ingest_cron``: ``SAV_INGEST_CRON``) when the code
location loads and builds the schedule with ``nightly_ingestion_schedule(cron)``. Nothing here reads
the environment at import.
"""

import json
import os
import socket

import dagster as dg

from sav_assets.defs.partitions import batches
from sav_assets.resources import LakeResource, SourceResource

PIPELINE_JOB = "sav_pipeline"
PARTITION_TAG = "dagster/partition"     # Dagster's partition tag: a request that carries it is already resolved
BATCH_TAG = "sav/batch"
ACTIVE_STATUSES = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
                   dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]
ENDED_STATUSES = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]

sav_pipeline = dg.define_asset_job(
    PIPELINE_JOB,
    selection=dg.AssetSelection.all() - dg.AssetSelection.groups("training"),   # training: make demo-loop
    description="Every stage for one ingestion batch: probe, quality, labels, QC, splits, shards, statistics.",
    tags={"sav/kind": "pipeline"},
)


# ---- runs and their processes ------------------------------------------------------------------

def cli_run_tags() -> dict[str, str]:
    """Tags naming this process, for runs executed in it (``sav-assets run``)."""
    import psutil

    return {"sav/launched_by": "cli", "sav/host": socket.gethostname(), "sav/pid": str(os.getpid()),
            "sav/pid_started": repr(psutil.Process().create_time())}


def is_orphaned(run: dg.DagsterRun) -> bool:
    """A run executed by a ``sav-assets run`` process on this host that no longer exists."""
    import psutil

    tags = run.tags
    if tags.get("sav/launched_by") != "cli" or tags.get("sav/host") != socket.gethostname() or "sav/pid" not in tags:
        return False
    try:
        return repr(psutil.Process(int(tags["sav/pid"])).create_time()) != tags.get("sav/pid_started")
    except psutil.NoSuchProcess:
        return True


def active_batches(instance: dg.DagsterInstance) -> set[str]:
    """Batches some live run is working on (queued or running; orphaned CLI runs excluded)."""
    runs = instance.get_runs(filters=dg.RunsFilter(statuses=ACTIVE_STATUSES))
    return {r.tags[BATCH_TAG] for r in runs if BATCH_TAG in r.tags and not is_orphaned(r)}


def fail_orphaned_runs(instance: dg.DagsterInstance, batch_id: str) -> list[str]:
    """Mark the batch's runs whose ``sav-assets run`` process is gone (kill -9) as failed; their ids."""
    runs = instance.get_runs(filters=dg.RunsFilter(tags={BATCH_TAG: batch_id}, statuses=ACTIVE_STATUSES))
    gone = [r for r in runs if is_orphaned(r)]
    for r in gone:
        instance.report_run_failed(r, message=f"the process of this run (pid {r.tags['sav/pid']} on "
                                              f"{r.tags['sav/host']}) is gone; marked failed by a later sav-assets run")
    return [r.run_id for r in gone]


# ---- planning (pure) and claiming (the run's first step) ----------------------------------------

def run_request(batch_id: str, plan_json: str | None = None, attempt: int = 0) -> dg.RunRequest:
    """One run of the pipeline for a batch; ``plan_json`` is the plan the run claims (a new batch)."""
    config = {"ops": {"raw_videos": {"config": {"batch_plan": plan_json}}}} if plan_json else None
    return dg.RunRequest(run_key=batch_id if attempt == 0 else f"{batch_id}:retry-{attempt}",
                         partition_key=batch_id, run_config=config,
                         tags={BATCH_TAG: batch_id, PARTITION_TAG: batch_id})


def plan_requests(instance: dg.DagsterInstance, lake: LakeResource, source: SourceResource,
                  log) -> tuple[list[dg.RunRequest], str]:
    """Run requests for the unfinished batches no live run works on, then for the next new batch, and a
    human message. Reads only: nothing is written and no partition is registered."""
    from sav_assets.lib.ingest.batches import plan_batch, unfinished_batches

    lk, src = lake.lake(), source.source()
    busy = active_batches(instance)
    requests, notes = [], []
    for st in unfinished_batches(lk):
        if st.batch_id in busy:
            continue
        attempt = instance.get_runs_count(dg.RunsFilter(tags={BATCH_TAG: st.batch_id}, statuses=ENDED_STATUSES))
        requests.append(run_request(st.batch_id, attempt=attempt))
        notes.append(f"resuming batch {st.batch_id} (claimed at {st.claimed_at}, never finished)")
    try:
        plan = plan_batch(src, lk, settle_seconds=source.settle_seconds)
    except FileNotFoundError as e:
        plan, notes = None, [*notes, str(e)]
    if plan is not None:
        requests.append(run_request(plan.batch_id, plan_json=json.dumps(plan.manifest(), sort_keys=True)))
        notes.append(f"batch {plan.batch_id}: {len(plan.objects)} new object(s)"
                     + (f"; {len(plan.pending)} still being written, left for a later tick" if plan.pending else ""))
    elif not notes:
        notes.append(f"no new objects under {src.uri}")
    msg = "; ".join(notes)
    if requests:
        log.info(msg)
    return requests, msg


def claim_run_batch(context: dg.AssetExecutionContext, lk, batch_plan: str) -> dict:
    """The run's first step: claim the batch (from the plan its request carried, or the manifest already
    in the lake), register its partition, and return its manifest with only the objects it owns."""
    from sav_assets.lib.ingest.batches import claim_batch, read_manifest

    batch_id = context.partition_key
    manifest = json.loads(batch_plan) if batch_plan else read_manifest(lk, batch_id)
    if manifest.get("batch_id") != batch_id:
        raise ValueError(f"batch_plan is for batch {manifest.get('batch_id')!r}, not this run's partition {batch_id!r}")
    claim = claim_batch(lk, manifest)
    if not context.instance.has_dynamic_partition(batches.name, batch_id):
        context.instance.add_dynamic_partitions(batches.name, [batch_id])
    if claim.lost:
        context.log.warning(f"{len(claim.lost)} object(s) of batch {batch_id} were claimed by other batches "
                            f"first and are theirs: {dict(list(claim.lost.items())[:10])}")
    return claim.owned_manifest()


# ---- the schedule and the sensor ----------------------------------------------------------------

def nightly_ingestion_schedule(cron: str) -> dg.ScheduleDefinition:
    """The nightly schedule on ``cron`` (UTC); built when the definitions are built."""

    @dg.schedule(
        name="nightly_ingestion",
        cron_schedule=cron,
        execution_timezone="UTC",
        job=sav_pipeline,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Every night ({cron} UTC; SAV_INGEST_CRON to change, read when the code location loads) "
                    "ingest what landed at SAV_SOURCE_URI as one new batch and run the whole graph for it; "
                    "batches claimed earlier but never ingested are requested again.",
    )
    def nightly_ingestion(context: dg.ScheduleEvaluationContext, lake: LakeResource, source: SourceResource):
        requests, msg = plan_requests(context.instance, lake, source, context.log)
        return requests or dg.SkipReason(msg)

    return nightly_ingestion


@dg.sensor(
    name="new_videos_sensor",
    job=sav_pipeline,
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Between nightly runs, pick up settled new objects at SAV_SOURCE_URI every 5 minutes "
                "(off by default; turn it on in the UI); batches claimed but never ingested are requested again.",
)
def new_videos_sensor(context: dg.SensorEvaluationContext, lake: LakeResource, source: SourceResource):
    requests, msg = plan_requests(context.instance, lake, source, context.log)
    if not requests:
        return dg.SkipReason(msg)
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[batches.build_add_request([r.partition_key for r in requests])],
    )

"""`sav-assets run` and `sav-assets batches`: argument checks (before anything is claimed), resuming
unfinished batches, claiming the new one, and executing the pipeline job in process."""

from __future__ import annotations

import os
import re
import sys

from sav_assets.cli.common import UsageError, _format, _lake, init_home

# a batch id is one safe path segment (the planner's are ``<yyyymmdd>-<hash>``): never ``..``, ``/`` or hidden
_BATCH_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def _check_run_args(args, source, lake) -> None:
    """Refuse bad ``run`` arguments before anything is claimed, registered or run (:class:`UsageError`)."""
    _check_source(args.source or source.uri, source, planning=not args.batch)
    if args.batch is not None:
        _check_batch(args.batch, lake)
    if args.select or args.config:
        from sav_assets.definitions import build_definitions

        defs = build_definitions()
        if args.select:
            _check_selection(args.select, defs.resolve_asset_graph())
        if args.config:
            _run_config(args, defs, announce=True)


def _check_source(uri: str, source, planning: bool) -> None:
    root = source.store.local_root      # a capability: None for an object store, which has no files/folders
    if root is None:
        return
    if root.exists() and not root.is_dir():
        raise UsageError(f"--source {uri}: is a file, not a folder (give the folder the videos land in)")
    if planning and not root.exists():
        raise UsageError(f"--source {uri}: does not exist")


def _check_batch(batch_id: str, lake) -> None:
    from sav_assets.lib.ingest.batches import read_manifest

    if not _BATCH_ID.fullmatch(batch_id) or ".." in batch_id:
        raise UsageError(f"--batch {batch_id!r}: not a batch id (letters, digits, '.', '_' and '-', "
                         "at most 100, no path)")
    try:
        read_manifest(lake, batch_id)
    except FileNotFoundError:
        raise UsageError(f"--batch {batch_id!r}: no manifest for it in {lake.root} (never planned there; "
                         "`sav-assets batches` lists the batches)") from None


def _check_selection(text: str, graph) -> None:
    """Every name of a ``--select`` is an asset key or a ``group:NAME`` of the definitions."""
    keys = sorted(k.to_user_string() for k in graph.get_all_asset_keys())
    groups = sorted({n.group_name for n in graph.asset_nodes if n.group_name})
    for tok in text.replace(",", " ").split():
        name = tok.strip("+")
        if name.startswith("group:") and name[6:] not in groups:
            raise UsageError(f"--select: unknown group {name[6:]!r} (groups: {', '.join(groups)})")
        if not name.startswith("group:") and name not in keys:
            raise UsageError(f"--select: unknown asset {name!r} (assets: {', '.join(keys)}; or group:NAME)")


def cmd_run(args) -> int:
    import dagster as dg

    from sav_assets.definitions import build_definitions
    from sav_assets.defs.automation import PIPELINE_JOB, fail_orphaned_runs
    from sav_assets.defs.partitions import batches
    from sav_assets.resources import LakeResource, SAM2Resource, SourceResource

    init_home()   # the instance's storage created once, under a lock, before this process opens it
    lake_res = LakeResource(root=args.root)
    source_res = SourceResource(uri=args.source, settle_seconds=args.settle)
    lk = lake_res.lake()
    _check_run_args(args, source_res.source(), lk)   # bad arguments: one line, exit 2, nothing claimed
    # the promoted labeling model comes from --root's models table (not only $SAV_DATA_ROOT's)
    resources = {"lake": lake_res, "source": source_res, "sam2": SAM2Resource(registry_root=args.root)}
    # Entering the instance makes it the process's current one while definitions load and run.
    with dg.DagsterInstance.get() as instance:
        defs = build_definitions(resources) if args.select else None
        if args.select and _job_def(defs, args.select).partitions_def is None:
            batch_ids = [None]    # only global assets (e.g. group training): one run, no batch claimed
        elif args.batch:
            _report_orphans(args.batch, fail_orphaned_runs(instance, args.batch))
            batch_ids = [args.batch]
        else:
            batch_ids = _batches_to_run(instance, source_res, lk, args.settle)
        if not batch_ids:
            _print_summary(lk)
            return 2 if batch_ids is None else 0
        defs = defs or build_definitions(resources)
        results = [(b, _execute(dg, instance, defs, b, args, PIPELINE_JOB, batches)) for b in batch_ids]
    _print_summary(lk)
    status = 0
    for batch_id, result in results:
        if result.success:
            print(f"run {result.run_id} succeeded{f' (batch {batch_id})' if batch_id else ''}; "
                  f"DAGSTER_HOME={os.environ['DAGSTER_HOME']}")
            continue
        failed = [e.step_key for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
        print(f"run {result.run_id} failed at: {', '.join(failed) or 'unknown step'}", file=sys.stderr)
        status = 1
    return status


def _report_orphans(batch_id: str, run_ids: list[str]) -> None:
    if run_ids:
        print(f"batch {batch_id}: marked {len(run_ids)} run(s) whose process is gone as failed: {', '.join(run_ids)}")


def _batches_to_run(instance, source_res, lk, settle: float) -> list[str] | None:
    """The batches a plain ``run`` materializes: every claimed batch whose ingestion never finished and
    that no live process is running (resumed, oldest first), then the new batch it claims; None when the
    source cannot be listed."""
    from sav_assets.defs.automation import active_batches, fail_orphaned_runs
    from sav_assets.lib.ingest.batches import claim_batch, plan_batch, unfinished_batches

    todo = []
    for st in unfinished_batches(lk):
        _report_orphans(st.batch_id, fail_orphaned_runs(instance, st.batch_id))
        if st.batch_id in active_batches(instance):
            print(f"batch {st.batch_id} is being run by another process; left to it")
            continue
        print(f"resuming batch {st.batch_id} (claimed at {st.claimed_at}, never finished)")
        todo.append(st.batch_id)
    try:
        plan = plan_batch(source_res.source(), lk, settle_seconds=settle)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return None
    if plan is None:
        if not todo:
            print(f"nothing new under {source_res.source_uri}; lake {lk.root} unchanged")
        return todo
    claim = claim_batch(lk, plan.manifest())      # this process is the run: it claims before the first step
    print(f"batch {plan.batch_id}: {len(claim.objects)} new object(s) from {plan.source_uri}"
          + (f" ({len(plan.pending)} still being written, left for later)" if plan.pending else "")
          + (f" ({len(claim.lost)} claimed by another batch first)" if claim.lost else ""))
    return [*todo, plan.batch_id]


def cmd_batches(args) -> int:
    """Every claimed batch with its state: finished (ingested), unfinished (a plain run resumes it) or
    running (a live run works on it)."""
    import dagster as dg
    import pyarrow as pa

    from sav_assets.defs.automation import active_batches
    from sav_assets.lib.ingest.batches import batch_statuses

    lk = _lake(args.root)
    statuses = batch_statuses(lk)
    init_home()   # the instance's storage created once, under a lock, before this process opens it
    with dg.DagsterInstance.get() as instance:
        busy = active_batches(instance)
    rows = [{"batch_id": s.batch_id, "state": "running" if s.batch_id in busy else
             ("finished" if s.ingested else "unfinished"), "claimed_at": s.claimed_at, "objects": s.objects,
             "source_uri": s.source_uri} for s in statuses]
    if args.unfinished:
        rows = [r for r in rows if r["state"] != "finished"]
    if not rows:
        print(f"no {'unfinished ' if args.unfinished else ''}batches in {lk.root}")
        return 0
    print(_format(pa.Table.from_pylist(rows), args.format))
    return 0


def _execute(dg, instance, defs, batch_id, args, pipeline_job, batches):
    from sav_assets.defs.automation import cli_run_tags

    if batch_id is not None and not instance.has_dynamic_partition(batches.name, batch_id):
        instance.add_dynamic_partitions(batches.name, [batch_id])
    job_def = _job_def(defs, args.select)
    run_config = _run_config(args, defs) if args.config else None
    result = job_def.execute_in_process(partition_key=batch_id, instance=instance, raise_on_error=False,
                                        run_config=run_config,
                                        tags={**({"sav/batch": batch_id} if batch_id else {}), **cli_run_tags()})
    evaluations = [e.event_specific_data for e in result.all_events
                   if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    for ev in evaluations:
        if not ev.passed:
            print(f"check failed: {ev.asset_key.to_user_string()}:{ev.check_name}", file=sys.stderr)
    print(f"asset checks: {sum(ev.passed for ev in evaluations)}/{len(evaluations)} passed")
    return result


def parse_selection(text: str):
    """A small asset-selection language: asset keys and ``group:NAME``, separated by spaces or commas;
    a leading ``+`` adds upstream assets, a trailing ``+`` downstream ones. (Dagster's own string
    parser needs an antlr4 runtime that conflicts with the one SAM 2's hydra pins.)"""
    import dagster as dg

    sel = None
    for tok in text.replace(",", " ").split():
        up, down = tok.startswith("+"), tok.endswith("+")
        name = tok.strip("+")
        part = dg.AssetSelection.groups(name[6:]) if name.startswith("group:") else dg.AssetSelection.assets(name)
        if up:
            part = part.upstream()
        if down:
            part = part.downstream()
        sel = part if sel is None else sel | part
    if sel is None:
        raise UsageError("--select: empty selection")
    return sel


def _job_def(defs, select: str | None):
    """The job a ``run`` executes: the whole pipeline, or an asset job over ``--select``."""
    import dagster as dg

    from sav_assets.defs.automation import PIPELINE_JOB

    if not select:
        return defs.resolve_job_def(PIPELINE_JOB)
    job = dg.define_asset_job("sav_cli_run", selection=parse_selection(select))
    return dg.Definitions.merge(defs, dg.Definitions(jobs=[job])).resolve_job_def("sav_cli_run")


def _load_run_config(path: str) -> dict:
    """Run config (YAML or JSON) as in the launchpad: {"ops": {"masklets": {"config": {...}}}}."""
    import yaml

    try:
        with open(path) as fh:
            doc = yaml.safe_load(fh) or {}
    except OSError as e:
        raise UsageError(f"--config {path}: cannot read it ({e.strerror or e})") from None
    except yaml.YAMLError as e:
        raise UsageError(f"--config {path}: not valid YAML/JSON ({' '.join(str(e).split())})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("ops", {}), dict):
        raise UsageError(f"--config {path}: expected a mapping like {{ops: {{masklets: {{config: {{...}}}}}}}}")
    return doc


def _run_config(args, defs, announce: bool = False) -> dict:
    """The ``--config`` file for the job that runs: entries of steps that ``--select`` leaves out are
    dropped (said once), a name that is no step at all is refused, the rest is checked by Dagster."""
    import dagster as dg

    doc = _load_run_config(args.config)
    job_def = _job_def(defs, args.select)
    in_job = set(job_def.graph.node_dict)
    assets = sorted(k.to_python_identifier() for k in defs.resolve_asset_graph().get_all_asset_keys())
    steps = {*assets, *_job_def(defs, None).graph.node_dict, *in_job}   # asset checks are steps too
    ops = doc.get("ops") or {}
    unknown = sorted(set(ops) - steps)
    if unknown:
        raise UsageError(f"--config {args.config}: {unknown[0]!r} is not a step of the pipeline "
                         f"(assets: {', '.join(assets)})")
    dropped = sorted(set(ops) - in_job)
    if dropped and announce:
        print(f"--config: not selected, so not used: {', '.join(dropped)}")
    doc = {**doc, "ops": {k: v for k, v in ops.items() if k in in_job}} if "ops" in doc else doc
    try:
        dg.validate_run_config(job_def, doc)
    except dg.DagsterInvalidConfigError as e:
        first = e.errors[0].message if e.errors else str(e)
        raise UsageError(f"--config {args.config}: {' '.join(first.split())}") from None
    return doc


def _print_summary(lk) -> None:
    from sav_assets.lib.store.catalog import query, refresh_catalog, sql_text

    try:
        refresh_catalog(lk)
        tbl = query(lk, sql_text("summary.sql"))
        print(_format(tbl, "table"))
    except Exception as e:
        print(f"(summary unavailable: {e})", file=sys.stderr)

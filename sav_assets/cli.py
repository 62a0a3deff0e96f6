"""`sav-assets`: a thin command line over the same Dagster definitions.

  sav-assets demo --out DIR                       write a demo corpus (videos + SA-V manual masks)
  sav-assets run --source URI --root URI          ingest what is new as one batch, run the graph for it
                                                  (first resuming any claimed batch that never finished)
  sav-assets batches [--root URI]                 claimed batches: finished / unfinished / running
  sav-assets sql [--root URI] ["SELECT ..."]      read-only SQL over the table views (no query: a shell)
  sav-assets export-sav [--root URI] --dest DIR   write SA-V JSON for every labeled video
  sav-assets compact [--root URI]                 rewrite the big tables into a few sorted files
  sav-assets init-home                            write $DAGSTER_HOME/dagster.yaml (gpu pool limit) if missing

Defaults come from the same places as the assets': the lake and source from the resources (and so
from SAV_DATA_ROOT / SAV_SOURCE_URI), compaction's from lib/store/compaction.py.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

# The Dagster instance config for a fresh DAGSTER_HOME (`sav-assets init-home`, for installs without make):
# Dagster 1.13 sets pool limits with `concurrency: pools: default_limit`; `gpu` (the masklets step) is the
# only pool, so it runs one step at a time unless the instance says otherwise.
INSTANCE_CONFIG = """\
# Written by `sav-assets init-home` (only when missing): edit freely.
concurrency:
  pools:
    default_limit: 1   # every pool, i.e. `gpu` (the masklets step): one at a time per GPU
"""


def _dagster_home() -> str:
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        home = str(Path.cwd() / ".dagster_home")
        os.environ["DAGSTER_HOME"] = home
    Path(home).mkdir(parents=True, exist_ok=True)
    return home


def init_home() -> Path:
    """``$DAGSTER_HOME/dagster.yaml`` with the pool limit, unless a dagster.yaml is there already."""
    path = Path(_dagster_home()) / "dagster.yaml"
    if not path.exists():
        path.write_text(INSTANCE_CONFIG)
    return path


def cmd_init_home(args) -> int:
    existed = (Path(_dagster_home()) / "dagster.yaml").exists()
    path = init_home()
    print(f"{path} {'kept as it was' if existed else 'written (pools: default_limit 1)'}")
    return 0


def _lake(root: str | None):
    from sav_assets.resources import LakeResource

    return LakeResource(root=root).lake()


class UsageError(Exception):
    """A bad command-line argument: :func:`main` prints it as one line and exits with code 2 (no traceback)."""


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


def cmd_demo(args) -> int:
    from sav_assets.lib.ingest.demo import write_demo_corpus

    out = write_demo_corpus(args.out, n_videos=args.videos, seconds=args.seconds, seed=args.seed,
                            include_bad=not args.no_bad)
    print(f"demo corpus written to {Path(args.out).resolve()}")
    for k, v in out.items():
        if isinstance(v, list):
            print(f"  {k}: {len(v)}")
    return 0


def cmd_run(args) -> int:
    import dagster as dg

    from sav_assets.definitions import build_definitions
    from sav_assets.defs.automation import PIPELINE_JOB, fail_orphaned_runs
    from sav_assets.defs.partitions import batches
    from sav_assets.resources import LakeResource, SAM2Resource, SourceResource

    _dagster_home()
    lake_res = LakeResource(root=args.root)
    source_res = SourceResource(uri=args.source, settle_seconds=args.settle)
    lk = lake_res.lake()
    _check_run_args(args, source_res.source(), lk)   # bad arguments: one line, exit 2, nothing claimed
    resources = {"lake": lake_res, "source": source_res, "sam2": SAM2Resource()}
    # Entering the instance makes it the process's current one while definitions load and run.
    with dg.DagsterInstance.get() as instance:
        if args.batch:
            _report_orphans(args.batch, fail_orphaned_runs(instance, args.batch))
            batch_ids = [args.batch]
        else:
            batch_ids = _batches_to_run(instance, source_res, lk, args.settle)
        if not batch_ids:
            _print_summary(lk)
            return 2 if batch_ids is None else 0
        defs = build_definitions(resources)
        results = [(b, _execute(dg, instance, defs, b, args, PIPELINE_JOB, batches)) for b in batch_ids]
    _print_summary(lk)
    status = 0
    for batch_id, result in results:
        if result.success:
            print(f"run {result.run_id} succeeded (batch {batch_id}); DAGSTER_HOME={os.environ['DAGSTER_HOME']}")
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
    _dagster_home()
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

    if not instance.has_dynamic_partition(batches.name, batch_id):
        instance.add_dynamic_partitions(batches.name, [batch_id])
    job_def = _job_def(defs, args.select)
    run_config = _run_config(args, defs) if args.config else None
    result = job_def.execute_in_process(partition_key=batch_id, instance=instance, raise_on_error=False,
                                        run_config=run_config,
                                        tags={"sav/batch": batch_id, **cli_run_tags()})
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


def _format(tbl, fmt: str) -> str:
    import io

    if fmt == "json":
        return json.dumps(tbl.to_pylist(), default=str, indent=1)
    if fmt == "csv":
        import pyarrow.csv as pacsv

        buf = io.BytesIO()
        pacsv.write_csv(_nested_as_json(tbl), buf)
        return buf.getvalue().decode()
    rows = tbl.to_pylist()
    cols = tbl.column_names
    cells = [[("" if r[c] is None else str(r[c])) for c in cols] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]
    line = "  ".join(c.ljust(w) for c, w in zip(cols, widths))
    sep = "  ".join("-" * w for w in widths)
    body = ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join([line, sep, *body, f"({len(rows)} row{'s' if len(rows) != 1 else ''})"])


def _nested_as_json(tbl):
    """List, struct and map columns as JSON text (CSV has no nested values); other columns as they are."""
    import pyarrow as pa

    cols = [pa.array([None if v is None else json.dumps(v, default=str) for v in col.to_pylist()], pa.string())
            if pa.types.is_nested(col.type) else col for col in tbl.columns]
    return pa.table(cols, names=tbl.column_names)


def cmd_sql(args) -> int:
    """Read-only SQL over the lake's views: one query, or a shell reading statements from stdin."""
    from sav_assets.lib.store.catalog import connect, refresh_catalog

    lk = _lake(args.root)
    try:
        has_tables = bool(lk.list("tables"))
    except Exception as e:  # e.g. a bucket that does not exist: the user's input, said in one line
        print(f"error: cannot read the lake at {lk.root}: {e}", file=sys.stderr)
        return 2
    if not has_tables:
        print(f"error: no lake at {lk.root}: nothing under tables/ (write one with `sav-assets run --root ...`, "
              "or pass --root / set SAV_DATA_ROOT)", file=sys.stderr)
        return 2
    try:
        refresh_catalog(lk)          # keeps <root>/sav.duckdb current for plain `duckdb` sessions
    except OSError as e:             # a lake this user may read but not write: query it anyway
        print(f"note: {lk.root}/sav.duckdb not refreshed: {e}", file=sys.stderr)
    con = connect(lk, read_only=True)
    try:
        if args.query is None:
            return _sql_shell(con, lk.root, args.format)
        return _sql_run(con, args.query, args.format)
    finally:
        con.close()


def _sql_run(con, sql: str, fmt: str) -> int:
    """Run (read-only) and print; 2 when refused, 1 for an SQL error (DuckDB's message, no traceback)."""
    import duckdb
    import pyarrow as pa

    from sav_assets.lib.store.catalog import ReadOnlyViolation, run_read_only

    try:
        tbl = run_read_only(con, sql)
    except ReadOnlyViolation as e:
        print(f"refused: {e}", file=sys.stderr)
        return 2
    except (duckdb.Error, pa.ArrowException) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(_format(tbl, fmt))
    return 0


def _sql_shell(con, root: str, fmt: str) -> int:
    """An interactive read-only shell: statements end with ';' (or the end of input), ``.tables``, ``.quit``."""
    tty = sys.stdin.isatty()
    if tty:
        print(f"sav-assets sql: read-only SQL over {root} (SELECT / EXPLAIN; end a statement with ';'; "
              ".tables lists the views, .quit leaves)", file=sys.stderr)
    buf: list[str] = []
    while True:
        if tty:
            print("sav> " if not buf else " ..> ", end="", file=sys.stderr, flush=True)
        line = sys.stdin.readline()
        if not line or (not buf and line.strip() in (".quit", ".exit", "\\q")):
            break
        if not buf and line.strip() == ".tables":
            line = "select table_name from information_schema.tables where not starts_with(table_name, '__') order by 1;"
        buf.append(line)
        if line.rstrip().endswith(";"):
            _sql_shell_run(con, "".join(buf), fmt)
            buf = []
    if "".join(buf).strip():
        _sql_shell_run(con, "".join(buf), fmt)
    return 0


def _sql_shell_run(con, text: str, fmt: str) -> None:
    """Each statement of ``text`` on its own, so every result is printed."""
    import duckdb

    try:
        statements = [st.query for st in con.extract_statements(text)]
    except (duckdb.Error, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return
    for sql in statements:
        _sql_run(con, sql, fmt)


def cmd_export_sav(args) -> int:
    from sav_assets.lib.sav.exports import export_sav_all

    lk = _lake(args.root)
    written = export_sav_all(lk, args.dest, video_ids=args.video_id or None)
    print(f"wrote {len(written)} SA-V JSON file(s) to {args.dest or lk.uri('exports/sav')}")
    return 0


def cmd_compact(args) -> int:
    from sav_assets.lib.store.catalog import refresh_catalog
    from sav_assets.lib.store.compaction import (
        DEFAULT_TABLES,
        CompactionError,
        compact_table,
        drop_compaction,
    )

    lk = _lake(args.root)
    failed = 0
    for table in args.table or DEFAULT_TABLES:
        if args.drop:
            drop_compaction(lk, table)
            print(f"{table}: compacted copy removed; its view reads the batch parts")
            continue
        try:
            res = compact_table(lk, table, min_new_parts=args.min_new_parts, force=args.force,
                                memory_limit=args.memory_limit, log=lambda m: print(m, flush=True))
        except CompactionError as e:
            print(f"error: {e}", file=sys.stderr)
            failed += 1
            continue
        if not res.compacted:
            print(f"{table}: skipped ({res.reason})")
    refresh_catalog(lk)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    from sav_assets.defs.tunables import lib_default
    from sav_assets.lib.store.compaction import compact_table

    p = argparse.ArgumentParser(prog="sav-assets", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    d = sub.add_parser("demo", help="write a procedurally generated demo corpus with exact SA-V manual masks")
    d.add_argument("--out", default="demo_source")
    d.add_argument("--videos", type=int, default=3)
    d.add_argument("--seconds", type=float, default=5.0)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--no-bad", action="store_true", help="leave out the corrupt and non-video example files")
    d.set_defaults(fn=cmd_demo)

    r = sub.add_parser("run", help="ingest what is new at the source as one batch and materialize the graph")
    r.add_argument("--source", default=None, help="local folder or s3://bucket/prefix (default $SAV_SOURCE_URI)")
    r.add_argument("--root", default=None, help="lake root, local path or s3:// (default $SAV_DATA_ROOT or ./data)")
    r.add_argument("--select", default=None, help="Dagster asset selection, e.g. 'raw_videos video_quality' "
                                                   "or 'group:ingestion' (default: everything)")
    r.add_argument("--batch", default=None, help="re-run an existing batch instead of planning a new one")
    r.add_argument("--config", default=None, help="run config file (YAML/JSON), e.g. {ops: {masklets: {config: "
                                                   "{points_per_side: 8}}}}")
    r.add_argument("--settle", type=float, default=0.0,
                   help="skip local files modified in the last N seconds (still being copied)")
    r.set_defaults(fn=cmd_run)

    b = sub.add_parser("batches", help="list the claimed batches: finished, unfinished (the next plain `run` "
                                       "resumes it) or running")
    b.add_argument("--root", default=None)
    b.add_argument("--unfinished", action="store_true", help="only batches whose ingestion never finished")
    b.add_argument("--format", choices=["table", "csv", "json"], default="table")
    b.set_defaults(fn=cmd_batches)

    s = sub.add_parser("sql", help="read-only DuckDB SQL over the table views")
    s.add_argument("query", nargs="?", default=None,
                   help="SQL to run; without it, an interactive read-only shell reading statements from stdin")
    s.add_argument("--root", default=None)
    s.add_argument("--format", choices=["table", "csv", "json"], default="table")
    s.set_defaults(fn=cmd_sql)

    e = sub.add_parser("export-sav", help="write <video_id>_auto.json / _manual.json in the SA-V schema")
    e.add_argument("--root", default=None)
    e.add_argument("--dest", default=None, help="local folder or s3:// prefix (default <root>/exports/sav)")
    e.add_argument("--video-id", action="append")
    e.set_defaults(fn=cmd_export_sav)

    c = sub.add_parser("compact", help="rewrite the big tables into a few sorted files behind the DuckDB views "
                                       "(fast SQL at SA-V scale; the batch parts stay the source of truth)")
    c.add_argument("--root", default=None)
    c.add_argument("--table", action="append", help="table to compact (repeatable; default: masklet_frames, "
                                                    "masklets, masklet_qc, label_runs, videos, video_quality)")
    c.add_argument("--min-new-parts", type=int, default=lib_default(compact_table, "min_new_parts"),
                   help="skip a table with fewer parts written since its last compaction")
    c.add_argument("--force", action="store_true", help="compact even if nothing changed")
    c.add_argument("--memory-limit", default=lib_default(compact_table, "memory_limit"), help="DuckDB memory for the sort (it spills beyond)")
    c.add_argument("--drop", action="store_true", help="remove the compacted copies instead (frees the disk)")
    c.set_defaults(fn=cmd_compact)

    h = sub.add_parser("init-home", help="write $DAGSTER_HOME/dagster.yaml (the gpu pool's limit) if missing")
    h.set_defaults(fn=cmd_init_home)

    args = p.parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except UsageError as e:
        print(f"sav-assets {args.cmd}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

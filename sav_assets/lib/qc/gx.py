"""Great Expectations (GX Core 1.x) table contracts: suites as JSON in ``expectations/``.

``validate_table(name, table)`` loads ``expectations/<name>.json`` into an ephemeral GX context and
validates the Arrow table (through pandas) against it. The result is plain data, so Dagster asset
checks, the CLI and tests all read it the same way.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field

import pyarrow as pa

from sav_assets.lib.store.sqlfiles import shipped_dir
from sav_assets.lib.util import markdown_table

EXPECTATIONS_DIR = shipped_dir("expectations")


@dataclass
class ExpectationOutcome:
    expectation: str
    column: str | None
    success: bool
    unexpected_count: int | None = None
    sample: list = field(default_factory=list)


@dataclass
class SuiteResult:
    suite: str
    success: bool
    rows: int
    outcomes: list[ExpectationOutcome]

    @property
    def failed(self) -> list[ExpectationOutcome]:
        return [o for o in self.outcomes if not o.success]

    def markdown(self) -> str:
        rows = [{"expectation": o.expectation, "column": o.column, "ok": "yes" if o.success else "**NO**",
                 "unexpected": o.unexpected_count, "sample": ", ".join(str(s) for s in o.sample[:3])}
                for o in self.outcomes]
        return markdown_table(rows, ["expectation", "column", "ok", "unexpected", "sample"],
                              max_rows=max(1, len(rows)))


def load_suite(name: str) -> dict:
    path = EXPECTATIONS_DIR / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(f"no expectation suite for table {name!r} at {path}")
    return json.loads(path.read_text())


def _pandas(table: pa.Table):
    # Lists (reasons, bbox, size) become Python lists; GX treats them as objects.
    return table.to_pandas(types_mapper=None)


def validate_table(name: str, table: pa.Table) -> SuiteResult:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    doc = load_suite(name)
    ctx = gx.get_context(mode="ephemeral")
    try:
        ctx.variables.progress_bars = {"globally": False, "metric_calculations": False}
    except Exception:
        pass
    suite = ctx.suites.add(gx.ExpectationSuite(name=doc["name"], expectations=doc["expectations"]))
    ds = ctx.data_sources.add_pandas("lake")
    asset = ds.add_dataframe_asset(name)
    batch = asset.add_batch_definition_whole_dataframe("all").get_batch(
        batch_parameters={"dataframe": _pandas(table)})
    res = batch.validate(suite)
    outcomes = []
    for r in res.results:
        cfg = r.expectation_config
        result = r.result or {}
        outcomes.append(ExpectationOutcome(
            expectation=cfg.type, column=cfg.kwargs.get("column"), success=bool(r.success),
            unexpected_count=result.get("unexpected_count"),
            sample=[_plain(x) for x in (result.get("partial_unexpected_list") or [])[:5]],
        ))
    return SuiteResult(suite=doc["name"], success=bool(res.success), rows=table.num_rows, outcomes=outcomes)


def _plain(x):
    try:
        json.dumps(x)
        return x
    except TypeError:
        return str(x)

"""The one Definitions object, for the code location (`dagster dev`, `dg check defs`, `dg list defs`) and
the CLI.

``build_definitions(resources)`` loads every module of ``sav_assets/defs`` (``load_from_defs_folder``),
binds the resources, and reads the two settings that belong to a definition rather than to a run,
once, when the definitions are built (never at import):

* the nightly schedule's cron, ``SAV_INGEST_CRON`` (``resources.ingest_cron``);
* ``masklets``' code_version, from the SAM 2 resource's env-resolved spec and the labeling defaults
  (``defs.label.labels_code_version``; no torch import), so the UI marks labels stale after a model swap.

A changed ``SAV_INGEST_CRON`` or SAM 2 variable therefore takes effect when the code location reloads.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import dagster as dg

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def build_definitions(resources: dict | None = None) -> dg.Definitions:
    from sav_assets.defs.automation import nightly_ingestion_schedule
    from sav_assets.defs.label import labels_code_version
    from sav_assets.resources import default_resources, ingest_cron

    resources = {**default_resources(), **(resources or {})}
    version = labels_code_version(resources["sam2"].spec())
    with warnings.catch_warnings():  # map_asset_specs is "preview" in Dagster 1.13 (pinned <1.14 in pyproject)
        warnings.simplefilter("ignore", dg.PreviewWarning)
        loaded = dg.load_from_defs_folder(path_within_project=PROJECT_ROOT).map_asset_specs(
            func=lambda spec: spec.replace_attributes(code_version=version) if spec.key.path == ["masklets"] else spec)
    return dg.Definitions.merge(loaded, dg.Definitions(schedules=[nightly_ingestion_schedule(ingest_cron())],
                                                       resources=resources))


@dg.definitions
def defs() -> dg.Definitions:
    """What `dagster dev`, `dg check defs` and `dg list defs` load (pyproject's [tool.dg.project])."""
    return build_definitions()

"""The code location: `dagster dev` (with workspace.yaml) loads `defs` from here."""

import dagster as dg

from sav_assets.definitions import build_definitions


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions()

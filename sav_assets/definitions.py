"""Build the one Definitions object (used by the root definitions.py and by the CLI)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def build_definitions(resources: dict | None = None) -> dg.Definitions:
    from sav_assets.resources import default_resources

    loaded = dg.load_from_defs_folder(path_within_project=PROJECT_ROOT)
    return dg.Definitions.merge(loaded, dg.Definitions(resources=resources or default_resources()))

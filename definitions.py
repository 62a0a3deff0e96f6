"""The code location for `dagster dev -w workspace.yaml`: a shim over sav_assets.definitions."""

from sav_assets.definitions import defs

__all__ = ["defs"]

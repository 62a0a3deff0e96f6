"""sav-assets: a Dagster data engine for SA-V-style video segmentation datasets."""

__version__ = "0.1.0"

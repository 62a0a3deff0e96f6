"""Dagster glue only: assets, checks, partitions, schedules and sensors. Logic lives in sav_assets.lib."""

"""The partitioning of every asset: one dynamic partition per ingestion batch.

A batch is registered by the run that claims it (``raw_videos``' first step, or ``sav-assets run``),
never by a schedule or sensor evaluation (``defs/automation.py``); its key is the batch id. Never one
partition per video.
"""

import dagster as dg

from sav_assets.lib.store.lake import Lake

batches = dg.DynamicPartitionsDefinition(name="batches")


def other_batches(lake: Lake, table: str, batch_id: str) -> list[str]:
    """The batches of ``table`` except ``batch_id``: what a batch compares itself with (re-runs included)."""
    return [b for b in lake.batches(table) if b != batch_id]

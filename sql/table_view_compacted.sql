-- Template for the view over a compacted table (see sav_assets/lib/compaction.py), local lakes.
-- The compacted files serve every batch unchanged since compaction; {{parts}} lists the parts of
-- the other batches (written or rewritten since), the table's schema part first, which gives the
-- columns; {{stale_filter}} drops the compacted rows of batches rewritten since. {{union}} is
-- false while every listed part has exactly the table's columns (fast), true otherwise. Both lists
-- are explicit, so a batch written after this view was made appears when the views are refreshed
-- (every pipeline write and `sav-assets sql` do that). Placeholders are paths and batch names chosen
-- by sav-assets, quoted; never user input.
CREATE OR REPLACE VIEW {{name}} AS
SELECT * EXCLUDE (_sav_batch) FROM read_parquet({{compacted}}){{stale_filter}}
UNION ALL BY NAME
SELECT * FROM read_parquet({{parts}}, union_by_name = {{union}});

-- Template for the view over a compacted table (see sav_assets/lib/compaction.py).
-- {{compacted}} reads the compacted files, which serve every batch unchanged since compaction;
-- {{stale_filter}} drops their rows of batches rewritten since. {{parts}} reads the parts of the
-- other batches (written or rewritten since), the table's schema part first, which gives the
-- columns. Local lakes: read_parquet over explicit file lists (a batch written after the view was
-- made appears when the views are refreshed, which every pipeline write and `sav-assets sql` do);
-- S3 lakes: pyarrow datasets registered under those names for the connection. Placeholders are
-- paths, names and batch names chosen by sav-assets, quoted; never user input.
CREATE OR REPLACE VIEW {{name}} AS
SELECT * EXCLUDE (_sav_batch) FROM {{compacted}}{{stale_filter}}
UNION ALL BY NAME
SELECT * FROM {{parts}};

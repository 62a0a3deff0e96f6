-- Template for the view over a compacted table (see sav_assets/lib/compaction.py).
-- {{compacted}} reads the compacted files, which serve every batch unchanged since compaction: one
-- read per segment (incremental compaction), each dropping (_sav_batch NOT IN ...) its rows of
-- batches rewritten since or moved to a newer segment, joined by UNION ALL BY NAME;
-- {{stale_filter}} is empty (kept for the template's shape). {{parts}} reads the parts of the
-- other batches (written or rewritten since), the table's schema part first, which gives the
-- columns. Local lakes: read_parquet over explicit file lists (a batch written after the view was
-- made appears when the views are refreshed, which every pipeline write and `sav-assets sql` do);
-- S3 lakes: pyarrow datasets registered under those names for the connection. Placeholders are
-- paths, names and batch names chosen by sav-assets, quoted; never user input.
CREATE OR REPLACE VIEW {{name}} AS
SELECT * EXCLUDE (_sav_batch) FROM {{compacted}}{{stale_filter}}
UNION ALL BY NAME
SELECT * FROM {{parts}};

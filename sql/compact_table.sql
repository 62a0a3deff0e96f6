-- One compaction generation of a table (see sav_assets/lib/compaction.py): every batch part, sorted,
-- into a folder of Parquet files with a `_sav_batch` column naming each row's batch folder (that of
-- tables/<table>/<batch>/<part>.parquet or of a consolidated part, <batch>/consolidated/<gen>.parquet).
-- {{sources}}: the parts (the table's empty schema file first, so every column is present in schema
-- order); {{order_by}}: "ORDER BY <sort keys>" or nothing; {{out_dir}}: the new generation's folder.
-- Paths and options are chosen by sav-assets and quoted (COPY takes no bound parameters for them).
COPY (
    SELECT * EXCLUDE (_sav_file),
           regexp_extract(_sav_file, '/tables/[^/]+/([^/]+)/(consolidated/)?[^/]+\.parquet$', 1) AS _sav_batch
    FROM read_parquet({{sources}}, union_by_name = true, filename = '_sav_file')
    {{order_by}}
) TO {{out_dir}} (FORMAT parquet, COMPRESSION {{compression}}, ROW_GROUP_SIZE {{row_group_size}},
                  FILE_SIZE_BYTES {{file_size}});

-- Template for the view over one Parquet table of the lake (local lakes).
-- {{name}} is the table name and {{files}} the quoted glob of its Parquet parts; both are
-- identifiers/paths chosen by sav-assets, never user input. Parts are unified by column name so
-- a table can gain columns over time.
CREATE OR REPLACE VIEW {{name}} AS
SELECT * FROM read_parquet({{files}}, union_by_name = true);

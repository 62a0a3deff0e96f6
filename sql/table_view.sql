-- Template for the view over one Parquet table of the lake (local lakes).
-- {{name}} is the table name and {{files}} the quoted glob of its Parquet parts; both are
-- identifiers/paths chosen by sav-assets, never user input. {{union}} is true when some part has
-- other columns than the table's schema (a table that gained columns over time): the parts are then
-- unified by column name, which makes DuckDB open every footer when the view is made; false when
-- every part has the table's exact schema (checked incrementally, lib/store/compaction.py).
CREATE OR REPLACE VIEW {{name}} AS
SELECT * FROM read_parquet({{files}}, union_by_name = {{union}});

"""Fast one-video reads of a big, video-sorted table (``masklet_frames``) at SA-V scale.

A query on the ``masklet_frames`` view makes DuckDB open the footer of every batch part on every
query, so at SA-V scale (51 batch files, 64M rows) a one-video lookup costs ~40 ms of per-file
overhead before it reads anything. ``FrameLookup`` reads the footers once, keeps each part's
``video_id`` range, and sends each lookup to the one or two parts that can hold the video; DuckDB
then skips to the matching row group by its statistics (the parts are sorted by
``video_id, masklet_id, frame_idx``).

The index is a snapshot: call :meth:`FrameLookup.refresh` after batches are rewritten.
"""

from __future__ import annotations

import bisect
import re

import pyarrow as pa
import pyarrow.parquet as pq

from .storage import Lake
from .tables import SCHEMAS

_IDENT = re.compile(r"^[a-z_][a-z0-9_]*$")


class FrameLookup:
    def __init__(self, lake: Lake, con, table: str = "masklet_frames", key: str = "video_id"):
        """``con``: a DuckDB connection that may read the lake's tables (e.g. ``catalog.connect``)."""
        if not (_IDENT.match(table) and _IDENT.match(key)):
            raise ValueError(f"bad identifier: {table!r}, {key!r}")
        if lake.is_s3:
            raise NotImplementedError("FrameLookup reads local lakes; query the view on S3")
        self.lake, self.con, self.table, self.key = lake, con, table, key
        self.refresh()

    def refresh(self) -> None:
        ranges = []
        for rel in self.lake.table_parts(self.table):
            path = str(self.lake.local_path(rel))
            md = pq.ParquetFile(path).metadata
            if md.num_rows == 0:
                continue
            names = [md.schema.column(i).path for i in range(md.num_columns)]
            if self.key not in names:
                continue
            ci = names.index(self.key)
            lo = hi = None
            for g in range(md.num_row_groups):
                st = md.row_group(g).column(ci).statistics
                if st is None or not st.has_min_max:
                    lo, hi = "", "\U0010ffff"          # no statistics: always a candidate
                    break
                lo = st.min if lo is None else min(lo, st.min)
                hi = st.max if hi is None else max(hi, st.max)
            ranges.append((lo, hi, path))
        ranges.sort()
        self.ranges = ranges
        self.starts = [r[0] for r in ranges]

    def files_for(self, value: str) -> list[str]:
        """Parts whose [min, max] range of the key contains ``value``."""
        i = bisect.bisect_right(self.starts, value)
        return [p for lo, hi, p in self.ranges[:i] if lo <= value <= hi]

    def frames(self, value: str, columns: list[str] | None = None,
               order_by: str | None = "masklet_id, frame_idx") -> pa.Table:
        """Rows whose key equals ``value`` (in ``order_by`` order; the parts' own sort order)."""
        files = self.files_for(value)
        if not files:
            schema = SCHEMAS.get(self.table)
            empty = schema.empty_table() if schema is not None else pa.table({})
            return empty.select(columns) if columns else empty
        cols = ", ".join(f'"{c}"' for c in columns) if columns else "*"
        order = f" order by {order_by}" if order_by else ""
        return self.con.sql(
            f"select {cols} from read_parquet(?, union_by_name = true) where {self.key} = ?{order}",
            params=[files, value]).to_arrow_table()

"""Dataset statistics: every ``sql/stats/*.sql`` query over the DuckDB views, as Markdown and a PNG.

Each SQL file holds one statistic and starts with ``-- title:`` and ``-- reference:`` lines (the
SA-V figure it is compared with, where one is published); columns named ``sav_reference*`` carry
the reference values next to ours.
"""

from __future__ import annotations

import io

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from sav_assets.lib.store.catalog import SQL_DIR, run_sql_file
from sav_assets.lib.util import markdown_table

STATS_DIR = SQL_DIR / "stats"


def stat_names() -> list[str]:
    return sorted(p.stem for p in STATS_DIR.glob("*.sql"))


def stat_info(name: str) -> dict[str, str]:
    """``title`` and ``reference`` from a statistic's header comments."""
    info = {"name": name, "title": name.replace("_", " "), "reference": ""}
    for line in (STATS_DIR / f"{name}.sql").read_text().splitlines():
        if not line.startswith("--"):
            break
        key, _, value = line[2:].strip().partition(":")
        if key.strip() in ("title", "reference") and value.strip():
            info[key.strip()] = value.strip()
    return info


def run_stats(con: duckdb.DuckDBPyConnection, names: list[str] | None = None) -> dict[str, pa.Table]:
    """Run the statistics (all of them by default), in name order.

    A statistic whose query fails (e.g. a view a later stage has not written yet) comes back as a
    one-row table with an ``error`` column instead of aborting the others.
    """
    out: dict[str, pa.Table] = {}
    for name in names or stat_names():
        try:
            out[name] = run_sql_file(con, f"stats/{name}.sql")
        except duckdb.Error as e:
            out[name] = pa.table({"error": [f"{type(e).__name__}: {e}".splitlines()[0]]})
    return out


def stats_markdown(results: dict[str, pa.Table]) -> str:
    parts = []
    for name, tbl in results.items():
        info = stat_info(name) if (STATS_DIR / f"{name}.sql").exists() else {"title": name, "reference": ""}
        parts.append(f"### {info['title']}")
        if info["reference"]:
            parts.append(f"_SA-V reference: {info['reference']}_")
        parts.append(markdown_table(tbl) if tbl.num_rows else "_(no rows)_")
        parts.append("")
    return "\n\n".join(parts).strip() + "\n"


def _bar(ax, labels, values, title, refs=None, fmt="{:.3g}"):
    xs = list(range(len(labels)))
    width = 0.4 if refs is not None else 0.7
    ax.bar([x - (width / 2 if refs is not None else 0) for x in xs], values, width=width, label="ours",
           color="#4472c4")
    if refs is not None and any(r is not None for r in refs):
        ax.bar([x + width / 2 for x in xs], [r if r is not None else 0 for r in refs], width=width,
               label="SA-V", color="#ed7d31")
        ax.legend(fontsize=6, frameon=False)
    for x, v in zip(xs, values):
        ax.text(x - (width / 2 if refs is not None else 0), v, fmt.format(v), ha="center", va="bottom", fontsize=6)
    ax.set_xticks(xs)
    ax.set_xticklabels([str(lbl) for lbl in labels], fontsize=6, rotation=20)
    ax.set_title(title, fontsize=8)
    ax.tick_params(axis="y", labelsize=6)


def _col(tbl: pa.Table, name: str) -> list:
    return tbl.column(name).to_pylist() if name in tbl.column_names else [None] * tbl.num_rows


# (statistic, label column, value column, reference column, panel title)
_PANELS = [
    ("videos_by_status", "status", "videos", None, "videos by status"),
    ("masklets_per_video", "masklet_type", "mean_per_video", "sav_reference", "masklets per video"),
    ("size_bucket_mix", "masklet_size_bucket", "share", None, "size-bucket share"),
    ("occlusion_rate", "masklet_type", "rate", "sav_reference", "occlusion rate"),
    ("qc_pass_rates", "reason", "pass_rate", None, "QC pass rate"),
    ("split_sizes", "split", "videos", None, "split sizes (videos)"),
]


def stats_plots_png(results: dict[str, pa.Table], dpi: int = 80) -> bytes:
    """A small PNG with one bar panel per headline statistic (ours vs SA-V where published)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(9, 5), dpi=dpi)
    for ax, (name, lab, val, ref, title) in zip(axes.flat, _PANELS):
        tbl = results.get(name)
        if tbl is None or not tbl.num_rows or val not in tbl.column_names:
            ax.set_title(title, fontsize=8)
            ax.text(0.5, 0.5, "no data", ha="center", va="center", fontsize=8, transform=ax.transAxes)
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        if name == "qc_pass_rates":  # one bar per reason, for the first masklet type
            first_type = tbl.column("masklet_type")[0].as_py()
            tbl = tbl.filter(pc.equal(tbl.column("masklet_type"), first_type))
            title = f"{title} ({first_type})"
        values = [float(v or 0) for v in _col(tbl, val)]
        _bar(ax, _col(tbl, lab), values, title, _col(tbl, ref) if ref else None)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()

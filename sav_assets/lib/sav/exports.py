"""SA-V JSON export of the masklet tables: ``<video_id>_auto.json`` / ``_manual.json`` (and
``_prompted.json`` for prompted masklets, same schema) for every labeled video.

Headers are current: ``video_split`` is the video's latest assignment in the ``splits`` table and
``video_environment`` its sidecar's (``video_quality``); an imported file's own values stay only
where the tables have none (so SA-V's sample, imported and exported, comes back byte for byte).
Masks are on SA-V's time base: annotated frame ``k`` is 24 fps frame ``4k``
(:mod:`sav_assets.lib.sav.fields`)."""

from __future__ import annotations

from collections import defaultdict

from sav_assets.lib.store.lake import Lake
from sav_assets.lib.store.tables import (
    MASKLET_FRAMES,
    MASKLETS,
    SAV_ANNOTATIONS,
    SPLITS,
    VIDEO_QUALITY,
    VIDEOS,
)

FILE_KIND = {"auto": "auto", "manual": "manual", "prompted": "prompted"}


def _filter(tbl, video_ids):
    if not video_ids:
        return tbl
    import pyarrow as pa
    import pyarrow.compute as pc

    return tbl.filter(pc.is_in(tbl["video_id"], value_set=pa.array(list(video_ids))))


def current_header_values(lake: Lake) -> dict[str, dict]:
    """video id -> {"video_split", "video_environment"} from the tables (only the values they have)."""
    out: dict[str, dict] = {}
    for q in lake.read_table("video_quality", columns=["video_id", "video_environment"],
                             schema=VIDEO_QUALITY).to_pylist():
        if q["video_environment"] is not None:
            out.setdefault(q["video_id"], {})["video_environment"] = q["video_environment"]
    splits = lake.read_table("splits", columns=["video_id", "split", "assigned_at"], schema=SPLITS).to_pylist()
    for r in sorted(splits, key=lambda r: (r["assigned_at"] is not None, r["assigned_at"] or 0)):
        if r["split"] is not None:
            out.setdefault(r["video_id"], {})["video_split"] = r["split"]
    return out


def _refresh_header(doc: dict, current: dict) -> dict:
    for key, value in current.items():
        if key in doc:
            doc[key] = value      # in place: key order unchanged
    return doc


def build_sav_docs(lake: Lake, video_ids: list[str] | None = None,
                   batches: list[str] | None = None) -> dict[tuple[str, str], dict]:
    """(video_id, kind) -> SA-V document, built from the tables."""
    from sav_assets.lib.sav.annotations import export_sav

    masklets = _filter(lake.read_table("masklets", batches=batches, schema=MASKLETS), video_ids).to_pylist()
    frames = _filter(lake.read_table("masklet_frames", batches=batches, schema=MASKLET_FRAMES), video_ids).to_pylist()
    headers = _filter(lake.read_table("sav_annotations", batches=batches, schema=SAV_ANNOTATIONS), video_ids).to_pylist()
    videos = {v["video_id"]: v for v in lake.read_table("videos", schema=VIDEOS).to_pylist()}
    m_by = defaultdict(list)
    f_by = defaultdict(list)
    for m in masklets:
        m_by[(m["video_id"], m["masklet_type"])].append(m)
    for f in frames:
        f_by[(f["video_id"], f["masklet_type"])].append(f)
    h_by = {(h["video_id"], h["masklet_type"]): h for h in headers}
    current = current_header_values(lake)
    docs = {}
    for (vid, kind), ms in sorted(m_by.items()):
        header = h_by.get((vid, kind)) if all(m.get("source") == "sav_import" for m in ms) else None
        doc = export_sav(header, ms, f_by[(vid, kind)], video=videos.get(vid), masklet_type=kind)
        docs[(vid, kind)] = _refresh_header(doc, current.get(vid, {}))
    return docs


def export_sav_all(lake: Lake, dest: str | None = None, video_ids: list[str] | None = None,
                   batches: list[str] | None = None) -> list[str]:
    """Write every (video, kind) document; returns the URIs written."""
    from sav_assets.lib.sav.annotations import dumps_sav

    # a destination on S3 is reached with the lake's S3 settings (a local lake has none)
    out = Lake(dest, s3=getattr(lake.store, "settings", None)) if dest else None
    written = []
    for (vid, kind), doc in build_sav_docs(lake, video_ids, batches).items():
        name = f"{vid}_{FILE_KIND.get(kind, kind)}.json"
        data = dumps_sav(doc).encode()
        if out is None:
            written.append(lake.put_bytes(f"exports/sav/{name}", data, content_type="application/json"))
        else:
            written.append(out.put_bytes(name, data, content_type="application/json"))
    return written

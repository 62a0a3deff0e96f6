"""Label one batch: import SA-V annotations, run SAM 2 (automatic + prompted), resume, record failures.

Each video's rows are written as soon as that video finishes, as its own Parquet part
(``tables/masklets/<batch>/<video_id>.sam2.parquet``, ``...import.parquet``); the ``label_runs``
part is written last and is the commit marker a re-run reads to skip finished work. The label key
hashes the video content, model, checkpoint, config and labeler settings, so a re-run with the same
model skips the video and a different model relabels it.

Labels of two models coexist. The plain parts ``<video_id>.sam2`` hold the video's *current* labels
(its latest committed labeling run: after a relabel, the promoted model's), so every reader of
``masklets`` / ``masklet_frames`` (QC, splits, shards, exports, ad hoc SQL) sees one label set per
video and never double counts. Before a relabel with another label key overwrites them, the current
labels are copied to ``masklets_archive`` / ``masklet_frames_archive`` / ``label_runs_archive`` as
part ``<video_id>.sam2.<tag>`` (tag: the first 16 hex digits of their label key; frames carry the
``label_key`` there), the ``label_runs_archive`` row last: it is the archive's commit marker, so an
interrupted relabel re-run never archives half-written labels under the old key. Relabeling with a
key whose labels are archived restores them instead of running SAM 2 again (resume by label key,
across models). The ``all_masklets`` / ``all_masklet_frames`` / ``label_sets`` views
(``sql/views/``) show every model's labels with a ``current`` flag.

A video's own failure becomes a ``label_runs`` row with an error class and the other videos go on:
the :class:`LabelingFailed` classes (decoder errors, ``empty_video``, ``bad_prompt``, ``oom`` after the
offloading retry) and ``unreadable`` when the video is gone from the source since ingestion. Any
other exception is a bug in our code (or in the model stack) and is raised: it would fail every
video the same way, so the step fails instead of ending green with a row per video. Videos finished
before it keep their committed parts; a re-run skips them.

Imported SA-V files are checked against the probed video (frame size, frame count) and bounded
(``import_max_masklets`` / ``import_max_frames``) before any mask is parsed; a refused file is a
``bad_annotation`` row of ``label_runs`` (:func:`import_annotations`). An imported file is read on
SA-V's 24 fps timeline (annotated frame ``k`` -> the video's ``annotation_grid`` entry ``k``, by the
video's presentation timestamps), so a file for a 25 / 29.97 / 30 fps or variable-rate video lands
on the frames it was drawn on; ``masklet_frames`` keeps each frame's ``timestamp_s``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pyarrow as pa

from sav_assets.lib.sav.fields import annotation_grid, annotation_times
from sav_assets.lib.store.lake import Lake
from sav_assets.lib.store.source import SourceOpener
from sav_assets.lib.store.tables import (
    LABEL_RUNS,
    LABEL_RUNS_ARCHIVE,
    MASKLET_FRAMES,
    MASKLET_FRAMES_ARCHIVE,
    MASKLETS,
    MASKLETS_ARCHIVE,
    SAV_ANNOTATIONS,
    to_table,
)
from sav_assets.lib.video.errors import BAD_ANNOTATION, UNREADABLE, VideoError


@dataclass
class BatchLabelSummary:
    labeled: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    imported: dict[str, list[str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)     # annotation files that name another video_id
    masklets_by_type: dict[str, int] = field(default_factory=dict)
    frames_labeled: int = 0
    seconds: float = 0.0
    peak_host_mb: float = 0.0
    peak_gpu_mb: float = 0.0
    random_weights: bool | None = None
    model_name: str | None = None
    overlay_png: bytes | None = None
    overlay_video: str | None = None


# label_runs columns copied from label_video's stats (what labeling the video cost)
_COST_COLUMNS = ("seed_policy", "encoder_calls", "encoder_calls_per_frame", "decoder_passes", "seed_prompts",
                 "prompts", "decode_wait_s", "host_copy_s", "rle_s")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _part(video_id: str, kind: str) -> str:
    return f"{video_id}.{kind}"


def _existing_run(lake: Lake, batch_id: str, video_id: str) -> dict | None:
    """The video's commit marker: its own part, or its rows in the batch's consolidated part."""
    tbl = lake.part_rows("label_runs", batch_id, _part(video_id, "sam2"))
    rows = tbl.to_pylist() if tbl is not None else []
    return rows[0] if rows else None


def model_tag(key: str) -> str:
    """The part-name tag of a label set: the first 16 hex digits of its label key."""
    return key[:16]


def _archive_part(video_id: str, key: str) -> str:
    return f"{_part(video_id, 'sam2')}.{model_tag(key)}"


def archive_current(lake: Lake, batch_id: str, video_id: str, prev: dict) -> bool:
    """Copy the video's committed labels (``prev``: their ``label_runs`` row) to the archive tables.

    Nothing is written when that label set is archived already (its ``label_runs_archive`` part, the
    marker written last, exists): the current parts may then hold half of an interrupted relabel."""
    key, part, cur = prev["label_key"], _archive_part(video_id, prev["label_key"]), _part(video_id, "sam2")
    if lake.part_rows("label_runs_archive", batch_id, part) is not None:
        return False
    m = lake.part_rows("masklets", batch_id, cur)
    f = lake.part_rows("masklet_frames", batch_id, cur)
    m = m.to_pylist() if m is not None else []
    f = f.to_pylist() if f is not None else []
    for r in m + f:
        r["label_key"] = key
    lake.write_part("masklets_archive", batch_id, part, to_table(m, MASKLETS_ARCHIVE))
    lake.write_part("masklet_frames_archive", batch_id, part, to_table(f, MASKLET_FRAMES_ARCHIVE))
    lake.write_part("label_runs_archive", batch_id, part, to_table([prev], LABEL_RUNS_ARCHIVE))
    return True


def _restore_archived(lake: Lake, batch_id: str, video_id: str, key: str) -> dict | None:
    """The archived label set of ``key`` made current again (its ``label_runs`` row last); None if none."""
    part = _archive_part(video_id, key)
    runs = lake.part_rows("label_runs_archive", batch_id, part)
    run = runs.to_pylist()[0] if runs is not None and runs.num_rows else None
    if run is None or run["label_key"] != key or run["status"] != "labeled":
        return None
    m = lake.part_rows("masklets_archive", batch_id, part)
    f = lake.part_rows("masklet_frames_archive", batch_id, part)
    f = f.drop_columns(["label_key"]) if f is not None else pa.table({})
    _write_video_parts(lake, batch_id, video_id, "sam2", m.to_pylist() if m is not None else [], f.to_pylist(),
                       run)
    return run


def _write_video_parts(lake: Lake, batch_id: str, video_id: str, kind: str, masklets: list[dict],
                       frames: list[dict], run_row: dict | None) -> None:
    for r in masklets:
        r["batch_id"] = batch_id
        r.setdefault("created_at", _now())
    for r in frames:
        r["batch_id"] = batch_id
    part = _part(video_id, kind)
    lake.write_part("masklets", batch_id, part, to_table(masklets, MASKLETS))
    lake.write_part("masklet_frames", batch_id, part, to_table(frames, MASKLET_FRAMES),
                    sort_by=[("masklet_type", "ascending"), ("masklet_id", "ascending"), ("frame_idx", "ascending")])
    if run_row is not None:  # commit marker, last
        run_row["batch_id"] = batch_id
        lake.write_part("label_runs", batch_id, part, to_table([run_row], LABEL_RUNS))


def _read_annotation(uri: str, video: dict, opener: SourceOpener, cfg) -> tuple[dict, list[dict], list[dict]]:
    """Read and check one SA-V file against its (probed) video; raises ``SavFormatError`` / ``ValueError``
    (not JSON, not SA-V, not this video, over the caps), ``RecursionError`` (absurd nesting) or ``OSError``."""
    from sav_assets.lib.label.config import LabelerConfig
    from sav_assets.lib.sav.annotations import import_sav

    cfg = cfg or LabelerConfig()
    with opener.local_path(uri) as path, open(path, "rb") as fh:
        doc = json.loads(fh.read())
    n_ann = len(doc["masklet"]) if isinstance(doc, dict) and isinstance(doc.get("masklet"), list) else -1
    n, fps = int(video.get("video_frame_count") or 0), float(video.get("video_fps") or 0)
    pts = _presentation_times(video, opener)
    grid, times = annotation_grid(n, fps, pts_s=pts), annotation_times(n, fps, pts_s=pts)
    # annotated frame k is 24 fps frame 4k of the video's timeline; more frames than the video has:
    # today's frame_step 4, which the frame-count check refuses past the video's end
    kw = ({"frame_indices": grid[:n_ann], "frame_times": times[:n_ann]} if 0 <= n_ann <= len(grid)
          else {"frame_step": 4})
    return import_sav(doc, source_uri=uri, video=video, max_masklets=cfg.import_max_masklets,
                      max_frames=cfg.import_max_frames, **kw)


def _presentation_times(video: dict, opener: SourceOpener) -> list[float] | None:
    """The video's frame timestamps for the time base, or None (then ``i / video_fps``) when it
    cannot be read now: the import does not depend on the video's bytes, its labeling reports them."""
    from sav_assets.lib.label.config import LabelingFailed
    from sav_assets.lib.video.decode import presentation_times

    if not video.get("source_uri"):
        return None
    try:
        with _local_video(opener, video["source_uri"]) as path:
            return presentation_times(path, isolate=True)
    except (VideoError, LabelingFailed):
        return None


def import_annotations(lake: Lake, batch_id: str, video: dict, annotation_uris: dict[str, str],
                       summary: BatchLabelSummary, log: Callable[[str], None],
                       opener: SourceOpener | None = None, cfg=None) -> None:
    """Import ``<video_id>_manual.json`` / ``_auto.json`` with RLEs unchanged, checked against the video.

    A file that is not JSON / SA-V, whose frame size or frame count is not the probed video's, or that
    holds more masklets or annotated frames than ``cfg.import_max_masklets`` / ``import_max_frames``
    is refused: a ``label_runs`` row ``bad_annotation`` (part ``<video_id>.import_<kind>``), nothing
    of it imported. A ``video_id`` in the file other than the matched video's is a warning
    (``summary.warnings``); the rows and every export carry the pipeline's id."""
    vid = video["video_id"]
    all_m, all_f, headers = [], [], []
    for kind, uri in sorted(annotation_uris.items()):
        try:
            header, m, f = _read_annotation(uri, video, opener or SourceOpener(), cfg)
        except (ValueError, RecursionError, OSError) as e:   # the file's fault: a row, the batch goes on
            msg = f"{uri}: {e}" if isinstance(e, (ValueError, RecursionError)) else f"{type(e).__name__}: {e}"
            summary.failed[f"{vid}:{kind}"] = f"{BAD_ANNOTATION}: {msg}"
            log(f"{vid}: {kind} annotation refused ({BAD_ANNOTATION}): {msg}")
            _record_failure(lake, batch_id, vid, f"import_{kind}", BAD_ANNOTATION, msg)
            continue
        if header["video_id"] != vid:
            warning = (f"{uri}: the file says video_id {header['video_id']!r}, imported as the matched video "
                       f"{vid!r}")[:500]
            summary.warnings.append(warning)
            log(f"{vid}: {warning}")
        for r in m:
            r["video_id"] = vid
        for r in f:
            r["video_id"] = vid
        header.update({"video_id": vid, "batch_id": batch_id, "imported_at": _now()})
        headers.append(header)
        all_m += m
        all_f += f
        summary.imported.setdefault(vid, []).append(kind)
        summary.masklets_by_type[kind] = summary.masklets_by_type.get(kind, 0) + len(m)
    if headers:
        _write_video_parts(lake, batch_id, vid, "import", all_m, all_f, None)
        lake.write_part("sav_annotations", batch_id, vid, to_table(headers, SAV_ANNOTATIONS))
        for kind in summary.imported[vid]:   # a file refused by an earlier run and imported now: its failure row goes
            lake.clear_part("label_runs", batch_id, _part(vid, "import_" + kind), LABEL_RUNS)


def _record_failure(lake: Lake, batch_id: str, video_id: str, kind: str, error_class: str, message: str,
                    label_key: str | None = None, model_name: str | None = None) -> None:
    row = {"video_id": video_id, "batch_id": batch_id, "label_key": label_key, "status": "failed",
           "error_class": error_class, "error_message": message[:2000], "masklets": 0, "frames_labeled": 0,
           "model_name": model_name, "finished_at": _now()}
    lake.write_part("label_runs", batch_id, _part(video_id, kind), to_table([row], LABEL_RUNS))


@contextlib.contextmanager
def _local_video(opener: SourceOpener, uri: str) -> Iterator[str]:
    """The video as a local file. A video that is gone from the source since ingestion, or cannot be
    read, is the video's failure (``unreadable``); errors after it is open are not caught here."""
    from sav_assets.lib.label.config import LabelingFailed

    with contextlib.ExitStack() as stack:
        try:
            path = stack.enter_context(opener.local_path(uri))
            with open(path, "rb"):
                pass
        except OSError as e:
            raise LabelingFailed(UNREADABLE, f"cannot open {uri}: {type(e).__name__}: {e}") from e
        yield path


def label_batch(lake: Lake, batch_id: str, videos: list[dict], annotations: dict[str, dict[str, str]],
                load_model: Callable[[], object], cfg, prompts: dict[str, list] | None = None,
                run_sam2: bool = True, log: Callable[[str], None] = print,
                progress: Callable[[int, int, str], None] | None = None,
                opener: SourceOpener | None = None) -> BatchLabelSummary:
    """Label every video of the batch; ``annotations[video_id]`` maps 'manual'/'auto' to JSON URIs.

    Videos and annotation files are opened through ``opener`` (the source's stores and credentials;
    default: the environment's), never through the lake."""
    from sav_assets.lib.label.config import LabelingFailed, label_key
    from sav_assets.lib.label.labeler import label_video

    opener = opener or SourceOpener()
    summary = BatchLabelSummary()
    t_batch = time.time()
    loaded = None
    for i, video in enumerate(sorted(videos, key=lambda v: v["video_id"]), 1):
        vid = video["video_id"]
        if progress:
            progress(i, len(videos), vid)
        if annotations.get(vid):
            import_annotations(lake, batch_id, video, annotations[vid], summary, log, opener, cfg)
        if not run_sam2:
            continue
        if loaded is None:
            loaded = load_model()
            summary.random_weights = loaded.random_weights
            summary.model_name = loaded.model_name
        vprompts = (prompts or {}).get(vid)
        key = label_key(video["content_sha256"], loaded, cfg, prompts=vprompts)
        prev = _existing_run(lake, batch_id, vid)
        if prev and prev.get("status") == "labeled" and prev.get("label_key") == key:
            summary.skipped.append(vid)
            log(f"[{i}/{len(videos)}] {vid}: already labeled with this model/config, skipped")
            continue
        if prev and prev.get("status") == "labeled" and prev.get("label_key"):
            archive_current(lake, batch_id, vid, prev)     # another model's labels: kept, not overwritten
        if _restore_archived(lake, batch_id, vid, key) is not None:
            summary.skipped.append(vid)
            log(f"[{i}/{len(videos)}] {vid}: labels of this model/config restored from the archive")
            continue
        t0 = time.time()
        try:
            with _local_video(opener, video["source_uri"]) as path:
                res = label_video(loaded, path, video, cfg, prompts=vprompts)
        except LabelingFailed as e:   # the video's own failure; anything else is a bug: it fails the batch
            summary.failed[vid] = f"{e.error_class}: {e}"
            log(f"[{i}/{len(videos)}] {vid}: FAILED ({e.error_class}) {e}")
            _record_failure(lake, batch_id, vid, "sam2", e.error_class, str(e), key, loaded.model_name)
            continue
        secs = time.time() - t0
        st = res.stats
        run_row = {"video_id": vid, "label_key": key, "status": "labeled", "masklets": len(res.masklets),
                   "frames_labeled": int(st.get("frames_labeled", 0)), "seconds": secs,
                   "peak_host_mb": st.get("peak_host_mb"), "peak_gpu_mb": st.get("peak_gpu_mb"),
                   "model_name": loaded.model_name, "random_weights": loaded.random_weights,
                   "finished_at": _now(), **{c: st.get(c) for c in _COST_COLUMNS}}
        _write_video_parts(lake, batch_id, vid, "sam2", res.masklets, res.frames, run_row)
        summary.labeled.append(vid)
        for m in res.masklets:
            summary.masklets_by_type[m["masklet_type"]] = summary.masklets_by_type.get(m["masklet_type"], 0) + 1
        summary.frames_labeled += run_row["frames_labeled"]
        summary.peak_host_mb = max(summary.peak_host_mb, float(st.get("peak_host_mb") or 0))
        summary.peak_gpu_mb = max(summary.peak_gpu_mb, float(st.get("peak_gpu_mb") or 0))
        if summary.overlay_png is None and getattr(res, "sample_overlay_png", None):
            summary.overlay_png, summary.overlay_video = res.sample_overlay_png, vid
        log(f"[{i}/{len(videos)}] {vid}: {len(res.masklets)} masklets, {run_row['frames_labeled']} frames "
            f"in {secs:.1f}s")
    summary.seconds = time.time() - t_batch
    return summary

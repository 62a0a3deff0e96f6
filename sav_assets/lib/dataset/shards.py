"""WebDataset training shards of temporal windows of annotated frames, published by a manifest.

A sample is ``window`` consecutive annotated frames (SA-V annotates at 6 fps) of one video::

    <key>.f00.jpg ... <key>.f07.jpg   the frames (RGB JPEG)
    <key>.masks.json                  {"size", "frame_idx", "masklet_id", "masklet_type",
                                       "rles": [[rle per masklet] per frame]}
    <key>.meta.json                   video_id, frame/ann indices, masklet ids/types, visibility, sizes

with ``key = <video_id>_<first frame_idx:06d>`` (video ids that are not ``[A-Za-z0-9_-]`` get a
sanitised prefix plus a hash, since WebDataset splits keys at the first dot). Masks are the
source RLEs verbatim unless ``max_side`` resizes the frames (then they are resized with nearest
neighbour and re-encoded).

Publishing: every shard is written to a temporary file (hashed while it is written, on a
background thread), fsync'd, then published atomically: renamed over its target in a local lake
(the temp file sits beside it), ``Lake.put_file`` on S3; ``manifest.json`` goes last, in one atomic write, and is
the only thing readers trust. A crash leaves no manifest entry for an unfinished shard; when a re-run
would overwrite a shard that an older manifest lists with different bytes, that older manifest is
withdrawn first, so no manifest ever points at bytes it does not describe. Output is deterministic:
sorted videos, fixed tar metadata (mtime 0, fixed owner, mode 0444), stable JPEG encoding, no
timestamps in the manifest, so a re-run writes byte-identical shards.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

import numpy as np

from sav_assets.lib.sav import rle as rle_lib
from sav_assets.lib.video.images import encode_jpeg, iter_frames, resize_max_side
from sav_assets.lib.store.lake import Lake, safe_relpath

MANIFEST = "manifest.json"
FORMAT = "sav-assets/wds-windows/v1"
TAR_BLOCK = 512
TAR_RECORD = 20 * 512


@dataclass
class ShardConfig:
    window: int = 8                      # annotated frames per sample (8-16 is typical)
    stride: int | None = None            # annotated frames between window starts; None = window
    shard_max_bytes: int = 300_000_000
    shard_max_samples: int = 10_000
    jpeg_quality: int = 90
    max_side: int | None = None          # downscale frames (and masks) so the long side fits

    @property
    def step(self) -> int:
        return int(self.stride or self.window)

    def config_hash(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


# ---- samples -----------------------------------------------------------------------------------

_SAFE = re.compile(r"[^A-Za-z0-9_-]")


def sample_key(video_id: str, start_frame: int) -> str:
    safe = _SAFE.sub("_", video_id)
    if safe != video_id or len(safe) > 64:
        safe = f"{safe[:40]}-{hashlib.sha256(video_id.encode()).hexdigest()[:10]}"
    return f"{safe}_{int(start_frame):06d}"


def frame_name(i: int) -> str:
    return f"f{i:02d}.jpg"


def window_starts(n_frames: int, window: int, step: int) -> list[int]:
    if n_frames < window or window <= 0:
        return []
    return list(range(0, n_frames - window + 1, max(1, step)))


def _resize_rle(r: dict, hw: tuple[int, int]) -> dict:
    from PIL import Image

    m = rle_lib.decode(r)
    if m.shape == hw:
        return r
    img = Image.fromarray(m * 255).resize((hw[1], hw[0]), Image.NEAREST)
    return rle_lib.encode(np.asarray(img) > 127)


def build_samples(videos: list[dict], frames_by_video: dict[str, list[dict]],
                  masklets_by_video: dict[str, list[dict]] | None, video_paths: dict[str, str],
                  cfg: ShardConfig, split: str = "train", stats: dict | None = None) -> Iterator[dict]:
    """Encoded samples (``__key__`` plus bytes per member) for the videos, in deterministic order.

    ``masklets_by_video`` (masklet rows) chooses which masklets go in and gives their types; when a
    video has none there, every masklet in its frame rows is used. ``stats`` (a dict) is filled with
    per-run counts: videos, samples, skipped videos with reasons.
    """
    stats = stats if stats is not None else {}
    stats.setdefault("videos", 0)
    stats.setdefault("samples", 0)
    stats.setdefault("skipped", [])
    for vid in sorted({v["video_id"] for v in videos}):
        rows = frames_by_video.get(vid) or []
        mrows = (masklets_by_video or {}).get(vid)
        if mrows:
            # masklets are (type, id): SA-V numbers manual and auto masklets independently from 0
            keep = {_mkey(m) for m in mrows}
            rows = [r for r in rows if _mkey(r) in keep]
        else:
            keep = {_mkey(r) for r in rows}
        frames = sorted({int(r["frame_idx"]) for r in rows})
        starts = window_starts(len(frames), cfg.window, cfg.step)
        if not starts:
            stats["skipped"].append({"video_id": vid, "reason": f"{len(frames)} annotated frames < window"})
            continue
        if vid not in video_paths:
            stats["skipped"].append({"video_id": vid, "reason": "no video file"})
            continue
        mids = sorted(keep)
        cell: dict[tuple, dict] = {(_mkey(r), int(r["frame_idx"])): r for r in rows}
        ann_of = {int(r["frame_idx"]): int(r["ann_idx"]) for r in rows if r.get("ann_idx") is not None}
        size = [int(x) for x in rows[0]["size"]]
        stats["videos"] += 1

        windows = [frames[s: s + cfg.window] for s in starts]
        needed = sorted({f for w in windows for f in w})
        jpegs: dict[int, bytes] = {}
        out_hw: tuple[int, int] | None = None
        wi = 0
        frames_iter = iter_frames(video_paths[vid], needed)
        while True:
            try:
                idx, img = next(frames_iter)
            except StopIteration:
                break
            except Exception as e:  # a video that fails to decode is recorded, the run goes on
                stats["skipped"].append({"video_id": vid, "reason": f"{type(e).__name__}: {e}",
                                         "samples_written": wi})
                break
            img = resize_max_side(img, cfg.max_side)
            out_hw = img.shape[:2]
            jpegs[idx] = encode_jpeg(img, cfg.jpeg_quality)
            while wi < len(windows) and windows[wi][-1] <= idx:
                w = windows[wi]
                yield _make_sample(vid, w, mids, cell, ann_of, size, out_hw, jpegs, cfg, split)
                stats["samples"] += 1
                wi += 1
                lo = windows[wi][0] if wi < len(windows) else idx + 1
                for f in [f for f in jpegs if f < lo]:
                    del jpegs[f]


def _mkey(row: dict) -> tuple[str, int]:
    return (row.get("masklet_type") or "", int(row["masklet_id"]))


def _make_sample(vid, w, mids, cell, ann_of, size, out_hw, jpegs, cfg, split) -> dict:
    resized = tuple(size) != tuple(out_hw)
    empty = rle_lib.empty(*size)
    rles, visible = [], []
    for f in w:
        fr, fv = [], []
        for m in mids:
            r = cell.get((m, f))
            src = {"size": [int(x) for x in r["size"]], "counts": r["counts"]} if r is not None else empty
            if resized:
                src = _resize_rle(src, out_hw)
            fr.append(src)
            if r is not None and r.get("visible") is not None:
                fv.append(bool(r["visible"]))
            else:
                fv.append(r is not None and rle_lib.area(src) > 0)
        rles.append(fr)
        visible.append(fv)
    key = sample_key(vid, w[0])
    ids = [m[1] for m in mids]
    types = [m[0] or None for m in mids]
    masks = {"size": [int(out_hw[0]), int(out_hw[1])], "frame_idx": w, "masklet_id": ids,
             "masklet_type": types, "rles": rles}
    meta = {
        "video_id": vid, "key": key, "split": split,
        "frame_idx": w, "ann_idx": [ann_of.get(f) for f in w],
        "masklet_id": ids, "masklet_type": types, "visible": visible,
        "height": int(out_hw[0]), "width": int(out_hw[1]),
        "source_height": int(size[0]), "source_width": int(size[1]),
        "window": cfg.window,
    }
    sample = {"__key__": key}
    for i, f in enumerate(w):
        sample[frame_name(i)] = jpegs[f]
    sample["masks.json"] = json.dumps(masks, separators=(",", ":")).encode()
    sample["meta.json"] = json.dumps(meta, separators=(",", ":"), sort_keys=True).encode()
    return sample


# ---- shard files ------------------------------------------------------------------------------

class _HashingWriter:
    """A write-only sink that hashes (SHA-256) and counts what passes through.

    tarfile emits member headers, whole member bodies and padding (immutable bytes); they are
    batched, without copying, into groups of about ``chunk`` bytes. Each group is written to the file
    by one background thread and hashed by another (file writes and ``hashlib`` release the GIL),
    each in submission order, so packing, writing and hashing overlap. At most ``depth`` groups wait.
    """

    def __init__(self, fh, chunk: int = 4 << 20, depth: int = 4):
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        self.fh = fh
        self.sha = hashlib.sha256()
        self.size = 0
        self.chunk = chunk
        self.depth = depth
        self.pieces: list = []
        self.queued = 0
        self.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-write")
        self.hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-hash")
        self.pending: deque = deque()

    def _hash(self, pieces: list) -> None:
        for piece in pieces:
            self.sha.update(piece)

    def _submit(self) -> None:
        pieces, self.pieces, self.queued = self.pieces, [], 0
        self.pending.append((self.writer.submit(self.fh.writelines, pieces), self.hasher.submit(self._hash, pieces)))
        while len(self.pending) > self.depth:
            self._wait_oldest()

    def _wait_oldest(self) -> None:
        w, h = self.pending.popleft()
        w.result()
        h.result()

    def write(self, data) -> int:
        n = len(data)
        # tarfile hands over immutable bytes (a header, a whole member body, padding): no copy needed
        self.pieces.append(data if isinstance(data, bytes) else bytes(data))
        self.queued += n
        self.size += n
        if self.queued >= self.chunk:
            self._submit()
        return n

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        if self.pieces:
            self._submit()
        while self.pending:
            self._wait_oldest()
        self.fh.flush()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self.writer.shutdown(wait=True)
            self.hasher.shutdown(wait=True)


def _tar_writer_class():
    import webdataset as wds

    class TarWriter(wds.TarWriter):
        """webdataset's TarWriter on a plain (non-stream) tarfile: member sizes are known up front, so
        tarfile can write each member straight through instead of re-buffering it in 10 KB records.
        The bytes are the same as in stream mode."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.tarstream.copybufsize = 8 << 20   # copy each member in one piece

        @staticmethod
        def tarmode(fileobj, compress=None):
            if compress in (None, False) and not isinstance(fileobj, str):
                return "w"
            return wds.TarWriter.tarmode(fileobj, compress)

    return TarWriter


def _TarWriter(*args, **kwargs):
    global _TarWriter_cls
    if _TarWriter_cls is None:
        _TarWriter_cls = _tar_writer_class()
    return _TarWriter_cls(*args, **kwargs)


_TarWriter_cls = None


def publish_file(lake: Lake, rel: str, tmp: str) -> str:
    """Make a finished, fsync'd temp file the object ``rel``: a rename when the temp file already sits
    beside its target in a local lake, else ``Lake.put_file`` (copy + rename locally, one PUT on S3)."""
    if not lake.is_s3:
        target = lake.local_path(rel)
        if os.path.dirname(os.path.abspath(tmp)) == str(target.parent):
            os.replace(tmp, target)
            return str(target)
    uri = lake.put_file(rel, tmp)
    os.unlink(tmp)
    return uri


def _member_bytes(sample: dict) -> int:
    n = 0
    for k, v in sample.items():
        if not k.startswith("_"):
            n += TAR_BLOCK + -(-len(v) // TAR_BLOCK) * TAR_BLOCK
    return n


def _tar_size(member_bytes: int) -> int:
    """Final size of a tar stream: members, two zero end blocks, padded to whole records."""
    return -(-(member_bytes + 2 * TAR_BLOCK) // TAR_RECORD) * TAR_RECORD


def shard_name(split: str, i: int) -> str:
    return f"{split}-{i:06d}.tar"


class _ShardPublisher:
    def __init__(self, lake: Lake, prefix: str, split: str, cfg: ShardConfig, tmp_dir: str,
                 old_manifest: dict | None):
        self.lake, self.prefix, self.split, self.cfg, self.tmp_dir = lake, prefix, split, cfg, tmp_dir
        self.old = {s["shard"]: s for s in (old_manifest or {}).get("shards", [])}
        self.old_valid = old_manifest is not None
        self.entries: list[dict] = []
        self._open()

    def _open(self):
        import uuid

        name = shard_name(self.split, len(self.entries))
        if self.lake.is_s3:
            self.tmp = os.path.join(self.tmp_dir, name)
        else:
            # beside its target, so publishing is a rename; Lake.list() skips ".<name>.<id>.tmp" files
            target = self.lake.local_path(f"{self.prefix}/{name}")
            target.parent.mkdir(parents=True, exist_ok=True)
            self.tmp = str(target.parent / f".{name}.{uuid.uuid4().hex}.tmp")
        self.fh = open(self.tmp, "wb")  # noqa: SIM115 - stays open across add() calls until _publish()
        self.hf = _HashingWriter(self.fh)
        # mtime must be an int: a float mtime makes tarfile add a PAX header to every member
        self.writer = _TarWriter(self.hf, encoder=False, compress=False, mtime=0,
                                 user="sav", group="sav", mode=0o444)
        self.count = 0
        self.est = 0
        self.first = self.last = None

    def add(self, sample: dict) -> None:
        size = _member_bytes(sample)
        if self.count and (self.count + 1 > self.cfg.shard_max_samples
                           or _tar_size(self.est + size) > self.cfg.shard_max_bytes):
            self._publish()
            self._open()
        self.writer.write(sample)
        self.count += 1
        self.est += size
        self.first = self.first or sample["__key__"]
        self.last = sample["__key__"]

    def _publish(self) -> None:
        self.writer.close()
        self.hf.close()
        os.fsync(self.fh.fileno())
        self.fh.close()
        name = shard_name(self.split, len(self.entries))
        sha = self.hf.sha.hexdigest()
        old = self.old.get(name)
        if self.old_valid and old is not None and old.get("sha256") != sha:
            # about to change bytes an older manifest vouches for: withdraw that manifest first
            self.lake.delete(f"{self.prefix}/{MANIFEST}")
            self.old_valid = False
        uri = publish_file(self.lake, f"{self.prefix}/{name}", self.tmp)
        self.entries.append({"shard": name, "uri": uri, "samples": self.count, "bytes": self.hf.size,
                             "sha256": sha, "first_key": self.first, "last_key": self.last})

    def finish(self) -> list[dict]:
        if self.count:
            self._publish()
        else:
            self.abort()
        return self.entries

    def abort(self) -> None:
        """Drop the shard being written (after an error): close and delete its temp file."""
        for close in (self.writer.close, self.hf.close, self.fh.close):
            try:
                close()
            except Exception:
                pass
        if os.path.exists(self.tmp):
            os.unlink(self.tmp)


def read_manifest(lake: Lake, out_prefix: str) -> dict | None:
    rel = f"{safe_relpath(out_prefix)}/{MANIFEST}"
    if not lake.exists(rel):
        return None
    return json.loads(lake.get_bytes(rel))


def write_samples(lake: Lake, out_prefix: str, samples: Iterable[dict], cfg: ShardConfig,
                  split: str = "train", now: datetime | None = None, batch_id: str | None = None,
                  tmp_dir: str | None = None, extra: dict | Callable[[], dict] | None = None) -> dict:
    """Pack encoded samples into shards under ``out_prefix``, publish them, then the manifest.

    ``extra``: more manifest keys (or a callable returning them, called once every sample is written).
    """
    prefix = safe_relpath(out_prefix)
    split = safe_relpath(split)
    now = now or datetime.now(timezone.utc)
    old = read_manifest(lake, prefix)
    work = tempfile.mkdtemp(prefix="sav-shards-", dir=tmp_dir)
    pub = None
    try:
        pub = _ShardPublisher(lake, prefix, split, cfg, work, old)
        for s in samples:
            pub.add(s)
        entries = pub.finish()
    except BaseException:
        if pub is not None:
            pub.abort()
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)

    manifest = {
        "format": FORMAT, "split": split, "config": asdict(cfg), "config_hash": cfg.config_hash(),
        "samples": sum(e["samples"] for e in entries), "bytes": sum(e["bytes"] for e in entries),
        "shards": [{k: e[k] for k in ("shard", "samples", "bytes", "sha256", "first_key", "last_key")}
                   for e in entries],
        **((extra() if callable(extra) else extra) or {}),
    }
    manifest_uri = lake.put_bytes(f"{prefix}/{MANIFEST}",
                                  json.dumps(manifest, indent=1, sort_keys=True).encode(),
                                  content_type="application/json")
    # shards of this split that the manifest does not list (an older, longer run; a crashed run)
    listed = {e["shard"] for e in entries}
    pat = re.compile(rf"^{re.escape(split)}-\d{{6}}\.tar$")
    for rel in lake.list(prefix):
        name = rel.rsplit("/", 1)[-1]
        if rel.rsplit("/", 1)[0] == prefix and pat.match(name) and name not in listed:
            lake.delete(rel)
    rows = [{
        "shard": e["shard"], "batch_id": batch_id, "uri": e["uri"], "split": split,
        "samples": e["samples"], "bytes": e["bytes"], "sha256": e["sha256"],
        "window": cfg.window, "stride": cfg.step, "first_key": e["first_key"], "last_key": e["last_key"],
        "config_hash": cfg.config_hash(), "created_at": now,
    } for e in entries]
    return {"manifest": manifest, "manifest_uri": manifest_uri, "rows": rows,
            "shards": len(entries), "samples": manifest["samples"], "bytes": manifest["bytes"]}


def write_shards(lake: Lake, out_prefix: str, train_videos: list[dict],
                 frames_by_video: dict[str, list[dict]], masklets_by_video: dict[str, list[dict]] | None,
                 video_paths: dict[str, str], cfg: ShardConfig | None = None, split: str = "train",
                 now: datetime | None = None, batch_id: str | None = None,
                 tmp_dir: str | None = None) -> dict:
    """Windows of annotated frames of ``train_videos`` as WebDataset shards + manifest.

    Returns ``{"manifest", "manifest_uri", "rows" (SHARDS rows), "shards", "samples", "bytes",
    "videos", "skipped"}``. Shards are ``<out_prefix>/<split>-NNNNNN.tar``.
    """
    cfg = cfg or ShardConfig()
    stats: dict = {}
    samples = build_samples(train_videos, frames_by_video, masklets_by_video, video_paths, cfg, split, stats)
    result = write_samples(lake, out_prefix, samples, cfg, split=split, now=now, batch_id=batch_id,
                           tmp_dir=tmp_dir, extra=lambda: {"videos": stats.get("videos", 0)})
    result["videos"] = stats.get("videos", 0)
    result["skipped"] = stats.get("skipped", [])
    return result


def verify_manifest(lake: Lake, out_prefix: str) -> list[str]:
    """Problems with a published manifest (missing shard, size or SHA-256 mismatch); empty when sound."""
    m = read_manifest(lake, out_prefix)
    if m is None:
        return [f"{out_prefix}/{MANIFEST} missing"]
    problems = []
    for s in m["shards"]:
        rel = f"{safe_relpath(out_prefix)}/{s['shard']}"
        if not lake.exists(rel):
            problems.append(f"{s['shard']}: missing")
            continue
        data = lake.get_bytes(rel)
        if len(data) != s["bytes"]:
            problems.append(f"{s['shard']}: {len(data)} bytes, manifest says {s['bytes']}")
        if hashlib.sha256(data).hexdigest() != s["sha256"]:
            problems.append(f"{s['shard']}: sha256 mismatch")
    return problems


# ---- SA-V train export ------------------------------------------------------------------------

def export_sav_train(lake: Lake, out_prefix: str, videos: list[dict], video_paths: dict[str, str],
                     json_docs: dict[str, dict[str, dict]],
                     json_for: Callable[[str], dict[str, dict]] | None = None) -> dict:
    """SA-V train layout: ``<out_prefix>/<video_id>.mp4`` + ``<video_id>_manual.json`` / ``_auto.json``.

    ``json_docs``: video id -> {"manual": doc, "auto": doc} (SA-V JSON dicts, e.g. from the SA-V
    writer); ``json_for`` is an alternative callable producing that dict per video. Also writes
    ``sav_train.txt`` (the exported ids) last. Returns counts and the written keys.
    """
    prefix = safe_relpath(out_prefix)
    written: list[str] = []
    exported: list[str] = []
    skipped: list[dict] = []
    nbytes = 0
    for vid in sorted({v["video_id"] for v in videos}):
        safe_relpath(vid)
        docs = json_docs.get(vid) if json_docs else None
        if docs is None and json_for is not None:
            docs = json_for(vid)
        if vid not in video_paths:
            skipped.append({"video_id": vid, "reason": "no video file"})
            continue
        if not docs:
            skipped.append({"video_id": vid, "reason": "no annotations"})
            continue
        rel = f"{prefix}/{vid}.mp4"
        lake.put_file(rel, video_paths[vid])
        nbytes += os.path.getsize(video_paths[vid])
        written.append(rel)
        for kind in sorted(docs):
            if kind not in ("manual", "auto"):
                raise ValueError(f"unknown SA-V annotation kind {kind!r} (manual | auto)")
            data = json.dumps(docs[kind]).encode()
            rel = f"{prefix}/{vid}_{kind}.json"
            lake.put_bytes(rel, data, content_type="application/json")
            nbytes += len(data)
            written.append(rel)
        exported.append(vid)
    lake.put_bytes(f"{prefix}/sav_train.txt", "".join(f"{v}\n" for v in exported).encode())
    return {"videos": len(exported), "files": written, "bytes": nbytes, "skipped": skipped}

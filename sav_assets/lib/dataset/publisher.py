"""Publishing WebDataset shards into the lake: :class:`ShardPublisher`, a context-managed writer with
the manifest written last (modelled on webdataset's ``ShardWriter``: ``write(sample)`` rolls over to
a new ``<split>-NNNNNN.tar`` at ``max_samples`` or ``max_bytes``; ``post`` is called with each
published shard's manifest entry).

Every shard is written to a temporary file (hashed while it is written, on a background thread),
fsync'd, then published atomically: renamed over its target in a local lake (the temp file sits
beside it), ``Lake.put_file`` on S3; ``manifest.json`` goes last, in one atomic write, and is the
only thing readers trust. A crash (an exception inside the ``with`` block) leaves no manifest entry
for an unfinished shard; when a re-run would overwrite a shard that an older manifest lists with
different bytes, that older manifest is withdrawn first, so no manifest ever points at bytes it does
not describe. After the manifest, shards of the split that it does not list (an older, longer run; a
crashed run) are deleted. Tar members carry fixed metadata (mtime 0, fixed owner, mode 0444), so the
same samples give byte-identical shards.

:func:`rewrite_shards` removes samples from published shards (a takedown): only the shards that hold
one are rewritten, under new names, and a new manifest replaces the old one atomically. It sits here,
past ~400 lines, because it writes the same tar members and manifest as :class:`ShardPublisher`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator

from sav_assets.lib.store.lake import Lake, safe_relpath
from sav_assets.lib.util import sha256_bytes

MANIFEST = "manifest.json"
FORMAT = "sav-assets/wds-windows/v1"
TAR_BLOCK = 512
TAR_RECORD = 20 * 512
_ENTRY_KEYS = ("shard", "samples", "bytes", "sha256", "first_key", "last_key")


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


def _shard_writer(fh):
    """``(hashing sink, tar writer)`` over an open file: the fixed member metadata of every shard."""
    hf = _HashingWriter(fh)
    # mtime must be an int: a float mtime makes tarfile add a PAX header to every member
    return hf, _TarWriter(hf, encoder=False, compress=False, mtime=0, user="sav", group="sav", mode=0o444)


def publish_file(lake: Lake, rel: str, tmp: str) -> str:
    """Make a finished, fsync'd temp file the object ``rel``: a rename when the temp file already sits
    beside its target in a local lake, else ``Lake.put_file`` (copy + rename locally, one PUT on S3)."""
    return lake.store.move_file(rel, tmp)


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


def read_manifest(lake: Lake, out_prefix: str) -> dict | None:
    rel = f"{safe_relpath(out_prefix)}/{MANIFEST}"
    if not lake.exists(rel):
        return None
    return json.loads(lake.get_bytes(rel))


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
        if sha256_bytes(data) != s["sha256"]:
            problems.append(f"{s['shard']}: sha256 mismatch")
    return problems


class ShardPublisher:
    """Write encoded samples (``__key__`` plus bytes per member) as ``<out_prefix>/<split>-NNNNNN.tar``
    shards, then ``manifest.json`` (see the module docstring)::

        with ShardPublisher(lake, "shards/v1", "train", max_samples=1000) as pub:
            for sample in samples:
                pub.write(sample)
        pub.manifest, pub.entries        # what was published

    ``manifest_extra``: more manifest keys, or a callable returning them (called once every sample is
    written, when the manifest is built). On an exception inside the block the shard being written is
    dropped and no manifest is written. ``entries`` (one dict per published shard: ``shard``, ``uri``,
    ``samples``, ``bytes``, ``sha256``, ``first_key``, ``last_key``, and ``keys``: every sample key in
    the shard, in order; not in the manifest) and ``manifest`` /
    ``manifest_uri`` are set by :meth:`close`.
    """

    def __init__(self, lake: Lake, out_prefix: str, split: str = "train", *, max_samples: int = 10_000,
                 max_bytes: int = 300_000_000, manifest_extra: dict | Callable[[], dict] | None = None,
                 post: Callable[[dict], None] | None = None, tmp_dir: str | None = None):
        self.lake = lake
        self.prefix = safe_relpath(out_prefix)
        self.split = safe_relpath(split)
        self.max_samples, self.max_bytes = int(max_samples), int(max_bytes)
        self.manifest_extra, self.post = manifest_extra, post
        old = read_manifest(lake, self.prefix)
        self.old = {s["shard"]: s for s in (old or {}).get("shards", [])}
        self.old_valid = old is not None
        self.entries: list[dict] = []
        self.manifest: dict | None = None
        self.manifest_uri: str | None = None
        self.work = tempfile.mkdtemp(prefix="sav-shards-", dir=tmp_dir)
        self.fh = None
        self.tmp: str | None = None
        self.count = 0

    def __enter__(self) -> ShardPublisher:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _open(self) -> None:
        name = shard_name(self.split, len(self.entries))
        # locally beside its target, so publishing is a rename (listings skip ".<name>.<id>.tmp" files)
        self.tmp = self.lake.store.staging_path(f"{self.prefix}/{name}", self.work)
        self.fh = open(self.tmp, "wb")  # noqa: SIM115 - stays open across write() calls until _publish()
        self.hf, self.writer = _shard_writer(self.fh)
        self.count = 0
        self.est = 0
        self.first = self.last = None
        self.keys: list[str] = []

    def write(self, sample: dict) -> None:
        """Add one sample to the current shard, publishing it first when the sample would not fit."""
        size = _member_bytes(sample)
        if self.fh is not None and self.count and (
                self.count + 1 > self.max_samples or _tar_size(self.est + size) > self.max_bytes):
            self._publish()
        if self.fh is None:
            self._open()
        self.writer.write(sample)
        self.count += 1
        self.est += size
        self.first = self.first or sample["__key__"]
        self.last = sample["__key__"]
        self.keys.append(sample["__key__"])

    def _publish(self) -> None:
        self.writer.close()
        self.hf.close()
        os.fsync(self.fh.fileno())
        self.fh.close()
        self.fh = None
        name = shard_name(self.split, len(self.entries))
        sha = self.hf.sha.hexdigest()
        old = self.old.get(name)
        if self.old_valid and old is not None and old.get("sha256") != sha:
            # about to change bytes an older manifest vouches for: withdraw that manifest first
            self.lake.delete(f"{self.prefix}/{MANIFEST}")
            self.old_valid = False
        uri = publish_file(self.lake, f"{self.prefix}/{name}", self.tmp)
        entry = {"shard": name, "uri": uri, "samples": self.count, "bytes": self.hf.size,
                 "sha256": sha, "first_key": self.first, "last_key": self.last, "keys": self.keys}
        self.entries.append(entry)
        if self.post is not None:
            self.post(entry)

    def close(self) -> dict:
        """Publish the last shard, then the manifest, then delete unlisted shards; returns the manifest."""
        try:
            if self.fh is not None:
                self._publish()
        except BaseException:
            self.abort()
            raise
        shutil.rmtree(self.work, ignore_errors=True)
        extra = self.manifest_extra() if callable(self.manifest_extra) else self.manifest_extra
        self.manifest = {
            "format": FORMAT, "split": self.split,
            "samples": sum(e["samples"] for e in self.entries), "bytes": sum(e["bytes"] for e in self.entries),
            "shards": [{k: e[k] for k in _ENTRY_KEYS} for e in self.entries],
            **(extra or {}),
        }
        self.manifest_uri = self.lake.put_bytes(f"{self.prefix}/{MANIFEST}",
                                                json.dumps(self.manifest, indent=1, sort_keys=True).encode(),
                                                content_type="application/json")
        self._delete_unlisted()
        return self.manifest

    def _delete_unlisted(self) -> None:
        listed = {e["shard"] for e in self.entries}
        for name in _shard_files(self.lake, self.prefix, self.split):
            if name not in listed:
                self.lake.delete(f"{self.prefix}/{name}")

    def abort(self) -> None:
        """Drop the shard being written (after an error): close and delete its temp file."""
        if self.fh is not None:
            for close in (self.writer.close, self.hf.close, self.fh.close):
                try:
                    close()
                except Exception:
                    pass
            self.fh = None
        if self.tmp is not None and os.path.exists(self.tmp):
            os.unlink(self.tmp)
        shutil.rmtree(self.work, ignore_errors=True)


# ---- rewriting published shards (a takedown) ---------------------------------------------------

_MEMBER = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")     # webdataset's split of a member name: key, extension


def _shard_files(lake: Lake, prefix: str, split: str) -> list[str]:
    """Names of the ``<split>-NNNNNN.tar`` files directly under ``prefix``."""
    pat = re.compile(rf"^{re.escape(split)}-\d{{6}}\.tar$")
    out = []
    for rel in lake.list(prefix):
        folder, _, name = rel.rpartition("/")
        if folder == prefix and pat.match(name):
            out.append(name)
    return out


def tar_keys(path: str) -> list[str]:
    """Sample keys of a shard in order, from the member headers alone (tarfile seeks over the bodies)."""
    import tarfile

    keys: list[str] = []
    with tarfile.open(path, "r:") as tf:
        for m in tf:
            match = _MEMBER.match(m.name) if m.isfile() else None
            if match and (not keys or keys[-1] != match.group(1)):
                keys.append(match.group(1))
    return keys


def iter_tar_samples(path: str) -> Iterator[dict]:
    """The samples of a shard in tar order, as webdataset groups them: ``{"__key__", "<ext>": bytes}``."""
    import tarfile

    cur: dict | None = None
    with tarfile.open(path, "r:") as tf:
        for m in tf:
            match = _MEMBER.match(m.name) if m.isfile() else None
            if match is None:
                continue
            if cur is None or cur["__key__"] != match.group(1):
                if cur is not None:
                    yield cur
                cur = {"__key__": match.group(1)}
            cur[match.group(2)] = tf.extractfile(m).read()
    if cur is not None:
        yield cur


def _filtered_copy(path: str, tmp: str, drop: Callable[[dict], bool]) -> dict | None:
    """Copy the samples of shard ``path`` that ``drop`` keeps into ``tmp`` (fsync'd); their manifest
    entry without ``shard`` (``samples`` 0: nothing kept), or None when ``drop`` selects none."""
    dropped = kept = 0
    first = last = None
    with open(tmp, "wb") as fh:
        hf, writer = _shard_writer(fh)
        try:
            for sample in iter_tar_samples(path):
                if drop(sample):
                    dropped += 1
                    continue
                writer.write(sample)
                kept += 1
                first, last = first or sample["__key__"], sample["__key__"]
        finally:
            writer.close()
            hf.close()
        os.fsync(fh.fileno())
    if not dropped:
        return None
    return {"samples": kept, "bytes": hf.size, "sha256": hf.sha.hexdigest(), "first_key": first, "last_key": last}


def rewrite_shards(lake: Lake, out_prefix: str, drop: Callable[[dict], bool],
                   key_filter: Callable[[str], bool] | None = None,
                   amend: Callable[[dict], dict] | None = None, tmp_dir: str | None = None) -> dict:
    """Remove the samples ``drop`` selects from the shards of the manifest at ``out_prefix``.

    Only shards holding such a sample are rewritten (``key_filter`` on the keys of the member headers
    skips the others without reading their bodies); every other sample keeps its bytes, in order. A
    rewritten shard is published under a *new* name (the next free ``<split>-NNNNNN.tar``), so the old
    manifest stays true until ``manifest.json`` (amended by ``amend``) is replaced in one atomic
    write; then the replaced shards are deleted, as are unlisted shards that still hold a dropped
    sample (what an interrupted rewrite leaves). A shard left empty leaves the manifest. Re-running
    finds nothing more to drop. Returns ``{"replaced": {old name: new entry or None}, "manifest"}``.
    """
    prefix = safe_relpath(out_prefix)
    manifest = read_manifest(lake, prefix)
    if manifest is None:
        return {"replaced": {}, "manifest": None}
    split = manifest["split"]
    on_disk = _shard_files(lake, prefix, split)
    next_index = 1 + max([int(n[len(split) + 1:-4]) for n in on_disk + [e["shard"] for e in manifest["shards"]]],
                         default=-1)
    work = tempfile.mkdtemp(prefix="sav-shards-", dir=tmp_dir)
    replaced: dict[str, dict | None] = {}
    try:
        for e in manifest["shards"]:
            name = shard_name(split, next_index)
            tmp = lake.store.staging_path(f"{prefix}/{name}", work)
            try:
                with lake.store.local_path(f"{prefix}/{e['shard']}") as path:
                    keep = key_filter is None or any(key_filter(k) for k in tar_keys(path))
                    entry = _filtered_copy(path, tmp, drop) if keep else None
                if entry is not None and entry["samples"]:
                    publish_file(lake, f"{prefix}/{name}", tmp)
                    next_index += 1
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
            if entry is not None:
                replaced[e["shard"]] = {"shard": name, **entry} if entry["samples"] else None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if replaced:
        shards = [replaced.get(e["shard"], e) for e in manifest["shards"]]
        shards = [{k: s[k] for k in _ENTRY_KEYS} for s in shards if s is not None]
        manifest = {**manifest, "shards": shards, "samples": sum(s["samples"] for s in shards),
                    "bytes": sum(s["bytes"] for s in shards)}
        manifest = amend(manifest) if amend is not None else manifest
        lake.put_bytes(f"{prefix}/{MANIFEST}", json.dumps(manifest, indent=1, sort_keys=True).encode(),
                       content_type="application/json")
        for old in replaced:
            lake.delete(f"{prefix}/{old}")
    listed = {s["shard"] for s in manifest["shards"]}
    for name in _shard_files(lake, prefix, split):
        if name not in listed and _holds(lake, f"{prefix}/{name}", drop, key_filter):
            lake.delete(f"{prefix}/{name}")
    return {"replaced": replaced, "manifest": manifest}


def _holds(lake: Lake, rel: str, drop: Callable[[dict], bool], key_filter: Callable[[str], bool] | None) -> bool:
    with lake.store.local_path(rel) as path:
        if key_filter is not None and not any(key_filter(k) for k in tar_keys(path)):
            return False
        return any(drop(s) for s in iter_tar_samples(path))

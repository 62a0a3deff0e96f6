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
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable

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
    ``samples``, ``bytes``, ``sha256``, ``first_key``, ``last_key``) and ``manifest`` /
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
        self.hf = _HashingWriter(self.fh)
        # mtime must be an int: a float mtime makes tarfile add a PAX header to every member
        self.writer = _TarWriter(self.hf, encoder=False, compress=False, mtime=0,
                                 user="sav", group="sav", mode=0o444)
        self.count = 0
        self.est = 0
        self.first = self.last = None

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
                 "sha256": sha, "first_key": self.first, "last_key": self.last}
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
        pat = re.compile(rf"^{re.escape(self.split)}-\d{{6}}\.tar$")
        for rel in self.lake.list(self.prefix):
            folder, _, name = rel.rpartition("/")
            if folder == self.prefix and pat.match(name) and name not in listed:
                self.lake.delete(rel)

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

"""Where raw videos land (a local folder or an ``s3://bucket/prefix``): the landing zone over a store.

A :class:`Source` lists the objects under its root, skipping what must never be ingested: symbolic
links (never followed out of the root), objects inside hidden folders (``.git/``, ``.Trash/``), and
keys that would escape the root. It reads objects and their S3 user metadata, and opens a video as a
local file (``source.local_path(uri)``). Planning batches over these listings is ingestion
(:mod:`sav_assets.lib.ingest.batches`), not storage.

Every source object is opened through the store it lives in, with the source's endpoint and
credentials, never the lake's: they may differ (a landing bucket on one S3 service, the lake on
another). :class:`SourceOpener` does this for rows that name objects by full URI
(``videos.source_uri``, annotation URIs), building one :class:`Source` per folder with the factory it
is given (the Dagster source resource's ``source`` method, so the run's own settings apply).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator

from sav_assets.lib.store.objects import (
    ObjectInfo,
    ObjectStore,
    S3Settings,
    open_store,
    split_object_uri,
)

SourceObject = ObjectInfo   # one landing-zone object: key, uri, size, version, mtime, metadata


def _in_hidden_folder(key: str) -> bool:
    return any(part.startswith(".") for part in key.split("/")[:-1])


class Source:
    """List and read objects under a source URI (local folder or S3 prefix), or over a given store."""

    def __init__(self, uri: str | os.PathLike | ObjectStore, s3: S3Settings | None = None, s3_client=None):
        if isinstance(uri, ObjectStore):
            self.store, self.uri = uri, uri.uri()
        else:
            self.store, self.uri = open_store(uri, s3, s3_client), str(uri)

    def __repr__(self) -> str:
        return f"Source({self.uri!r})"

    def list_objects(self, with_metadata: bool = False) -> list[SourceObject]:
        """Every object under the root, sorted by key (a local root that does not exist is an error)."""
        root = self.store.local_root
        if root is not None and not root.is_dir():
            raise FileNotFoundError(f"source folder does not exist: {root}")
        return [o for o in self.store.list_objects(with_metadata=with_metadata) if not _in_hidden_folder(o.key)]

    def settled(self, o: SourceObject, now: float, settle_seconds: float) -> bool:
        """Whether ``o`` is complete: always on S3 (objects appear whole), else unmodified for a while."""
        return not self.store.partial_writes_visible or now - o.mtime >= settle_seconds

    def object_uri(self, key: str) -> str:
        return self.store.uri(key)

    def read_bytes(self, key: str) -> bytes:
        return self.store.get(key)

    def head_metadata(self, key: str) -> dict:
        """S3 user metadata (``x-amz-meta-*``) of one object; ``{}`` for a local file."""
        return self.store.head_metadata(key)

    def local_path(self, key_or_uri: str) -> contextlib.AbstractContextManager[str]:
        """Context manager: a local path of the object (the file itself, or a temporary download)."""
        return self.store.local_path(key_or_uri)


class SourceOpener:
    """Opens source objects named by full URI through the :class:`Source` of the folder holding each.

    ``source_for(folder_uri)`` builds that Source: the source resource's ``source`` method in the
    Dagster glue (its endpoint and credentials), ``Source`` itself (the environment's) by default.
    One Source (one S3 client) per folder.
    """

    def __init__(self, source_for: Callable[[str], Source] = Source):
        self._source_for = source_for
        self._sources: dict[str, Source] = {}

    def source(self, uri: str) -> tuple[Source, str]:
        """``(Source of the object's folder, the object's key there)``."""
        folder, key = split_object_uri(uri)
        if folder not in self._sources:
            self._sources[folder] = self._source_for(folder)
        return self._sources[folder], key

    def local_path(self, uri: str) -> contextlib.AbstractContextManager[str]:
        src, key = self.source(uri)
        return src.local_path(key)

    @contextlib.contextmanager
    def local_videos(self, videos: list[dict]) -> Iterator[dict[str, str]]:
        """``{video_id: local path}`` for ``videos`` rows (``source_uri``), all open for the block."""
        with contextlib.ExitStack() as stack:
            yield {v["video_id"]: stack.enter_context(self.local_path(v["source_uri"])) for v in videos}

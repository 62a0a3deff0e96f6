"""The few helpers every stage shares, each written once: SHA-256 of bytes, text and files; an atomic
local file write (published with the process umask's mode, like any file a tool writes, never
owner-only); a Markdown table. Plain Python on purpose (no numpy, no pyarrow at import), so any
group of ``sav_assets.lib`` may import it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

_CHUNK = 4 << 20


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def sha256_json(obj: Any) -> str:
    """A stable digest of a JSON-able value (keys sorted; anything else through ``str``)."""
    return sha256_text(json.dumps(obj, sort_keys=True, default=str))


def sha256_file(path: str | os.PathLike, chunk: int = _CHUNK) -> str:
    return sha256_file_size(path, chunk)[0]


def sha256_file_size(path: str | os.PathLike, chunk: int = _CHUNK) -> tuple[str, int]:
    """``(SHA-256, byte count)`` of one read of a file: both describe the same bytes, even if the file
    changes meanwhile (a ``stat`` before or after could see another size)."""
    h = hashlib.sha256()
    n = 0
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
            n += len(block)
    return h.hexdigest(), n


def _create_temp_beside(path: Path) -> str:
    """Create ``.<name>.<random>.tmp`` beside ``path`` with mode ``0666`` less the process umask.

    Not ``tempfile.mkstemp``: its files are owner-only (0600), and the rename would publish that mode,
    so a reader running as another user (a training job) could not open a manifest or an export. The
    kernel applies the umask (and a folder's default ACL) at creation, as for any file a tool writes;
    ``O_EXCL`` keeps the name ours alone."""
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666))
        except FileExistsError:
            continue
        return str(tmp)
    raise FileExistsError(f"no free temporary name beside {path}")


@contextlib.contextmanager
def replacing(path: str | os.PathLike) -> Iterator[str]:
    """A temporary path beside ``path``; renamed over it when the block succeeds, removed otherwise
    (the one temp-file-then-rename mechanism: the writes below and any writer that needs a path)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temp_beside(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, fsync: bool = True) -> Path:
    """Write ``data`` to ``path`` so that a reader sees the old file or the new one, never half of one:
    a temporary file in the same folder, flushed, then renamed over the target."""
    with replacing(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        if fsync:
            fh.flush()
            os.fsync(fh.fileno())
    return Path(path)


def atomic_copy(src: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Copy a file to ``dest`` atomically (temporary file in the destination folder, then rename)."""
    with replacing(dest) as tmp:
        shutil.copyfile(src, tmp)
    return Path(dest)


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: Sequence[Mapping[str, Any]] | Any, columns: Sequence[str] | None = None,
                   max_rows: int = 50) -> str:
    """A Markdown table of dict rows, or of anything with ``to_pylist()`` / ``column_names`` (Arrow)."""
    if hasattr(rows, "to_pylist"):
        columns = list(columns or rows.column_names)
        total = rows.num_rows
        rows = rows.slice(0, max_rows).to_pylist()
    else:
        rows = list(rows)
        total = len(rows)
        columns = list(columns or (rows[0].keys() if rows else []))
        rows = rows[:max_rows]
    if not columns:
        return "_(no columns)_"
    out = ["| " + " | ".join(columns) + " |", "| " + " | ".join("---" for _ in columns) + " |"]
    out += ["| " + " | ".join(_cell(r.get(c)) for c in columns) + " |" for r in rows]
    if total > max_rows:
        out.append(f"\n_{total - max_rows} more rows_")
    return "\n".join(out)


def counts_table(counts: Mapping[str, int], key: str = "what", value: str = "count") -> str:
    """A two-column Markdown table of counts, largest first."""
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return markdown_table([{key: k, value: v} for k, v in ordered], [key, value], max_rows=len(ordered) or 1)


def first_line(text: object, limit: int = 300) -> str:
    """The first line of a message (an exception's, a decoder's), cut to ``limit`` characters."""
    s = str(text).strip().splitlines()
    return (s[0] if s else "")[:limit]


def peak_rss_mb() -> float:
    """This process's own peak RSS in MB: ``VmHWM`` of its address space. Not ``ru_maxrss``: Linux keeps,
    across ``exec``, the RSS high-water mark of the process that forked (or vforked) it, so a small child
    of a large caller would report the caller's peak. ``ru_maxrss`` only where /proc is missing."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class UnionFind:
    """Disjoint sets of string ids; the smallest id of a set is its root, so representatives are
    deterministic whatever order the links come in."""

    def __init__(self):
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:  # path compression
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

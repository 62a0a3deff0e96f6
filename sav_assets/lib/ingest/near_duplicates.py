"""Near-duplicate groups: which videos show the same content, and which member of a group is kept.

Two videos *match* when at least half of the anchor hashes of one of them lie within
``max_hamming`` bits of some hash of the other (either way round). A *group* is a connected
component of matches among the videos of this batch and the ``video_quality`` rows of other
batches; links among those earlier rows come from their recorded ``duplicate_of`` (never
recomputed, so a batch costs ``new x (new + earlier)`` comparisons). The comparisons are vectorised:
every earlier anchor hash sits in one uint64 array and a new video is compared with all of them at once
(XOR + ``np.bitwise_count`` in cache-sized chunks, then per-video reductions): hundredths of a second
per new video against 100k earlier videos where the pairwise Python loop took 34-50 s, plus a fixed
per-batch cost for building the array (``benchmarks/bench_near_duplicates.py``, docs/benchmarks.md);
the result is the same, pair for pair (``tests/lib/ingest/test_near_duplicates.py``).

The canonical of a group (the one member that is kept):

* a video of another batch that passed its quality check, if the group has one: earlier verdicts
  are final, a published video is never taken back (the best of them when there are several);
* else the best video of this batch that passes every other check.

*Best* is: higher resolution (short side), then longer, then earlier batch, then smaller
``video_id``. Every other member of this batch gets the ``near_duplicate`` reason and
``duplicate_of`` = the canonical, so ``duplicate_of`` always points at a kept video. A group without
a kept member rejects no one as a duplicate: its members keep their own reasons only. So a later,
better copy of an earlier *rejected* video is kept, and a low-resolution copy whose id sorts first
never costs the original its place.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from sav_assets.lib.util import UnionFind

NEAR_DUPLICATE = "near_duplicate"


def hamming(a: str, b: str) -> int:
    """Number of differing bits of two hex hashes."""
    return int(bin(int(a, 16) ^ int(b, 16)).count("1"))


def is_near_duplicate(hashes: list[str], other: list[str], max_hamming: int) -> bool:
    """At least half of ``hashes`` lie within ``max_hamming`` bits of some hash of ``other``."""
    if not hashes or not other:
        return False
    hits = sum(1 for h in hashes if min(hamming(h, o) for o in other) <= max_hamming)
    return hits * 2 >= len(hashes)


def matches(a: list[str], b: list[str], max_hamming: int) -> bool:
    """``a`` and ``b`` are near-duplicates of each other (either way round)."""
    return is_near_duplicate(a, b, max_hamming) or is_near_duplicate(b, a, max_hamming)


def rank_key(row: dict) -> tuple:
    """Sort key of the best member first: resolution, duration, earlier batch, smaller id."""
    return (-(row.get("short_side") or 0), -(row.get("video_duration") or 0.0), str(row.get("batch_id") or ""),
            str(row["video_id"]))


class _HashIndex:
    """Every anchor hash of a list of videos as one ``(n_hashes, words)`` uint64 array (low word first)
    and the video each belongs to, so that one new video is compared with all of them in a few numpy
    operations (XOR, ``np.bitwise_count``, segment reductions) instead of a Python loop per pair."""

    def __init__(self, hash_lists: list[list[str]]):
        self.counts = np.array([len(h) for h in hash_lists], dtype=np.int64)
        flat = [h for hs in hash_lists for h in hs]
        self.owner = np.repeat(np.arange(len(hash_lists)), self.counts)
        self.words = _words(flat)

    def within(self, hashes: np.ndarray, max_hamming: int) -> np.ndarray:
        """``[i, j]``: hash ``i`` of ``hashes`` lies within ``max_hamming`` bits of indexed hash ``j``."""
        w = max(hashes.shape[1], self.words.shape[1])
        a, b = _pad(hashes, w), _pad(self.words, w)
        if w == 1:                          # 64-bit hashes (what quality.phash writes)
            return _within_64(a[:, 0], b[:, 0], max_hamming)
        dist = np.zeros((len(a), len(b)), dtype=np.int32)
        for k in range(w):
            dist += np.bitwise_count(a[:, k, None] ^ b[None, :, k])
        return dist <= max_hamming

    def matching(self, hashes: list[str], max_hamming: int) -> np.ndarray:
        """Indices of the indexed videos that :func:`matches` ``hashes`` (either way round)."""
        n = len(self.counts)
        if not hashes or not len(self.owner):
            return np.zeros(0, dtype=np.int64)
        near = self.within(_words(hashes), max_hamming)
        # ours in theirs: per video, how many of our hashes have one of its hashes within reach
        cols = np.flatnonzero(near.any(axis=0))
        ours = np.zeros((len(hashes), n), dtype=bool)
        rows_i, cols_j = np.nonzero(near[:, cols])
        ours[rows_i, self.owner[cols[cols_j]]] = True
        ours_hits = ours.sum(axis=0)
        # theirs in ours: per video, how many of its hashes have one of ours within reach
        theirs_hits = np.bincount(self.owner[cols], minlength=n)
        has = self.counts > 0
        ok = has & ((ours_hits * 2 >= len(hashes)) | (theirs_hits * 2 >= self.counts))
        return np.flatnonzero(ok)


def _within_64(a: np.ndarray, b: np.ndarray, max_hamming: int, chunk: int = 16384) -> np.ndarray:
    """``|a| x |b|`` within-reach matrix of 64-bit hashes, in chunks of ``b`` whose temporaries stay in
    the CPU cache (5-14x faster than one pass over 800k hashes, which streams 50 MB through memory)."""
    out = np.empty((len(a), len(b)), dtype=bool)
    xor = np.empty((len(a), chunk), dtype=np.uint64)
    bits = np.empty((len(a), chunk), dtype=np.uint8)
    for s in range(0, len(b), chunk):
        e = min(s + chunk, len(b))
        np.bitwise_xor(a[:, None], b[None, s:e], out=xor[:, :e - s])
        np.bitwise_count(xor[:, :e - s], out=bits[:, :e - s])
        np.less_equal(bits[:, :e - s], max_hamming, out=out[:, s:e])
    return out


def _words(hashes: list[str]) -> np.ndarray:
    """Hex hashes as ``(len(hashes), words)`` uint64, low word first (a hash is a number: shorter ones
    are zero-padded on the left, as ``int(h, 16)`` reads them)."""
    lengths = np.fromiter(map(len, hashes), dtype=np.int64, count=len(hashes))
    if not len(hashes) or (lengths == 16).all():
        return np.frombuffer(bytes.fromhex("".join(hashes)), dtype=">u8").astype(np.uint64).reshape(-1, 1)
    width = 1 + int(lengths.max() - 1) // 16
    mask = (1 << 64) - 1
    return np.array([[(int(h, 16) >> (64 * k)) & mask for k in range(width)] for h in hashes],
                    dtype=np.uint64).reshape(-1, width)


def _pad(words: np.ndarray, width: int) -> np.ndarray:
    if words.shape[1] == width:
        return words
    return np.concatenate([words, np.zeros((len(words), width - words.shape[1]), dtype=np.uint64)], axis=1)


def _link(rows: list[dict], prior: list[dict], max_hamming: int) -> UnionFind:
    """Groups: earlier links from ``duplicate_of``, plus a link for every matching pair of a row of this
    batch with an earlier row or another row of this batch (matching is symmetric, so comparing each
    row with all others links the same pairs as comparing it with those before it)."""
    groups = UnionFind()             # an earlier video without links stays out of it: a group of its own
    for p in prior:
        if p.get("duplicate_of"):
            groups.union(p["video_id"], str(p["duplicate_of"]))
    pool = [*prior, *rows]
    index = _HashIndex([o.get("phash") or [] for o in pool])
    for i, r in enumerate(rows):
        groups.find(r["video_id"])
        for j in index.matching(r["phash"], max_hamming):
            if j != len(prior) + i:
                groups.union(r["video_id"], pool[j]["video_id"])
    return groups


def _canonical(members: list[dict], prior_ids: set[str]) -> dict | None:
    kept_before = [m for m in members if m["video_id"] in prior_ids and m.get("passed")]
    if kept_before:
        return min(kept_before, key=rank_key)
    eligible = [m for m in members if m["video_id"] not in prior_ids and not m["reasons"]]
    return min(eligible, key=rank_key) if eligible else None


def resolve_near_duplicates(rows: list[dict], prior: Iterable[dict], max_hamming: int) -> None:
    """Mark the near-duplicates among ``rows`` (this batch's ``video_quality`` rows, in place).

    ``rows`` carry ``video_id``, ``phash``, ``short_side``, ``video_duration`` and ``reasons`` (every
    reason but ``near_duplicate``: a member with none passes every other check); ``prior`` are the
    ``video_quality`` rows of other batches (``video_id``, ``batch_id``, ``phash``, ``passed``,
    ``duplicate_of``, ``short_side``, ``video_duration``). A row of this batch among ``prior`` (a
    re-run) is ignored. Adds ``near_duplicate`` and sets ``duplicate_of`` (module docstring).
    """
    own = {r["video_id"] for r in rows}
    prior = [p for p in prior if p["video_id"] not in own]
    measured = [r for r in rows if r.get("phash")]
    if max_hamming < 0 or not measured:
        return
    groups = _link(measured, prior, max_hamming)
    # only the groups of this batch's videos matter; an earlier video outside the union-find is alone
    touched = {groups.find(r["video_id"]) for r in measured}
    members: dict[str, list[dict]] = {}
    for r in [*prior, *measured]:
        if r["video_id"] in groups.parent and (root := groups.find(r["video_id"])) in touched:
            members.setdefault(root, []).append(r)
    prior_ids = {p["video_id"] for p in prior}
    canon = {root: _canonical(group, prior_ids) for root, group in members.items() if len(group) > 1}
    for r in measured:
        c = canon.get(groups.find(r["video_id"]))
        if c is not None and c is not r:
            r["duplicate_of"] = c["video_id"]
            r["reasons"].append(NEAR_DUPLICATE)

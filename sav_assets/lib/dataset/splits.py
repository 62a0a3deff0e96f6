"""Sticky, leak-free, stratified video-level split assignment.

Rules, in order:

1. **Sticky.** A video that already has a row in the splits table keeps it forever; this module
   only ever returns rows for videos without one.
2. **Leak-free.** Videos that share a group (near-duplicate cluster or source group, joined
   transitively by :func:`group_keys`) always share a split. A new video whose group already has a
   split takes it (``group_sticky``). A new video whose group already straddles splits (two
   assigned groups were later joined by a new duplicate) is ``excluded``: any split would leak.
3. **Stratified quota fill.** The val/test targets (a fraction of all videos, or an absolute count
   such as SA-V's 155) are apportioned over strata (size bucket x environment x occlusion) by
   largest remainder. Within a stratum, unassigned groups are ranked by a salted SHA-256 of the
   group key and taken in that order while they fit in what the stratum still needs, counting
   what earlier runs already assigned. A global pass then tops the split up towards its total
   (taking a group only when that brings the count closer to the total).
   Everything else goes to train.

The ranking depends only on the seed and group keys, so a run is a pure function of its inputs
(and input order does not matter).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

from sav_assets.lib.util import UnionFind, sha256_json, sha256_text

SPLIT_NAMES = ("train", "val", "test")
EXCLUDED = "excluded"


@dataclass
class SplitConfig:
    val_target: float = 0.1          # fraction of all videos if < 1, else an absolute video count
    test_target: float = 0.0         # same convention
    seed: str = "sav-v1"
    stratify_by: tuple = field(default_factory=lambda: ("size_bucket", "environment", "occlusion"))

    def config_hash(self) -> str:
        d = asdict(self)
        d["stratify_by"] = list(d["stratify_by"])
        return sha256_json(d)[:16]


# ---- groups ----------------------------------------------------------------------------------

def group_keys(videos: Iterable[str], duplicate_of: Mapping[str, str | None] | None = None,
               source_group: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """Video id -> group key; duplicates (transitively) and videos of one source group share a key.

    The key is ``src:<source_group>`` when the component has a source group (the smallest, if it
    has several), else ``dup:<smallest video id>`` for a near-duplicate cluster, else
    ``vid:<video_id>`` for a singleton. Keys of existing groups stay stable as long as new videos
    do not join two groups (``assign_splits`` also matches groups by membership, not only by key).
    """
    duplicate_of = duplicate_of or {}
    source_group = source_group or {}
    uf = UnionFind()
    vids = sorted(set(videos))
    for v in vids:
        uf.find(v)
    for v in vids:
        d = duplicate_of.get(v)
        if d:
            uf.union(v, d)
    first_of_source: dict[str, str] = {}
    for v in vids:
        s = source_group.get(v)
        if s:
            if s in first_of_source:
                uf.union(v, first_of_source[s])
            else:
                first_of_source[s] = v
    members: dict[str, list[str]] = defaultdict(list)
    for v in vids:
        members[uf.find(v)].append(v)
    out: dict[str, str] = {}
    for root, vs in members.items():
        sources = sorted({source_group[v] for v in vs if source_group.get(v)})
        if sources:
            key = f"src:{sources[0]}"
        elif len(vs) > 1 or any(duplicate_of.get(v) for v in vs):
            key = f"dup:{root}"
        else:
            key = f"vid:{root}"
        for v in vs:
            out[v] = key
    return out


def stratum_of(row: Mapping, stratify_by: Iterable[str]) -> str:
    def fmt(v):
        if v is None:
            return "na"
        if isinstance(v, bool):
            return "yes" if v else "no"
        return str(v)

    return "|".join(fmt(row.get(k)) for k in stratify_by) if stratify_by else "all"


def _target_count(target: float, n: int) -> int:
    if target <= 0:
        return 0
    if target < 1:
        return round(target * n)
    return min(int(target), n)


def _rank(seed: str, split: str, key: str) -> str:
    return sha256_text(f"{seed}\x00{split}\x00{key}")


def _apportion(total: int, sizes: Mapping[str, int]) -> dict[str, int]:
    """Integer quotas proportional to ``sizes`` summing to ``total`` (largest remainder, ties by name)."""
    n = sum(sizes.values())
    if n == 0 or total <= 0:
        return {s: 0 for s in sizes}
    exact = {s: total * c / n for s, c in sizes.items()}
    quota = {s: int(e) for s, e in exact.items()}
    left = total - sum(quota.values())
    order = sorted(sizes, key=lambda s: (-(exact[s] - quota[s]), s))
    for s in order[:left]:
        quota[s] += 1
    return quota


def _group_splits(cands: dict[str, dict], assigned: dict[str, dict]) -> dict[str, set[str]]:
    """Group -> splits already present, by membership (current grouping) and by stored key."""
    group_splits: dict[str, set[str]] = defaultdict(set)
    for vid, c in cands.items():
        if vid in assigned:
            group_splits[c["group_key"]].add(assigned[vid]["split"])
    for r in assigned.values():
        if r.get("group_key"):
            group_splits[r["group_key"]].add(r["split"])
    return group_splits


def _sticky(new: dict[str, dict], group_splits: dict[str, set[str]],
            out: dict[str, tuple[str, str]]) -> dict[str, list[str]]:
    """Rule 2: new videos of an assigned group follow it (or are excluded when it straddles splits);
    returns the groups still open (group key -> new video ids)."""
    open_groups: dict[str, list[str]] = defaultdict(list)
    for vid, c in new.items():
        have = {s for s in group_splits.get(c["group_key"], set()) if s != EXCLUDED}
        if len(have) == 1:
            out[vid] = (next(iter(have)), "group_sticky")
        elif len(have) > 1:
            out[vid] = (EXCLUDED, "group_conflict")
        else:
            open_groups[c["group_key"]].append(vid)
    return open_groups


def _stratum_counts(assigned: dict[str, dict], cands: dict[str, dict], vid_stratum: dict[str, str],
                    out: dict[str, tuple[str, str]], stratify_by) -> tuple[Counter, dict[str, Counter]]:
    """Stratum sizes and current per-split counts over everything (existing + new)."""
    all_strata: Counter = Counter()
    counts: dict[str, Counter] = {s: Counter() for s in SPLIT_NAMES}
    for vid, r in assigned.items():
        st = r.get("stratum") or (stratum_of(cands[vid], stratify_by) if vid in cands else "na")
        all_strata[st] += 1
        if r["split"] in counts:
            counts[r["split"]][st] += 1
    for vid, st in vid_stratum.items():
        all_strata[st] += 1
        if vid in out and out[vid][0] in counts:
            counts[out[vid][0]][st] += 1
    return all_strata, counts


class _Fill:
    """Rule 3 for one split: the open groups in hash order, taken by stratum quota, then topped up."""

    def __init__(self, split: str, seed: str, open_groups: dict[str, list[str]], vid_stratum: dict[str, str],
                 counts: Counter, out: dict[str, tuple[str, str]]):
        self.split, self.open_groups, self.vid_stratum = split, open_groups, vid_stratum
        self.counts, self.out = counts, out
        self.ranked = sorted(open_groups, key=lambda g: (_rank(seed, split, g), g))

    def _take(self, g: str, reason: str) -> None:
        for v in self.open_groups[g]:
            self.out[v] = (self.split, reason)
            self.counts[self.vid_stratum[v]] += 1

    def by_stratum(self, quota: dict[str, int], g_stratum: dict[str, str]) -> None:
        """Per stratum, groups that fit in what the stratum still needs; a group is charged in full to
        its dominant stratum, so mixed groups cannot overfill."""
        charged = Counter(self.counts)
        taken = []
        for g in self.ranked:
            st = g_stratum[g]
            size = len(self.open_groups[g])
            if 0 < size <= quota.get(st, 0) - charged[st]:
                taken.append(g)
                charged[st] += size
                self._take(g, "stratum_quota")
        for g in taken:
            del self.open_groups[g]

    def top_up(self, total: int) -> None:
        """Towards the split's total, whatever the stratum, taking a group when that brings the count
        closer to the total (so a large group may overshoot by under half its size)."""
        have = sum(self.counts.values())
        taken = []
        for g in self.ranked:
            if g not in self.open_groups:
                continue
            size = len(self.open_groups[g])
            if 0 < total - have and size < 2 * (total - have):
                taken.append(g)
                have += size
                self._take(g, "global_quota")
        for g in taken:
            del self.open_groups[g]


def assign_splits(candidates: list[dict], existing: list[dict], cfg: SplitConfig | None = None,
                  now: datetime | None = None, batch_id: str | None = None) -> list[dict]:
    """New split rows for the candidates that have none yet (see the module docstring).

    ``candidates``: one dict per accepted video with ``video_id``, ``group_key`` and the strata
    fields named in ``cfg.stratify_by`` (default ``size_bucket``, ``environment``, ``occlusion``).
    ``existing``: rows already in the splits table (``video_id``, ``split``, ``group_key``,
    ``stratum``). Returns rows of the SPLITS schema, sorted by ``video_id``.
    """
    cfg = cfg or SplitConfig()
    now = now or datetime.now(timezone.utc)
    assigned: dict[str, dict] = {}
    for r in existing:
        assigned.setdefault(r["video_id"], r)
    cands: dict[str, dict] = {}
    for c in sorted(candidates, key=lambda c: c["video_id"]):
        cands.setdefault(c["video_id"], c)
    new = {vid: c for vid, c in cands.items() if vid not in assigned}
    vid_stratum = {vid: stratum_of(c, cfg.stratify_by) for vid, c in new.items()}

    out: dict[str, tuple[str, str]] = {}   # video_id -> (split, reason)
    open_groups = _sticky(new, _group_splits(cands, assigned), out)
    all_strata, counts = _stratum_counts(assigned, cands, vid_stratum, out, cfg.stratify_by)
    n_total = sum(all_strata.values())

    def group_stratum(g: str) -> str:
        c = Counter(vid_stratum[v] for v in open_groups[g])
        return min(c, key=lambda s: (-c[s], s))

    g_stratum = {g: group_stratum(g) for g in open_groups}
    for split, target in (("test", cfg.test_target), ("val", cfg.val_target)):
        total = _target_count(target, n_total)
        if total <= 0 or not open_groups:
            continue
        fill = _Fill(split, cfg.seed, open_groups, vid_stratum, counts[split], out)
        fill.by_stratum(_apportion(total, all_strata), g_stratum)
        fill.top_up(total)
    for vids in open_groups.values():
        for v in vids:
            out[v] = ("train", "remainder")

    chash = cfg.config_hash()
    return [{
        "video_id": vid,
        "batch_id": batch_id,
        "split": out[vid][0],
        "group_key": new[vid]["group_key"],
        "stratum": vid_stratum[vid],
        "assignment_reason": out[vid][1],
        "config_hash": chash,
        "assigned_at": now,
    } for vid in sorted(new)]


def straddling_groups(rows: Iterable[Mapping], groups: Mapping[str, str] | None = None) -> list[dict]:
    """Groups whose videos sit in more than one split (``excluded`` rows ignored), for a QC check.

    ``groups`` (video id -> current group key) re-checks stored rows against today's grouping,
    which catches groups joined after their members were assigned.
    """
    by_group: dict[str, dict[str, set]] = defaultdict(lambda: defaultdict(set))
    for r in rows:
        if r.get("split") == EXCLUDED:
            continue
        g = (groups or {}).get(r["video_id"]) or r.get("group_key") or f"vid:{r['video_id']}"
        by_group[g][r["split"]].add(r["video_id"])
    out = []
    for g in sorted(by_group):
        splits = by_group[g]
        if len(splits) > 1:
            out.append({"group_key": g, "splits": sorted(splits),
                        "videos": sum(len(v) for v in splits.values())})
    return out


def split_summary(rows: Iterable[Mapping]) -> dict[str, int]:
    c = Counter(r["split"] for r in rows)
    return {k: c[k] for k in sorted(c)}


def build_candidates(videos: Iterable[Mapping], masklets: Iterable[Mapping],
                     groups: Mapping[str, str]) -> list[dict]:
    """Candidate dicts from accepted video rows (``video_id``, ``video_environment``) and masklet rows.

    ``size_bucket`` is the video's most common ``masklet_size_bucket`` (ties: larger bucket first),
    ``occlusion`` is whether any masklet changes visibility at least once.
    """
    order = {"large": 0, "medium": 1, "small": 2}
    buckets: dict[str, Counter] = defaultdict(Counter)
    occl: dict[str, bool] = defaultdict(bool)
    for m in masklets:
        vid = m["video_id"]
        if m.get("masklet_size_bucket"):
            buckets[vid][m["masklet_size_bucket"]] += 1
        if (m.get("masklet_visibility_changes") or 0) >= 1:
            occl[vid] = True
    out = []
    for v in videos:
        vid = v["video_id"]
        b = buckets.get(vid)
        bucket = min(b, key=lambda k: (-b[k], order.get(k, 9), k)) if b else None
        out.append({
            "video_id": vid,
            "group_key": groups.get(vid, f"vid:{vid}"),
            "size_bucket": bucket,
            "environment": v.get("video_environment"),
            "occlusion": bool(occl.get(vid, False)),
        })
    return out

"""Near-duplicate matching per new video against 10k and 100k earlier videos: ours (vectorised) vs the old
pairwise pure-Python path, measured side by side in the same run on the same inputs.

Each size builds ``N`` earlier ``video_quality`` rows with 8 random 64-bit anchor hashes each (a tenth
of them near copies of others, linked by ``duplicate_of``) and a batch of ``--new`` new videos (half
of them near copies of earlier ones, so groups form). Ours is ``resolve_near_duplicates`` as the
pipeline calls it (building the hash array included, once per batch); the old path is the same
function with the linking step replaced by the previous one: every new video against every earlier
and earlier-in-batch video through ``matches`` (``bin(a ^ b).count("1")`` per pair). The two run in
alternating rounds and must give identical rows. Prints seconds per new video and the paired ratio
(old / ours). The old path at 100k costs ~30+ s per new video; ``--old-new`` keeps its batch small.

    python benchmarks/bench_near_duplicates.py                        # 10k and 100k
    python benchmarks/bench_near_duplicates.py --sizes 10000 --rounds 3
"""

from __future__ import annotations

import argparse
import copy
import random
from datetime import date
from unittest import mock

from _harness import alternate, machine, paired_ratio, print_table

from sav_assets.lib.ingest import near_duplicates as nd
from sav_assets.lib.util import UnionFind

ANCHORS = 8          # QualityThresholds.sample_frames anchors per video
MAX_HAMMING = 10     # QualityThresholds.dup_max_hamming


def old_link(rows: list[dict], prior: list[dict], max_hamming: int) -> UnionFind:
    """The previous linking step: every pair in Python."""
    groups = UnionFind()
    for p in prior:
        groups.find(p["video_id"])
        if p.get("duplicate_of"):
            groups.union(p["video_id"], str(p["duplicate_of"]))
    for i, r in enumerate(rows):
        groups.find(r["video_id"])
        for other in [*prior, *rows[:i]]:
            if nd.matches(r["phash"], list(other.get("phash") or []), max_hamming):
                groups.union(r["video_id"], other["video_id"])
    return groups


def near_copy(hashes: list[str], rng: random.Random) -> list[str]:
    out = []
    for h in hashes:
        v = int(h, 16)
        for b in rng.sample(range(64), rng.randint(0, 8)):
            v ^= 1 << b
        out.append(f"{v:016x}")
    return out


def make_inputs(n_prior: int, n_new: int, seed: int = 0) -> tuple[list[dict], list[dict]]:
    rng = random.Random(seed)
    prior: list[dict] = []
    for i in range(n_prior):
        dup = i > 10 and rng.random() < 0.1
        src = prior[rng.randrange(i)] if dup else None
        prior.append({"video_id": f"p{i:07d}", "batch_id": f"b{i // 1000:04d}",
                      "phash": near_copy(src["phash"], rng) if src else
                      [f"{rng.getrandbits(64):016x}" for _ in range(ANCHORS)],
                      "passed": not dup, "duplicate_of": src["video_id"] if src else None,
                      "short_side": 480, "video_duration": 10.0})
    rows = [{"video_id": f"n{i:04d}", "reasons": [], "short_side": 720, "video_duration": 12.0,
             "phash": near_copy(rng.choice(prior)["phash"], rng) if i % 2 == 0 else
             [f"{rng.getrandbits(64):016x}" for _ in range(ANCHORS)]} for i in range(n_new)]
    return rows, prior


def run_ours(rows, prior):
    r = copy.deepcopy(rows)
    nd.resolve_near_duplicates(r, prior, MAX_HAMMING)
    return r


def run_old(rows, prior):
    r = copy.deepcopy(rows)
    with mock.patch.object(nd, "_link", old_link):
        nd.resolve_near_duplicates(r, prior, MAX_HAMMING)
    return r


def measure_size(n: int, args) -> dict:
    rows, prior = make_inputs(n, args.old_new)
    t = alternate({"old": lambda: run_old(rows, prior), "ours": lambda: run_ours(rows, prior)}, args.rounds)
    assert t["old"].result == t["ours"].result, "the vectorised path must give the old path's rows"
    dups = sum(nd.NEAR_DUPLICATE in r["reasons"] for r in t["ours"].result)
    big_rows, _ = make_inputs(n, args.new, seed=1)
    alone = alternate({"ours": lambda: run_ours(big_rows, prior)}, max(1, args.rounds))["ours"]
    return {"earlier videos": f"{n:,}", "old s/new video": f"{t['old'].median / args.old_new:.3f}",
            "ours s/new video": f"{t['ours'].median / args.old_new:.3f}",
            "ratio old/ours (paired)": f"{paired_ratio(t['old'], t['ours']):.0f}x",
            f"ours s/new video ({args.new}-video batch)": f"{alone.median / args.new:.4f}",
            "duplicates found (same)": dups}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000], help="earlier videos")
    ap.add_argument("--new", type=int, default=50, help="new videos per batch for ours alone")
    ap.add_argument("--old-new", type=int, default=2, help="new videos in the paired (old vs ours) batch")
    ap.add_argument("--rounds", type=int, default=1, help="alternating rounds of the paired comparison")
    args = ap.parse_args(argv)
    out = []
    for n in args.sizes:
        out.append(measure_size(n, args))
        print(out[-1], flush=True)
    print(f"\n{machine()}, {date.today()}, {ANCHORS} anchors/video, max_hamming {MAX_HAMMING}, "
          f"paired batch of {args.old_new} new videos, {args.rounds} round(s)\n")
    print_table(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

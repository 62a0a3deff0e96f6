"""The vectorised near-duplicate matching gives exactly what the old pure-Python pairwise matching gave.

``_reference`` below is the previous implementation (every pair, ``bin(a ^ b).count("1")``), kept in
the test only: same groups, same canonical, same ``duplicate_of`` and reasons, on random inputs (near
copies, different anchor counts, missing hashes, earlier groups linked by ``duplicate_of``) and on
crafted ones (a chain that links only through this batch, the one-way half rule, thresholds).
"""

from __future__ import annotations

import copy
import random

import pytest

from sav_assets.lib.ingest.near_duplicates import NEAR_DUPLICATE, resolve_near_duplicates
from sav_assets.lib.util import UnionFind


def _hamming(a: str, b: str) -> int:
    return bin(int(a, 16) ^ int(b, 16)).count("1")


def _is_dup(hashes, other, max_hamming):
    if not hashes or not other:
        return False
    hits = sum(1 for h in hashes if min(_hamming(h, o) for o in other) <= max_hamming)
    return hits * 2 >= len(hashes)


def _rank(row):
    return (-(row.get("short_side") or 0), -(row.get("video_duration") or 0.0), str(row.get("batch_id") or ""),
            str(row["video_id"]))


def _reference(rows, prior, max_hamming):
    """The old implementation, verbatim in behaviour (quadratic, pure Python)."""
    own = {r["video_id"] for r in rows}
    prior = [p for p in prior if p["video_id"] not in own]
    measured = [r for r in rows if r.get("phash")]
    if max_hamming < 0 or not measured:
        return
    groups = UnionFind()
    for p in prior:
        groups.find(p["video_id"])
        if p.get("duplicate_of"):
            groups.union(p["video_id"], str(p["duplicate_of"]))
    for i, r in enumerate(measured):
        groups.find(r["video_id"])
        for other in [*prior, *measured[:i]]:
            o = list(other.get("phash") or [])
            if _is_dup(r["phash"], o, max_hamming) or _is_dup(o, r["phash"], max_hamming):
                groups.union(r["video_id"], other["video_id"])
    members = {}
    for r in [*prior, *measured]:
        members.setdefault(groups.find(r["video_id"]), []).append(r)
    prior_ids = {p["video_id"] for p in prior}
    canon = {}
    for root, group in members.items():
        if len(group) > 1:
            kept = [m for m in group if m["video_id"] in prior_ids and m.get("passed")]
            elig = [m for m in group if m["video_id"] not in prior_ids and not m["reasons"]]
            canon[root] = min(kept, key=_rank) if kept else (min(elig, key=_rank) if elig else None)
    for r in measured:
        c = canon.get(groups.find(r["video_id"]))
        if c is not None and c is not r:
            r["duplicate_of"] = c["video_id"]
            r["reasons"].append(NEAR_DUPLICATE)


def _flip(h: str, rng: random.Random, bits: int) -> str:
    v = int(h, 16)
    for b in rng.sample(range(64), bits):
        v ^= 1 << b
    return f"{v:016x}"


def _both(rows, prior, max_hamming):
    want, got = copy.deepcopy(rows), copy.deepcopy(rows)
    _reference(want, copy.deepcopy(prior), max_hamming)
    resolve_near_duplicates(got, copy.deepcopy(prior), max_hamming)
    return want, got


def _random_case(seed: int, n_prior: int, n_new: int):
    rng = random.Random(seed)
    bases = [[f"{rng.getrandbits(64):016x}" for _ in range(rng.randint(1, 6))] for _ in range(max(3, n_prior // 4))]

    def hashes():
        u = rng.random()
        if u < 0.08:
            return rng.choice([[], None])
        base = rng.choice(bases)
        if u < 0.7:         # a near copy: some anchors flipped by a few bits, some replaced, some dropped
            hs = [_flip(h, rng, rng.randint(0, 14)) if rng.random() < 0.8 else f"{rng.getrandbits(64):016x}"
                  for h in base]
            return hs[: rng.randint(1, len(hs))] if rng.random() < 0.3 else hs
        return [f"{rng.getrandbits(64):016x}" for _ in range(rng.randint(1, 6))]

    prior = []
    for i in range(n_prior):
        dup_of = prior[rng.randrange(i)]["video_id"] if i and rng.random() < 0.15 else None
        prior.append({"video_id": f"p{i:03d}", "batch_id": f"b{rng.randint(0, 3)}", "phash": hashes(),
                      "passed": rng.random() < 0.6, "duplicate_of": dup_of,
                      "short_side": rng.choice([None, 360, 480, 720]), "video_duration": rng.choice([None, 5.0, 9.5])})
    rows = [{"video_id": f"n{i:03d}", "phash": hashes(), "reasons": [] if rng.random() < 0.7 else ["blurry"],
             "short_side": rng.choice([360, 480, 720, 1080]), "video_duration": rng.choice([4.0, 8.0, 12.0]),
             "duplicate_of": None} for i in range(n_new)]
    if n_prior and rng.random() < 0.5:          # a re-run: one of this batch's rows also among prior
        prior.append(dict(copy.deepcopy(rows[0]), batch_id="b9", passed=True))
    return rows, prior


@pytest.mark.parametrize("seed", range(40))
def test_same_as_reference_random(seed):
    rows, prior = _random_case(seed, n_prior=random.Random(seed).randint(0, 60), n_new=random.Random(-seed).randint(1, 25))
    for max_hamming in (-1, 0, 6, 10, 20):
        want, got = _both(rows, prior, max_hamming)
        assert got == want, (seed, max_hamming)


def test_random_cases_are_not_trivial():
    """The random cases really make duplicate groups (else the equivalence proves little)."""
    dups = 0
    for seed in range(40):
        rows, prior = _random_case(seed, 40, 20)
        want, _ = _both(rows, prior, 10)
        dups += sum(NEAR_DUPLICATE in r["reasons"] for r in want)
    assert dups > 100


def test_crafted_chain_and_one_way_rule():
    a = "0000000000000000"
    near = "000000000000003f"           # 6 bits from a
    far = "ffffffffffff0000"
    prior = [{"video_id": "old", "batch_id": "b0", "phash": [a, far], "passed": True, "duplicate_of": None,
              "short_side": 480, "video_duration": 5.0},
             {"video_id": "old_dup", "batch_id": "b0", "phash": [far], "passed": False, "duplicate_of": "old",
              "short_side": 480, "video_duration": 5.0},
             {"video_id": "lost", "batch_id": "b1", "phash": [], "passed": True, "duplicate_of": None}]
    rows = [
        # one way only: 1 of its 3 hashes matches 'old' (not half), but 'old' has 1 of 2 within reach (half)
        {"video_id": "x", "phash": [near, "123456789abcdef0", "0fedcba987654321"], "reasons": [],
         "short_side": 1080, "video_duration": 9.0},
        # links to x only (not to old): joins old's group through x
        {"video_id": "y", "phash": ["123456789abcdef1", "0fedcba987654320"], "reasons": [], "short_side": 2160,
         "video_duration": 9.0},
        {"video_id": "z", "phash": ["aaaaaaaaaaaaaaaa"], "reasons": [], "short_side": 720, "video_duration": 3.0},
        {"video_id": "z2", "phash": ["aaaaaaaaaaaaaaab"], "reasons": ["blurry"], "short_side": 1080,
         "video_duration": 3.0},
        {"video_id": "nohash", "phash": None, "reasons": [], "short_side": 720, "video_duration": 3.0},
    ]
    for mh in (5, 6, 10):
        want, got = _both(rows, prior, mh)
        assert got == want, mh
    _, got = _both(rows, prior, 6)
    by = {r["video_id"]: r for r in got}
    assert by["x"]["duplicate_of"] == "old" and by["y"]["duplicate_of"] == "old"
    assert by["z2"]["duplicate_of"] == "z" and by["z2"]["reasons"] == ["blurry", NEAR_DUPLICATE]
    assert by["z"].get("duplicate_of") is None and by["z"]["reasons"] == []
    assert "duplicate_of" not in by["nohash"] and by["nohash"]["reasons"] == []
    # every group keeps a member: each duplicate_of names a kept video (prior passed, or in-batch without reasons)
    kept = {"old"} | {r["video_id"] for r in got if not r["reasons"]}
    assert {r["duplicate_of"] for r in got if r.get("duplicate_of")} <= kept


def test_longer_hashes_than_64_bits():
    rows = [{"video_id": "a", "phash": ["f" * 20], "reasons": [], "short_side": 480, "video_duration": 1.0},
            {"video_id": "b", "phash": ["f" * 19 + "0"], "reasons": [], "short_side": 720, "video_duration": 1.0},
            {"video_id": "c", "phash": ["0" * 4 + "f" * 16], "reasons": [], "short_side": 720, "video_duration": 1.0}]
    for mh in (3, 4, 16):
        want, got = _both(rows, [], mh)
        assert got == want, mh


def test_chunked_distance_matches_one_pass():
    import numpy as np

    from sav_assets.lib.ingest.near_duplicates import _within_64

    rng = np.random.default_rng(3)
    a = rng.integers(0, 2**63, 8, dtype=np.uint64)
    b = np.concatenate([rng.integers(0, 2**63, 40_000, dtype=np.uint64), a ^ np.uint64(0b1011)])
    want = np.bitwise_count(a[:, None] ^ b[None, :]) <= 10
    for chunk in (7, 16384, 100_000):
        assert np.array_equal(_within_64(a, b, 10, chunk=chunk), want)


def test_same_as_reference_across_chunks():
    """More earlier hashes than one chunk (16,384): matches in every chunk are found."""
    rows, prior = _random_case(123, n_prior=6000, n_new=20)
    assert sum(len(p["phash"] or []) for p in prior) > 16384
    want, got = _both(rows, prior, 10)
    assert got == want and any(NEAR_DUPLICATE in r["reasons"] for r in got)

"""Shard writing and loading throughput, each against its baseline, on the real videos in shared/data.

1. Sample building (decode the annotated frames, JPEG-encode, RLE per masklet): samples/s, for context.
2. Shard write path (``shards.write_samples``: webdataset TarWriter, SHA-256 on a helper thread,
   fsync, atomic publish, manifest last) vs a raw copy of the same payload bytes into the lake (one
   temp file, fsync, ``Lake.put_file``): MB/s over the payload and the ratio (target >= 0.8); also
   against the floor, one atomic write of the same bytes (``Lake.put_bytes``).
3. Loading: ``ShardDataset`` (JPEG decode + RLE decode to T x N x H x W masks) vs plain
   ``wds.WebDataset(...).decode("rgb8")`` (JPEG decode only): samples/s and the ratio.

Masks are synthetic (moving ellipses, 3 masklets per video, annotated every 4th frame) because the
SA-V example annotations belong to a video that is not in shared/data; frames are the real videos'.

    python benchmarks/bench_shards.py [--repeat-samples 8] [--window 8]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from datetime import date
from pathlib import Path

import numpy as np
from _harness import Timings, alternate, machine, measure, paired_ratio, print_table

from sav_assets.lib.dataset.shards import ShardConfig, build_samples, write_samples
from sav_assets.lib.sav import rle
from sav_assets.lib.store.lake import Lake
from sav_assets.lib.video.images import iter_frames

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos"


def synthetic_masklets(vid: str, path: str, n_obj: int = 3, every: int = 4) -> list[dict]:
    import av

    with av.open(path) as c:
        s = c.streams.video[0]
        n, h, w = s.frames, s.codec_context.height, s.codec_context.width
    if not n:
        n = sum(1 for _ in iter_frames(path, range(100_000)))
    yy, xx = np.mgrid[0:h, 0:w]
    rows = []
    for mid in range(n_obj):
        for ann, f in enumerate(range(0, n, every)):
            cy = h * (0.3 + 0.4 * np.sin(0.05 * f + mid))
            cx = w * (0.2 + 0.6 * ((f / max(n, 1) + mid / n_obj) % 1))
            m = ((yy - cy) / (0.08 * h * (mid + 1))) ** 2 + ((xx - cx) / (0.06 * w * (mid + 1))) ** 2 < 1
            r = rle.encode(m)
            rows.append({"video_id": vid, "masklet_id": mid, "masklet_type": "auto", "ann_idx": ann,
                         "frame_idx": f, "size": r["size"], "counts": r["counts"], "visible": bool(m.any())})
    return rows


def payload_bytes(samples: list[dict]) -> int:
    return sum(len(v) for s in samples for k, v in s.items() if not k.startswith("_"))


def raw_copy(lake: Lake, rel: str, samples: list[dict], tmp_dir: str) -> None:
    """The baseline: the same bytes, concatenated into one temp file, fsync'd, published the same way."""
    fd, tmp = tempfile.mkstemp(dir=tmp_dir)
    with os.fdopen(fd, "wb") as fh:
        for s in samples:
            for k in sorted(s):
                if not k.startswith("_"):
                    fh.write(s[k])
        fh.flush()
        os.fsync(fh.fileno())
    lake.put_file(rel, tmp)
    os.unlink(tmp)


def take(items, n: int) -> tuple[int, object]:
    """(how many, the last) of the first ``n`` items."""
    got, last = 0, None
    for item in items:
        got, last = got + 1, item
        if got >= n:
            break
    return got, last


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--window", type=int, default=8)
    ap.add_argument("--repeat-samples", type=int, default=8, help="replicate the samples to get ~100s of MB")
    ap.add_argument("--rounds", type=int, default=7, help="alternating write/copy rounds (median)")
    ap.add_argument("--work", default=None, help="scratch folder (default: a temp dir)")
    args = ap.parse_args(argv)

    work = Path(args.work or tempfile.mkdtemp(prefix="bench-shards-"))
    lake = Lake(work / "lake")
    videos = sorted(DATA.glob("*.mp4"))
    frames = {p.stem: synthetic_masklets(p.stem, str(p)) for p in videos}
    paths = {p.stem: str(p) for p in videos}
    cfg = ShardConfig(window=args.window, shard_max_bytes=64_000_000)

    build = measure(lambda: list(build_samples([{"video_id": v} for v in paths], frames, None, paths, cfg)), 1)
    base_samples, t_build = build.result, build.best
    samples = [dict(s, __key__=f"{s['__key__']}_r{r}") for r in range(args.repeat_samples) for s in base_samples]
    mb = payload_bytes(samples) / 1e6

    import webdataset  # noqa: F401  - imports torch (seconds): keep it out of the timed rounds

    write_samples(lake, "bench/warmup", samples[:2], cfg, tmp_dir=str(work))
    rounds = Timings()
    res = None
    for i in range(args.rounds):
        with rounds.time("ours"):
            res = write_samples(lake, f"bench/shards-{i}", samples, cfg, tmp_dir=str(work))
        with rounds.time("raw"):
            raw_copy(lake, f"bench/raw-{i}.bin", samples, str(work))
        with rounds.time("put"):
            lake.put_bytes(f"bench/put-{i}.bin", b"".join(v for s in samples for k, v in sorted(s.items())
                                                         if not k.startswith("_")))
        for rel in lake.list("bench"):                 # keep the page cache / disk state comparable
            if rel.startswith((f"bench/shards-{i}/", f"bench/raw-{i}", f"bench/put-{i}")) and i:
                lake.delete(rel)
    ours_mbs, raw_mbs = mb / rounds["ours"].median, mb / rounds["raw"].median

    import webdataset as wds

    from sav_assets.lib.dataset.loader import ShardDataset

    urls = [str(lake.local_path(f"bench/shards-0/{s['shard']}")) for s in res["manifest"]["shards"]]
    n_load = len(base_samples) * 2                      # enough for a stable rate, fast to run
    loads = alternate({"ours": lambda: take(ShardDataset(urls), n_load),
                       "plain": lambda: take(wds.WebDataset(urls, shardshuffle=False).decode("rgb8"), n_load)}, 1)
    (got, last), (got_b, _) = loads["ours"].result, loads["plain"].result
    t_loader, t_plain = loads["ours"].best, loads["plain"].best
    shape = tuple(last["masks"].shape)

    print(f"\n## Shard benchmark ({date.today()}, {machine()})\n")
    print(f"{len(videos)} real videos ({', '.join(p.name for p in videos)}), window {cfg.window}, "
          f"{len(base_samples)} samples x {args.repeat_samples} = {len(samples)} samples, "
          f"{mb:.0f} MB payload, {res['shards']} shards; masks per sample {shape} (T, N, H, W)\n")
    # paired: each round times ours and the raw copy back to back
    ratio = paired_ratio(rounds["raw"], rounds["ours"])
    ratio_put = paired_ratio(rounds["put"], rounds["ours"])
    put_mbs = mb / rounds["put"].median
    lr, pr = got / t_loader, got_b / t_plain
    cols = ["measurement", "ours (median)", "baseline (median)", "ratio (median of paired rounds)", "target"]
    print_table([dict(zip(cols, r, strict=True)) for r in [
        ("shard write (tar + sha256 + fsync + publish + manifest) vs raw copy of the same bytes",
         f"{ours_mbs:.0f} MB/s", f"{raw_mbs:.0f} MB/s", f"{ratio:.2f}",
         f">= 0.8 {'pass' if ratio >= 0.8 else 'FAIL'}"),
        ("same, vs one atomic write of the same bytes (`Lake.put_bytes`: temp beside target, fsync, rename)",
         f"{ours_mbs:.0f} MB/s", f"{put_mbs:.0f} MB/s", f"{ratio_put:.2f}", "-"),
        ("loader: ShardDataset (JPEG + RLE decode) vs wds.WebDataset.decode('rgb8') (JPEG only)",
         f"{lr:.1f} samples/s", f"{pr:.1f} samples/s", f"{lr / pr:.2f}", "-"),
        (f"sample building (decode + JPEG q{cfg.jpeg_quality} + RLE), single process",
         f"{len(base_samples) / t_build:.1f} samples/s", "-", "-", "-"),
    ]], cols)
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ratio >= 0.8 else 1


if __name__ == "__main__":
    raise SystemExit(main())

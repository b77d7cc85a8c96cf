"""Near-duplicate search over 64-bit pHashes: the multi-index hash join against the old band scan.

    nice python bench/dedup.py [--n1 1000000] [--n10 10000000] [--radius 4] [--pairs 1000]

Synthetic codes: uniform random 64-bit pHashes with ``--pairs`` planted near duplicates at
distance 1..radius. The old scan (the pure-Python ``near_duplicates`` of keep.py before the
change, reproduced below) and :func:`lumos.curation.dedup.near_duplicate_pairs` run on the
same 1 M codes; the new one then runs alone on 10 M. Recall: planted pairs found / planted.
Last line: ``RESULT speedup_1m=<x> seconds_10m=<s> recall=<r>``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from lumos.curation.dedup import near_duplicate_pairs


def band_scan(items: list[tuple[str, int]], max_distance: int) -> dict[str, str]:
    """The old keep.py search: (r + 1) bands, Python dict buckets, greedy in item order."""
    bands = max_distance + 1
    width = -(-64 // bands)
    buckets: list[dict[int, list[tuple[str, int]]]] = [{} for _ in range(bands)]
    dupes: dict[str, str] = {}
    for uid, h in items:
        match = None
        for b in range(bands):
            band = (h >> (b * width)) & ((1 << width) - 1)
            for other_uid, other in buckets[b].get(band, ()):
                if (h ^ other).bit_count() <= max_distance:
                    match = other_uid
                    break
            if match:
                break
        if match:
            dupes[uid] = match
            continue
        for b in range(bands):
            buckets[b].setdefault((h >> (b * width)) & ((1 << width) - 1), []).append((uid, h))
    return dupes


def synthetic(n: int, pairs: int, radius: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n distinct codes whose last ``pairs`` are copies of random earlier ones with 1..radius
    flipped bits; returns (codes, planted (original, copy) index pairs)."""
    rng = np.random.default_rng(seed)
    codes = np.unique(rng.integers(0, 2**64 - 1, n + n // 100, dtype=np.uint64, endpoint=True))
    codes = rng.permutation(codes)[:n]
    originals = rng.choice(n - pairs, pairs, replace=False)
    copies = np.arange(n - pairs, n)
    for o, c in zip(originals, copies):
        bits = rng.choice(64, int(rng.integers(1, radius + 1)), replace=False)
        codes[c] = codes[o] ^ np.uint64(sum(1 << int(b) for b in bits))
    return codes, np.stack([originals, copies], 1)


def recall(found: tuple[np.ndarray, np.ndarray], planted: np.ndarray, n: int) -> float:
    got = set((found[0] * n + found[1]).tolist())
    lo, hi = planted.min(1), planted.max(1)
    return float(np.mean([int(a) * n + int(b) in got for a, b in zip(lo, hi)]))


def timed_join(codes: np.ndarray, planted: np.ndarray, r: int) -> tuple[float, float]:
    """Wall seconds and recall of the multi-index join on ``codes`` (printed as it goes)."""
    t, cpu = time.perf_counter(), time.process_time()
    found = near_duplicate_pairs(codes, r)
    seconds = time.perf_counter() - t
    rec = recall(found, planted, len(codes))
    print(f"multi-index join, {len(codes):,} codes: {seconds:.1f} s (cpu {time.process_time() - cpu:.1f} s), "
          f"{len(found[0])} pairs, recall {rec:.3f}", flush=True)
    return seconds, rec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n1", type=int, default=1_000_000)
    ap.add_argument("--n10", type=int, default=10_000_000)
    ap.add_argument("--radius", type=int, default=4)
    ap.add_argument("--pairs", type=int, default=1000)
    ap.add_argument("--old-seconds", type=float, default=None,
                    help="the old scan's wall seconds at --n1 from an earlier run (same seed): skip rerunning it")
    args = ap.parse_args()
    r = args.radius

    codes, planted = synthetic(args.n1, args.pairs, r, seed=0)
    new_1m, rec_1m = timed_join(codes, planted, r)

    if args.old_seconds is None:
        items = [(f"{i:09d}", int(h)) for i, h in enumerate(codes)]
        t, cpu = time.perf_counter(), time.process_time()
        dupes = band_scan(items, r)
        old_1m = time.perf_counter() - t
        old_found = {int(k) for k in dupes}
        old_rec = float(np.mean([int(c) in old_found for c in planted.max(1)]))
        print(f"old band scan, {len(codes):,} codes: {old_1m:.1f} s (cpu {time.process_time() - cpu:.1f} s), "
              f"{len(dupes)} duplicates, recall {old_rec:.3f}", flush=True)
        del items, dupes
    else:
        old_1m = args.old_seconds
        print(f"old band scan, {len(codes):,} codes: {old_1m:.1f} s (given, from an earlier run)")

    codes, planted = synthetic(args.n10, args.pairs, r, seed=1)
    new_10m, rec_10m = timed_join(codes, planted, r)
    print(f"RESULT speedup_1m={old_1m / new_1m:.1f} seconds_10m={new_10m:.1f} recall={min(rec_1m, rec_10m):.3f}")


if __name__ == "__main__":
    main()

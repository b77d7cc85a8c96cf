"""Near-duplicate pairs among 64-bit pHashes: a multi-index hash join with exact recall.

Split the 64 bits into ``m = radius // 3 + 1`` bands. Two codes within Hamming ``radius`` differ
in at most ``radius // m <= 2`` bits of some band (pigeonhole). In that band each code is
expanded into its "1-flip ball" (the band itself and the band with each single bit flipped):
two bands at distance <= 2 share a member of their balls (x ^ e1 == y ^ e2), so an exact
equality join of the balls finds every such pair, and nothing at distance > 2 in every band.
Candidates are then verified on all 64 bits. With r = 4 that is 2 bands of 32 bits and 33 keys
per band per code; buckets of a 32-bit key hold almost only true pairs, unlike the 13-bit bands
of a plain (r + 1)-band split, whose buckets hold N / 8192 codes each.

The join is a sort: keys are packed with the code's index into one uint64 and sorted, equal keys
are neighbours. Memory is bounded by splitting the key space into partitions by its top bits.
Identical codes must be collapsed by the caller first (``unique_codes``), so no bucket is large
unless the data has dense clusters of distinct codes.
"""

from __future__ import annotations

import numpy as np

CODE_BITS = 64


def bands_for(radius: int) -> int:
    """Bands such that a pair within ``radius`` has a band differing in <= 2 bits."""
    if not 0 <= radius < CODE_BITS:
        raise ValueError(f"radius must be in [0, {CODE_BITS}), got {radius}")
    return radius // 3 + 1


def _band_layout(m: int) -> list[tuple[int, int]]:
    """(shift, width) of each band; widths differ by at most one bit."""
    widths = [CODE_BITS // m + (1 if b < CODE_BITS % m else 0) for b in range(m)]
    shifts = np.cumsum([0, *widths[:-1]]).tolist()
    return list(zip(shifts, widths))


def _sorted_keys(keys: np.ndarray, ids: np.ndarray, idx_bits: int, key_bits: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """``keys`` and ``ids`` sorted by key: one packed uint64 sort when both fit in 64 bits."""
    if key_bits + idx_bits <= 64:
        packed = np.left_shift(keys, np.uint64(idx_bits), out=keys)
        np.bitwise_or(packed, ids, out=packed)
        packed.sort()
        return packed >> np.uint64(idx_bits), packed & np.uint64((1 << idx_bits) - 1)
    order = np.argsort(keys, kind="stable")
    return keys[order], ids[order]


def _pairs_in_sorted(keys: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All (i, j) of code indices that share a key (``keys`` sorted, ``ids`` alongside)."""
    index = ids.astype(np.int64)
    left, right = [], []
    k = 1
    while k < len(keys):  # neighbours k apart inside one run of equal keys
        same = np.flatnonzero(keys[k:] == keys[:-k])
        if not len(same):
            break
        left.append(index[same])
        right.append(index[same + k])
        k += 1
    if not left:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(left), np.concatenate(right)


def near_duplicate_pairs(codes: np.ndarray, radius: int, partition_bits: int | None = None
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Every pair (i < j) of distinct ``codes`` (uint64) within Hamming ``radius``, once each.

    ``codes`` should hold no repeated value (see :func:`unique_codes`); repeats are still found
    (distance 0) but make buckets quadratic. ``partition_bits`` splits each band's key space in
    ``2**partition_bits`` passes to bound memory (default: about 4 M keys per pass, sorts that stay in cache).
    """
    codes = np.ascontiguousarray(codes, dtype=np.uint64)
    n = len(codes)
    if n < 2:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    idx_bits = max(1, int(n - 1).bit_length())
    layout = _band_layout(bands_for(radius))
    found_i, found_j = [], []
    for shift, width in layout:
        band = (codes >> np.uint64(shift)) & np.uint64((1 << width) - 1 if width < 64 else 2**64 - 1)
        flips = [np.uint64(0)] + [np.uint64(1 << b) for b in range(width)]
        p = partition_bits if partition_bits is not None else max(
            0, int(np.ceil(np.log2(max(1.0, n * len(flips) / 4e6)))))
        p = min(p, width)
        low = np.uint64((1 << (width - p)) - 1 if width - p < 64 else 2**64 - 1)
        # Codes grouped by the top p bits of their band: a flip below those bits keeps a code in
        # its group, a flip of one of them moves the whole group to another partition.
        top = width - p
        group = (band >> np.uint64(top)).astype(np.int64) if p else np.zeros(n, np.int64)
        order = np.argsort(group, kind="stable").astype(np.uint64)
        bounds = np.searchsorted(group[order.astype(np.int64)], np.arange((1 << p) + 1))
        for part in range(1 << p):
            keys, members = [], []
            for b, flip in enumerate(flips):
                src = part ^ (1 << (b - 1 - top)) if b - 1 >= top else part  # the group landing here
                member = order[bounds[src]: bounds[src + 1]]
                key = band[member.astype(np.int64)] ^ flip
                np.bitwise_and(key, low, out=key)  # the partition fixes the top bits
                keys.append(key)
                members.append(member)
            keys, members = _sorted_keys(np.concatenate(keys), np.concatenate(members), idx_bits, width - p)
            i, j = _pairs_in_sorted(keys, members)
            del keys, members
            lo, hi = np.minimum(i, j), np.maximum(i, j)
            ok = (lo != hi) & (np.bitwise_count(codes[lo] ^ codes[hi]) <= radius)
            found_i.append(lo[ok])
            found_j.append(hi[ok])
    pair = np.unique(np.concatenate(found_i) * n + np.concatenate(found_j))
    return pair // n, pair % n


def unique_codes(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct codes, for each input its index into them): exact duplicates collapsed."""
    return np.unique(np.asarray(codes, dtype=np.uint64), return_inverse=True)


def losers(pairs: tuple[np.ndarray, np.ndarray], rank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(loser, winner) per dropped item: a code is dropped when a better-ranked (lower ``rank``)
    code lies within the radius; its winner is the best such neighbour. Set-based: the result
    does not depend on the order of the pairs."""
    i, j = pairs
    better_i = rank[i] < rank[j]
    loser = np.where(better_i, j, i)
    winner = np.where(better_i, i, j)
    order = np.lexsort((rank[winner], loser))  # per loser, its best winner first
    loser, winner = loser[order], winner[order]
    first = np.ones(len(loser), bool)
    first[1:] = loser[1:] != loser[:-1]
    return loser[first], winner[first]

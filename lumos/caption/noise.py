"""Noisy text-image pairs (Fig. 2a, Fig. S1): a seeded share of the captions replaced by wrong
ones, each the caption pair (raw and long) of another image of the set, so the text stays
fluent and in-distribution but no longer describes its image."""

from __future__ import annotations

import random


def noisy_pairing(n: int, ratio: float, seed: int) -> list[int]:
    """For each of ``n`` samples, whose captions it takes: itself, or (for ``round(ratio * n)``
    seeded samples) another sample's: the chosen samples pass their captions round a shuffled
    cycle, so every chosen one gets a caption that is not its own."""
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"caption noise must be within [0, 1], got {ratio}")
    source = list(range(n))
    k = round(ratio * n)
    if k == 0 or n < 2:
        return source
    chosen = random.Random(seed).sample(range(n), max(k, 2))  # a cycle needs two
    for a, b in zip(chosen, chosen[1:] + chosen[:1]):
        source[a] = b
    return source

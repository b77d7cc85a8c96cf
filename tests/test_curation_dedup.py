"""Near-duplicate search (exact recall against brute force), the set-based survivor rule, EXIF
orientation and the paper profile's G.1 rules per source."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest
from PIL import Image

from lumos.curation.dedup import bands_for, losers, near_duplicate_pairs
from lumos.curation.mixture import near_duplicate_losers
from lumos.curation.score import decode_bounded
from lumos.data.extract import load_images


def _codes(seed: int, n: int = 300) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)
    copies = base[: n // 2].copy()
    for k in range(len(copies)):  # copies with 1..7 flipped bits
        for b in rng.choice(64, 1 + k % 7, replace=False):
            copies[k] ^= np.uint64(1 << int(b))
    return np.unique(np.concatenate([base, copies]))


@pytest.mark.parametrize("radius", [0, 1, 2, 3, 4, 5, 6, 8])
def test_pairs_match_brute_force(radius):
    codes = _codes(radius)
    dist = np.bitwise_count(codes[:, None] ^ codes[None, :])
    expected = set(zip(*map(np.ndarray.tolist, np.nonzero(np.triu(dist <= radius, 1)))))
    for partition_bits in (None, 3):
        i, j = near_duplicate_pairs(codes, radius, partition_bits)
        assert set(zip(i.tolist(), j.tolist())) == expected
        assert len(i) == len(expected)  # each pair once
    assert radius < 2 or expected  # the data holds pairs at the radius


def test_band_count_grants_recall():
    assert [bands_for(r) for r in (0, 2, 3, 4, 5, 6)] == [1, 1, 2, 2, 2, 3]
    with pytest.raises(ValueError, match="radius"):
        bands_for(64)


def test_losers_are_set_based_and_keep_the_best_of_each_group():
    rank = np.array([3, 0, 2, 1])  # item 1 is best, then 3, 2, 0
    pairs = (np.array([0, 0, 2]), np.array([1, 2, 3]))  # 0~1, 0~2, 2~3
    loser, winner = losers(pairs, rank)
    assert dict(zip(loser.tolist(), winner.tolist())) == {0: 1, 2: 3}
    flipped = losers((pairs[1][::-1], pairs[0][::-1]), rank)
    assert dict(zip(*map(np.ndarray.tolist, flipped))) == {0: 1, 2: 3}


def test_exact_copies_lose_to_the_best_listed_copy():
    codes = np.array([5, 7, 5, 1 << 40, 5 ^ 1], dtype=np.uint64)  # listed best first
    loser, winner = near_duplicate_losers(codes, 1)
    assert dict(zip(loser.tolist(), winner.tolist())) == {2: 0, 4: 0, 1: 0}
    loser, _ = near_duplicate_losers(codes, 0)
    assert loser.tolist() == [2]


def _sideways_jpeg(w: int, h: int) -> bytes:
    """A w x h upright image stored turned (h x w pixels) with EXIF Orientation 6."""
    upright = Image.new("RGB", (w, h), "white")
    upright.paste((255, 0, 0), (0, 0, w // 4, h))  # red on the left when upright
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    upright.transpose(Image.Transpose.ROTATE_90).save(buf, format="JPEG", exif=exif)
    return buf.getvalue()


def test_exif_orientation_applies_at_scoring_and_at_every_later_decode(tmp_path):
    data = _sideways_jpeg(90, 60)
    assert Image.open(io.BytesIO(data)).size == (60, 90)  # as stored
    img, w, h, err = decode_bounded(data, 10**6)
    assert (w, h, img.size, err) == (90, 60, (90, 60), None)
    assert img.getpixel((5, 30))[0] > 200 and img.getpixel((85, 30))[1] > 200  # red left
    shard = tmp_path / "s.tar"
    with tarfile.open(shard, "w") as tar:
        info = tarfile.TarInfo("k.jpg")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    (loaded,) = load_images(str(shard), [("k", "k.jpg")])
    assert loaded.size == (90, 60) and loaded.getpixel((5, 30))[0] > 200


def test_paper_profile_writes_g1_per_source(params):
    cur = params.profiles["paper"].curation
    rules = {s.name: (cur.select_rules(s), cur.keep_rules(s)) for s in cur.sources}
    for name in ("laion", "coyo"):  # resolution > 512 and aesthetic > 5.0
        sel, keep = rules[name]
        assert (sel.min_side, sel.aesthetic_min, keep.min_side, keep.aesthetic_min) == (512, 5.0, 512, 5.0)
    for name in ("sam", "journeydb", "imagenet"):  # taken as they are
        sel, keep = rules[name]
        assert (sel.min_side, sel.aesthetic_min, keep.min_side, keep.aesthetic_min) == (None, None, None, None)
        assert sel.punsafe_max == cur.select.punsafe_max  # keys left out keep the profile's value
    assert {s.name: s.quota for s in cur.sources} == {
        "laion": 120_000_000, "coyo": 55_000_000, "sam": 10_000_000, "journeydb": 4_000_000,
        "imagenet": 1_000_000}
    assert cur.dedup.hamming_max == 4

"""The mini-world's extra sources, so the tiny profile curates a G.1-style mixture.

Written beside the LAION-style part (part ``sources``, after ``images``)::

    imagenet/train/<wnid>/<wnid>_<n>.JPEG   small images (short side <= 512), ImageNet's layout;
                                            a few stored sideways with EXIF Orientation 6
    imagenet/index.parquet                  path (served URL), label, width, height (upright)
    coyo/images/<id>.jpg                    COYO's images: own scenes and near duplicates
    coyo/metadata.parquet                   COYO-700M schema: id, url, text, width, height,
                                            aesthetic_score_laion_v2, nsfw_score_opennsfw2,
                                            watermark_score
    coyo/truth.parquet                      id, url, kind (ok | near_duplicate), duplicate_of
                                            (the LAION URL it copies), true width and height

COYO's near duplicates are LAION images resized (half larger, half smaller) and re-encoded at
another JPEG quality: only copies whose pHash stays within 1 bit of the original's are planted, so only a
cross-source dedup can find them.
"""

from __future__ import annotations

import io
from pathlib import Path

import imagehash
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from lumos.config import MiniWorld
from lumos.demo.scenes import caption, encode, render, sample_scene

COYO_SCHEMA = pa.schema([
    ("id", pa.int64()), ("url", pa.string()), ("text", pa.string()), ("width", pa.int64()),
    ("height", pa.int64()), ("aesthetic_score_laion_v2", pa.float32()),
    ("nsfw_score_opennsfw2", pa.float32()), ("watermark_score", pa.float32()),
])
COYO_TRUTH_SCHEMA = pa.schema([
    ("id", pa.int64()), ("url", pa.string()), ("kind", pa.string()), ("duplicate_of", pa.string()),
    ("true_width", pa.int64()), ("true_height", pa.int64()),
])
IMAGENET_SCHEMA = pa.schema([
    ("path", pa.string()), ("label", pa.string()), ("width", pa.int64()), ("height", pa.int64()),
])
WNIDS = ("n01440764", "n02102040", "n02979186", "n03000684")  # four ImageNet-1K synsets
EXIF_ORIENTATION = 0x0112
SIDEWAYS = 6  # EXIF: the stored pixels must be turned 90 degrees clockwise to be upright


def _stream(seed: int, *tags: int) -> np.random.Generator:
    return np.random.default_rng([seed, *tags])


def _jpeg(img: Image.Image, quality: int, sideways: bool = False) -> bytes:
    buf = io.BytesIO()
    if sideways:  # stored turned a quarter left; Orientation 6 tells viewers to turn it back
        exif = Image.Exif()
        exif[EXIF_ORIENTATION] = SIDEWAYS
        img.transpose(Image.Transpose.ROTATE_90).save(buf, format="JPEG", quality=quality, exif=exif)
    else:
        img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def build_imagenet(cfg: MiniWorld, root: Path, base_url: str) -> None:
    rows = []
    for i in range(cfg.mixture.imagenet):
        rng = _stream(cfg.seed, 40, i)
        scene = sample_scene(rng, 96, 448, cfg.max_shapes)
        wnid = WNIDS[i % len(WNIDS)]
        rel = f"imagenet/train/{wnid}/{wnid}_{i:05d}.JPEG"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(_jpeg(render(scene), 90, sideways=i % 8 == 3))
        rows.append({"path": f"{base_url}/{rel}", "label": caption(scene),
                     "width": scene.width, "height": scene.height})
    (root / "imagenet").mkdir(exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=IMAGENET_SCHEMA), root / "imagenet" / "index.parquet")


def build_coyo(cfg: MiniWorld, root: Path, base_url: str, laion: list[dict]) -> None:
    (root / "coyo" / "images").mkdir(parents=True, exist_ok=True)
    meta, truth = [], []

    def add(i: int, img: Image.Image, text: str, quality: int, scores: dict, kind: str,
            duplicate_of: str | None) -> None:
        cid = 7_000_000 + i
        url = f"{base_url}/coyo/images/{cid}.jpg"
        (root / "coyo" / "images" / f"{cid}.jpg").write_bytes(_jpeg(img, quality))
        meta.append({"id": cid, "url": url, "text": text, "width": img.width, "height": img.height, **scores})
        truth.append({"id": cid, "url": url, "kind": kind, "duplicate_of": duplicate_of,
                      "true_width": img.width, "true_height": img.height})

    for i in range(cfg.mixture.coyo):
        rng = _stream(cfg.seed, 50, i)
        scene = sample_scene(rng, 400, 900, cfg.max_shapes)
        scores = {"aesthetic_score_laion_v2": float(rng.uniform(4.5, 7.0)),
                  "nsfw_score_opennsfw2": float(rng.beta(1, 30)), "watermark_score": float(rng.beta(1, 12))}
        add(i, render(scene), caption(scene), 90, scores, "ok", None)

    copyable = [r for r in laion if r["path"] and r["kind"] == "ok" and r["ok_to_copy"]]
    if len(copyable) < cfg.mixture.coyo_near_duplicates:
        raise ValueError(f"only {len(copyable)} LAION images to copy into COYO: lower "
                         f"mixture.coyo_near_duplicates or build part 'images' first")
    made = 0
    for row in copyable:
        if made == cfg.mixture.coyo_near_duplicates:
            break
        original = Image.open(root / row["path"]).convert("RGB")
        scale = 1.25 if made % 2 == 0 else 0.9  # larger copies must win the dedup, smaller ones lose
        copy = original.resize((round(original.width * scale), round(original.height * scale)),
                               Image.Resampling.LANCZOS)
        data = _jpeg(copy, 80)
        if imagehash.phash(Image.open(io.BytesIO(data))) - imagehash.phash(original) > 1:
            continue  # fine textures alias when resized: plant only copies within 1 bit
        rng = _stream(cfg.seed, 60, made)
        scores = {"aesthetic_score_laion_v2": float(rng.uniform(5.6, 7.0)),
                  "nsfw_score_opennsfw2": 0.01, "watermark_score": 0.05}
        add(cfg.mixture.coyo + made, copy, row["caption"], 80, scores, "near_duplicate", row["URL"])
        made += 1
    if made < cfg.mixture.coyo_near_duplicates:
        raise ValueError(f"only {made} LAION images copy within 1 pHash bit: lower "
                         f"mixture.coyo_near_duplicates")
    pq.write_table(pa.Table.from_pylist(meta, schema=COYO_SCHEMA), root / "coyo" / "metadata.parquet")
    pq.write_table(pa.Table.from_pylist(truth, schema=COYO_TRUTH_SCHEMA), root / "coyo" / "truth.parquet")


def build_mixture(cfg: MiniWorld, root: Path, base_url: str, laion_meta: list[dict],
                  laion_truth: list[dict]) -> None:
    """Write the ImageNet-style and COYO-style sources under ``root``."""
    # a LAION row worth copying is big and clean enough to be kept in LAION too
    laion = [{**t, "ok_to_copy": m["AESTHETIC_SCORE"] > 5.5 and m["punsafe"] <= 0.5
              and m["pwatermark"] <= 0.8 and min(m["WIDTH"], m["HEIGHT"]) >= 600}
             for m, t in zip(laion_meta, laion_truth)]
    build_imagenet(cfg, root, base_url)
    build_coyo(cfg, root, base_url, laion)

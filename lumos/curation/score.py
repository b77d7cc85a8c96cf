"""Stage `score`: decode every downloaded image once and cache what the keep rules need.

Per finished shard ``<n>.tar`` it writes ``<n>.parquet`` (key, uid, shard, member, decode
error, true width/height, 64-bit pHash, predicted aesthetic) and ``<n>.json`` (what the scores
depend on: the shard's bytes and the scorer). A shard is scored again only when one of those
changes. Decoding is bounded: an image with more than ``max_pixels`` pixels is rejected from
its header, before any pixel is decoded.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import imagehash
import pyarrow as pa
import pyarrow.parquet as pq
import webdataset as wds
from PIL import Image, UnidentifiedImageError

from lumos.config import ScoreSettings
from lumos.curation.aesthetic import AestheticScorer, scorer_fingerprint
from lumos.curation.decode import upright
from lumos.io import atomic_write_text

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
SCORES_SCHEMA = pa.schema([
    ("key", pa.string()),
    ("uid", pa.string()),
    ("shard", pa.string()),  # path of the tar, relative to the download folder
    ("member", pa.string()),  # the image's member name inside the tar
    ("decode_error", pa.string()),  # NULL when the image decoded
    ("true_width", pa.int64()),
    ("true_height", pa.int64()),
    ("phash", pa.uint64()),
    ("predicted_aesthetic", pa.float64()),
])


def decode_bounded(data: bytes, max_pixels: int) -> tuple[Image.Image | None, int | None, int | None, str | None]:
    """(RGB image, width, height, error): the size is read from the header first."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            if w * h > max_pixels:
                return None, w, h, f"too many pixels: {w}x{h} > max_pixels {max_pixels}"
            im.load()
            im = upright(im)  # EXIF orientation: the size as shown, not as stored
            return im.convert("RGB"), *im.size, None
    except UnidentifiedImageError:
        return None, None, None, "not an image: unknown format"
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        # PIL's ways of saying "broken image"; a cut-off file is an OSError naming truncation
        if "truncated" in str(err):
            return None, None, None, "truncated image"
        return None, None, None, f"{type(err).__name__}: {err}"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def score_shard(tar: Path, root: Path, settings: ScoreSettings, scorer: AestheticScorer) -> pa.Table:
    rows: list[dict] = []
    decoded: list[tuple[int, Image.Image]] = []
    for sample in wds.WebDataset(str(tar), shardshuffle=False, empty_check=False):
        ext = next((e for e in IMAGE_EXTS if e in sample), None)
        meta = json.loads(sample["json"]) if "json" in sample else {}
        img, w, h, err = (decode_bounded(sample[ext], settings.max_pixels) if ext
                          else (None, None, None, "no image in sample"))
        rows.append({
            "key": sample["__key__"], "uid": meta.get("uid"), "shard": str(tar.relative_to(root)),
            "member": f"{sample['__key__']}.{ext}" if ext else None, "decode_error": err,
            "true_width": w, "true_height": h,
            "phash": int(str(imagehash.phash(img)), 16) if img is not None else None,
            "predicted_aesthetic": None,
        })
        if img is not None:
            decoded.append((len(rows) - 1, img))
    for (i, _), score in zip(decoded, scorer([im for _, im in decoded])):
        rows[i]["predicted_aesthetic"] = score
    return pa.Table.from_pylist(rows, schema=SCORES_SCHEMA)


def score_source(download_dir: Path | str, out_dir: Path | str, settings: ScoreSettings,
                 scorer: AestheticScorer | None = None) -> dict:
    """Score every finished shard of one source; cached shards are skipped."""
    root, out = Path(download_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    finished = [p.with_name(p.name.replace("_stats.json", ".tar"))
                for p in sorted((root / "shards").glob("*_stats.json"))]
    counts = {"scored": 0, "cached": 0}
    fingerprint = scorer_fingerprint(settings.aesthetic)
    for tar in finished:
        cache, stamp = out / f"{tar.stem}.parquet", out / f"{tar.stem}.json"
        depends = {"shard_sha256": _sha256(tar), "max_pixels": settings.max_pixels,
                   "scorer": fingerprint}
        if cache.exists() and stamp.exists() and json.loads(stamp.read_text()) == depends:
            counts["cached"] += 1
            continue
        scorer = scorer or AestheticScorer(settings.aesthetic)  # built only when needed
        table = score_shard(tar, root, settings, scorer)
        tmp = cache.with_name(f".{cache.name}.tmp")
        pq.write_table(table, tmp)
        tmp.replace(cache)
        atomic_write_text(stamp, json.dumps(depends, indent=1, sort_keys=True) + "\n")
        counts["scored"] += 1
    # Shards that no longer exist must not leave stale scores behind.
    names = {t.stem for t in finished}
    for stale in out.glob("*.parquet"):
        if stale.stem not in names:
            stale.unlink()
            stale.with_suffix(".json").unlink(missing_ok=True)
    return counts

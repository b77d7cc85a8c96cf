"""Stage `score`: decode every downloaded image once and cache what the keep rules need.

Shards are streamed (local or fsspec URL), decoded in batches of ``ray.decode_batch`` images by
the worker that scores them, and fan out to Ray actors (lumos/runtime/ray.py) when a ``ray``
section is given. Per finished shard ``<n>.tar`` it writes ``<n>.parquet`` (key, uid, shard, member, decode
error, true width/height, 64-bit pHash, predicted aesthetic) and ``<n>.json`` (what the scores
depend on: the shard's bytes and the scorer). A shard is scored again only when one of those
changes. Decoding is bounded: an image with more than ``max_pixels`` pixels is rejected from
its header, before any pixel is decoded.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import imagehash
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, UnidentifiedImageError

from lumos.config import RaySettings, ScoreSettings
from lumos.curation.aesthetic import AestheticScorer, scorer_fingerprint
from lumos.curation.decode import upright
from lumos.runtime import storage
from lumos.runtime.ray import map_shards, model_gpus, run_local, run_shard_stream

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


def _sha256(location: str) -> str:
    h = hashlib.sha256()
    fs, path = storage.fs_and_path(location)
    with fs.open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _batches(items: Iterator, size: int) -> Iterator[list]:
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


# The CLIP scorer (224 px input for ViT-L/14) only needs a small image: it reads a copy
# box-reduced (Image.reduce, an integer factor) to >= ANALYSIS_SIDE per side, which makes its
# bicubic resize of a full-size image 4-30x cheaper. Decoding stays full-size (it is what finds
# truncated files), and so does pHash: a reduced input moves its bits, and the near-duplicate
# radius is tuned on the full-size hash.
ANALYSIS_SIDE = 256


def analysis_copy(img: Image.Image) -> Image.Image:
    """``img`` reduced by the largest integer factor that keeps both sides >= ANALYSIS_SIDE."""
    factor = min(img.size) // ANALYSIS_SIDE
    return img.reduce(factor) if factor >= 2 else img


def score_sample(sample: dict, shard: str, max_pixels: int) -> tuple[dict, Image.Image | None]:
    """One sample's row (without the aesthetic) and the image the scorer reads (None when it
    failed to decode): :func:`analysis_copy` of the decoded image."""
    ext = next((e for e in IMAGE_EXTS if e in sample), None)
    meta = json.loads(sample["json"]) if "json" in sample else {}
    img, w, h, err = (decode_bounded(sample[ext], max_pixels) if ext
                      else (None, None, None, "no image in sample"))
    small = analysis_copy(img) if img is not None else None
    row = {"key": sample["__key__"], "uid": meta.get("uid"), "shard": shard,
           "member": f"{sample['__key__']}.{ext}" if ext else None, "decode_error": err,
           "true_width": w, "true_height": h,
           "phash": int(str(imagehash.phash(img)), 16) if img is not None else None,
           "predicted_aesthetic": None}
    return row, small


def score_shard(tar: str | Path, shard: str, settings: ScoreSettings, scorer: AestheticScorer,
                batch: int = 64) -> pa.Table:
    """Score one shard, streamed: at most ``batch`` decoded images are held at any time."""
    rows: list[dict] = []
    for samples in _batches(storage.iter_tar_samples(tar), batch):
        scored = [score_sample(s, shard, settings.max_pixels) for s in samples]
        decoded = [(row, img) for row, img in scored if img is not None]
        for (row, _), score in zip(decoded, scorer([img for _, img in decoded])):
            row["predicted_aesthetic"] = score
        rows.extend(row for row, _ in scored)
    return pa.Table.from_pylist(rows, schema=SCORES_SCHEMA)


@dataclass(frozen=True)
class ScoreJob:
    """One shard to score: where it is, its name relative to the download folder, the outputs."""

    tar: str
    shard: str
    cache: str  # <n>.parquet
    stamp: str  # <n>.json, written last: what the scores depend on


class ScoreWorker:
    """Scores shards one at a time (in a Ray actor or in-process); the scorer is built once."""

    def __init__(self, settings: ScoreSettings, batch: int = 64, device: str = "auto",
                 scorer: AestheticScorer | None = None) -> None:
        self.settings, self.batch, self.device = settings, batch, device
        self.fingerprint = scorer_fingerprint(settings.aesthetic)
        self.scorer = scorer

    def depends(self, job: ScoreJob) -> dict:
        """What the shard's scores depend on: its stamp's content."""
        return {"shard_sha256": _sha256(job.tar), "max_pixels": self.settings.max_pixels,
                "scorer": self.fingerprint, "analysis_side": ANALYSIS_SIDE}

    def cached(self, job: ScoreJob, depends: dict | None = None) -> bool:
        return (storage.exists(job.cache) and storage.exists(job.stamp)
                and json.loads(storage.read_bytes(job.stamp)) == (depends or self.depends(job)))

    def run(self, job: ScoreJob) -> str:
        depends = self.depends(job)
        if self.cached(job, depends):
            return "cached"
        if self.scorer is None:  # built only when a shard needs it
            from lumos.runtime.device import resolve_device

            self.scorer = AestheticScorer(self.settings.aesthetic, resolve_device(self.device))
        table = score_shard(job.tar, job.shard, self.settings, self.scorer, self.batch)
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        storage.write_bytes_atomic(job.cache, sink.getvalue().to_pybytes())
        storage.write_bytes_atomic(job.stamp, (json.dumps(depends, indent=1, sort_keys=True) + "\n").encode())
        return "scored"


def score_job(tar: str, download_dir: str, out_dir: str) -> ScoreJob:
    """The job of one finished shard ``<download_dir>/shards/<n>.tar`` (normalised locations)."""
    name = tar.rsplit("/", 1)[1].removesuffix(".tar")
    return ScoreJob(tar=tar, shard=_relative(tar, download_dir), cache=storage.join(out_dir, f"{name}.parquet"),
                    stamp=storage.join(out_dir, f"{name}.json"))


def finished_shards(download_dir: str) -> list[str]:
    """img2dataset's finished shards: it writes ``<n>_stats.json`` after closing ``<n>.tar``
    and ``<n>.parquet`` (img2dataset/downloader.py, download_shard), so a stats file marks both."""
    return [p.replace("_stats.json", ".tar") for p in storage.glob(download_dir, "shards/*_stats.json")]


def remove_stale(out_dir: str, jobs: list[ScoreJob]) -> None:
    """Scores of shards that no longer exist must not be left behind."""
    names = {j.cache for j in jobs}
    for stale in storage.glob(out_dir, "*.parquet"):
        if stale not in names:
            storage.remove(stale)
            storage.remove(stale.removesuffix(".parquet") + ".json")


# score_source checks current stamps itself (no actor start-up) up to this many shard bytes; above
# it the actors' parallel hashing is worth their start-up
PRECHECK_MAX_BYTES = 2 << 30


def _total_bytes(jobs: list[ScoreJob]) -> int:
    fs = storage.fs_and_path(jobs[0].tar)[0]
    return sum(fs.size(storage.fs_and_path(j.tar)[1]) for j in jobs)


def score_source(download_dir: Path | str, out_dir: Path | str, settings: ScoreSettings,
                 scorer: AestheticScorer | None = None, ray: RaySettings | None = None,
                 device: str = "auto", on_shard: Callable[[int, int, str], None] | None = None,
                 decode_batch: int = 64) -> dict:
    """Score every finished shard of one source (local folders or fsspec URLs); cached shards
    are skipped. ``ray`` given: the shards fan out to Ray actors; None: in this process."""
    download_dir, out_dir = storage.normalize(download_dir), storage.normalize(out_dir)
    storage.makedirs(out_dir)
    jobs = [score_job(tar, download_dir, out_dir) for tar in finished_shards(download_dir)]
    outcomes: list[str] = []
    if ray is None:
        outcomes = run_local(ScoreWorker, (settings, decode_batch, device, scorer), jobs, on_shard)
    else:
        todo = jobs
        if jobs and all(storage.exists(j.stamp) for j in jobs) and _total_bytes(jobs) <= PRECHECK_MAX_BYTES:
            # e.g. after `curation.score_while_downloading`: every stamp is there, so check them
            # here (hashing the shards the actors would hash) rather than start actors for nothing
            from concurrent.futures import ThreadPoolExecutor

            checker = ScoreWorker(settings, decode_batch, device)
            with ThreadPoolExecutor(8) as pool:
                todo = [j for j, hit in zip(jobs, pool.map(checker.cached, jobs)) if not hit]
            outcomes = ["cached"] * (len(jobs) - len(todo))
        if todo:
            outcomes += map_shards(ScoreWorker, (settings, decode_batch, device), todo, ray,
                                   gpus_per_task=model_gpus(ray, device), on_done=on_shard)
    remove_stale(out_dir, jobs)
    return {"scored": outcomes.count("scored"), "cached": outcomes.count("cached")}


def watch_shards(download_dir: Path | str, out_dir: Path | str, finished: threading.Event,
                 seen: list[ScoreJob]) -> Iterator[list[ScoreJob]]:
    """Jobs of the shards img2dataset finishes while it runs: each pull yields those whose
    ``_stats.json`` appeared since the last one (often none); after ``finished`` is set, one
    last look, then it ends. Every job yielded is appended to ``seen``."""
    download_dir, out_dir = storage.normalize(download_dir), storage.normalize(out_dir)
    known = {j.tar for j in seen}
    while True:
        last = finished.is_set()  # read before listing: a shard done before this is listed now
        storage.fs_and_path(download_dir)[0].invalidate_cache()  # s3fs keeps listings otherwise
        new = [score_job(t, download_dir, out_dir) for t in finished_shards(download_dir) if t not in known]
        known.update(j.tar for j in new)
        seen.extend(new)
        yield new
        if last:
            return


def score_stream(download_dir: Path | str, out_dir: Path | str, settings: ScoreSettings,
                 finished: threading.Event, ray: RaySettings | None = None, device: str = "auto",
                 expected: int | None = None, on_shard: Callable[[int, int, str], None] | None = None,
                 decode_batch: int = 64, poll_s: float = 0.5, workers: int | None = None) -> dict:
    """:func:`score_source` for a download in progress: each shard is scored as soon as
    img2dataset finishes it, until ``finished`` is set and the last shards are scored. The
    outputs are the same files :func:`score_source` writes (same jobs, same worker)."""
    download_dir, out_dir = storage.normalize(download_dir), storage.normalize(out_dir)
    storage.makedirs(out_dir)
    seen: list[ScoreJob] = []
    outcomes = run_shard_stream(ScoreWorker, (settings, decode_batch, device),
                                watch_shards(download_dir, out_dir, finished, seen), ray, device=device,
                                expected=expected, workers=workers, poll_s=poll_s, on_done=on_shard,
                                wake=finished)  # the download's end: its last shards at once
    remove_stale(out_dir, seen)
    return {"scored": outcomes.count("scored"), "cached": outcomes.count("cached")}


def _relative(location: str, root: str) -> str:
    """``location`` relative to ``root`` (both normalised by storage.normalize)."""
    if not location.startswith(root + "/"):
        raise ValueError(f"{location} is not inside {root}")
    return location[len(root) + 1:]

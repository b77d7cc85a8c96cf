"""Image-to-video data (supplement G.4): WebVid-10M rows -> sampled 16-frame clips in shards.

``prepare_webvid`` reads a WebVid CSV, downloads every clip, decodes it with PyAV and takes
``frames`` frames ``interval`` apart (16 and 3 in the paper), resized on the short side and
centre-cropped to ``resolution``. Output under ``out_dir``::

    shards/<n>.tar           WebDataset: <key>.npy (uint8 F x R x R x 3) and <key>.json (meta)
    parts/<n>.parquet        the shard's index rows (written after its tar)
    parts/<n>.rejects.parquet  the shard's rejected rows with a reason
    parts/<n>.done           written last: a rerun skips the shard
    index.parquet            every clip kept: key, videoid, caption, shard, frames, interval,
                             start, status
    rejects.parquet          every row dropped: key, videoid, url, reason, error
    fingerprint.json         the rows and settings: if either changes the folder starts over

Rows are assigned to shards by their position in the input (not by success), so a rerun, or
a run killed half-way and resumed, produces the same index. The UCF-101 and MSR-VTT readers
return the same :class:`VideoRow` with local ``file://`` URLs, for :func:`prepare_clips`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from lumos.config import RaySettings
from lumos.io import atomic_write_bytes, read_bytes
from lumos.runtime import storage
from lumos.runtime.ray import run_shards

INDEX_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("videoid", pa.string()),
        ("caption", pa.string()),
        ("shard", pa.string()),  # tar path relative to out_dir
        ("frames", pa.int64()),
        ("interval", pa.int64()),
        ("start", pa.int64()),
        ("resolution", pa.int64()),
        ("source_fps", pa.float64()),
        ("status", pa.string()),
    ]
)
REJECTS_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("videoid", pa.string()),
        ("url", pa.string()),
        ("reason", pa.string()),  # http_404, http_error, download_error, not_allowed,
        ("error", pa.string()),  # too_short, undecodable
    ]
)
FINGERPRINT = "fingerprint.json"
_DURATION = re.compile(r"^P(?:T)?(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?$")


# ----------------------------------------------------------------------------- rows


@dataclass(frozen=True)
class VideoRow:
    """One video to sample: WebVid, UCF-101 and MSR-VTT readers all return these."""

    videoid: str
    url: str  # http(s)://, file:// or a local path
    caption: str
    duration_s: float | None = None


def parse_duration(text: str | None) -> float | None:
    """WebVid's ``PT00H00M05S`` -> 5.0; a plain number is taken as seconds; junk -> None."""
    if text is None or not str(text).strip():
        return None
    text = str(text).strip()
    m = _DURATION.match(text)
    if m and any(m.groups()):
        h, mi, s = (float(g) if g else 0.0 for g in m.groups())
        return h * 3600 + mi * 60 + s
    try:
        return float(text)
    except ValueError:
        return None


def _read_text(path_or_url: Path | str, timeout: float = 30.0) -> str:
    s = str(path_or_url)
    if urlsplit(s).scheme in ("http", "https"):
        with urllib.request.urlopen(s, timeout=timeout) as resp:  # noqa: S310 - http(s) only
            return resp.read().decode("utf-8")
    local = _local_path(s)
    if local is None:  # s3://, gs://, memory://, ...: through fsspec
        return read_bytes(s).decode("utf-8")
    return Path(local).read_text(encoding="utf-8")


def read_webvid_csv(path_or_url: Path | str) -> list[VideoRow]:
    """Rows of a WebVid-10M CSV (``videoid, contentUrl, duration, page_dir, name``)."""
    reader = csv.DictReader(io.StringIO(_read_text(path_or_url)))
    missing = {"videoid", "contentUrl", "name"} - set(reader.fieldnames or ())
    if missing:
        raise ValueError(f"{path_or_url}: not a WebVid CSV, missing columns {sorted(missing)}")
    return [VideoRow(videoid=str(r["videoid"]), url=r["contentUrl"], caption=r["name"],
                     duration_s=parse_duration(r.get("duration"))) for r in reader]


_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z]|\d|\b|$)|[A-Z]?[a-z]+|\d+")


def camel_to_words(name: str) -> str:
    """UCF-101 class names to captions: ``ApplyEyeMakeup`` -> ``apply eye makeup``."""
    return " ".join(w.lower() for w in _CAMEL.findall(name.replace("_", " ")))


def read_ucf101(root: Path | str, exts: Sequence[str] = (".avi",)) -> list[VideoRow]:
    """UCF-101's ``<class>/<video>.avi`` layout; the caption is the class name in words."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no UCF-101 folder at {root}")
    rows = []
    for cls in sorted(p for p in root.iterdir() if p.is_dir()):
        text = camel_to_words(cls.name)
        for video in sorted(p for p in cls.iterdir() if p.suffix.lower() in exts):
            rows.append(VideoRow(videoid=video.stem, url=video.resolve().as_uri(), caption=text))
    return rows


def read_msrvtt(annotation_json: Path | str, video_dir: Path | str, all_captions: bool = False,
                ext: str = ".mp4") -> list[VideoRow]:
    """MSR-VTT's annotation file: ``{"videos": [...], "sentences": [...]}``.

    One row per video with its first caption (in the file's order), or with
    ``all_captions`` one row per sentence. Videos without a caption are skipped;
    ``duration_s`` comes from ``start time``/``end time`` when the file has them.
    """
    data = json.loads(Path(annotation_json).read_text(encoding="utf-8"))
    video_dir = Path(video_dir).resolve()
    captions: dict[str, list[str]] = {}
    for s in data.get("sentences", []):
        captions.setdefault(str(s["video_id"]), []).append(str(s["caption"]).strip())
    rows = []
    for v in data.get("videos", []):
        vid = str(v["video_id"])
        if vid not in captions:
            continue
        dur = None
        if "start time" in v and "end time" in v:
            dur = float(v["end time"]) - float(v["start time"])
        url = (video_dir / f"{vid}{ext}").as_uri()
        for text in captions[vid] if all_captions else captions[vid][:1]:
            rows.append(VideoRow(videoid=vid, url=url, caption=text, duration_s=dur))
    return rows


# ----------------------------------------------------------------------------- download


class DownloadError(Exception):
    """A clip could not be fetched; ``reason`` is ``http_404``, ``http_error`` or ``download_error``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _local_path(url: str) -> str | None:
    parts = urlsplit(url)
    if parts.scheme == "file":
        return unquote(parts.path)
    if parts.scheme in ("", ) or (len(parts.scheme) == 1 and url[1:3] in (":\\", ":/")):
        return url
    return None


def download_clip(url: str, dest: Path | str, timeout: float = 20.0, retries: int = 2,
                  max_bytes: int = 512 * 2**20) -> dict:
    """Fetch ``url`` to ``dest`` atomically; returns ``{"url", "bytes", "attempts", "content_type"}``.

    Retries (with a short back-off) on network errors and 5xx; a 4xx fails at once. Raises
    :class:`DownloadError` with a ``reason`` when every attempt failed.
    """
    dest = Path(dest)
    local = _local_path(url)
    if local is not None:
        try:
            data = Path(local).read_bytes()
        except OSError as err:
            raise DownloadError("download_error", f"{url}: {err}") from err
        atomic_write_bytes(dest, data)
        return {"url": url, "bytes": len(data), "attempts": 1, "content_type": None}
    last: Exception | None = None
    for attempt in range(1, retries + 2):
        try:
            req = urllib.request.Request(url, headers={"User-Agent": "lumos-video/0.1"})
            with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
                data = resp.read(max_bytes + 1)
                ctype = resp.headers.get("Content-Type")
            if len(data) > max_bytes:
                raise DownloadError("download_error", f"{url}: larger than {max_bytes} bytes")
            atomic_write_bytes(dest, data)
            return {"url": url, "bytes": len(data), "attempts": attempt, "content_type": ctype}
        except urllib.error.HTTPError as err:
            if err.code == 404:
                raise DownloadError("http_404", f"{url}: HTTP 404 {err.reason}") from err
            if 400 <= err.code < 500:
                raise DownloadError("http_error", f"{url}: HTTP {err.code} {err.reason}") from err
            last = err
        except DownloadError:
            raise
        except (urllib.error.URLError, OSError, TimeoutError) as err:
            last = err
        if attempt <= retries:
            time.sleep(min(0.2 * 2 ** (attempt - 1), 2.0))
    reason = "http_error" if isinstance(last, urllib.error.HTTPError) else "download_error"
    raise DownloadError(reason, f"{url}: failed after {retries + 1} attempts: {last}")


# ----------------------------------------------------------------------------- decode


class VideoError(Exception):
    """A clip that cannot be sampled; ``reason`` names why (the rejects' reason column)."""

    reason = "video_error"


class TooShortError(VideoError):
    """Fewer than ``(frames - 1) * interval + 1`` decodable frames."""

    reason = "too_short"

    def __init__(self, message: str, decoded: int, needed: int) -> None:
        super().__init__(message)
        self.decoded, self.needed = decoded, needed


class UndecodableError(VideoError):
    """Not a video PyAV can open, no video stream, or the decoder failed."""

    reason = "undecodable"


def resize_crop(img: Image.Image, resolution: int) -> np.ndarray:
    """Resize the short side to ``resolution`` (bicubic, antialiased) and centre-crop square."""
    w, h = img.size
    scale = resolution / min(w, h)
    nw, nh = max(resolution, round(w * scale)), max(resolution, round(h * scale))
    img = img.resize((nw, nh), Image.Resampling.BICUBIC)
    left, top = (nw - resolution) // 2, (nh - resolution) // 2
    return np.asarray(img.crop((left, top, left + resolution, top + resolution)).convert("RGB"))


def _count_frames(path: Path) -> int:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if stream.frames:
            return int(stream.frames)
        return sum(1 for p in container.demux(stream) if p.size)


def sample_frames(path: Path | str, frames: int = 16, interval: int = 3, resolution: int = 256,
                  start: int | None = 0, seed: int | None = None,
                  info: dict | None = None) -> np.ndarray:
    """Frames ``start, start + interval, ...`` of a video as uint8 ``(frames, R, R, 3)``.

    ``start=None`` draws the offset from ``seed`` over the clip's frame count (uniform over
    the offsets that fit). ``info``, when given, receives ``start``, ``fps`` and the number of
    frames decoded. Raises :class:`TooShortError` or :class:`UndecodableError`.
    """
    import av

    path = Path(path)
    span = (frames - 1) * interval + 1
    try:
        if start is None:
            total = _count_frames(path)
            if total < span:
                raise TooShortError(f"{path.name}: {total} frames, {span} needed", total, span)
            start = int(np.random.default_rng(seed).integers(0, total - span + 1))
        wanted = {start + i * interval: i for i in range(frames)}
        out: list[np.ndarray | None] = [None] * frames
        decoded, last = 0, start + (frames - 1) * interval
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise UndecodableError(f"{path.name}: no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            fps = float(stream.average_rate) if stream.average_rate else None
            for frame in container.decode(stream):
                if decoded in wanted:
                    out[wanted[decoded]] = resize_crop(frame.to_image(), resolution)
                decoded += 1
                if decoded > last:
                    break
    except VideoError:
        raise
    except (av.FFmpegError, IndexError, ValueError, OSError) as err:  # type: ignore[attr-defined]
        raise UndecodableError(f"{path.name}: {type(err).__name__}: {err}") from err
    if decoded == 0:
        raise UndecodableError(f"{path.name}: no decodable frame")
    if decoded <= last:
        raise TooShortError(f"{path.name}: {decoded} decodable frames from {start}, "
                            f"{last - start + 1} needed (frames={frames}, interval={interval})",
                            decoded, last + 1)
    if info is not None:
        info.update(start=start, fps=fps, decoded=decoded)
    return np.stack(out)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- prepare


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _fingerprint(rows: Sequence[VideoRow], settings: dict) -> dict:
    blob = json.dumps([asdict(r) for r in rows], sort_keys=True).encode()
    return {"rows_sha256": hashlib.sha256(blob).hexdigest(), "rows": len(rows),
            "settings": settings}


def _prepare_out(out: str, fingerprint: dict) -> None:
    """Keep finished shards only when they came from the same rows and settings (``out``: a
    folder or an fsspec URL, params ``storage.clips``)."""
    path = storage.join(out, FINGERPRINT)
    if storage.exists(out) and (not storage.exists(path) or json.loads(storage.read_bytes(path)) != fingerprint):
        fs, root = storage.fs_and_path(out)
        fs.rm(root, recursive=True)
    for sub in ("shards", "parts"):
        storage.makedirs(storage.join(out, sub))
    storage.write_bytes_atomic(path, (json.dumps(fingerprint, indent=1, sort_keys=True) + "\n").encode())


def _allowed(url: str, prefixes: Sequence[str] | None) -> bool:
    return prefixes is None or any(url.startswith(p) for p in prefixes)


def _process(key: str, row: VideoRow, work: Path, s: dict) -> dict:
    """Download and sample one row; returns an ``ok`` or a ``reject`` record (never raises)."""
    base = {"key": key, "videoid": row.videoid}
    if not _allowed(row.url, s["allowed_url_prefixes"]):
        return {**base, "status": "reject", "url": row.url, "reason": "not_allowed",
                "error": "URL outside allowed_url_prefixes"}
    local = _local_path(row.url)
    tmp = None
    try:
        if local is None:
            tmp = work / f"{key}.video"
            download_clip(row.url, tmp, timeout=s["timeout_s"], retries=s["retries"])
            local = str(tmp)
        info: dict = {}
        arr = sample_frames(local, s["frames"], s["interval"], s["resolution"],
                            start=None if s["random_start"] else 0,
                            seed=None if s["seed"] is None else s["seed"] + int(key), info=info)
    except (DownloadError, VideoError) as err:
        return {**base, "status": "reject", "url": row.url, "reason": err.reason,
                "error": str(err)}
    except Exception as err:  # noqa: BLE001 - one bad clip must not stop the run
        return {**base, "status": "reject", "url": row.url, "reason": "error",
                "error": f"{type(err).__name__}: {err}"}
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
    meta = {"key": key, "videoid": row.videoid, "caption": row.caption, "url": row.url,
            "fps": info["fps"], "start": info["start"], "interval": s["interval"],
            "frames": s["frames"], "resolution": s["resolution"],
            "duration_s": row.duration_s}
    return {**base, "status": "ok", "caption": row.caption, "array": arr, "meta": meta}


def _write_shard(out: str, shard: int, results: Iterable[dict], work: Path) -> None:
    """Write one shard as its clips arrive: each clip's frames go straight into the tar (a local
    temporary file, then renamed into a local ``out`` or uploaded whole, one PUT, to a bucket),
    so a shard is never held in memory."""
    import webdataset as wds

    name = f"shards/{shard:05d}.tar"
    remote = "://" in out
    tmp = work / f"{shard:05d}.tar" if remote else Path(out) / "shards" / f".{shard:05d}.tar.tmp"
    index, rejects = [], []
    with open(tmp, "wb") as f, wds.TarWriter(f, encoder=False, mtime=0) as sink:
        for r in results:
            if r["status"] != "ok":
                rejects.append({k: r[k] for k in REJECTS_SCHEMA.names})
                continue
            sink.write({"__key__": r["key"], "npy": _npy_bytes(r["array"]),
                        "json": json.dumps(r["meta"], sort_keys=True).encode()})
            index.append({"key": r["key"], "videoid": r["videoid"], "caption": r["caption"], "shard": name,
                          "frames": r["meta"]["frames"], "interval": r["meta"]["interval"],
                          "start": r["meta"]["start"], "resolution": r["meta"]["resolution"],
                          "source_fps": r["meta"]["fps"], "status": "ok"})
    if remote:
        fs, root = storage.fs_and_path(storage.join(out, name))
        fs.put_file(str(tmp), root)
        tmp.unlink()
    else:
        os.replace(tmp, Path(out) / name)
    for rows, schema, suffix in ((index, INDEX_SCHEMA, ".parquet"),
                                 (rejects, REJECTS_SCHEMA, ".rejects.parquet")):
        pbuf = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), pbuf)
        storage.write_bytes_atomic(storage.join(out, "parts", f"{shard:05d}{suffix}"), pbuf.getvalue())
    storage.write_bytes_atomic(storage.join(out, "parts", f"{shard:05d}.done"),  # last: the shard is finished
                               f"{len(index)} {len(rejects)}\n".encode())


class ClipShardWorker:
    """Prepares clip shards one at a time (a Ray actor or in-process): ``threads`` clips are
    downloaded and decoded at once (PyAV and urllib release the GIL), in order, and written
    as they finish: memory is bounded by ``threads`` clips per worker, never by a shard."""

    def __init__(self, out: str, settings: dict, threads: int) -> None:
        self.out, self.s, self.threads = out, settings, max(1, threads)

    def run(self, job: tuple[int, list[tuple[str, VideoRow]]]) -> int:
        shard, rows = job
        work = Path(tempfile.mkdtemp(prefix="lumos-clips-"))  # downloaded videos: local, removed after
        try:
            with ThreadPoolExecutor(max_workers=self.threads) as pool:
                _write_shard(self.out, shard, _in_order(pool, rows, work, self.s, self.threads), work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return shard


def _in_order(pool: ThreadPoolExecutor, rows: list[tuple[str, VideoRow]], work: Path, s: dict,
              lookahead: int) -> Iterable[dict]:
    """Each row's result in input order, with at most ``lookahead`` clips in flight."""
    inflight: deque[Future] = deque()
    for key, row in rows:
        inflight.append(pool.submit(_process, key, row, work, s))
        if len(inflight) >= lookahead:
            yield inflight.popleft().result()
    while inflight:
        yield inflight.popleft().result()


def _combine(out: str, n_shards: int) -> tuple[pa.Table, pa.Table]:
    tables = {}
    for suffix, schema, name in ((".parquet", INDEX_SCHEMA, "index.parquet"),
                                 (".rejects.parquet", REJECTS_SCHEMA, "rejects.parquet")):
        parts = [pq.read_table(pa.BufferReader(storage.read_bytes(storage.join(out, "parts", f"{i:05d}{suffix}"))),
                               schema=schema) for i in range(n_shards)]
        table = pa.concat_tables(parts) if parts else schema.empty_table()
        table = table.sort_by("key")
        buf = io.BytesIO()
        pq.write_table(table, buf)
        storage.write_bytes_atomic(storage.join(out, name), buf.getvalue())
        tables[name] = table
    return tables["index.parquet"], tables["rejects.parquet"]


def prepare_clips(rows: Sequence[VideoRow], out_dir: Path | str, frames: int = 16,
                  interval: int = 3, resolution: int = 256,
                  allowed_url_prefixes: Sequence[str] | None = None, workers: int = 2,
                  samples_per_shard: int = 1000, timeout_s: float = 20.0, retries: int = 2,
                  random_start: bool = False, seed: int | None = 0,
                  ray: RaySettings | None = None, on_shard=None) -> dict:
    """Download, sample and shard ``rows`` into ``out_dir`` (resumable); returns stats.

    Shards fan out to Ray actors when ``ray`` is given (lumos/runtime/ray.py), else run in this
    process; in each, clips are processed ``workers`` at a time in a thread pool (PyAV and
    urllib release the GIL) and streamed into the shard's tar. ``random_start`` draws each
    clip's first frame from ``seed`` and the clip's key; otherwise sampling starts at frame 0. ``allowed_url_prefixes`` rejects other URLs
    (``not_allowed``) so a test or demo never reaches beyond its own server.
    """
    out = storage.normalize(out_dir)  # a folder or an fsspec URL (params storage.clips)
    settings = {"frames": frames, "interval": interval, "resolution": resolution,
                "samples_per_shard": samples_per_shard, "random_start": random_start,
                "seed": seed if random_start else None,
                "allowed_url_prefixes": list(allowed_url_prefixes)
                if allowed_url_prefixes is not None else None}
    _prepare_out(out, _fingerprint(rows, settings))
    s = {**settings, "timeout_s": timeout_s, "retries": retries}
    n_shards = (len(rows) + samples_per_shard - 1) // samples_per_shard
    pending = [i for i in range(n_shards) if not storage.exists(storage.join(out, "parts", f"{i:05d}.done"))]
    jobs = [(shard, [(f"{lo + j:09d}", r) for j, r in enumerate(rows[lo: lo + samples_per_shard])])
            for shard in pending for lo in [shard * samples_per_shard]]
    t0 = time.perf_counter()
    run_shards(ClipShardWorker, (out, s, workers), jobs, ray, device="cpu", on_done=on_shard)
    index, rejects = _combine(out, n_shards)
    reasons: dict[str, int] = {}
    for r in rejects.column("reason").to_pylist():
        reasons[r] = reasons.get(r, 0) + 1
    return {"rows": len(rows), "shards": n_shards, "shards_written": len(pending),
            "shards_skipped": n_shards - len(pending), "ok": index.num_rows,
            "rejected": rejects.num_rows, "reasons": dict(sorted(reasons.items())),
            "seconds": round(time.perf_counter() - t0, 3)}


def prepare_webvid(csv_path: Path | str, out_dir: Path | str, frames: int = 16,
                   interval: int = 3, resolution: int = 256,
                   allowed_url_prefixes: Sequence[str] | None = None, workers: int = 2,
                   **kwargs) -> dict:
    """:func:`prepare_clips` over the rows of a WebVid-10M CSV (path or URL)."""
    return prepare_clips(read_webvid_csv(csv_path), out_dir, frames=frames, interval=interval,
                         resolution=resolution, allowed_url_prefixes=allowed_url_prefixes,
                         workers=workers, **kwargs)


def iter_samples(out_dir: Path | str) -> Iterable[tuple[str, np.ndarray, dict]]:
    """Read the shards back: ``(key, frames, meta)`` in shard order (plain tarfile, no deps);
    ``meta["tar"]`` names the shard file."""
    import tarfile

    for tar_path in storage.glob(storage.normalize(out_dir), "shards/*.tar"):
        fs, path = storage.fs_and_path(tar_path)
        with fs.open(path, "rb") as f, tarfile.open(fileobj=f) as tar:
            members: dict[str, dict[str, bytes]] = {}
            for m in tar.getmembers():
                key, _, ext = m.name.partition(".")
                f = tar.extractfile(m)
                if f is not None:
                    members.setdefault(key, {})[ext] = f.read()
            for key in sorted(members):
                parts = members[key]
                yield (key, np.load(io.BytesIO(parts["npy"]), allow_pickle=False),
                       {**json.loads(parts["json"]), "tar": tar_path.rsplit("/", 1)[-1]})

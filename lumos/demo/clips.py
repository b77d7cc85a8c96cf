"""Procedural short videos in WebVid-10M's metadata schema, with bad rows (supplement G.4).

Output layout (under ``root``)::

    clips/<key>.mp4      the videos the static server hands out (MPEG-4 part 2, deterministic)
    webvid.csv           WebVid-10M's columns: videoid, contentUrl, duration, page_dir, name
    clips.parquet        ground truth per CSV row: key, kind, frame count, fps, size, caption,
                         the motion parameters (JSON) that :func:`render_frame` replays

A clip is one or two shapes from :mod:`lumos.demo.scenes`' vocabulary moving in straight
lines (bouncing off the borders) over a scrolling texture whose brightness ramps with time,
so every frame is distinct and a sampled frame can be matched back to its index exactly.
Bad rows: clips too short for ``frames * interval`` sampling, a truncated file, HTML saved
as ``.mp4`` (served as ``video/mp4``) and a URL nobody serves (404).
"""

from __future__ import annotations

import csv
import io
import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

from lumos.demo.scenes import BACKGROUND_COLOURS, COLOURS, SHAPES, TEXTURES, Scene, _background
from lumos.io import atomic_dir, atomic_write_bytes, atomic_write_text

CLIP_KINDS = ("ok", "too_short", "truncated", "not_video", "missing")
WEBVID_COLUMNS = ("videoid", "contentUrl", "duration", "page_dir", "name")
CLIPS_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("videoid", pa.int64()),
        ("url", pa.string()),
        ("path", pa.string()),  # relative to root; null for the 404 row
        ("kind", pa.string()),
        ("n_frames", pa.int64()),
        ("fps", pa.int64()),
        ("width", pa.int64()),
        ("height", pa.int64()),
        ("caption", pa.string()),
        ("params", pa.string()),  # JSON of the motion parameters
    ]
)
DEFAULT_BASE_URL = "http://127.0.0.1:8766"
OK_FRAMES = (48, 80)  # inclusive range of a good clip's length
SHORT_FRAMES = (24, 40)  # the too-short clips: below (16 - 1) * 3 + 1 = 46
N_BAD = 5  # two too short, one truncated, one not a video, one missing
_NOT_A_VIDEO = b"<!doctype html><html><body>this is not a video</body></html>\n"
_RADIUS = {"small": 0.14, "medium": 0.2, "large": 0.26}  # fraction of the short side


def _stream(seed: int, *tags: int) -> np.random.Generator:
    return np.random.default_rng([seed, 77, *tags])


def sample_motion(rng: np.random.Generator, width: int, height: int, n_frames: int) -> dict:
    """Parameters of one clip: texture, background, scroll speed and 1-2 moving shapes."""
    shapes = []
    for _ in range(int(rng.integers(1, 3))):
        speed = float(rng.uniform(1.2, 2.8))  # pixels per frame
        angle = float(rng.uniform(0, 2 * np.pi))
        shapes.append({
            "kind": str(rng.choice(SHAPES)),
            "colour": str(rng.choice(list(COLOURS))),
            "size": str(rng.choice(list(_RADIUS))),
            "x0": float(rng.uniform(0.25, 0.75) * width),
            "y0": float(rng.uniform(0.25, 0.75) * height),
            "vx": speed * float(np.cos(angle)),
            "vy": speed * float(np.sin(angle)),
        })
    return {
        "width": width, "height": height, "n_frames": n_frames,
        "texture": str(rng.choice([t for t in TEXTURES if t != "plain"])),
        "background": str(rng.choice(list(BACKGROUND_COLOURS))),
        "scroll": int(rng.choice([-2, -1, 1, 2])),  # texture shift in pixels per frame
        "shapes": shapes,
    }


def _bounce(p0: float, v: float, t: int, lo: float, hi: float) -> float:
    """Position at ``t`` of a point moving at ``v`` that reflects off ``lo`` and ``hi``."""
    span = hi - lo
    if span <= 0:
        return lo
    q = (p0 - lo + v * t) % (2 * span)
    return lo + (q if q <= span else 2 * span - q)


def brightness(t: int, n_frames: int) -> float:
    """The background's brightness ramp: 0.45 at the first frame, 1.0 at the last."""
    return 0.45 + 0.55 * t / max(n_frames - 1, 1)


def render_frame(params: dict, t: int) -> np.ndarray:
    """Frame ``t`` of a clip as uint8 (H, W, 3); a pure function of the parameters."""
    w, h = params["width"], params["height"]
    scene = Scene(width=w, height=h, texture=params["texture"],
                  background=params["background"], shapes=())
    bg = np.roll(_background(scene), params["scroll"] * t, axis=1).astype(np.float32)
    bg *= brightness(t, params["n_frames"])
    img = Image.fromarray(bg.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for s in params["shapes"]:
        r = _RADIUS[s["size"]] * min(w, h)
        cx = _bounce(s["x0"], s["vx"], t, r, w - r)
        cy = _bounce(s["y0"], s["vy"], t, r, h - r)
        fill = COLOURS[s["colour"]]
        if s["kind"] == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        elif s["kind"] == "square":
            draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=fill)
        elif s["kind"] == "triangle":
            draw.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=fill)
        elif s["kind"] == "diamond":
            draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=fill)
        else:  # ellipse
            draw.ellipse([cx - r, cy - r / 2, cx + r, cy + r / 2], fill=fill)
    return np.asarray(img)


def _direction(vx: float, vy: float) -> str:
    horiz = "right" if vx > 0 else "left"
    vert = "down" if vy > 0 else "up"
    if abs(vx) > 2.4 * abs(vy):
        return f"to the {horiz}"
    if abs(vy) > 2.4 * abs(vx):
        return vert
    return f"{vert} and to the {horiz}"


def caption(params: dict) -> str:
    """The WebVid ``name``: written from the motion parameters."""
    parts = []
    for s in params["shapes"]:
        speed = float(np.hypot(s["vx"], s["vy"]))
        pace = "slowly" if speed < 1.8 else "quickly" if speed > 2.3 else "steadily"
        parts.append(f"a {s['size']} {s['colour']} {s['kind']} moving {pace} "
                     f"{_direction(s['vx'], s['vy'])}")
    texture = {"stripes": "striped", "checker": "checkered", "dots": "dotted",
               "gradient": "gradient"}[params["texture"]]
    scroll = "left" if params["scroll"] < 0 else "right"
    return (" and ".join(parts) + f", over a {texture} {params['background']} background "
            f"drifting {scroll} as it brightens")


def video_codec() -> str:
    """MPEG-4 Part 2: every FFmpeg build has it, and its bytes are the same run after run
    (libx264 here gave different streams for the same frames, breaking the mini-world's
    byte-for-byte determinism)."""
    return "mpeg4"


def encode_mp4(frames: list[np.ndarray], fps: int, codec: str | None = None) -> bytes:
    """Encode uint8 RGB frames as an MP4 in memory (near-lossless quality, one thread)."""
    import av

    codec = codec or video_codec()
    buf = io.BytesIO()
    h, w = frames[0].shape[:2]
    with av.open(buf, mode="w", format="mp4") as container:
        options = {"crf": "12", "preset": "veryfast"} if codec == "libx264" else {"qscale": "2"}
        stream = container.add_stream(codec, rate=fps, options=options)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.thread_count = 1
        if codec == "mpeg4":
            stream.codec_context.qscale = 2  # type: ignore[attr-defined]
        stream.time_base = Fraction(1, fps)
        for i, arr in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


def webvid_duration(seconds: float) -> str:
    """WebVid's ISO-8601 duration text, e.g. 5 s -> ``PT00H00M05S``."""
    s = int(round(seconds))
    return f"PT{s // 3600:02d}H{s % 3600 // 60:02d}M{s % 60:02d}S"


def build_clips(root: Path | str, n: int = 24, seed: int = 0, fps: int = 8,
                size: tuple[int, int] = (96, 64), base_url: str = DEFAULT_BASE_URL) -> list[dict]:
    """Write ``n`` CSV rows (``n - 5`` good clips and the 5 bad rows) under ``root``.

    ``size`` is (width, height). Returns the ground-truth rows (also in ``clips.parquet``).
    Each clip draws from its own seeded stream, so the output is a pure function of the
    arguments; the files appear atomically (``clips/`` as a whole, then the tables).
    """
    if n < N_BAD + 1:
        raise ValueError(f"n must be at least {N_BAD + 1} (the {N_BAD} bad rows and a good one)")
    root, base = Path(root), base_url.rstrip("/")
    width, height = size
    codec = video_codec()
    truth: list[dict] = []
    csv_rows: list[dict] = []

    def add(key: str, kind: str, params: dict, has_file: bool = True) -> None:
        rel = f"clips/{key}.mp4"
        videoid = 1_000_000 + len(truth)
        text = caption(params)
        truth.append({
            "key": key, "videoid": videoid, "url": f"{base}/{rel}",
            "path": rel if has_file else None, "kind": kind, "n_frames": params["n_frames"],
            "fps": fps, "width": width, "height": height, "caption": text,
            "params": json.dumps(params, sort_keys=True),
        })
        csv_rows.append({
            "videoid": videoid, "contentUrl": f"{base}/{rel}",
            "duration": webvid_duration(params["n_frames"] / fps),
            "page_dir": f"{(videoid // 1000) * 1000:07d}_{(videoid // 1000) * 1000 + 999:07d}",
            "name": text,
        })

    def clip(kind: int, j: int, lengths: tuple[int, int]) -> tuple[dict, bytes]:
        rng = _stream(seed, kind, j)
        params = sample_motion(rng, width, height, int(rng.integers(lengths[0], lengths[1] + 1)))
        frames = [render_frame(params, t) for t in range(params["n_frames"])]
        return params, encode_mp4(frames, fps, codec)

    with atomic_dir(root / "clips") as out:
        for i in range(n - N_BAD):
            key = f"wv-{i:06d}"
            params, data = clip(0, i, OK_FRAMES)
            (out / f"{key}.mp4").write_bytes(data)
            add(key, "ok", params)
        for j in range(2):  # too short for 16 frames at interval 3
            key = f"wv-short-{j:03d}"
            params, data = clip(1, j, SHORT_FRAMES)
            (out / f"{key}.mp4").write_bytes(data)
            add(key, "too_short", params)
        key = "wv-truncated-000"  # the moov atom sits at the end: cut short, nothing decodes
        params, data = clip(2, 0, OK_FRAMES)
        (out / f"{key}.mp4").write_bytes(data[: len(data) * 2 // 5])
        add(key, "truncated", params)
        key = "wv-notvideo-000"  # HTML that the server hands out as video/mp4
        (out / f"{key}.mp4").write_bytes(_NOT_A_VIDEO)
        add(key, "not_video", sample_motion(_stream(seed, 3, 0), width, height, 64))
        add("wv-missing-000", "missing", sample_motion(_stream(seed, 4, 0), width, height, 64),
            has_file=False)  # a URL nobody serves: 404

    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(WEBVID_COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(csv_rows)
    atomic_write_text(root / "webvid.csv", text.getvalue())
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(truth, schema=CLIPS_SCHEMA), buf)
    atomic_write_bytes(root / "clips.parquet", buf.getvalue())
    return truth

"""Clips a browser can play: the pipeline's MP4s are MPEG-4 Part 2 (deterministic bytes, see
lumos/demo/clips.py), which Chromium does not decode; those are re-encoded to H.264 for the page."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

PLAYABLE = {"h264", "vp8", "vp9", "av1"}  # what Chromium decodes in MP4/WebM


def codec_of(path: Path) -> str | None:
    import av

    try:
        with av.open(str(path)) as c:
            return c.streams.video[0].codec_context.name if c.streams.video else None
    except (av.FFmpegError, IndexError):
        return None


def to_h264(path: Path) -> bytes:
    """Decode every frame of ``path`` and encode it again as H.264 MP4 (even sides, yuv420p)."""
    import av

    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        rate = stream.average_rate or 8
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(stream)]
    h, w = (frames[0].shape[0] // 2) * 2, (frames[0].shape[1] // 2) * 2
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as out:
        s = out.add_stream("libx264", rate=rate, options={"crf": "16", "preset": "veryfast"})
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.thread_count = 1
        for arr in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr[:h, :w]), format="rgb24")
            for p in s.encode(frame):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return buf.getvalue()


def browser_video(path: Path) -> tuple[bytes, str, str | None]:
    """(bytes, mime, note): the file itself when playable, else an H.264 re-encoding."""
    import av

    codec = codec_of(path)
    mime = "video/webm" if path.suffix.lower() == ".webm" else "video/mp4"
    if codec is None or codec in PLAYABLE:
        return path.read_bytes(), mime, None if codec else "could not read its video stream"
    try:
        return to_h264(path), "video/mp4", f"{codec} re-encoded to H.264 for the browser"
    except (av.FFmpegError, ValueError) as err:  # e.g. no libx264 in this FFmpeg build: embed as is
        return path.read_bytes(), mime, f"{codec}: browsers may not play it ({type(err).__name__}: {err})"

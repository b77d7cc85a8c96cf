"""Stage `prepare-webvid` (supplement G.4): the I2V clips, with the project's layout.

    datasets/clips/webvid/   shards/*.tar (16 frames at interval 3 per clip), index.parquet,
                             rejects.parquet (why a clip was dropped)
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

from lumos.config import Profile
from lumos.demo import DEFAULT_OUT as MINI_WORLD_DIR
from lumos.demo import serve_mini_world
from lumos.video.webvid import prepare_webvid

CLIPS = Path("datasets/clips/webvid")  # the default of storage.clips + /webvid


def clips_location(profile: Profile) -> str:
    """``storage.clips``/webvid: the local default or a bucket URL."""
    return f"{profile.storage.clips.rstrip('/')}/webvid"


def run_prepare_webvid(profile: Profile, out: Path | str | None = None, on_shard=None) -> dict:
    """Clip shards on Ray (params ``ray``): one shard per task, clips decoded in its worker."""
    out = out or clips_location(profile)
    v = profile.i2v
    src = v.source
    server = (serve_mini_world(MINI_WORLD_DIR, profile.mini_world.base_url)
              if src.serve_mini_world else nullcontext())
    with server:
        return prepare_webvid(src.csv, out, frames=v.frames, interval=v.frame_interval,
                              resolution=v.resolution, allowed_url_prefixes=src.allowed_url_prefixes,
                              workers=src.workers, samples_per_shard=src.samples_per_shard,
                              timeout_s=src.timeout_s, retries=src.retries,
                              random_start=src.random_start, seed=profile.train.seed,
                              ray=profile.ray, on_shard=on_shard)

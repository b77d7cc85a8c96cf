"""``lumos demo``: which checkpoints to serve (explicit paths must exist; the defaults,
models/i2i and models/t2i, are used when trained), then serve until Ctrl-C."""

from __future__ import annotations

import sys
from pathlib import Path

from lumos.config import Profile
from lumos.tasks.priors import PRIOR_MODELS


def _pick(path: Path | None, default: Path, load, profile: Profile):
    if path is not None:
        return load(path, profile)  # asked for: a missing or wrong checkpoint is an error
    try:
        return load(default, profile)
    except FileNotFoundError:
        return None


def run_demo(profile: Profile, i2i: Path | None, t2i: Path | None, port: int | None) -> int:
    from lumos.webui import build_app, launch, load_i2i, load_t2i

    try:
        i2i_demo = _pick(i2i, PRIOR_MODELS["i2i"], load_i2i, profile)
        t2i_demo = _pick(t2i, PRIOR_MODELS["t2i"], load_t2i, profile)
    except (FileNotFoundError, ValueError) as err:
        print(f"lumos demo: {err}", file=sys.stderr)
        return 1
    if i2i_demo is None and t2i_demo is None:
        print("lumos demo: no checkpoint: train-i2i / train-t2i first, or pass --i2i / --t2i", file=sys.stderr)
        return 1
    app = build_app(i2i_demo, t2i_demo, seed=profile.sample.seed, frames=profile.sample.interpolation_steps)
    for name, loaded in (("i2i", i2i_demo), ("t2i", t2i_demo)):
        print(f"{name}: {loaded.checkpoint if loaded else 'none'}", flush=True)
    try:
        launch_url = launch(app, port)
    except OSError as err:  # the port is taken
        print(f"lumos demo: cannot serve on 127.0.0.1:{port}: {err}", file=sys.stderr)
        return 1
    print(f"lumos demo at {launch_url} (Ctrl-C stops)", flush=True)
    app.block_thread()
    return 0

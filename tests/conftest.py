"""Shared fixtures: the project's params, a built mini-world, free loopback ports."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

import lumos  # noqa: F401  (applies the loopback environment)
from lumos.config import load_params

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def params():
    return load_params(ROOT / "params.yaml")


@pytest.fixture(scope="session")
def mini_world(params, tmp_path_factory):
    """The default tiny mini-world, built once, with URLs on a free loopback port."""
    from lumos.demo import build_mini_world

    cfg = params.active.mini_world.model_copy(
        update={"base_url": f"http://127.0.0.1:{free_port()}"})
    root = tmp_path_factory.mktemp("mini-world") / "mw"
    manifest = build_mini_world(cfg, root)
    return cfg, root, manifest

"""The runtime module: the run's local Ray head (start, join by address file, stop), the device
setting with the precision params, and the ray/device/storage params."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import torch

from lumos.config import ConfigError, RaySettings, load_params, parse_params
from lumos.runtime.device import model_dtype, place, resolve_device
from lumos.runtime.ray import ensure_local_auth_token, local_ray_address, start_local_ray, stop_local_ray


def test_device_setting_and_precision():
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no GPU"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="auto, cpu or cuda"):
        resolve_device("gpu")
    assert model_dtype("bf16", "cpu") == torch.bfloat16
    assert model_dtype("fp16", "cpu") == torch.float32  # no fp16 kernels on CPUs
    assert model_dtype("fp16", "cuda") == torch.float16
    m = place(torch.nn.Linear(2, 2).train(), "cpu", "bf16")
    assert m.weight.dtype == torch.bfloat16 and not m.training


def test_params_sections(params):
    tiny = params.active
    assert tiny.ray.address is None and tiny.device == "auto"
    assert tiny.storage.curation == "datasets/curation"
    assert RaySettings(address="ray://head:10001").address == "ray://head:10001"
    with pytest.raises(ValueError, match="ray.address"):
        RaySettings(address="head")
    data = json.loads(json.dumps({"profile": "tiny", "profiles": {"tiny": {}}}))
    with pytest.raises(ConfigError):
        parse_params(data)  # the other sections are still required
    assert load_params().profiles["paper"].ray.decode_batch == 256


def test_auth_token_is_created_once_and_only_for_token_auth(tmp_path, monkeypatch):
    token = tmp_path / "ray" / "auth_token"
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token))
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert ensure_local_auth_token() is None and not token.exists()
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    assert ensure_local_auth_token() == token
    first = token.read_text()
    assert len(first) == 64 and int(first, 16) >= 0  # Ray's format: 32 random bytes as hex
    assert token.stat().st_mode & 0o077 == 0  # readable by its owner only
    assert ensure_local_auth_token() == token and token.read_text() == first  # never overwritten
    assert [p.name for p in token.parent.iterdir()] == ["auth_token"]  # no temporary left behind
    monkeypatch.setenv("RAY_AUTH_TOKEN", "given")
    token.unlink()
    assert ensure_local_auth_token() is None and not token.exists()  # the user's token wins


def test_local_ray_head_starts_is_found_and_stops(tmp_path, monkeypatch):
    # a fresh machine: token auth on (lumos.env) and no token yet, which `ray start` refuses
    token = tmp_path / "fresh-home" / "auth_token"
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token))
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    assert os.environ["RAY_AUTH_MODE"] == "token"
    file = tmp_path / "ray.json"
    address = start_local_ray(num_cpus=1, num_gpus=0, address_file=file)
    try:
        assert token.is_file()
        assert address.startswith("127.0.0.1:")
        assert local_ray_address(file) == address
        assert start_local_ray(address_file=file) == address  # once per run
        pid = json.loads(file.read_text())["pid"]
    finally:
        assert stop_local_ray(file)
    assert local_ray_address(file) is None and not file.exists()
    deadline = time.monotonic() + 60  # a SIGKILLed group takes a while to go on a busy machine (run.sh's Ray beside it)
    while _live_members(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _live_members(pid)  # the head's whole process group is gone (zombies aside: this
    # machine's init may not reap the raylet and GCS once their parent is gone)


def _live_members(pgid: int) -> list[int]:
    live = []
    for proc in Path("/proc").iterdir():
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":  # state, ppid, pgrp
            live.append(int(proc.name))
    return live

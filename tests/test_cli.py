"""The `lumos` console script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import ROOT

LUMOS = str(Path(sys.executable).parent / "lumos")  # the venv's console script


def test_help_lists_the_stages():
    exe = LUMOS
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert "Pipeline stages: mini-world" in out
    assert "mini-world" in out and "params" in out and "serve" in out


def test_params_prints_the_active_profile():
    out = subprocess.run([LUMOS, "params"], capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout
    assert "active profile: tiny" in out
    assert "variant: tiny" in out


def test_every_stage_in_dvc_yaml_is_a_command_that_resolves():
    import importlib

    import yaml

    from lumos.cli import COMMANDS

    stages = set(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"])
    commands = {name for name, c in COMMANDS.items() if c.stage}
    assert stages == commands
    targets = [(name, c.run.target) for name, c in COMMANDS.items() if hasattr(c.run, "target")]
    assert len(targets) >= 8
    for name, target in targets:  # the table's "module:function" strings all import
        module, function = target.split(":")
        assert callable(getattr(importlib.import_module(module), function)), name


def test_stage_flows_run_without_heartbeats_unless_the_environment_asks(monkeypatch):
    """flows/_cli.py: Prefect's flow-run heartbeat thread costs ~0.9 s at the end of every stage."""
    from prefect.settings import get_current_settings

    from flows._cli import HEARTBEAT_VARIABLES, stage_heartbeats

    for name in HEARTBEAT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    default = get_current_settings().flows.heartbeat_frequency
    assert default is not None  # Prefect's own default sends them
    with stage_heartbeats():
        assert get_current_settings().flows.heartbeat_frequency is None
    assert get_current_settings().flows.heartbeat_frequency == default  # only for the stage's run
    monkeypatch.setenv("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "60")
    with stage_heartbeats():  # the user's setting stands
        assert get_current_settings().flows.heartbeat_frequency == default

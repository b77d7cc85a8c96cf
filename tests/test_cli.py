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

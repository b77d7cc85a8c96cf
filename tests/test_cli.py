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

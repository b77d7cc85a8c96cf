"""`dvc repro` on a copy of the project: the first run builds, the second executes nothing."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import copy_project


def _run(args: list[str], cwd: Path, env: dict) -> str:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> tuple[Path, dict]:
    return copy_project(tmp_path_factory.mktemp("clone"))


STAGES = ["mini-world", "curate-select", "curate-download", "curate-score", "curate-keep",
          "curate-catalog", "features-i2i", "train-i2i", "sample-i2i", "t2i-subset", "caption",
          "features-t5", "prepare-webvid", "render-objaverse"]


def _ran(output: str) -> list[str]:
    return [s for s in STAGES if f"Running stage '{s}'" in output]


def test_second_repro_runs_nothing(project):
    root, env = project
    first = _run(["dvc", "repro"], root, env)
    assert _ran(first) == STAGES
    manifest = root / "datasets/mini-world/manifest.json"
    assert manifest.is_file()
    stamp = manifest.stat().st_mtime_ns

    second = _run(["dvc", "repro"], root, env)
    assert "Running stage" not in second
    assert "Stage 'mini-world' didn't change, skipping" in second
    assert manifest.stat().st_mtime_ns == stamp

    status = _run(["dvc", "status"], root, env)
    assert "Data and pipelines are up to date" in status
    out = _run(["lumos", "catalog", "SELECT count(*) AS kept FROM images"], root, env)
    assert int(out.split("│")[-2]) > 50
    summary = json.loads((root / "models/i2i/summary.json").read_text())
    assert summary["steps"] == 40 and summary["loss_last"] < summary["loss_first"]
    for png in ("variations.png", "interpolation.png"):
        assert (root / "samples/i2i" / png).stat().st_size > 1000
    out = _run(["lumos", "catalog", "SELECT count(long_caption) FROM images_captioned"], root, env)
    assert int(out.split("│")[-2]) > 20  # the T2I subset was captioned
    out = _run(["lumos", "catalog", "SELECT count(*) FROM clips WHERE frames = 16"], root, env)
    assert int(out.split("│")[-2]) == 19  # 24 mini-world clips, 5 bad on purpose
    out = _run(["lumos", "catalog", "SELECT min(views) FROM objects"], root, env)
    assert int(out.split("│")[-2]) == 32
    out = _run(["lumos", "catalog", "SELECT count(*) FROM object_rejects"], root, env)
    assert int(out.split("│")[-2]) == 3  # missing, corrupt, not a GLB


def test_keep_threshold_change_invalidates_keep_but_not_download_or_scores(project):
    root, env = project
    _run(["dvc", "repro"], root, env)
    original = (root / "params.yaml").read_text()
    params = yaml.safe_load(original)
    params["profiles"]["tiny"]["curation"]["keep"]["aesthetic_min"] = 6.0
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = json.loads(_run(["dvc", "status", "--json"], root, env))
    assert set(status) == {"curate-keep"}  # downstream stages rerun only if keep's output changes
    assert "profiles.tiny.curation.keep" in json.dumps(status["curate-keep"])
    ran = _run(["dvc", "repro", "curate-keep", "--single-item"], root, env)
    assert _ran(ran) == ["curate-keep"]
    (root / "params.yaml").write_text(original)


def test_only_the_active_profile_is_tracked(project):
    root, env = project
    _run(["dvc", "repro"], root, env)
    original = (root / "params.yaml").read_text()
    params = yaml.safe_load(original)
    params["profiles"]["paper"]["mini_world"]["seed"] = 7  # the inactive profile
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert "Data and pipelines are up to date" in _run(["dvc", "status"], root, env)
    params["profiles"]["tiny"]["mini_world"]["seed"] = 7  # the active one
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert "profiles.tiny.mini_world" in _run(["dvc", "status"], root, env)
    (root / "params.yaml").write_text(original)

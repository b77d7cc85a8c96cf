"""Shared fixtures: the project's params, a built mini-world, free loopback ports."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
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


def without_run_outputs(profile):
    """The profile for a test that has no pipeline outputs: a random tiny VAE instead of
    train-vae's (models/vae), and no held-out probe during training (eval.every)."""
    return profile.model_copy(update={"vae": profile.vae.model_copy(update={"pretrained": None}),
                                      "eval": profile.eval.model_copy(update={"every": None})})


def without_run_outputs_raw(raw: dict, profile: str = "tiny") -> dict:
    """The same for a params dict written to a test's own params.yaml."""
    raw["profiles"][profile]["vae"]["pretrained"] = None
    raw["profiles"][profile]["eval"]["every"] = None
    return raw


@pytest.fixture(scope="session")
def mini_world(params, tmp_path_factory):
    """The default tiny mini-world, built once, with URLs on a free loopback port."""
    from lumos.demo import build_mini_world

    cfg = params.active.mini_world.model_copy(
        update={"base_url": f"http://127.0.0.1:{free_port()}"})
    root = tmp_path_factory.mktemp("mini-world") / "mw"
    manifest = build_mini_world(cfg, root)
    return cfg, root, manifest


def perturbed(model, seed: int = 1):
    """Random non-zero values everywhere, so a copy can't pass by accident (e.g. zero-init layers)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model.eval()


def dvc_outputs(dvc_yaml: Path) -> set[str]:
    """Every path dvc.yaml declares as a stage output (outs, metrics, plots): the run's products,
    which the workspace may hold after `bash run.sh` and a copy of the project must not."""
    import yaml

    paths = set()
    for stage in yaml.safe_load(dvc_yaml.read_text())["stages"].values():
        for kind in ("outs", "metrics", "plots"):
            for entry in stage.get(kind, []):
                paths.add((next(iter(entry)) if isinstance(entry, dict) else entry).rstrip("/"))
    return paths


def copy_project(dst: Path) -> tuple[Path, dict]:
    """The repository's files (tracked and new, not ignored; not the run's outputs nor its
    dvc.lock) in a fresh git repo at ``dst``, and an environment whose PATH starts with this venv
    (no install in the copy)."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout
    outputs = dvc_outputs(ROOT / "dvc.yaml")
    for rel in filter(None, files.split("\0")):
        if (ROOT / rel).is_file() and rel != "dvc.lock" and not any(
                rel == out or rel.startswith(out + "/") for out in outputs):
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dst / rel)
    # dvc.lock as committed: a `bash run.sh` in this workspace rewrites it (and its outputs are
    # not copied), and a copy must not believe stages ran that did not run there.
    committed = subprocess.run(["git", "show", "HEAD:dvc.lock"], cwd=ROOT, capture_output=True, text=True)
    if committed.returncode == 0:
        (dst / "dvc.lock").write_text(committed.stdout)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               PYTHONPATH=str(dst), LUMOS_NO_INSTALL="1")
    for key in ("MASTER_ADDR", "MASTER_PORT", "RANK", "LOCAL_RANK", "WORLD_SIZE"):
        env.pop(key, None)  # left by an in-process training test in this worker (its port is still held)
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy"]):
        subprocess.run(cmd, cwd=dst, env=env, check=True, capture_output=True)
    return dst, env


class Run:
    """Paths of one curation run of the mini-world source."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.select, self.download = base / "select" / "mw", base / "download" / "mw"
        self.scores, self.keep = base / "scores" / "mw", base / "keep" / "mw"
        self.catalog = base / "catalog.duckdb"


@pytest.fixture(scope="session")
def curated(params, mini_world, tmp_path_factory):
    """The whole curation chain run once on the mini-world (served on loopback)."""
    from lumos.config import Source
    from lumos.curation.catalog import build_catalog
    from lumos.curation.download import download_source
    from lumos.curation.keep import keep_source
    from lumos.curation.score import score_source
    from lumos.curation.select import select_source
    from lumos.demo import serve_mini_world

    world_cfg, root, _ = mini_world
    cfg = params.active.curation.model_copy(update={"download": params.active.curation.download.model_copy(
        update={"samples_per_shard": 50})})
    source = Source(name="mw", reader="laion", metadata=str(root / "metadata.parquet"))
    run = Run(tmp_path_factory.mktemp("curated"))
    select_source(cfg, source, run.select)
    with serve_mini_world(root, world_cfg.base_url):
        download_source(run.select / "selected.parquet", run.download, cfg.download)
    score_source(run.download, run.scores, cfg.score)
    keep_source(run.select / "selected.parquet", run.download, run.scores, run.keep, cfg.keep)
    build_catalog(run.base / "select", run.base / "keep", run.catalog, cfg)
    return cfg, root, run


# A white cube with a red marker poking out of its top face, off-centre: the renderer tests
# project the marker's centre into saved views and look for red there.
MARKER_CAMERAS = ((50.0, 20.0, 2.4), (35.0, 200.0, 2.2))  # (elevation, azimuth, radius)


def marker_object(dst: Path):
    """Write the object as ``dst/obj.glb``; returns (glb path, the marker's top-face centre in the
    coordinates render_object's own normalisation gives)."""
    import numpy as np
    import trimesh

    from lumos.render.renderer import normalize_mesh

    body = trimesh.creation.box(extents=(1.0, 1.0, 1.0))
    body.visual.face_colors = [230, 230, 230, 255]
    marker = trimesh.creation.box(extents=(0.2, 0.2, 0.2))
    marker.apply_translation((0.25, -0.2, 0.55))
    marker.visual.face_colors = [220, 20, 20, 255]
    mesh = trimesh.util.concatenate([body, marker])
    glb = dst / "obj.glb"
    glb.write_bytes(mesh.export(file_type="glb"))
    lo, hi = mesh.bounds
    normed = normalize_mesh(mesh.copy())
    scale = (normed.bounds[1] - normed.bounds[0]).max() / (hi - lo).max()
    return glb, (np.array([0.25, -0.2, 0.65]) - (lo + hi) / 2) * scale


def project(point, view: dict, meta: dict) -> tuple[float, float]:
    """Pixel (u, v) of a 3D point in a saved view: its 4x4 OpenCV world-to-camera and the pinhole
    of the saved fov and resolution."""
    import numpy as np

    focal = 0.5 * meta["resolution"] / np.tan(np.radians(meta["fov_deg"]) / 2)
    x, y, z = (np.array(view["w2c"]) @ np.append(point, 1.0))[:3]
    return focal * x / z + meta["resolution"] / 2, focal * y / z + meta["resolution"] / 2


@pytest.fixture(scope="session")
def ray_cluster():
    """A real local Ray with 2 CPUs on 127.0.0.1, started once per test session (ray.init ~3 s)."""
    import ray

    from lumos.config import RaySettings
    from lumos.runtime.ray import ensure_ray

    settings = RaySettings(num_cpus=2, num_gpus=0, max_retries=3, decode_batch=8)
    ensure_ray(settings)
    yield settings
    ray.shutdown()


# The longest files first: test.sh runs two xdist workers with `--dist loadfile`, which hands out
# files in collection order, so the whole-pipeline file (about 10 min here) must start at once
# on one worker while the other works through the rest; collected in name order it started
# minutes late and ran alone at the end.
LONGEST_FIRST = ("test_dvc_pipeline.py", "test_prefect_deployment.py")


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: file order kept otherwise

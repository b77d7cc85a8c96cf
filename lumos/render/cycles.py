"""Renderer ``"cycles"``: Blender's Cycles path tracer (the paper's "ray tracing engine", G.3).

Blender's Python module ``bpy`` (PyPI ``bpy==5.0.1``, Python 3.11 only) pins ``numpy<2`` while
the project pins numpy 2, so it cannot share the project's venv. It lives in its own venv,
``.venv-blender`` (made by ``scripts/install.sh`` from ``requirements-blender.lock``), and
:class:`CyclesRenderer` runs :mod:`lumos.render.blender_worker` there, one subprocess per
object: the worker imports the GLB with ``bpy.ops.import_scene.gltf``, normalises it to the
unit box exactly as :func:`~lumos.render.renderer.normalize_mesh` does, renders every view on
the CPU and writes RGBA PNGs that this side reads back. ``render_object`` then writes the same
files as for ``"raycast"``. Nothing here imports ``bpy``: the package imports without it.

Which Python runs the worker: ``$LUMOS_BLENDER_PYTHON``, else ``.venv-blender/bin/python`` in
the repository (or the current directory), else this interpreter if it can import ``bpy``.

Rendering: Cycles on the CPU, ``samples`` paths per pixel with a fixed ``seed``, adaptive
sampling and the denoiser off (the same bytes every run), ``max_bounces`` bounces, a
transparent film (alpha = coverage, antialiased by Cycles' pixel filter), the "Standard" view
transform (plain sRGB), a uniform white sky of strength ``ambient`` and a sun of strength
``sun_strength`` shining from the camera's upper left (the ray caster's headlight).
Materials and textures are the GLB's own; vertex colours are read as sRGB
(``vertex_colors_srgb``, see the worker).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from lumos.render.renderer import DEFAULT_FOV_DEG, Renderer, as_mesh

WORKER = Path(__file__).with_name("blender_worker.py")
ROOT = Path(__file__).resolve().parents[2]
BPY_PIN = "bpy==5.0.1"


def find_blender_python() -> str | None:
    """The interpreter that has ``bpy`` (see the module docstring), or None."""
    env = os.environ.get("LUMOS_BLENDER_PYTHON")
    if env:
        return env
    for base in (ROOT, Path.cwd()):
        exe = base / ".venv-blender" / "bin" / "python"
        if exe.exists():
            return str(exe)
    import importlib.util

    if importlib.util.find_spec("bpy") is not None:
        return sys.executable
    return None


@lru_cache(maxsize=8)
def blender_version(python: str) -> str:
    """``bpy.app.version_string`` of that interpreter (raises RuntimeError if it has no bpy)."""
    try:
        proc = subprocess.run([python, "-I", "-c", "import bpy; print(bpy.app.version_string)"],
                              capture_output=True, text=True, timeout=120, check=False)
    except OSError as err:
        raise RuntimeError(f"cannot run {python}: {err}") from None
    if proc.returncode != 0:
        raise RuntimeError(f"{python} cannot import bpy: {proc.stderr.strip()[-500:]}")
    return proc.stdout.strip().splitlines()[-1]


class CyclesRenderer(Renderer):
    """Blender Cycles on the CPU behind the :class:`Renderer` interface (module docstring).

    ``render_file`` renders all views of one object in one Blender process (start-up and
    import once, ~1 s); ``render`` of an in-memory mesh writes it to a temporary GLB first.
    A worker failure raises ValueError (``run_render`` records the object as rejected).
    """

    name = "cycles"

    def __init__(
        self,
        samples: int = 32,
        seed: int = 0,
        max_bounces: int = 4,
        ambient: float = 0.35,
        sun_strength: float = 2.0,
        threads: int = 0,
        vertex_colors_srgb: bool = True,
        python: str | None = None,
        timeout_s: float = 1800.0,
    ) -> None:
        python = python or find_blender_python()
        if python is None:
            raise RuntimeError(
                "renderer 'cycles' needs Blender's Python module in its own venv (it pins numpy<2): "
                f"run scripts/install.sh, or make a Python 3.11 venv, `pip install {BPY_PIN}` there and "
                "set LUMOS_BLENDER_PYTHON to its python")
        self.python = python
        self.version = blender_version(python)
        self.options = {"samples": int(samples), "seed": int(seed), "max_bounces": int(max_bounces),
                        "ambient": float(ambient), "sun_strength": float(sun_strength),
                        "threads": int(threads), "vertex_colors_srgb": bool(vertex_colors_srgb)}
        self.timeout_s = timeout_s
        self.last_stats: dict = {}

    def render_file(self, path, w2cs: Sequence[np.ndarray], resolution: int,
                    fov_deg: float = DEFAULT_FOV_DEG, normalize: bool = True) -> list[np.ndarray]:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(path)
        with tempfile.TemporaryDirectory(prefix="lumos-cycles-") as tmp:
            out = Path(tmp) / "out"
            job = {"glb": str(path.resolve()), "out_dir": str(out), "resolution": int(resolution),
                   "fov_deg": float(fov_deg), "normalize": bool(normalize),
                   "views": [np.asarray(w, dtype=float).tolist() for w in w2cs], **self.options}
            (Path(tmp) / "job.json").write_text(json.dumps(job))
            try:
                proc = subprocess.run([self.python, "-I", str(WORKER), str(Path(tmp) / "job.json")],
                                      capture_output=True, text=True, timeout=self.timeout_s, check=False)
            except subprocess.TimeoutExpired:
                raise ValueError(f"cycles timed out after {self.timeout_s} s on {path.name}") from None
            if proc.returncode != 0:
                tail = (proc.stderr or proc.stdout).strip()[-800:]
                raise ValueError(f"cycles could not render {path.name} (exit {proc.returncode}): {tail}")
            self.last_stats = json.loads((out / "worker.json").read_text())
            images = []
            for i in range(len(job["views"])):
                with Image.open(out / f"{i:03d}.png") as im:
                    images.append(np.asarray(im.convert("RGBA")).copy())
        return images

    def render(self, mesh, w2c, resolution, fov_deg=DEFAULT_FOV_DEG):
        with tempfile.TemporaryDirectory(prefix="lumos-cycles-mesh-") as tmp:
            glb = Path(tmp) / "mesh.glb"
            glb.write_bytes(as_mesh(mesh).export(file_type="glb"))
            # as the ray caster: the mesh as given (render_object normalises before calling)
            return self.render_file(glb, [w2c], resolution, fov_deg, normalize=False)[0]

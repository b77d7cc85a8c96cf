"""Renderers behind one interface, and ``render_object`` (supplement G.3).

The paper renders Objaverse with a ray-tracing engine (Blender Cycles). Here the registered
backends are:

- ``"raycast"`` (:class:`RaycastRenderer`): a real, light CPU ray caster. One primary ray per
  pixel centre, first hit by Moller-Trumbore in numpy (or trimesh's embree intersector when
  ``embreex`` happens to be installed), Lambert shading from face normals with ambient light,
  colours from the mesh's face colours, alpha = hit mask on a transparent background.
  No shadows, no bounces, no textures (texture visuals are baked to colours by trimesh).
- ``"cycles"`` (:class:`lumos.render.cycles.CyclesRenderer`): Blender Cycles via ``bpy``, run
  in its own venv (bpy pins numpy<2) as a subprocess per object; building it without that
  venv raises an error naming ``pip install bpy``.

``render_object`` calls ``Renderer.render_file`` (every view of one file, normalised to the
unit box), so both backends write the same files.

Camera convention: OpenCV world-to-camera matrices (see :mod:`lumos.render.cameras`);
``fov_deg`` is the full field of view of the square image. The default 49.1 deg is
Zero-1-to-3's Blender camera (35 mm lens, 32 mm sensor).
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import trimesh
from PIL import Image

from lumos.io import atomic_dir
from lumos.registry import Registry
from lumos.render.cameras import Camera

DEFAULT_FOV_DEG = 49.1
DONE = "_DONE"
RENDERERS: Registry[type] = Registry("renderer")


def as_mesh(obj: trimesh.Trimesh | trimesh.Scene) -> trimesh.Trimesh:
    """A scene's geometry concatenated into one mesh, transforms applied."""
    if isinstance(obj, trimesh.Scene):
        if hasattr(obj, "to_geometry"):
            return obj.to_geometry()
        return obj.dump(concatenate=True)
    return obj


def load_mesh(path: Path | str) -> trimesh.Trimesh:
    """Load a GLB/OBJ/... as one mesh without merging vertices (keeps per-face colours)."""
    return as_mesh(trimesh.load(str(path), process=False))


def normalize_mesh(mesh: trimesh.Trimesh | trimesh.Scene) -> trimesh.Trimesh:
    """A copy scaled so the bounding box's longest side is 1, centred at the origin."""
    mesh = as_mesh(mesh).copy()
    lo, hi = mesh.bounds
    mesh.apply_translation(-(lo + hi) / 2)
    size = float(np.max(hi - lo))
    if size > 0:
        mesh.apply_scale(1.0 / size)
    return mesh


def face_colours(mesh: trimesh.Trimesh) -> np.ndarray:
    """(F, 3) float RGB in [0, 1] for each face, whatever the visual's kind."""
    vis = mesh.visual
    kind = getattr(vis, "kind", None)
    if kind == "texture":
        vis = vis.to_color()
        kind = vis.kind
    if kind == "face":
        fc = np.asarray(vis.face_colors)[:, :3]
    elif kind == "vertex":
        fc = np.asarray(vis.vertex_colors)[mesh.faces][:, :, :3].mean(axis=1)
    else:
        fc = np.full((len(mesh.faces), 3), 180.0)
    return np.asarray(fc, dtype=np.float64) / 255.0


def camera_rays(w2c: np.ndarray, resolution: int, fov_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """World-space origin (3,) and unit directions (R*R, 3), row-major over pixel centres."""
    rot, t = w2c[:3, :3], w2c[:3, 3]
    focal = 0.5 * resolution / np.tan(np.radians(fov_deg) / 2)
    c = (np.arange(resolution) + 0.5 - resolution / 2) / focal
    v, u = np.meshgrid(c, c, indexing="ij")  # v: rows (down), u: columns (right)
    d_cam = np.stack([u, v, np.ones_like(u)], axis=-1).reshape(-1, 3)
    d = d_cam @ rot  # = (rot.T @ d_cam.T).T
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    return -rot.T @ t, d


def first_hits_numpy(
    origin: np.ndarray, dirs: np.ndarray, triangles: np.ndarray, chunk_elems: int = 2_000_000
) -> tuple[np.ndarray, np.ndarray]:
    """Moller-Trumbore for rays sharing one origin: (face index or -1, distance) per ray."""
    v0 = triangles[:, 0]
    e1 = triangles[:, 1] - v0
    e2 = triangles[:, 2] - v0
    s = origin[None, :] - v0  # (F, 3), shared by every ray
    q = np.cross(s, e1)  # (F, 3)
    t_num = np.einsum("fk,fk->f", e2, q)  # (F,)
    n_rays, n_faces = len(dirs), len(triangles)
    face = np.full(n_rays, -1, dtype=np.int64)
    dist = np.full(n_rays, np.inf)
    step = max(1, chunk_elems // max(n_faces, 1))
    for a in range(0, n_rays, step):
        d = dirs[a : a + step]  # (B, 3)
        p = np.cross(d[:, None, :], e2[None, :, :])  # (B, F, 3)
        det = np.einsum("bfk,fk->bf", p, e1)
        ok = np.abs(det) > 1e-12
        inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
        u = np.einsum("bfk,fk->bf", p, s) * inv
        vv = (d @ q.T) * inv
        tt = t_num[None, :] * inv
        hit = ok & (u >= 0) & (vv >= 0) & (u + vv <= 1) & (tt > 1e-9)
        tt = np.where(hit, tt, np.inf)
        best = np.argmin(tt, axis=1)
        bd = tt[np.arange(len(d)), best]
        got = np.isfinite(bd)
        face[a : a + step] = np.where(got, best, -1)
        dist[a : a + step] = bd
    return face, dist


def is_closed(mesh: trimesh.Trimesh) -> bool:
    """Watertight once coincident vertices are merged (colours and normals ignored)."""
    geom = trimesh.Trimesh(np.asarray(mesh.vertices), np.asarray(mesh.faces), process=True)
    return bool(geom.is_watertight)


def ray_hits_box(origin: np.ndarray, dirs: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Slab test: which rays meet the axis-aligned box [lo, hi] in front of the origin."""
    eps = 1e-9
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / np.where(np.abs(dirs) < 1e-15, 1e-15, dirs)
        t0 = (lo - eps - origin) * inv
        t1 = (hi + eps - origin) * inv
    tmin = np.minimum(t0, t1).max(axis=1)
    tmax = np.maximum(t0, t1).min(axis=1)
    return (tmax >= np.maximum(tmin, 0.0))


class Renderer:
    """Interface: ``render(mesh, w2c, resolution, fov_deg) -> (R, R, 4) uint8 RGBA``, and
    ``render_file(path, w2cs, resolution, fov_deg)``: every view of a mesh file normalised to
    the unit box (a backend may load the file its own way, as Cycles does)."""

    name = "base"

    def render(
        self,
        mesh: trimesh.Trimesh | trimesh.Scene,
        w2c: np.ndarray,
        resolution: int,
        fov_deg: float = DEFAULT_FOV_DEG,
    ) -> np.ndarray:
        raise NotImplementedError

    def render_file(
        self, path: Path | str, w2cs: Sequence[np.ndarray], resolution: int, fov_deg: float = DEFAULT_FOV_DEG
    ) -> list[np.ndarray]:
        mesh = normalize_mesh(load_mesh(path))
        return [self.render(mesh, w2c, resolution, fov_deg) for w2c in w2cs]


@RENDERERS.register("raycast")
class RaycastRenderer(Renderer):
    """CPU ray caster with Lambert shading (see module docstring).

    ``engine``: ``"numpy"``, ``"embree"`` (trimesh + embreex) or ``"auto"`` (embree if present).
    Lighting: ``ambient + (1 - ambient) * |n . l|`` with a headlight ``l`` tilted up-left in
    the camera frame (two-sided, so open meshes shade too).
    """

    name = "raycast"

    def __init__(self, engine: str = "auto", ambient: float = 0.35, cull_backfaces: bool = True) -> None:
        if engine == "auto":
            from trimesh.ray import has_embree

            engine = "embree" if has_embree else "numpy"
        if engine not in ("numpy", "embree"):
            raise ValueError(f"engine must be numpy, embree or auto, not {engine!r}")
        self.engine = engine
        self.ambient = ambient
        self.cull_backfaces = cull_backfaces

    def render(self, mesh, w2c, resolution, fov_deg=DEFAULT_FOV_DEG):
        mesh = as_mesh(mesh)
        w2c = np.asarray(w2c, dtype=np.float64)
        origin, dirs = camera_rays(w2c, resolution, fov_deg)
        normals = np.asarray(mesh.face_normals)
        colours = face_colours(mesh)
        if self.engine == "embree":
            face = mesh.ray.intersects_first(np.broadcast_to(origin, dirs.shape), dirs)
        else:
            tri = np.asarray(mesh.triangles)
            keep = np.arange(len(tri))
            if self.cull_backfaces and is_closed(mesh):
                # a closed surface seen from outside: the first hit always faces the camera
                keep = np.flatnonzero(np.einsum("fk,fk->f", normals, origin[None] - tri[:, 0]) > 0)
            face = np.full(len(dirs), -1, dtype=np.int64)
            rays = np.flatnonzero(ray_hits_box(origin, dirs, *mesh.bounds))
            if len(rays) and len(keep):
                f, _ = first_hits_numpy(origin, dirs[rays], tri[keep])
                face[rays] = np.where(f >= 0, keep[np.maximum(f, 0)], -1)
        hit = face >= 0
        light_cam = np.array([-0.3, -0.5, -1.0])  # towards the camera, from above-left
        light = w2c[:3, :3].T @ (light_cam / np.linalg.norm(light_cam))
        n = normals[face[hit]]
        shade = self.ambient + (1 - self.ambient) * np.abs(n @ light)
        rgba = np.zeros((resolution * resolution, 4), dtype=np.uint8)
        rgba[hit, :3] = np.clip(np.round(colours[face[hit]] * shade[:, None] * 255), 0, 255)
        rgba[hit, 3] = 255
        return rgba.reshape(resolution, resolution, 4)


@RENDERERS.register("cycles")
def _cycles(**kwargs) -> Renderer:
    """Blender Cycles (:mod:`lumos.render.cycles`, imported only when asked for)."""
    from lumos.render.cycles import CyclesRenderer

    return CyclesRenderer(**kwargs)


def get_renderer(name: str = "raycast", **kwargs) -> Renderer:
    return RENDERERS[name](**kwargs)


def _png(rgba: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgba, mode="RGBA").save(buf, format="PNG")
    return buf.getvalue()


def render_object(
    glb_path: Path | str,
    out_dir: Path | str,
    cameras: Sequence[Camera],
    resolution: int = 256,
    renderer: Renderer | str = "raycast",
    fov_deg: float = DEFAULT_FOV_DEG,
    uid: str | None = None,
) -> Path:
    """Render one object to ``out_dir/<uid>/{000.png, ..., cameras.json, _DONE}``.

    ``uid`` defaults to the file's stem. The object is normalised to a unit bounding box first. The
    directory appears whole (``atomic_dir``); one with ``_DONE`` is skipped on rerun.
    ``cameras.json`` holds, per view, the elevation/azimuth/radius, the OpenCV 4x4
    world-to-camera matrix, the fov and the resolution.
    """
    glb_path = Path(glb_path)
    uid = uid or glb_path.stem
    target = Path(out_dir) / uid
    if (target / DONE).exists():
        return target
    if isinstance(renderer, str):
        renderer = get_renderer(renderer)
    cams = [Camera(*cam) for cam in cameras]
    w2cs = [cam.w2c() for cam in cams]
    images = renderer.render_file(glb_path, w2cs, resolution, fov_deg)
    views = []
    with atomic_dir(target) as tmp:
        for i, (cam, w2c, rgba) in enumerate(zip(cams, w2cs, images, strict=True)):
            (tmp / f"{i:03d}.png").write_bytes(_png(rgba))
            views.append({"index": i, "image": f"{i:03d}.png", **cam.to_dict(), "w2c": w2c.tolist()})
        meta = {
            "uid": uid,
            "renderer": renderer.name,
            "resolution": resolution,
            "fov_deg": fov_deg,
            "convention": "opencv_w2c",
            "views": views,
        }
        (tmp / "cameras.json").write_text(json.dumps(meta, indent=1))
        (tmp / DONE).write_text("")
    return target

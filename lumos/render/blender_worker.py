"""The Cycles side of renderer ``"cycles"``: a script run by Blender's own Python.

Not imported by the project: :class:`lumos.render.cycles.CyclesRenderer` runs
``<blender python> -I blender_worker.py job.json``. It needs only the standard library and
``bpy``/``mathutils`` (the bpy wheel pins ``numpy<2``, the project pins numpy 2, so bpy lives
in its own venv, ``.venv-blender``).

``job.json``: ``{"glb", "out_dir", "views": [4x4 OpenCV world-to-camera, ...], "resolution",
"fov_deg", "normalize", "samples", "seed", "max_bounces", "ambient", "sun_strength", "threads",
"vertex_colors_srgb"}``. Writes
``out_dir/000.png ...`` (8-bit RGBA, straight alpha, sRGB) and ``out_dir/worker.json``.

Frames, as in :mod:`lumos.render.renderer`:

- The project's world frame is the GLB's own coordinates (trimesh applies no axis change).
  Blender's glTF importer turns glTF's +Y-up into Blender's +Z-up, ``(x, y, z) -> (x, -z, y)``;
  that rotation is undone on the imported roots, so Blender's world is the project's world.
- Then the same normalisation as ``normalize_mesh``: the bounding box of every mesh vertex is
  centred at the origin and its longest side scaled to 1.
- OpenCV cameras look down +z with +y down; Blender cameras look down -Z with +Y up, so
  ``camera.matrix_world = inverse(w2c) @ diag(1, -1, -1, 1)``. ``fov_deg`` is the full
  horizontal (= vertical, square image) angle; the principal point is the image centre.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path


def _reset(bpy) -> None:
    bpy.ops.wm.read_factory_settings(use_empty=True)


def _import_normalised(bpy, mathutils, glb: str, normalize: bool = True) -> int:
    """Import the GLB, undo the importer's Y-up -> Z-up turn, centre and scale to a unit box."""
    before = set(bpy.data.objects)
    bpy.ops.import_scene.gltf(filepath=glb)
    new = [o for o in bpy.data.objects if o not in before]
    roots = [o for o in new if o.parent is None]
    # importer: Blender (x, y, z) = glTF (x, -z, y); its inverse maps Blender back to glTF
    undo = mathutils.Matrix(((1, 0, 0, 0), (0, 0, 1, 0), (0, -1, 0, 0), (0, 0, 0, 1)))
    for o in roots:
        o.matrix_world = undo @ o.matrix_world
    bpy.context.view_layer.update()
    meshes = [o for o in new if o.type == "MESH"]
    if not meshes:
        raise ValueError(f"no mesh in {glb}")
    lo = [math.inf] * 3
    hi = [-math.inf] * 3
    depsgraph = bpy.context.evaluated_depsgraph_get()
    n_faces = 0
    for o in meshes:
        ev = o.evaluated_get(depsgraph)
        mesh = ev.to_mesh()
        mw = ev.matrix_world
        for v in mesh.vertices:
            p = mw @ v.co
            for k in range(3):
                lo[k] = min(lo[k], p[k])
                hi[k] = max(hi[k], p[k])
        n_faces += len(mesh.polygons)
        ev.to_mesh_clear()
    centre = mathutils.Vector([(a + b) / 2 for a, b in zip(lo, hi)])
    size = max(b - a for a, b in zip(lo, hi))
    if not normalize:
        return n_faces
    norm = mathutils.Matrix.Translation(-centre)
    if size > 0:
        norm = mathutils.Matrix.Scale(1.0 / size, 4) @ norm
    for o in roots:
        o.matrix_world = norm @ o.matrix_world
    bpy.context.view_layer.update()
    return n_faces


def _vertex_colours_as_srgb(bpy) -> int:
    """Read vertex colours (glTF ``COLOR_0``) as sRGB display values, not linear.

    The glTF spec says linear, but trimesh (and so the demo objects, and the ray caster that
    draws their bytes as they are) writes display colours; without this a colour of byte
    value 20 would render as sRGB 79. Textures are untouched (images carry their own space).
    """
    n = 0
    for mesh in bpy.data.meshes:
        for attr in mesh.color_attributes:
            buf = [0.0] * (4 * len(attr.data))
            attr.data.foreach_get("color", buf)
            attr.data.foreach_set("color_srgb", buf)
            n += 1
    return n


def _setup_scene(bpy, job: dict):
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    cyc = scene.cycles
    cyc.device = "CPU"
    cyc.samples = int(job["samples"])
    cyc.seed = int(job["seed"])
    cyc.use_animated_seed = False
    cyc.use_adaptive_sampling = False  # a fixed sample count: the same image every run
    cyc.use_denoising = False
    cyc.max_bounces = int(job["max_bounces"])
    if job.get("threads"):
        scene.render.threads_mode = "FIXED"
        scene.render.threads = int(job["threads"])
    res = int(job["resolution"])
    scene.render.resolution_x = res
    scene.render.resolution_y = res
    scene.render.resolution_percentage = 100
    scene.render.pixel_aspect_x = scene.render.pixel_aspect_y = 1.0
    scene.render.film_transparent = True
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGBA"
    scene.render.image_settings.color_depth = "8"
    scene.view_settings.view_transform = "Standard"  # plain sRGB, no filmic tone curve
    scene.view_settings.look = "None"
    # simple lighting: a uniform grey sky (ambient) and a sun that follows the camera
    world = bpy.data.worlds.new("lumos-world")
    if not world.node_tree:  # Blender 5 worlds have nodes from the start (use_nodes is deprecated)
        world.use_nodes = True
    bg = world.node_tree.nodes["Background"]
    bg.inputs["Color"].default_value = (1.0, 1.0, 1.0, 1.0)
    bg.inputs["Strength"].default_value = float(job["ambient"])
    scene.world = world
    sun = bpy.data.objects.new("lumos-sun", bpy.data.lights.new("lumos-sun", type="SUN"))
    sun.data.energy = float(job["sun_strength"])
    sun.data.angle = math.radians(5.0)
    scene.collection.objects.link(sun)
    cam = bpy.data.objects.new("lumos-camera", bpy.data.cameras.new("lumos-camera"))
    cam.data.type = "PERSP"
    cam.data.sensor_fit = "HORIZONTAL"
    cam.data.angle = math.radians(float(job["fov_deg"]))
    cam.data.shift_x = cam.data.shift_y = 0.0
    cam.data.clip_start = 0.01
    cam.data.clip_end = 100.0
    scene.collection.objects.link(cam)
    scene.camera = cam
    return scene, cam, sun


def _pose(mathutils, cam, sun, w2c) -> None:
    w2c = mathutils.Matrix(w2c)
    c2w = w2c.inverted()
    cam.matrix_world = c2w @ mathutils.Matrix.Diagonal((1.0, -1.0, -1.0, 1.0))
    # sun from the camera's upper left (the ray caster's headlight): a sun shines down its -Z,
    # so its +Z points at the light, (-0.3, -0.5, -1) in OpenCV camera coordinates
    to_light = (c2w.to_3x3() @ mathutils.Vector((-0.3, -0.5, -1.0))).normalized()
    sun.matrix_world = to_light.to_track_quat("Z", "Y").to_matrix().to_4x4()


def main(job_path: str) -> int:
    import bpy
    import mathutils

    job = json.loads(Path(job_path).read_text())
    out = Path(job["out_dir"])
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    _reset(bpy)
    n_faces = _import_normalised(bpy, mathutils, job["glb"], job.get("normalize", True))
    if job.get("vertex_colors_srgb", True):
        _vertex_colours_as_srgb(bpy)
    scene, cam, sun = _setup_scene(bpy, job)
    t1 = time.perf_counter()
    for i, w2c in enumerate(job["views"]):
        _pose(mathutils, cam, sun, w2c)
        scene.render.filepath = str(out / f"{i:03d}.png")
        bpy.ops.render.render(write_still=True)
    t2 = time.perf_counter()
    (out / "worker.json").write_text(json.dumps({
        "blender": bpy.app.version_string, "faces": n_faces, "views": len(job["views"]),
        "setup_s": round(t1 - t0, 3), "render_s": round(t2 - t1, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))

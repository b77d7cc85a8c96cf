"""Procedural meshes, Zero-1-to-3 cameras, the ray-cast renderer and NVS pairs (supplement G.3)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import trimesh

from lumos.demo.meshes import build_meshes
from lumos.demo.scenes import COLOURS
from lumos.render.cameras import (
    Camera,
    fixed_cameras,
    look_at,
    relative_pose,
    sample_cameras,
    zero123_pose,
)
from lumos.render.pairs import NVSPairs
from lumos.render.renderer import (
    RENDERERS,
    RaycastRenderer,
    get_renderer,
    load_mesh,
    normalize_mesh,
    render_object,
)


def test_meshes_deterministic_and_annotated(tmp_path):
    a = build_meshes(tmp_path / "a", n=12, seed=3)
    b = build_meshes(tmp_path / "b", n=12, seed=3)
    c = build_meshes(tmp_path / "c", n=12, seed=4)
    assert a == b and a != c
    assert len({r["uid"] for r in a}) == 12
    paths = json.loads((tmp_path / "a" / "objects.json").read_text())
    assert set(paths) == {r["uid"] for r in a}
    for uid, rel in paths.items():
        assert rel == f"objects/{uid}.glb"
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    gt = pd.read_parquet(tmp_path / "a" / "objects.parquet")
    assert list(gt["uid"]) == [r["uid"] for r in a]
    # every face colour of the loaded GLB is one of the object's ground-truth colours
    for r in a:
        mesh = load_mesh(tmp_path / "a" / r["path"])
        fc = {tuple(c) for c in mesh.visual.vertex_colors[mesh.faces][:, 0, :3].tolist()}
        assert fc <= {COLOURS[c] for c in r["colours"]}


def test_look_at_rigid_and_facing_origin():
    for cam in sample_cameras(20, (1.5, 2.2), (-10, 40), seed=1) + [Camera(90, 0, 2), Camera(-90, 0, 2)]:
        w2c = look_at(cam.eye())
        r = w2c[:3, :3]
        np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(r) == pytest.approx(1.0)
        np.testing.assert_allclose(w2c[3], [0, 0, 0, 1])
        # the origin lies on the +optical axis at distance radius
        np.testing.assert_allclose(w2c @ [0, 0, 0, 1], [0, 0, cam.radius, 1], atol=1e-12)
        # the camera centre maps to the camera origin
        np.testing.assert_allclose(w2c @ [*cam.eye(), 1], [0, 0, 0, 1], atol=1e-12)
    # OpenCV: world +z (up) projects to image up, i.e. negative camera y
    assert (look_at(Camera(0, 0, 2).eye()) @ [0, 0, 1, 0])[1] < 0


def test_relative_pose_hand_cases():
    r = 2.0
    a = Camera(0, 0, r).w2c()
    R, T = relative_pose(a, a)
    np.testing.assert_allclose(R, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(T, 0, atol=1e-12)
    # camera a at (r,0,0): rows right=(0,1,0), down=(0,0,-1), fwd=(-1,0,0), t=(0,0,r)
    np.testing.assert_allclose(a[:3, :3], [[0, 1, 0], [0, 0, -1], [-1, 0, 0]], atol=1e-12)
    # camera b at (0,r,0): right=(-1,0,0), down=(0,0,-1), fwd=(0,-1,0); R_b R_a^T by hand:
    b = Camera(0, 90, r).w2c()
    np.testing.assert_allclose(b[:3, :3], [[-1, 0, 0], [0, 0, -1], [0, -1, 0]], atol=1e-12)
    R, T = relative_pose(a, b)
    np.testing.assert_allclose(R, [[0, 0, 1], [0, 1, 0], [-1, 0, 0]], atol=1e-12)
    np.testing.assert_allclose(T, [-r, 0, r], atol=1e-12)  # (0,0,r) - R (0,0,r)
    # pure radius change: no rotation, translation along the optical axis
    R, T = relative_pose(Camera(20, 40, 1.5).w2c(), Camera(20, 40, 2.2).w2c())
    np.testing.assert_allclose(R, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(T, [0, 0, 0.7], atol=1e-12)
    # composition: w2c_b == [R|T] @ w2c_a for random cameras
    cams = sample_cameras(10, (1.5, 2.2), (-10, 40), seed=2)
    for ca, cb in zip(cams[:-1], cams[1:], strict=True):
        R, T = relative_pose(ca.w2c(), cb.w2c())
        m = np.eye(4)
        m[:3, :3], m[:3, 3] = R, T
        np.testing.assert_allclose(m @ ca.w2c(), cb.w2c(), atol=1e-12)


def test_zero123_pose():
    a = Camera(10, 30, 1.8)
    np.testing.assert_allclose(zero123_pose(a, a), [0, 0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(zero123_pose(a, Camera(10, 120, 1.8)), [0, 1, 0, 0], atol=1e-12)
    # elevation up by 30 deg = polar down by 30 deg (radians); radius delta is b - a
    np.testing.assert_allclose(
        zero123_pose(a, Camera(40, 30, 2.0)), [-np.pi / 6, 0, 1, 0.2], atol=1e-12)


def test_camera_sets(params):
    nvs = params.active.nvs
    gso = fixed_cameras(nvs.eval_azimuths, nvs.eval_elevations_deg, radius=1.5)
    assert len(gso) == 16 * 2
    assert sorted({c.elevation_deg for c in gso}) == [0.0, 30.0]
    assert sorted({c.azimuth_deg for c in gso}) == [22.5 * k for k in range(16)]
    cams = sample_cameras(nvs.views, nvs.radius, nvs.elevation_deg, seed=0)
    assert cams == sample_cameras(nvs.views, nvs.radius, nvs.elevation_deg, seed=0)
    assert len(cams) == 32
    for c in cams:
        assert -10 <= c.elevation_deg <= 40 and 0 <= c.azimuth_deg < 360 and 1.5 <= c.radius <= 2.2


def _cube(colours):
    mesh = trimesh.creation.box(extents=(3, 3, 3))  # normalize_mesh brings it to a unit box
    mesh.unmerge_vertices()
    mesh.visual.face_colors = colours
    return normalize_mesh(mesh)


def test_render_cube(monkeypatch):
    rgba = np.array([[*COLOURS["red"], 255], [*COLOURS["blue"], 255]], dtype=np.uint8)
    cube = _cube(rgba[np.repeat([0, 1], 6)])  # faces 0-5 red, 6-11 blue
    np.testing.assert_allclose(cube.bounds, [[-0.5] * 3, [0.5] * 3])
    rnd = RaycastRenderer()
    # (at radius 2.5 the whole unit cube fits the 49.1 deg view; at 1.5 its corners may not)
    img = rnd.render(cube, Camera(20, 30, 2.5).w2c(), 32)
    assert img.shape == (32, 32, 4) and img.dtype == np.uint8
    mask = img[..., 3] > 0
    assert 0.05 < mask.mean() < 0.9
    assert set(np.unique(img[..., 3])) == {0, 255}
    assert not mask[0].any() and not mask[-1].any() and not mask[:, 0].any() and not mask[:, -1].any()
    ys, xs = np.nonzero(mask)
    assert abs(ys.mean() - 15.5) < 2 and abs(xs.mean() - 15.5) < 2
    assert (img[~mask] == 0).all()  # transparent background
    # shaded colours are scaled face colours: each hit pixel's chroma matches red or blue
    px = img[mask, :3].astype(float)
    unit = px / np.linalg.norm(px, axis=1, keepdims=True)
    refs = rgba[:, :3] / np.linalg.norm(rgba[:, :3].astype(float), axis=1, keepdims=True)
    assert (np.max(unit @ refs.T, axis=1) > 0.995).all()
    assert (np.max(unit @ refs.T, axis=0) > 0.995).all()  # both colours visible
    other = rnd.render(cube, Camera(-5, 200, 1.6).w2c(), 32)
    assert not np.array_equal(img, other)
    # without a Blender Python, "cycles" fails with the way to install it (tests/test_render_cycles.py
    # renders with it when .venv-blender is there)
    monkeypatch.setattr("lumos.render.cycles.find_blender_python", lambda: None)
    with pytest.raises(RuntimeError, match="pip install bpy"):
        get_renderer("cycles")
    assert {"raycast", "cycles"} <= set(RENDERERS)


def test_render_object_and_pairs(tmp_path, params):
    nvs = params.active.nvs
    recs = build_meshes(tmp_path / "objaverse", n=2, seed=0)
    cams = sample_cameras(nvs.views, nvs.radius, nvs.elevation_deg, seed=0)
    out = tmp_path / "renders"
    glb = tmp_path / "objaverse" / recs[0]["path"]
    d = render_object(glb, out, cams, resolution=16, renderer="raycast")
    assert d == out / recs[0]["uid"]
    assert sorted(p.name for p in d.glob("*.png")) == [f"{i:03d}.png" for i in range(32)]
    meta = json.loads((d / "cameras.json").read_text())
    assert len(meta["views"]) == 32 and meta["convention"] == "opencv_w2c"
    np.testing.assert_allclose(meta["views"][5]["w2c"], cams[5].w2c())
    stamp = (d / "000.png").stat().st_mtime_ns
    render_object(glb, out, cams, resolution=16, renderer="raycast")  # rerun: skipped
    assert (d / "000.png").stat().st_mtime_ns == stamp
    render_object(tmp_path / "objaverse" / recs[1]["path"], out, cams[:4], resolution=16)

    pairs = NVSPairs(out, pairs_per_object=5, seed=1)
    assert len(pairs) == 10
    assert [p for p in NVSPairs(out, pairs_per_object=5, seed=1).pairs] == pairs.pairs
    assert len(NVSPairs(out)) == 32 * 31 + 4 * 3
    item = pairs[0]
    assert item["input"].shape == (16, 16, 4) and item["R"].shape == (3, 3) and item["T"].shape == (3,)
    va, vb = meta["views"][item["a"]], meta["views"][item["b"]]
    m = np.eye(4)
    m[:3, :3], m[:3, 3] = item["R"], item["T"]
    np.testing.assert_allclose(m @ np.asarray(va["w2c"]), vb["w2c"], atol=1e-9)
    assert item["zero123"].shape == (4,)
    rgb = NVSPairs(out, pairs_per_object=1, rgb=True)[0]["input"]
    assert rgb.shape == (16, 16, 3) and rgb.dtype == np.float32 and rgb.max() <= 1


def test_a_known_point_reprojects_where_the_renderer_drew_it(tmp_path):
    """Poses are right, not just present: project a red marker's centre into two saved views
    with the saved 4x4 world-to-camera matrices and the pinhole of the saved fov."""
    import json

    from PIL import Image

    from conftest import MARKER_CAMERAS, marker_object, project
    from lumos.render.cameras import Camera
    from lumos.render.renderer import render_object

    glb, point = marker_object(tmp_path)
    out = render_object(glb, tmp_path / "r", [Camera(*c) for c in MARKER_CAMERAS], resolution=96,
                        renderer="raycast")
    meta = json.loads((out / "cameras.json").read_text())
    pixels = []
    for view in meta["views"]:
        u, v = project(point, view, meta)
        rgba = np.asarray(Image.open(out / view["image"]))
        r, g, b, a = rgba[int(v), int(u)].astype(int)
        assert a == 255 and r > 100 and g < 60 and b < 60, (view["index"], (u, v), rgba[int(v), int(u)])
        pixels.append((int(u), int(v)))
    assert pixels[0] != pixels[1]  # two different views, the same 3D point, both found

"""Procedural coloured 3D objects: a tiny offline stand-in for Objaverse (supplement G.3).

``build_meshes`` writes ``n`` GLB files to ``root/objects/<uid>.glb``, an Objaverse-style
annotation ``root/objects.json`` (uid -> path relative to ``root``, the format of Objaverse's
``object-paths.json``) and ``root/objects.parquet`` with the ground truth (uid, shape, colours,
colouring scheme). Everything is drawn from ``seed``: the same call gives the same bytes.

Shapes are trimesh primitives (box, icosphere, cylinder, cone, capsule, torus) and offset
combinations of two of them (concatenated, not boolean unions: no extra dependency, and each
part stays a closed surface so the ray caster can cull back faces). Colours come from the
2D scenes' palette (:data:`lumos.demo.scenes.COLOURS`) and are stored per face; vertices are
unmerged so the per-face colours survive glTF's per-vertex ``COLOR_0``.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import trimesh

from lumos.demo.scenes import COLOURS
from lumos.io import atomic_dir, atomic_write_bytes, atomic_write_text

PRIMITIVES = ("box", "sphere", "cylinder", "cone", "capsule", "torus")
COMBOS = ("box+sphere", "cylinder+cone", "capsule+torus", "box+cylinder")
SHAPES = PRIMITIVES + COMBOS
SCHEMES = ("solid", "two-tone", "per-part")


def _primitive(kind: str) -> trimesh.Trimesh:
    if kind == "box":
        return trimesh.creation.box(extents=(1.0, 1.0, 1.0))
    if kind == "sphere":
        return trimesh.creation.icosphere(subdivisions=2, radius=0.5)
    if kind == "cylinder":
        return trimesh.creation.cylinder(radius=0.4, height=1.0, sections=24)
    if kind == "cone":
        return trimesh.creation.cone(radius=0.5, height=1.0, sections=24)
    if kind == "capsule":
        return trimesh.creation.capsule(height=0.8, radius=0.3, count=(12, 12))
    if kind == "torus":
        return trimesh.creation.torus(major_radius=0.4, minor_radius=0.15, major_sections=24, minor_sections=12)
    raise KeyError(f"unknown primitive {kind!r}; known: {PRIMITIVES}")


def _parts(shape: str) -> list[trimesh.Trimesh]:
    """One mesh per part, already placed relative to each other."""
    if "+" not in shape:
        return [_primitive(shape)]
    a, b = (_primitive(k) for k in shape.split("+"))
    if shape == "box+sphere":  # a ball resting on a block
        b.apply_scale(0.7)
        b.apply_translation((0, 0, 0.75))
    elif shape == "cylinder+cone":  # a rocket
        b.apply_scale((0.8, 0.8, 0.6))
        b.apply_translation((0, 0, 0.8))
    elif shape == "capsule+torus":  # a ring around a pill
        b.apply_scale(1.2)
    elif shape == "box+cylinder":  # a block with a peg
        a.apply_scale((1.0, 1.0, 0.4))
        b.apply_scale((0.5, 0.5, 0.8))
        b.apply_translation((0, 0, 0.5))
    return [a, b]


def _uid(seed: int, i: int, shape: str) -> str:
    """32 hex digits, like Objaverse's uids."""
    return hashlib.sha1(f"lumos-mesh/{seed}/{i}/{shape}".encode()).hexdigest()[:32]


def make_mesh(shape: str, colours: list[str], scheme: str, rng: np.random.Generator) -> trimesh.Trimesh:
    """One coloured object: parts coloured by ``scheme``, randomly scaled and rotated."""
    parts = _parts(shape)
    rgba = [np.array([*COLOURS[c], 255], dtype=np.uint8) for c in colours]
    coloured = []
    for p, part in enumerate(parts):
        part = part.copy()
        part.unmerge_vertices()  # per-face colours must survive per-vertex glTF colours
        fc = np.empty((len(part.faces), 4), dtype=np.uint8)
        if scheme == "solid":
            fc[:] = rgba[0]
        elif scheme == "per-part":
            fc[:] = rgba[p % len(rgba)]
        else:  # two-tone: the +x half (face centroid x > part centroid x) in the second colour
            up = part.triangles_center[:, 0] > part.centroid[0] + 1e-9
            fc[:] = rgba[0]
            fc[up] = rgba[1 % len(rgba)]
        part.visual.face_colors = fc
        coloured.append(part)
    mesh = trimesh.util.concatenate(coloured) if len(coloured) > 1 else coloured[0]
    scale = rng.uniform(0.7, 1.3, size=3)
    mesh.apply_scale(scale)
    angle = float(rng.uniform(0, 2 * np.pi))
    tilt = float(rng.uniform(-0.3, 0.3))
    mesh.apply_transform(trimesh.transformations.rotation_matrix(angle, (0, 0, 1)))
    mesh.apply_transform(trimesh.transformations.rotation_matrix(tilt, (1, 0, 0)))
    return mesh


def build_meshes(root: Path, n: int = 12, seed: int = 0) -> list[dict]:
    """Write ``n`` objects under ``root``; return their ground-truth records."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    names = list(COLOURS)
    records: list[dict] = []
    with atomic_dir(root / "objects") as tmp:
        for i in range(n):
            shape = SHAPES[i % len(SHAPES)] if i < len(SHAPES) else str(rng.choice(SHAPES))
            scheme = "per-part" if "+" in shape and rng.random() < 0.5 else str(rng.choice(SCHEMES[:2]))
            k = 1 if scheme == "solid" else 2
            colours = [str(c) for c in rng.choice(names, size=k, replace=False)]
            mesh = make_mesh(shape, colours, scheme, rng)
            uid = _uid(seed, i, shape)
            (tmp / f"{uid}.glb").write_bytes(mesh.export(file_type="glb"))
            records.append(
                {
                    "uid": uid,
                    "path": f"objects/{uid}.glb",
                    "shape": shape,
                    "scheme": scheme,
                    "colours": colours,
                    "faces": int(len(mesh.faces)),
                }
            )
    atomic_write_text(root / "objects.json", json.dumps({r["uid"]: r["path"] for r in records}, indent=1))
    buf = io.BytesIO()
    pd.DataFrame.from_records(records).to_parquet(buf, index=False)
    atomic_write_bytes(root / "objects.parquet", buf.getvalue())
    return records

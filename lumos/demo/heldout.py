"""Held-out test sets of the mini-world, laid out like the real benchmarks (issue 17).

No training stage reads ``heldout/``: the curation, caption, render and video stages read
``images/``, ``metadata.parquet``, ``clips/``/``webvid.csv`` and ``objects/``. Every item draws
from its own stream ``[seed, HELDOUT_TAG, benchmark, i]``, disjoint from the training streams,
so the sets are a pure function of the mini-world seed. Layout (under ``<mini-world>/heldout``)::

    coco/annotations/captions_val2014.json   COCO captions (Table 2, FID-30K): images + annotations
    coco/annotations/mini_world_scenes.json  image_id -> scene parameters (Table 3 alignment; not COCO)
    coco/val2014/COCO_val2014_<id:012d>.jpg  square scenes (the T2I sample's aspect)
    imagenet/val/<wnid>/ILSVRC2012_val_<i:08d>.JPEG   ImageNet val, one folder per class (Table 1)
    gso/<name>/meshes/model.obj, model.mtl, materials/textures/texture.png   GSO objects (Table 4)
    ucf101/<ClassName>/v_<ClassName>_g<gg>_c<cc>.avi  UCF-101 (Table 5; read by read_ucf101)
    msrvtt/annotation/MSR_VTT.json, msrvtt/videos/all/video<i>.mp4  MSR-VTT (Table 5; read_msrvtt)
    manifest.json                            counts and the keys/captions/objects of each set

The ImageNet classes are the shape kinds (one shape per image), the UCF-101 classes the motion
directions; captions are written from the parameters as the training captions are, but from
different parameters, and ``manifest.json`` lists them so a test can prove they are unseen.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lumos.demo.scenes import SHAPES, caption, encode, render, sample_scene
from lumos.io import atomic_dir

HELDOUT_TAG = 17_017  # first stream tag of every held-out item (training streams never use it)
BENCHMARKS = ("coco", "imagenet", "gso", "ucf101", "msrvtt")
COCO_SIDE = 256
WNIDS = {kind: f"n0900{i:04d}" for i, kind in enumerate(SHAPES)}  # pseudo-WordNet ids per shape kind
UCF_CLASSES = {"right": "MoveRight", "left": "MoveLeft", "up": "MoveUp", "down": "MoveDown"}
CLIP_SIZE, CLIP_FRAMES, CLIP_FPS = (96, 64), 48, 8


def _stream(seed: int, bench: str, i: int) -> np.random.Generator:
    return np.random.default_rng([seed, HELDOUT_TAG, BENCHMARKS.index(bench), i])


def _coco(root: Path, n: int, seed: int, max_shapes: int) -> list[str]:
    images, annotations, scenes = [], [], {}
    (root / "val2014").mkdir(parents=True)
    for i in range(n):
        scene = sample_scene(_stream(seed, "coco", i), COCO_SIDE, COCO_SIDE, max_shapes)
        image_id = 900_000 + i
        name = f"COCO_val2014_{image_id:012d}.jpg"
        (root / "val2014" / name).write_bytes(encode(render(scene), "jpg"))
        images.append({"id": image_id, "file_name": name, "width": scene.width, "height": scene.height})
        annotations.append({"id": 9_000_000 + i, "image_id": image_id, "caption": caption(scene)})
        scenes[str(image_id)] = scene.to_dict()
    (root / "annotations").mkdir()
    info = {"description": "Lumos mini-world stand-in for COCO 2014 val captions", "year": 2014}
    (root / "annotations" / "captions_val2014.json").write_text(
        json.dumps({"info": info, "images": images, "annotations": annotations}, indent=1))
    (root / "annotations" / "mini_world_scenes.json").write_text(json.dumps(scenes, indent=1))
    return [a["caption"] for a in annotations]


def _imagenet(root: Path, n: int, seed: int, min_side: int, max_side: int) -> list[str]:
    keys = []
    for i in range(n):
        rng = _stream(seed, "imagenet", i)
        scene = sample_scene(rng, min_side, max_side, 1)
        folder = root / "val" / WNIDS[scene.shapes[0].kind]
        folder.mkdir(parents=True, exist_ok=True)
        key = f"ILSVRC2012_val_{i + 1:08d}"
        (folder / f"{key}.JPEG").write_bytes(encode(render(scene), "jpg"))
        keys.append(key)
    return keys


def _gso(root: Path, n: int, seed: int) -> list[str]:
    """GSO's per-object folders: an OBJ mesh with its material and a texture image."""
    import trimesh

    from lumos.demo.meshes import COLOURS as _C, SCHEMES, SHAPES as MESH_SHAPES, make_mesh

    names = []
    for i in range(n):
        rng = _stream(seed, "gso", i)
        shape = str(rng.choice(MESH_SHAPES))
        colours = [str(c) for c in rng.choice(list(_C), size=2, replace=False)]
        mesh = make_mesh(shape, colours, str(rng.choice(SCHEMES[:2])), rng)
        mesh.visual = mesh.visual.to_texture()  # vertex colours baked into a texture (GSO ships one)
        name = f"MiniWorld_{shape.replace('+', '_').title().replace('_', '')}_{i:03d}"
        meshes = root / name / "meshes"
        meshes.mkdir(parents=True)
        text, files = trimesh.exchange.obj.export_obj(mesh, include_texture=True, return_texture=True,
                                                      mtl_name="model.mtl")
        textures = root / name / "materials" / "textures"
        textures.mkdir(parents=True)
        for fname, data in files.items():
            if fname.endswith(".png"):
                (textures / "texture.png").write_bytes(data)
                continue
            (meshes / fname).write_bytes(data.replace(b"material_0.png", b"../materials/textures/texture.png")
                                         if fname.endswith(".mtl") else data)
        (meshes / "model.obj").write_text(text)
        names.append(name)
    return names


def _motion_clip(rng: np.random.Generator) -> tuple[dict, list[np.ndarray]]:
    from lumos.demo.clips import render_frame, sample_motion

    params = sample_motion(rng, *CLIP_SIZE, CLIP_FRAMES)
    return params, [render_frame(params, t) for t in range(CLIP_FRAMES)]


def _ucf_class(params: dict) -> str:
    s = params["shapes"][0]
    axis = ("right" if s["vx"] > 0 else "left") if abs(s["vx"]) >= abs(s["vy"]) else ("down" if s["vy"] > 0 else "up")
    return UCF_CLASSES[axis]


def _ucf101(root: Path, n: int, seed: int) -> list[str]:
    from lumos.demo.clips import encode_mp4

    keys, groups = [], {}
    for i in range(n):
        params, frames = _motion_clip(_stream(seed, "ucf101", i))
        cls = _ucf_class(params)
        g = groups[cls] = groups.get(cls, 0) + 1
        (root / cls).mkdir(parents=True, exist_ok=True)
        key = f"v_{cls}_g{g:02d}_c01"
        (root / cls / f"{key}.avi").write_bytes(encode_mp4(frames, CLIP_FPS))  # MPEG-4 Part 2, as UCF's
        keys.append(key)
    return keys


def _msrvtt(root: Path, n: int, seed: int) -> list[str]:
    from lumos.demo.clips import caption as clip_caption, encode_mp4

    videos, sentences = [], []
    (root / "videos" / "all").mkdir(parents=True)
    for i in range(n):
        params, frames = _motion_clip(_stream(seed, "msrvtt", i))
        vid = f"video{7010 + i}"  # MSR-VTT's test split starts at video7010
        (root / "videos" / "all" / f"{vid}.mp4").write_bytes(encode_mp4(frames, CLIP_FPS))
        videos.append({"video_id": vid, "id": 7010 + i, "split": "test", "category": 0,
                       "start time": 0.0, "end time": CLIP_FRAMES / CLIP_FPS})
        sentences.append({"video_id": vid, "sen_id": i, "caption": clip_caption(params)})
    (root / "annotation").mkdir()
    (root / "annotation" / "MSR_VTT.json").write_text(json.dumps({"videos": videos, "sentences": sentences}, indent=1))
    return [s["caption"] for s in sentences]


def build_heldout(root: Path | str, n: int = 24, seed: int = 0, min_side: int = 200, max_side: int = 900,
                  max_shapes: int = 4) -> dict:
    """Write all five held-out sets (``n`` items each; GSO objects: ``max(2, n // 6)``) under ``root``."""
    if n < 2:
        raise ValueError(f"held-out sets need at least 2 items each, got {n}")
    with atomic_dir(Path(root)) as tmp:
        manifest = {
            "seed": seed,
            "coco_captions": _coco(tmp / "coco", n, seed, max_shapes),
            "imagenet_keys": _imagenet(tmp / "imagenet", n, seed, min(min_side, 256), min(max_side, 256)),
            "gso_objects": _gso(tmp / "gso", max(2, n // 6), seed),
            "ucf101_keys": _ucf101(tmp / "ucf101", n, seed),
            "msrvtt_captions": _msrvtt(tmp / "msrvtt", n, seed),
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


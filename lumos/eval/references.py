"""Readers of the held-out evaluation references in the real benchmarks' layouts (issue 17).

The evaluate stages read ONLY these: the paper profile points them at the real sets, the tiny
profile at the mini-world's stand-ins (lumos/demo/heldout.py), which share the layouts::

    coco_prompts(captions_json, images_dir, n)  COCO captions_val2014.json: first caption per image
    imagenet_val(folder, n)                     ImageNet val: <wnid>/<name>.JPEG, sorted
    benchmark(name, reference, samples, protocol, **metrics)  the stored metric entry

A metric is stored under the benchmark actually read, with its sample count, its protocol and
whether the reference is the mini-world stand-in (any path under a ``mini-world`` folder).
"""

from __future__ import annotations

import json
from pathlib import Path

IMAGE_EXTS = (".jpeg", ".jpg", ".png")
SCENES_JSON = "mini_world_scenes.json"  # beside the stand-in's captions: scene parameters (alignment)


def is_stand_in(reference: str | Path) -> bool:
    return "mini-world" in Path(reference).parts


def coco_prompts(captions_json: str | Path, images_dir: str | Path, n: int) -> list[dict]:
    """The first caption of each of the first ``n`` images by id: ``{"key", "prompt", "path",
    "scene"}`` (``scene``: the stand-in's parameters, None for the real COCO)."""
    captions_json, images_dir = Path(captions_json), Path(images_dir)
    if not captions_json.is_file():
        raise FileNotFoundError(f"no COCO captions file at {captions_json}")
    data = json.loads(captions_json.read_text(encoding="utf-8"))
    first: dict[int, str] = {}
    for a in data["annotations"]:
        first.setdefault(int(a["image_id"]), str(a["caption"]).strip())
    scenes_file = captions_json.parent / SCENES_JSON
    scenes = json.loads(scenes_file.read_text()) if scenes_file.is_file() else {}
    rows = []
    for im in sorted(data["images"], key=lambda im: int(im["id"])):
        if int(im["id"]) in first:
            rows.append({"key": Path(im["file_name"]).stem, "prompt": first[int(im["id"])],
                         "path": str(images_dir / im["file_name"]), "scene": scenes.get(str(im["id"]))})
        if len(rows) == n:
            break
    if not rows:
        raise ValueError(f"{captions_json} has no captioned images")
    return rows


def imagenet_val(folder: str | Path, n: int) -> list[Path]:
    """The first ``n`` validation images (sorted by class folder, then name)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no ImageNet val folder at {folder}")
    paths = sorted(p for p in folder.glob("*/*") if p.suffix.lower() in IMAGE_EXTS)
    if not paths:
        raise ValueError(f"{folder} holds no <class>/<image> files")
    return paths[:n]


def benchmark(reference: str | Path, samples: int, protocol: str, **metrics) -> dict:
    return {**metrics, "samples": samples, "protocol": protocol, "reference": str(reference),
            "stand_in": is_stand_in(reference)}

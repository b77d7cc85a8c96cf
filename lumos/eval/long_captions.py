"""Table 2's long-caption protocol (†): the captioner's detailed captions of the held-out COCO
images themselves, the T2I model prompted with those instead of COCO's short raw captions, and
FID against the same images. The captioner is the one that wrote the training set's long
captions (``captioner`` params, supplement G.2), so train and test captions share their style.

    long_captions(prompts, captioner, cache) -> [caption per held-out image]

Captions are cached in one JSON file with the captioner's identity and settings; a rerun with the
same captioner and images reads them back, another captioner writes them afresh. Images are
opened one batch at a time.
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from lumos.io import atomic_write_text


def _fingerprint(captioner, keys: list[str]) -> dict:
    return {"model_id": captioner.model_id, "generation": captioner.generation_config(),
            "prompt": captioner.settings.prompt, "keys": keys}


def long_captions(prompts: list[dict], captioner, cache: Path | None = None) -> list[str]:
    """One detailed caption per held-out image (``prompts``: coco_prompts rows)."""
    keys = [p["key"] for p in prompts]
    fingerprint = _fingerprint(captioner, keys)
    if cache is not None and cache.is_file():
        saved = json.loads(cache.read_text())
        if saved.get("fingerprint") == json.loads(json.dumps(fingerprint)):
            return saved["captions"]
    captions: list[str] = []
    size = captioner.settings.batch_size
    for i in range(0, len(prompts), size):
        images = []
        for p in prompts[i:i + size]:
            with Image.open(p["path"]) as im:
                images.append(im.convert("RGB"))
        captions += captioner.caption(images)
    if cache is not None:
        atomic_write_text(cache, json.dumps({"fingerprint": fingerprint, "captions": captions}, indent=1) + "\n")
    return captions

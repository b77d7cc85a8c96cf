"""Build the embedded mini-world: procedural images in LAION-5B's metadata schema, with bad rows.

Output layout (under ``datasets/mini-world`` by default, written atomically)::

    images/<key>.jpg|png     the images the static server hands out
    images/<key>.json        the scene parameters beside each image (exact ground truth)
    metadata.parquet         LAION-5B schema: URL, TEXT, WIDTH, HEIGHT, similarity, punsafe,
                             pwatermark, AESTHETIC_SCORE, hash
    scenes.parquet           ground truth per metadata row: key, kind (ok or which bad kind),
                             true size, format, caption, scene JSON, duplicate_of
    manifest.json            seed, counts per kind, the parts built

    clips/, webvid.csv, clips.parquet   the video part (demo/clips.py)
    objects/, objects.json, objects.parquet   the 3D part (demo/meshes.py)
    heldout/                            benchmark-layout test sets no training stage reads (demo/heldout.py)

Each row draws from its own seeded stream, so the world is a pure function of the params.
Parts are registered in ``PARTS``.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lumos.config import MiniWorld
from lumos.demo.scenes import Scene, caption, encode, render, sample_scene
from lumos.io import atomic_dir

LAION_SCHEMA = pa.schema(
    [
        ("URL", pa.string()),
        ("TEXT", pa.string()),
        ("WIDTH", pa.int64()),
        ("HEIGHT", pa.int64()),
        ("similarity", pa.float64()),
        ("punsafe", pa.float32()),
        ("pwatermark", pa.float32()),
        ("AESTHETIC_SCORE", pa.float32()),
        ("hash", pa.int64()),
    ]
)
SCENES_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("URL", pa.string()),
        ("path", pa.string()),  # relative to the mini-world root; null when the URL is a 404
        ("kind", pa.string()),
        ("format", pa.string()),
        ("true_width", pa.int64()),
        ("true_height", pa.int64()),
        ("caption", pa.string()),
        ("scene", pa.string()),  # JSON of the scene parameters
        ("duplicate_of", pa.string()),
    ]
)
BAD_KINDS = ("missing", "truncated", "not_image", "wrong_size", "duplicate", "huge")
# Bad rows must pass the metadata filters so that they reach download and decoding.
_BAD_MIN_SIDE = 600
DEFAULT_OUT = Path("datasets/mini-world")
_NOT_AN_IMAGE = b"<!doctype html><html><body>404: this is not an image</body></html>\n"


def _stream(seed: int, *tags: int) -> np.random.Generator:
    return np.random.default_rng([seed, *tags])


def _laion_hash(url: str, text: str) -> int:
    digest = hashlib.blake2b(f"{url}\t{text}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def _metadata_scores(rng: np.random.Generator, scene: Scene, clean: bool) -> dict:
    """Synthetic LAION-style scores; ``clean`` rows always pass the safety/quality filters."""
    aesthetic = 4.2 + 0.35 * len(scene.shapes) + (0.4 if scene.texture != "plain" else 0.0)
    aesthetic += rng.normal(0.0, 0.7)
    punsafe, pwatermark = rng.beta(1, 30), rng.beta(1, 12)
    if not clean:
        if rng.random() < 0.03:
            punsafe = rng.uniform(0.6, 0.99)
        if rng.random() < 0.05:
            pwatermark = rng.uniform(0.85, 0.99)
    else:
        aesthetic = max(aesthetic, 5.6 + rng.uniform(0.0, 1.0))
    return {
        "similarity": float(rng.uniform(0.28, 0.42)),
        "punsafe": float(punsafe),
        "pwatermark": float(pwatermark),
        "AESTHETIC_SCORE": float(np.clip(aesthetic, 1.0, 9.0)),
    }


class _Rows:
    """Accumulates metadata and ground-truth rows in step."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.meta: list[dict] = []
        self.truth: list[dict] = []

    def add(self, key: str, fmt: str, kind: str, scene: Scene, scores: dict,
            declared: tuple[int, int] | None = None, has_file: bool = True,
            duplicate_of: str | None = None) -> None:
        rel = f"images/{key}.{fmt}"
        url = f"{self.base_url}/{rel}"
        text = caption(scene)
        w, h = declared or (scene.width, scene.height)
        self.meta.append({"URL": url, "TEXT": text, "WIDTH": w, "HEIGHT": h, **scores,
                          "hash": _laion_hash(url, text)})
        self.truth.append({
            "key": key, "URL": url, "path": rel if has_file else None, "kind": kind,
            "format": fmt, "true_width": scene.width if kind != "not_image" else None,
            "true_height": scene.height if kind != "not_image" else None, "caption": text,
            "scene": json.dumps(scene.to_dict(), sort_keys=True), "duplicate_of": duplicate_of,
        })


def _write_image(root: Path, key: str, fmt: str, data: bytes, scene: Scene) -> None:
    (root / "images" / f"{key}.{fmt}").write_bytes(data)
    sidecar = {"key": key, "format": fmt, "caption": caption(scene), **scene.to_dict()}
    (root / "images" / f"{key}.json").write_text(json.dumps(sidecar, sort_keys=True, indent=1))


def build_images(cfg: MiniWorld, root: Path, rows: _Rows) -> None:
    """The image part: ``n_images`` good scenes, then the deliberately bad rows."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    good: list[tuple[str, str, Scene, dict]] = []
    for i in range(cfg.n_images):
        rng = _stream(cfg.seed, 0, i)
        scene = sample_scene(rng, cfg.min_side, cfg.max_side, cfg.max_shapes)
        fmt = "png" if rng.random() < cfg.png_fraction else "jpg"
        key = f"mw-{i:06d}"
        scores = _metadata_scores(rng, scene, clean=False)
        _write_image(root, key, fmt, encode(render(scene), fmt), scene)
        good.append((key, fmt, scene, scores))

    bad = cfg.bad_rows
    # Wrong declared sizes: small images whose metadata claims they are large.
    small = [g for g in good if min(g[2].width, g[2].height) <= 512]
    lie = {g[0] for g in small[: bad.wrong_size]}
    if len(lie) < bad.wrong_size:
        raise ValueError(f"only {len(small)} images <= 512 px to give wrong sizes; "
                         f"lower bad_rows.wrong_size or min_side")
    # Exact duplicates: the bytes of a large good image under a second URL.
    large = [g for g in good if min(g[2].width, g[2].height) > 512][: bad.duplicate]
    originals = {g[0] for g in large}
    for i, (key, fmt, scene, scores) in enumerate(good):
        if key in lie or key in originals:  # clean scores, so the metadata filters pass them on
            scores = _metadata_scores(_stream(cfg.seed, 9, i), scene, clean=True)
            good[i] = (key, fmt, scene, scores)
        if key in lie:
            rows.add(key, fmt, "wrong_size", scene, scores,
                     declared=(scene.width + 512, scene.height + 512))
        else:
            rows.add(key, fmt, "ok", scene, scores)
    originals_scores = {g[0]: g[3] for g in good if g[0] in originals}

    def bad_scene(kind: int, j: int) -> tuple[np.random.Generator, Scene, str]:
        rng = _stream(cfg.seed, 1 + kind, j)
        scene = sample_scene(rng, max(_BAD_MIN_SIDE, cfg.min_side),
                             max(_BAD_MIN_SIDE, cfg.max_side), cfg.max_shapes)
        return rng, scene, ("png" if rng.random() < cfg.png_fraction else "jpg")

    for j in range(bad.missing):  # a URL nobody serves: 404
        rng, scene, fmt = bad_scene(1, j)
        rows.add(f"mw-missing-{j:03d}", fmt, "missing", scene,
                 _metadata_scores(rng, scene, clean=True), has_file=False)
    for j in range(bad.truncated):  # bytes cut short: undecodable
        rng, scene, fmt = bad_scene(2, j)
        key = f"mw-truncated-{j:03d}"
        data = encode(render(scene), fmt)
        _write_image(root, key, fmt, data[: len(data) * 2 // 5], scene)
        rows.add(key, fmt, "truncated", scene, _metadata_scores(rng, scene, clean=True))
    for j in range(bad.not_image):  # HTML served as image/jpeg
        rng, scene, _ = bad_scene(3, j)
        key = f"mw-notimage-{j:03d}"
        (root / "images" / f"{key}.jpg").write_bytes(_NOT_AN_IMAGE)
        rows.add(key, "jpg", "not_image", scene, _metadata_scores(rng, scene, clean=True))
    for j in range(bad.huge):  # a valid image with far more pixels than the decoder allows
        rng, scene, _ = bad_scene(4, j)
        scene = replace(scene, width=bad.huge_side, height=bad.huge_side)
        key = f"mw-huge-{j:03d}"
        _write_image(root, key, "png", encode(render(scene), "png"), scene)
        rows.add(key, "png", "huge", scene, _metadata_scores(rng, scene, clean=True))
    for j, (key, fmt, scene, _) in enumerate(large):
        dup = f"mw-dup-{j:03d}"
        (root / "images" / f"{dup}.{fmt}").write_bytes((root / "images" / f"{key}.{fmt}").read_bytes())
        rows.add(dup, fmt, "duplicate", scene, originals_scores[key], duplicate_of=key)


def build_clip_part(cfg: MiniWorld, root: Path, rows: _Rows) -> None:
    """The video part: short procedural clips and a WebVid-format CSV (see demo/clips.py)."""
    from lumos.demo.clips import build_clips

    build_clips(root, n=cfg.clips, seed=cfg.seed, base_url=rows.base_url)


BAD_OBJECTS = {  # uid -> (file written, or None for a missing file)
    "bad00000000000000000000000missing": None,
    "bad00000000000000000000000corrupt": b"glTF\x02\x00\x00\x00 this is not a valid binary glTF",
    "bad000000000000000000000000notglb": b"<!doctype html><html>not a mesh</html>",
}


def build_mesh_part(cfg: MiniWorld, root: Path, rows: _Rows) -> None:
    """The 3D part: procedural coloured objects as GLB + an Objaverse-style uid -> path list,
    which also lists three bad objects (a missing file, a corrupt GLB, HTML named .glb)."""
    from lumos.demo.meshes import build_meshes

    build_meshes(root, n=cfg.meshes, seed=cfg.seed)
    listing = json.loads((root / "objects.json").read_text())
    for uid, data in BAD_OBJECTS.items():
        if data is not None:
            (root / "objects" / f"{uid}.glb").write_bytes(data)
        listing[uid] = f"objects/{uid}.glb"
    (root / "objects.json").write_text(json.dumps(listing, indent=1))


def build_heldout_part(cfg: MiniWorld, root: Path, rows: _Rows) -> None:
    """The held-out test sets in the benchmarks' layouts, read only by evaluation (demo/heldout.py)."""
    from lumos.demo.heldout import build_heldout

    build_heldout(root / "heldout", cfg.heldout, cfg.seed, cfg.min_side, cfg.max_side, cfg.max_shapes)


def build_sources_part(cfg: MiniWorld, root: Path, rows: _Rows) -> None:
    """G.1's other sources: an ImageNet-style folder and a COYO-style parquet (demo/mixture.py)."""
    from lumos.demo.mixture import build_mixture

    build_mixture(cfg, root, rows.base_url, rows.meta, rows.truth)


PARTS: dict[str, Callable[[MiniWorld, Path, _Rows], None]] = {
    "images": build_images, "clips": build_clip_part, "meshes": build_mesh_part,
    "sources": build_sources_part, "heldout": build_heldout_part}


def build_mini_world(cfg: MiniWorld, out_dir: Path | str | None = None) -> dict:
    """Generate the mini-world into ``out_dir`` (default ``DEFAULT_OUT``); returns the manifest."""
    out = Path(out_dir) if out_dir is not None else DEFAULT_OUT
    rows = _Rows(cfg.base_url.rstrip("/"))
    with atomic_dir(out) as tmp:
        for part in cfg.parts:
            PARTS[part](cfg, tmp, rows)
        pq.write_table(pa.Table.from_pylist(rows.meta, schema=LAION_SCHEMA), tmp / "metadata.parquet")
        pq.write_table(pa.Table.from_pylist(rows.truth, schema=SCENES_SCHEMA), tmp / "scenes.parquet")
        kinds = Counter(r["kind"] for r in rows.truth)
        manifest = {
            "seed": cfg.seed,
            "parts": list(cfg.parts),
            "base_url": rows.base_url,
            "rows": len(rows.meta),
            "kinds": {k: kinds.get(k, 0) for k in ("ok", *BAD_KINDS)},
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest

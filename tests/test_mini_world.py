"""The embedded mini-world: deterministic, big enough to filter, with bad rows that behave."""

from __future__ import annotations

import hashlib
import io
import json
import urllib.error
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from lumos.demo import BAD_KINDS, LAION_SCHEMA, build_mini_world, serve_directory, serve_mini_world
from lumos.demo.scenes import caption, sample_scene

from conftest import free_port


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _small(cfg, **update):
    mixture = cfg.mixture.model_copy(update={"imagenet": 4, "coyo": 4, "coyo_near_duplicates": 0})
    return cfg.model_copy(update={"n_images": 40, "mixture": mixture, "heldout": 3, **update})


def test_same_seed_same_bytes_other_seed_other_world(params, tmp_path):
    cfg = _small(params.active.mini_world)
    build_mini_world(cfg, tmp_path / "a")
    build_mini_world(cfg, tmp_path / "b")
    build_mini_world(cfg.model_copy(update={"seed": 1}), tmp_path / "c")
    a, b, c = (_tree_digest(tmp_path / d) for d in "abc")
    assert a == b
    assert len(a) > 80
    assert a["metadata.parquet"] != c["metadata.parquet"]


def test_rebuild_replaces_atomically_and_leaves_no_temp(params, tmp_path):
    cfg = _small(params.active.mini_world)
    out = tmp_path / "mw"
    build_mini_world(cfg.model_copy(update={"seed": 1}), out)
    build_mini_world(cfg, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mw"]
    assert json.loads((out / "manifest.json").read_text())["seed"] == cfg.seed


def test_images_are_many_varied_and_filterable(mini_world):
    cfg, root, manifest = mini_world
    truth = pq.read_table(root / "scenes.parquet").to_pylist()
    good = [r for r in truth if r["kind"] in ("ok", "wrong_size")]
    assert len(good) >= 400
    assert {r["format"] for r in good} == {"jpg", "png"}
    widths = [r["true_width"] for r in good]
    heights = [r["true_height"] for r in good]
    for sides in (widths, heights):
        assert min(sides) < 260 and max(sides) > 840
    short = [min(w, h) for w, h in zip(widths, heights)]
    kept = sum(s > 512 for s in short)
    assert 0.15 * len(good) < kept < 0.6 * len(good)  # a resolution filter has work to do
    shapes = [len(json.loads(r["scene"])["shapes"]) for r in good]
    assert set(shapes) == {1, 2, 3, 4}
    textures = {json.loads(r["scene"])["texture"] for r in good}
    assert len(textures) == 5


def test_metadata_has_laion_schema_and_scene_captions(mini_world):
    cfg, root, manifest = mini_world
    meta = pq.read_table(root / "metadata.parquet")
    assert meta.schema.equals(LAION_SCHEMA)
    truth = pq.read_table(root / "scenes.parquet").to_pylist()
    assert meta.num_rows == len(truth) == manifest["rows"]
    rows = meta.to_pylist()
    assert all(r["URL"].startswith(cfg.base_url + "/images/") for r in rows)
    assert len({r["URL"] for r in rows}) == len(rows)
    assert len({r["hash"] for r in rows}) == len(rows)
    aesthetic = [r["AESTHETIC_SCORE"] for r in rows]
    assert min(aesthetic) < 5.0 < max(aesthetic)
    assert any(r["punsafe"] > 0.5 for r in rows) and any(r["pwatermark"] > 0.8 for r in rows)
    for meta_row, t in zip(rows, truth):
        assert meta_row["URL"] == t["URL"] and meta_row["TEXT"] == t["caption"]


def test_scene_parameters_sit_beside_each_image(mini_world):
    _, root, _ = mini_world
    for t in pq.read_table(root / "scenes.parquet").to_pylist():
        if t["kind"] not in ("ok", "wrong_size"):
            continue
        image = root / t["path"]
        side = json.loads(image.with_suffix(".json").read_text())
        assert side["key"] == t["key"] and side["caption"] == t["caption"]
        n = len(side["shapes"])
        assert t["caption"].startswith(["one", "two", "three", "four"][n - 1] + " shape")
        for s in side["shapes"]:
            assert f"{s['size']} {s['colour']} {s['kind']} at the {s['position']}" in t["caption"]
        assert len({(s["row"], s["col"]) for s in side["shapes"]}) == n  # one shape per cell


def test_caption_is_written_from_the_parameters():
    import numpy as np

    scene = sample_scene(np.random.default_rng(3), 300, 300, 4)
    text = caption(scene)
    assert text.count(" at the ") == len(scene.shapes)
    assert text.endswith(f"{scene.background} background")


def _get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read()
    except urllib.error.HTTPError as err:
        return err.code, "", b""


def _decodes(data: bytes) -> tuple[int, int] | None:
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return im.size
    except Exception:  # PIL raises several types for broken data; any of them means "broken"
        return None


def test_bad_rows_misbehave_as_declared_when_served(mini_world):
    cfg, root, manifest = mini_world
    expected = cfg.bad_rows.model_dump()
    expected.pop("huge_side")
    assert {k: manifest["kinds"][k] for k in BAD_KINDS} == expected
    meta = {r["URL"]: r for r in pq.read_table(root / "metadata.parquet").to_pylist()}
    truth = pq.read_table(root / "scenes.parquet").to_pylist()
    by_key = {t["key"]: t for t in truth}
    with serve_mini_world(root, cfg.base_url):
        for t in truth:
            status, ctype, body = _get(t["URL"])
            declared = (meta[t["URL"]]["WIDTH"], meta[t["URL"]]["HEIGHT"])
            kind = t["kind"]
            if kind == "missing":
                assert status == 404
                continue
            assert status == 200
            if kind in ("truncated", "not_image"):
                assert _decodes(body) is None
                if kind == "not_image":
                    assert ctype == "image/jpeg" and body.lstrip().startswith(b"<!doctype html>")
            elif kind == "wrong_size":
                true = _decodes(body)
                assert true == (t["true_width"], t["true_height"]) and true != declared
                assert min(true) <= 512 < min(declared)
            elif kind == "huge":
                assert _decodes(body) == declared and declared[0] * declared[1] > 4_000_000
            elif kind == "duplicate":
                original = by_key[t["duplicate_of"]]
                assert body == _get(original["URL"])[2] and t["URL"] != original["URL"]
            else:
                assert _decodes(body) == declared


def test_server_stops_afterwards(tmp_path):
    (tmp_path / "a.txt").write_text("hi")
    port = free_port()
    with serve_directory(tmp_path, port=port) as url:
        assert _get(f"{url}/a.txt")[0] == 200
        assert _get(f"{url}/b.txt")[0] == 404
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{url}/a.txt", timeout=2)


def test_serving_nothing_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing to serve"):
        with serve_mini_world(tmp_path / "absent", "http://127.0.0.1:1"):
            pass

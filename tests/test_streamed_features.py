"""features-i2v and features-nvs workers (what a Ray actor runs): one clip / one object in
memory at a time, the same latents as encoding it directly, reruns skip finished work."""

from __future__ import annotations

import io
import json
import tarfile
from functools import partial

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from lumos.config import VAE, VisionEncoder
from lumos.data.i2v import extract_i2v_features, frames_to_tensor
from lumos.data.nvs import extract_nvs_features, load_views
from lumos.render.renderer import DONE
from lumos.tasks.i2i_stages import build_encoders

BUILD = partial(build_encoders, VAE(pretrained=None), VisionEncoder(pretrained=None, resolution=32))


@pytest.fixture(scope="module")
def encoders():
    return BUILD()


def _clips(root, shards=2, per_shard=3, frames=4, side=32):
    (root / "shards").mkdir(parents=True)
    rng, rows, clips = np.random.default_rng(0), [], {}
    for s in range(shards):
        name = f"shards/{s:05d}.tar"
        with tarfile.open(root / name, "w") as tar:
            for i in range(per_shard):
                key = f"{s * per_shard + i:09d}"
                clips[key] = rng.integers(0, 255, (frames, side, side, 3), dtype=np.uint8)
                buf = io.BytesIO()
                np.save(buf, clips[key])
                for ext, data in (("npy", buf.getvalue()), ("json", b"{}")):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
                rows.append({"key": key, "shard": name, "status": "ok"})
    pq.write_table(pa.Table.from_pylist(rows), root / "index.parquet")
    return clips


def test_i2v_features_one_clip_at_a_time(tmp_path, encoders, monkeypatch):
    from lumos.data import i2v

    clips = _clips(tmp_path / "clips")
    held = []  # frames decoded at once: never more than one clip
    real = i2v.frames_to_tensor
    monkeypatch.setattr(i2v, "frames_to_tensor", lambda f: held.append(f.shape[0]) or real(f))
    counts = extract_i2v_features(tmp_path / "clips", tmp_path / "out", BUILD, {"v": 1})
    assert counts == {"computed": 2, "cached": 0, "clips": 6} and held == [4] * 6
    vae, encoder = encoders
    got = load_file(tmp_path / "out/00001.safetensors")
    x = frames_to_tensor(clips["000000004"])
    mean, _ = vae.encode(x * 2 - 1)
    assert got["latent_mean"].shape[:2] == (3, 4) and torch.allclose(got["latent_mean"][1], mean, atol=1e-5)
    assert torch.allclose(got["condition"][1], encoder(x[:1])[0], atol=1e-5)
    assert extract_i2v_features(tmp_path / "clips", tmp_path / "out", BUILD, {"v": 1})["cached"] == 2
    (tmp_path / "clips/index.parquet").unlink()
    with pytest.raises(FileNotFoundError, match="prepare-webvid"):
        extract_i2v_features(tmp_path / "clips", tmp_path / "out", BUILD, {"v": 1})


def test_nvs_features_per_object(tmp_path, encoders):
    rng = np.random.default_rng(1)
    for uid in ("obj-a", "obj-b"):
        obj = tmp_path / "renders" / uid
        obj.mkdir(parents=True)
        views = []
        for v in range(3):
            Image.fromarray(rng.integers(0, 255, (32, 32, 4), dtype=np.uint8)).save(obj / f"{v:03d}.png")
            views.append({"image": f"{v:03d}.png", "w2c": np.eye(4).tolist()})
        (obj / "cameras.json").write_text(json.dumps({"views": views}))
        (obj / DONE).write_text("")
    (tmp_path / "renders/unfinished").mkdir()
    counts = extract_nvs_features(tmp_path / "renders", tmp_path / "out", BUILD, 2, {"v": 1})
    assert counts == {"computed": 2, "cached": 0, "objects": 2}
    got = load_file(tmp_path / "out/obj-b.safetensors")
    x, _ = load_views(tmp_path / "renders/obj-b")
    vae, encoder = encoders
    assert torch.allclose(got["latent_mean"], vae.encode(x * 2 - 1)[0], atol=1e-5)
    assert torch.allclose(got["condition"], encoder(x), atol=1e-5) and got["w2c"].shape == (3, 4, 4)
    assert extract_nvs_features(tmp_path / "renders", tmp_path / "out", BUILD, 2, {"v": 1})["cached"] == 2


def test_render_worker_renders_one_object_and_reports_a_broken_one(tmp_path, params):
    from lumos.demo.meshes import build_meshes
    from lumos.render.stages import RenderWorker

    recs = build_meshes(tmp_path / "objaverse", n=1, seed=0)
    nvs = params.active.nvs.model_copy(update={"views": 2, "resolution": 16, "eval_azimuths": 2,
                                               "renderer": "raycast"})
    worker = RenderWorker(nvs, 0, str(tmp_path / "renders"))
    uid = recs[0]["uid"]
    assert worker.run((uid, str(tmp_path / "objaverse" / recs[0]["path"]))) == (uid, None)
    views = json.loads((tmp_path / "renders/objaverse" / uid / "cameras.json").read_text())["views"]
    gso = json.loads((tmp_path / "renders/gso" / uid / "cameras.json").read_text())["views"]
    assert len(views) == 2 and len(gso) == 2 * len(nvs.eval_elevations_deg)
    assert worker.run(("gone", str(tmp_path / "nope.glb")))[1].startswith("missing file")

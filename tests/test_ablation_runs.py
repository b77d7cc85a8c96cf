"""Ablation grid points run at tiny size (issue 17 item 5): the code path each new kind of
grid point exercises, with the smallest steps and sizes that reach it.

Fig. 8: class- and un-conditioned priors train and transfer to T2I; Fig. 2b: the data-scale
prior trains on a seeded subset; Fig. 11: the CLIP text encoder; Fig. 2a: caption noise."""

from __future__ import annotations

import json

import duckdb
import pytest
import torch

from lumos.config import load_params
from conftest import without_run_outputs
from lumos.data.features import write_feature_shard
from lumos.models import ConditionedDiT
from lumos.sample.i2i import load_model
from lumos.tasks.i2i_conditions import class_of
from lumos.tasks.i2i_stages import run_sample, run_train
from lumos.tasks.priors import init_from
from lumos.train.loop import latest_checkpoint

WNIDS = ["n01440764", "n02102040"]


@pytest.fixture(scope="module")
def tiny():
    return without_run_outputs(load_params("params.yaml").profiles["tiny"])


@pytest.fixture(scope="module")
def i2i_data(tmp_path_factory):
    """Two feature shards (an ImageNet-style source and a LAION-style one) and their catalog."""
    root = tmp_path_factory.mktemp("ablation")
    g = torch.Generator().manual_seed(0)
    rows = []
    for shard, source in enumerate(["imagenet-mini", "mini-world"]):
        keys = [f"{source}-{i}" for i in range(6)]
        write_feature_shard(root / "features" / f"s{shard}.safetensors", keys, {
            "latent_mean": torch.randn(6, 4, 8, 8, generator=g), "latent_std": torch.full((6, 4, 8, 8), 0.1),
            "condition": torch.randn(6, 1, 32, generator=g)}, {})
        for i, key in enumerate(keys):
            url = (f"http://127.0.0.1:8765/imagenet/train/{WNIDS[i % 2]}/{WNIDS[i % 2]}_{i:05d}.JPEG"
                   if source == "imagenet-mini" else f"http://127.0.0.1:8765/images/{i}.jpg")
            rows.append((f"uid-{key}", key, source, url))
    con = duckdb.connect(str(root / "catalog.duckdb"))  # a uid as every catalog has (the optional views join on it)
    con.execute("CREATE TABLE images (uid VARCHAR, key VARCHAR, source VARCHAR, url VARCHAR)")
    con.executemany("INSERT INTO images VALUES (?, ?, ?, ?)", rows)
    con.close()
    return root


def _short(profile, **train):
    return profile.model_copy(update={
        "train": profile.train.model_copy(update={"steps": 2, "global_batch": 4, "micro_batch": 4,
                                                  "checkpoint_every": 2, "log_every": 1, "loader_workers": 0,
                                                  **train}),
        "launch": profile.launch.model_copy(update={"mode": "inprocess"})})


@pytest.mark.parametrize("condition", ["class", "none"])
def test_fig8_class_and_unconditional_priors_train_on_imagenet_and_transfer_to_t2i(
        tiny, i2i_data, tmp_path, condition):
    profile = _short(tiny, condition=condition, sources=["imagenet-mini"])
    summary = run_train(profile, features=i2i_data / "features", out=tmp_path / "i2i",
                        catalog=i2i_data / "catalog.duckdb")
    ckpt = latest_checkpoint(tmp_path / "i2i")
    model, config = load_model(ckpt)
    assert summary["steps"] == 2 and torch.isfinite(torch.tensor(summary["loss_last"]))
    assert config["features"]["keys_head"][0].startswith("imagenet-mini-")  # ImageNet only
    if condition == "class":  # one-hot class token: the projection is a 2-class label embedding
        assert config["classes"] == WNIDS and config["condition"] == "class"
        assert (config["model_args"]["condition_tokens"], config["model_args"]["condition_dim"]) == (1, 2)
    else:
        assert config["condition"] == "none"
    with pytest.raises(ValueError, match="no image variations"):
        run_sample(profile, models=tmp_path / "i2i", catalog=i2i_data / "catalog.duckdb", out=tmp_path / "s")
    t2i = ConditionedDiT(**{**config["model_args"], "condition_dim": 24, "condition_tokens": 5})
    report = init_from(t2i, ckpt, "text")  # the T2I transfer: every weight but the condition's
    assert report["copied"] and any("null_condition" in k for k in report["initialised"])


def test_fig8_unconditional_prior_never_sees_its_condition(tiny, i2i_data, tmp_path):
    """condition: none trains the null condition alone: the image tokens have no gradient path."""
    from lumos.tasks.i2i import I2ITask
    from lumos.data.stream import FeatureStream
    from lumos.diffusion import GaussianDiffusion

    data = FeatureStream(str(i2i_data / "features"))
    task = I2ITask(data, "tiny", 0.0, GaussianDiffusion(1000), condition="none")
    model = task.build_model()
    batch = next(iter(data.loader(4, seed=0, workers=0)))
    shifted = {**batch, "condition": batch["condition"] + 5.0}
    losses = [task.loss(model, model, b, torch.Generator().manual_seed(0)) for b in (batch, shifted)]
    torch.testing.assert_close(losses[0], losses[1])


def test_class_of_reads_imagenets_folder_layout():
    assert class_of("http://h/imagenet/train/n01440764/n01440764_00001.JPEG") == "n01440764"
    assert class_of("file:///data/imagenet1k/train/n02102040/x.JPEG") == "n02102040"
    with pytest.raises(ValueError, match="class folder"):
        class_of("x.jpg")


def test_fig2b_data_scale_prior_trains_on_a_seeded_subset(tiny, i2i_data, tmp_path):
    """The grid's train.max_samples point: 5 of the 12 samples (which 5: tests/test_streaming.py)."""
    run_train(_short(tiny, max_samples=5, subset_seed=3), features=i2i_data / "features", out=tmp_path,
              catalog=i2i_data / "catalog.duckdb")
    config = json.loads((latest_checkpoint(tmp_path) / "config.json").read_text())
    assert config["features"]["samples"] == 5 and config["train"]["subset_seed"] == 3


# ----------------------------------------------------------------------------- T2I side
@pytest.fixture(scope="module")
def t2i_subset(tmp_path_factory):
    """A T2I subset of 6 captioned samples in two shards, as the t2i-subset/caption stages write."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path_factory.mktemp("t2i")
    raw = ["one red circle", "two blue squares", "a green triangle", "three yellow circles",
           "a purple square at the top", "two orange triangles at the left"]
    pq.write_table(pa.table({"shard": ["a.tar"] * 3 + ["b.tar"] * 3, "uid": [f"u{i}" for i in range(6)],
                             "key": [f"k{i}" for i in range(6)], "raw_caption": raw}), root / "subset.parquet")
    pq.write_table(pa.table({"uid": [f"u{i}" for i in range(6)], "long_caption": [f"in detail: {r}" for r in raw]}),
                   root / "captions.parquet")
    return root, raw


def test_noisy_pairing_gives_exactly_the_share_wrong_and_is_seeded():
    from lumos.caption.noise import noisy_pairing

    assert noisy_pairing(10, 0.0, 0) == list(range(10))
    pairing = noisy_pairing(10, 0.5, 0)
    wrong = [i for i, j in enumerate(pairing) if i != j]
    assert len(wrong) == 5 and sorted(pairing[i] for i in wrong) == wrong  # a cycle: all wrong, none lost
    assert noisy_pairing(10, 0.5, 0) == pairing != noisy_pairing(10, 0.5, 1)
    assert sum(i != j for i, j in enumerate(noisy_pairing(10, 0.9, 0))) == 9
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        noisy_pairing(10, 1.5, 0)


def test_fig11_clip_text_encoder_and_fig2a_caption_noise_in_the_text_cache(tiny, t2i_subset, tmp_path):
    """The text-encoder grid's clip point and the caption-noise grid's 50 % point: the text cache
    holds CLIP's token embeddings, and for half the samples those of another sample's captions."""
    from safetensors.torch import load_file

    from lumos.data.text_features import extract_text_features
    from lumos.encoders.text import build_text_encoder

    root, raw = t2i_subset
    cfg = tiny.text_encoder.model_copy(update={"name": "clip", "max_length": 120})
    enc = build_text_encoder(cfg)
    emb, mask = enc(raw[:2])
    assert emb.shape == (2, 77, 64) and enc.max_length == 77  # CLIP's context caps T5's 120
    assert mask[0].sum() == len(enc.tokenizer([raw[0]])[0].nonzero())  # start + words + end
    torch.testing.assert_close(build_text_encoder(cfg)(raw[:2])[0], emb)  # seeded tiny weights
    assert not any(p.requires_grad for p in enc.parameters())
    clean = extract_text_features(root / "subset.parquet", root / "captions.parquet", tmp_path / "clean", enc,
                                  4, "fp32", {"name": "clip"})
    noisy = extract_text_features(root / "subset.parquet", root / "captions.parquet", tmp_path / "noisy", enc,
                                  4, "fp32", {"name": "clip"}, caption_noise=0.5, noise_seed=0)
    # drawn within each T5 shard (bounded memory on the Ray workers): 2 shards of 3, round(1.5) = 2 each
    assert clean["wrong_captions"] == 0 and noisy["wrong_captions"] == 4
    files = {d: {**load_file(tmp_path / d / "a.safetensors"), **{f"b_{k}": v for k, v in load_file(
        tmp_path / d / "b.safetensors").items()}} for d in ("clean", "noisy")}
    rows = {d: torch.cat([files[d]["raw_emb"], files[d]["b_raw_emb"]]) for d in files}
    longs = {d: torch.cat([files[d]["long_emb"], files[d]["b_long_emb"]]) for d in files}
    same = [[torch.equal(rows["noisy"][i], rows["clean"][j]) for j in range(6)] for i in range(6)]
    own = [same[i][i] for i in range(6)]
    assert sum(own) == 2 and all(sum(r) == 1 for r in same)  # 2 keep theirs, 4 carry another's
    j = next(j for j in range(6) if same[own.index(False)][j])
    torch.testing.assert_close(longs["noisy"][own.index(False)], longs["clean"][j])  # the pair moves whole


def test_fig11_t2i_model_trains_and_samples_on_clip_text_tokens(tiny):
    """A T2I step and a sample with CLIP's (B, 77, 64) tokens (train-t2i / evaluate-t2i's calls)."""
    from lumos.diffusion import GaussianDiffusion
    from lumos.encoders import build_vae
    from lumos.encoders.text import build_text_encoder
    from lumos.sample.t2i import text_to_image

    text = build_text_encoder(tiny.text_encoder.model_copy(update={"name": "clip"}))
    emb, mask = text(["one red circle", "two blue squares"])
    model = ConditionedDiT(variant="tiny", latent_channels=4, latent_size=4, condition_dim=emb.shape[-1],
                           condition_tokens=emb.shape[1])
    loss = GaussianDiffusion(1000).loss(model, torch.randn(2, 4, 4, 4), emb, torch.Generator().manual_seed(0),
                                        condition_mask=mask)
    loss.backward()
    assert torch.isfinite(loss) and model.transformer.caption_projection.linear_1.weight.grad.abs().sum() > 0
    settings = tiny.diffusion.model_copy(update={"sample_steps": 2})
    images = text_to_image(model.eval(), build_vae(tiny.vae), text, ["one red circle"], 32, 32, settings, 0)
    assert images.shape == (1, 3, 32, 32) and 0 <= float(images.min()) <= float(images.max()) <= 1

"""The I2I prior: encoders x token modes train, the loss is eq. (1), resume is exact, sampling works."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from lumos.config import VAE, VisionEncoder
from lumos.data.extract import encode_images
from lumos.data.features import FeatureShards, write_feature_shard
from lumos.diffusion import GaussianDiffusion
from lumos.encoders import TOKEN_MODES, build_vae, build_vision_encoder
from lumos.models import ConditionedDiT
from lumos.sample.i2i import interpolation, load_model, save_grid, variations
from lumos.tasks.i2i import I2ITask
from lumos.train.loop import RunSpec, train
from lumos.train.probe import HeldoutLoss, due

RES = 64


@pytest.fixture(scope="module")
def images():
    from PIL import Image
    g = torch.Generator().manual_seed(0)
    return [Image.fromarray((torch.rand(80, 96, 3, generator=g) * 255).byte().numpy()) for _ in range(4)]


@pytest.fixture(scope="module")
def vae():
    return build_vae(VAE(pretrained=None))


def _features(tmp_path, images, vae, encoder) -> FeatureShards:
    tensors = encode_images(images, RES, vae, encoder, batch_size=2, device="cpu")
    write_feature_shard(tmp_path / "a.safetensors", [f"k{i}" for i in range(len(images))], tensors, {})
    return FeatureShards(tmp_path)


@pytest.mark.parametrize(("name", "tokens"), [  # random: F.2's DINO control (as topk for the model)
    (n, t) for n in ["dino", "dinov2", "mocov3", "clip"] for t in TOKEN_MODES if t != "random" or n == "dino"])
def test_every_encoder_and_token_mode_trains_a_step(tmp_path, images, vae, name, tokens):
    encoder = build_vision_encoder(VisionEncoder(name=name, pretrained=None, tokens=tokens, topk=8,
                                                 resolution=RES))
    data = _features(tmp_path, images, vae, encoder)
    assert data.tensors["condition"].shape[1:] == (encoder.num_tokens, encoder.width)
    task = I2ITask(data, "tiny", 0.5, GaussianDiffusion())
    torch.manual_seed(0)
    model = task.build_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss = task.loss(model, model, task.batch(torch.arange(4)), torch.Generator().manual_seed(1))
    loss.backward()
    opt.step()
    assert torch.isfinite(loss) and loss.item() > 0
    changed = [n for n, p in model.named_parameters() if not torch.equal(before[n], p)]
    assert "transformer.caption_projection.linear_1.weight" in changed  # the condition path learns
    assert "null_condition" in changed  # dropout at p=0.5 hit some samples: the null learns too


def test_loss_is_eq1_the_noise_mse():
    diffusion = GaussianDiffusion()
    z0 = torch.randn(8, 4, 8, 8)
    abar = diffusion.train_scheduler.alphas_cumprod

    def oracle(z_t, t, cond):  # knows z0, so recovers the exact noise
        a = abar[t].view(-1, 1, 1, 1)
        return (z_t - a.sqrt() * z0) / (1 - a).sqrt()

    assert diffusion.loss(oracle, z0, torch.zeros(8, 1, 4)).item() < 1e-8
    zero = diffusion.loss(lambda z, t, c: torch.zeros_like(z), z0, torch.zeros(8, 1, 4))
    assert 0.8 < zero.item() < 1.2  # E||eps||^2 = 1


def test_condition_dropout_uses_the_learned_null():
    model = ConditionedDiT("tiny", 4, 8, 32, 3)
    cond = torch.randn(4, 3, 32)
    out = model.drop_condition(cond, torch.tensor([True, False, True, False]))
    assert torch.equal(out[1], cond[1]) and torch.equal(out[3], cond[3])
    assert torch.equal(out[0], model.null_condition) and torch.equal(out[2], model.null_condition)


def test_guidance_scale_one_is_the_conditional_model():
    torch.manual_seed(0)
    model = ConditionedDiT("tiny", 4, 8, 32, 1).eval()
    d, cond = GaussianDiffusion(), torch.randn(2, 1, 32)
    a = d.sample(model, cond, model.null(2), (2, 4, 8, 8), steps=4, cfg_scale=1.0,
                 generator=torch.Generator().manual_seed(3))
    b = d.sample(model, cond, cond, (2, 4, 8, 8), steps=4, cfg_scale=3.0,
                 generator=torch.Generator().manual_seed(3))
    assert torch.allclose(a, b, atol=1e-5)  # guiding against itself changes nothing
    c = d.sample(model, cond, model.null(2), (2, 4, 8, 8), steps=4, cfg_scale=3.0,
                 generator=torch.Generator().manual_seed(3))
    assert not torch.allclose(a, c)


def _spec(steps: int, every: int) -> RunSpec:
    from lumos.config import Optimizer
    return RunSpec(steps=steps, global_batch=4, micro_batch=2,
                   optimizer=Optimizer(lr=1e-3, weight_decay=0.03, warmup_steps=3, grad_clip=1.0),
                   precision="fp32", zero_stage=2, ema_decay=0.9, seed=0, checkpoint_every=every,
                   log_every=2)


@pytest.fixture(scope="module")
def dino_features(tmp_path_factory, images, vae):
    encoder = build_vision_encoder(VisionEncoder(name="dino", pretrained=None, tokens="cls", topk=8,
                                                 resolution=RES))
    return _features(tmp_path_factory.mktemp("feat"), images, vae, encoder), encoder


def test_stopped_and_resumed_run_equals_uninterrupted_run(tmp_path, dino_features, images, vae):
    data, encoder = dino_features
    task = I2ITask(data, "tiny", 0.1, GaussianDiffusion())
    # the uninterrupted run also measures a held-out loss at every 2nd checkpoint (eval.every),
    # on the EMA weights, without changing its training
    held = encode_images([im.transpose(0) for im in images[:2]], RES, vae, encoder, batch_size=2, device="cpu")
    probe = HeldoutLoss("heldout_loss", held["latent_mean"], held["condition"], GaussianDiffusion())
    whole = train(task, _spec(12, 4), tmp_path / "whole", {"run": 1}, probe=probe, probe_every=2)
    part = train(task, _spec(12, 4), tmp_path / "part", {"run": 1}, stop_after=10)
    assert part["step"] == 10
    shutil.rmtree(tmp_path / "part/checkpoints/step-0000010")  # as if killed after step 10
    resumed = train(task, _spec(12, 4), tmp_path / "part", {"run": 1})
    assert resumed["losses"] == pytest.approx(whole["losses"], rel=1e-6)
    for name in ("model", "ema"):
        a = load_file(str(tmp_path / f"whole/checkpoints/step-0000012/{name}.safetensors"))
        b = load_file(str(tmp_path / f"part/checkpoints/step-0000012/{name}.safetensors"))
        assert a.keys() == b.keys()
        assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert (tmp_path / "whole/dvclive/metrics.json").is_file()
    rows = (tmp_path / "whole/dvclive/plots/metrics/eval/heldout_loss.tsv").read_text().split()
    assert rows[:2] == ["step", "heldout_loss"] and rows[2::2] == ["8", "12"]  # 2nd checkpoint, and the last
    model = ConditionedDiT(**task.model_args())
    model.load_state_dict(load_file(str(tmp_path / "whole/checkpoints/step-0000012/model.safetensors")))
    model.load_state_dict(load_file(str(tmp_path / "whole/checkpoints/step-0000012/ema.safetensors")), strict=False)
    model.eval()  # the last checkpoint's EMA weights
    assert float(rows[-1]) == pytest.approx(probe(model)["eval/heldout_loss"], rel=1e-5)
    assert float(rows[-1]) != pytest.approx(probe(ConditionedDiT(**task.model_args()).eval())["eval/heldout_loss"])
    assert not (tmp_path / "part/dvclive/plots/metrics/eval").exists()  # no probe: no curve


def test_probe_is_due_every_nth_checkpoint_and_at_the_last():
    assert [s for s in range(1, 8) if due(s, 3, s == 7)] == [3, 6, 7]
    assert not any(due(s, None, True) for s in range(1, 4))


def test_loss_decreases_and_checkpoint_reloads(tmp_path, dino_features, images, vae):
    data, encoder = dino_features
    task = I2ITask(data, "tiny", 0.1, GaussianDiffusion())
    config = {"model_args": task.model_args()}
    result = train(task, _spec(40, 40), tmp_path, config)
    losses = result["losses"]
    assert sum(losses[-8:]) / 8 < sum(losses[:8]) / 8
    ckpt = tmp_path / "checkpoints/step-0000040"
    assert json.loads((ckpt / "config.json").read_text())["step"] == 40
    model, _ = load_model(ckpt)
    ema = load_file(str(ckpt / "ema.safetensors"))
    assert torch.equal(model.null_condition, ema["null_condition"])  # EMA weights are loaded

    from lumos.config import Diffusion
    settings = Diffusion(sample_steps=3, cfg_scale=2.0)
    grid = variations(model, vae, encoder, images[:2], 3, RES, settings, seed=0)
    assert grid.shape == (2 * 4, 3, RES, RES) and 0 <= grid.min() and grid.max() <= 1
    again = variations(model, vae, encoder, images[:2], 3, RES, settings, seed=0)
    assert torch.equal(grid, again)
    strip = interpolation(model, vae, encoder, images[0], images[1], 5, RES, settings, seed=0)
    assert strip.shape == (7, 3, RES, RES)
    save_grid(grid, tmp_path / "grid.png", per_row=4)
    from PIL import Image
    assert Image.open(tmp_path / "grid.png").size == (4 * (RES + 2) + 2, 2 * (RES + 2) + 2)

"""Both backbones behind ConditionedDiT (lumos: the released per-block adaLN-Zero DiT; pixart:
diffusers' PixArt): the transfer adapters' step-0 equivalences, learned variance with IDDPM's
hybrid loss (checked against a hand computation), samplers on the epsilon half, the multi-aspect
size embedding and DINO's normalised [CLS]."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import save_file

from lumos.config import Diffusion, VisionEncoder
from lumos.diffusion import GaussianDiffusion, epsilon_half
from lumos.models import CONDITION_PARAMETERS, BACKBONES, ConditionedDiT, NVSDiT, VideoDiT
from lumos.sample.i2v import image_to_video_latents
from lumos.tasks.priors import init_from

from conftest import perturbed, without_run_outputs

ARGS = {"variant": "tiny", "latent_channels": 4, "latent_size": 8, "condition_dim": 24, "condition_tokens": 1,
        "learn_sigma": True}


def _checkpoint(tmp_path, backbone: str):
    torch.manual_seed(0)
    args = {**ARGS, "backbone": backbone}
    model = perturbed(ConditionedDiT(**args))
    ckpt = tmp_path / backbone / "step-0000010"
    ckpt.mkdir(parents=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(ckpt / "model.safetensors"))
    save_file(state, str(ckpt / "ema.safetensors"))
    (ckpt / "config.json").write_text(json.dumps({"task": "i2i", "model_args": args, "step": 10}))
    return ckpt, model, args


@pytest.mark.parametrize("backbone", BACKBONES)
def test_output_is_epsilon_and_variance(backbone):
    model = ConditionedDiT(**{**ARGS, "backbone": backbone}).eval()
    out = model(torch.randn(2, 4, 8, 8), torch.tensor([3, 700]), torch.randn(2, 1, 24))
    assert out.shape == (2, 8, 8, 8)
    eps_only = ConditionedDiT(**{**ARGS, "backbone": backbone, "learn_sigma": False})
    assert eps_only(torch.randn(1, 4, 8, 8), torch.tensor([3]), torch.randn(1, 1, 24)).shape == (1, 4, 8, 8)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_t2i_swap_reinitialises_only_the_condition_projection(tmp_path, backbone):
    ckpt, prior, args = _checkpoint(tmp_path, backbone)
    t2i = ConditionedDiT(**{**args, "condition_dim": 32, "condition_tokens": 16})
    report = init_from(t2i, ckpt, condition="text")
    state = t2i.state_dict()
    condition = {k for k in state if k.startswith(CONDITION_PARAMETERS)}
    assert set(report["initialised"]) == condition and len(condition) == 5  # 2 linears + null
    for name in set(state) - condition:
        assert torch.equal(state[name], prior.state_dict()[name]), name


@pytest.mark.parametrize("backbone", BACKBONES)
def test_nvs_and_i2v_equal_the_prior_at_step_zero(tmp_path, backbone):
    ckpt, prior, args = _checkpoint(tmp_path, backbone)
    g = torch.Generator().manual_seed(2)
    z, cond = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 1, 24, generator=g)
    t = torch.tensor([0, 400, 999])
    nvs = NVSDiT(**args).eval()
    report = init_from(nvs, ckpt, condition="vision")
    assert len(report["widened"]) == 1 and "proj.weight" in report["widened"][0]
    view, pose = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 12, generator=g)
    with torch.no_grad():
        expected = prior(z, t, cond)
        assert torch.allclose(nvs(z, t, cond, view, pose), expected, atol=1e-5)
        last = nvs.pose_embedding[-1].weight  # a trained pose embedding moves the output
        last.add_(0.1 * torch.randn(last.shape, generator=g))
        assert not torch.allclose(nvs(z, t, cond, view, pose), expected, atol=1e-3)
    video = VideoDiT(max_frames=16, **args).eval()
    report = init_from(video, ckpt, condition="vision")
    assert report["initialised"] and all(n.startswith("temporal.") for n in report["initialised"])
    zv, tv = torch.randn(2, 5, 4, 8, 8, generator=g), torch.randint(0, 1000, (2, 5), generator=g)
    with torch.no_grad():
        per_frame = torch.stack([prior(zv[:, f], tv[:, f], cond[:2]) for f in range(5)], dim=1)
        assert torch.allclose(video(zv, tv, cond[:2]), per_frame, atol=1e-5)
        out = video.temporal[0].attention.to_out[0].weight  # (not a constant: LayerNorm removes it)
        out.add_(0.1 * torch.randn(out.shape, generator=g))
        assert not torch.allclose(video(zv, tv, cond[:2]), per_frame, atol=1e-3)


def test_i2v_sampling_with_learned_variance_keeps_the_first_frame():
    video = perturbed(VideoDiT(max_frames=16, **{**ARGS, "backbone": "lumos"}))
    first = torch.randn(1, 4, 8, 8)
    z = image_to_video_latents(video, first, torch.randn(1, 1, 24), 3, Diffusion(sample_steps=3, cfg_scale=2.0), 0)
    assert z.shape == (1, 3, 4, 8, 8) and torch.equal(z[:, 0], first) and torch.isfinite(z).all()


def test_samplers_use_the_epsilon_half():
    torch.manual_seed(0)
    w = torch.randn(4, 4)

    def eps(z, t, c):
        return torch.einsum("oc,bchw->bohw", w, z) * 0.1 + c.mean() * 0.01

    def eps_and_variance(z, t, c):
        return torch.cat([eps(z, t, c), torch.full_like(z, 123.0)], dim=1)

    d = GaussianDiffusion(1000)
    cond, null = torch.randn(2, 1, 8), torch.zeros(2, 1, 8)
    kw = dict(shape=(2, 4, 4, 4), steps=4, cfg_scale=3.0)
    a = d.sample(eps, cond, null, generator=torch.Generator().manual_seed(1), **kw)
    b = d.sample(eps_and_variance, cond, null, generator=torch.Generator().manual_seed(1), **kw)
    assert torch.equal(a, b)
    video = torch.randn(2, 3, 8, 5, 5)  # (B, F, 2C, h, w): the channel half of frames
    assert torch.equal(epsilon_half(video, torch.zeros(2, 3, 4, 5, 5)), video[:, :, :4])
    with pytest.raises(ValueError, match="neither epsilon"):
        epsilon_half(torch.zeros(2, 6, 4, 4), torch.zeros(2, 4, 4, 4))


def _hand_hybrid(eps, v, z0, zt, t, noise, steps=1000):
    """IDDPM's terms for one scalar latent, in plain floats (linear betas 1e-4..0.02)."""
    betas = [1e-4 + (0.02 - 1e-4) * i / (steps - 1) for i in range(steps)]
    abar = math.prod(1 - b for b in betas[: t + 1])
    abar_prev = math.prod(1 - b for b in betas[:t])
    beta = betas[t]
    c0, ct = beta * math.sqrt(abar_prev) / (1 - abar), (1 - abar_prev) * math.sqrt(1 - beta) / (1 - abar)
    post_var = beta * (1 - abar_prev) / (1 - abar)
    mse = (eps - noise) ** 2
    x0 = (zt - math.sqrt(1 - abar) * eps) / math.sqrt(abar)
    mean_true, mean_model = c0 * z0 + ct * zt, c0 * x0 + ct * zt
    frac = (v + 1) / 2
    logvar = frac * math.log(beta) + (1 - frac) * math.log(post_var)
    lv1 = math.log(post_var)
    kl = 0.5 * (-1 + logvar - lv1 + math.exp(lv1 - logvar) + (mean_true - mean_model) ** 2 * math.exp(-logvar))
    return mse, kl / math.log(2)


def test_hybrid_loss_matches_a_hand_computation():
    d = GaussianDiffusion(1000, vlb_weight=0.5)
    z0, noise, eps, v, t = 0.3, -0.8, -0.5, 0.2, 500
    abar = float(d.train_scheduler.alphas_cumprod[t])
    zt = math.sqrt(abar) * z0 + math.sqrt(1 - abar) * noise
    T = lambda x: torch.tensor([[[[x]]]])  # noqa: E731  (B, C, h, w) = 1
    out = torch.cat([T(eps), T(v)], dim=1)
    got = d.per_sample_loss(out, T(z0), T(zt), torch.tensor([t]), T(noise))
    mse, vlb = _hand_hybrid(eps, v, z0, zt, t, noise)
    assert got.shape == (1,) and math.isclose(float(got), mse + 0.5 * vlb, rel_tol=1e-4)
    assert vlb > 1e-4 and float(got) - mse > 1e-4  # the variance term is really there
    # epsilon-only output: the plain eq. (1) MSE
    assert math.isclose(float(d.per_sample_loss(T(eps), T(z0), T(zt), torch.tensor([t]), T(noise))), mse, rel_tol=1e-5)


def test_hybrid_loss_trains_the_variance_but_not_the_mean_through_vlb():
    d = GaussianDiffusion(1000)
    out = torch.randn(2, 8, 4, 4, requires_grad=True)
    z0, noise = torch.randn(2, 4, 4, 4), torch.randn(2, 4, 4, 4)
    t = torch.tensor([0, 300])  # t = 0: the decoder NLL term
    zt = d.train_scheduler.add_noise(z0, noise, t)
    loss = d.per_sample_loss(out, z0, zt, t, noise)
    assert torch.isfinite(loss).all()
    loss.sum().backward()
    eps_grad = 2 * (out[:, :4] - noise).detach() / (4 * 4 * 4)  # d mean_flat(mse) / d eps only
    assert torch.allclose(out.grad[:, :4], eps_grad, atol=1e-6)
    assert out.grad[:, 4:].abs().sum() > 0


def test_multi_aspect_size_embedding():
    torch.manual_seed(0)
    model = perturbed(ConditionedDiT(**{**ARGS, "backbone": "lumos", "size_conditioning": True}))
    assert any(k.startswith("transformer.csize_embedder.") for k in model.state_dict())
    z = torch.randn(1, 4, 8, 12)
    with torch.no_grad():
        out = model(z, torch.tensor([10]), torch.randn(1, 1, 24))
        assert out.shape == (1, 8, 8, 12)
        model.transformer.ar_embedder.mlp[2].bias.add_(1.0)  # the aspect-ratio embedding is used
        assert not torch.allclose(model(z, torch.tensor([10]), torch.randn(1, 1, 24)), out)
    # a multi-aspect T2I step: padded T5 tokens masked, hybrid loss on a non-square latent
    cond, mask = torch.randn(2, 3, 24), torch.tensor([[1, 1, 0], [1, 0, 0]])
    loss = GaussianDiffusion().loss(model.train(), torch.randn(2, 4, 8, 12), cond, torch.Generator().manual_seed(0),
                                    condition_mask=mask)
    loss.backward()
    assert torch.isfinite(loss) and model.transformer.csize_embedder.mlp[0].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="lumos backbone"):
        ConditionedDiT(**{**ARGS, "backbone": "pixart", "size_conditioning": True})


@pytest.mark.parametrize("normalize", [True, False])
def test_dino_cls_is_l2_normalised_when_asked(normalize):
    from lumos.encoders import build_vision_encoder

    enc = build_vision_encoder(VisionEncoder(pretrained=None, resolution=32, normalize_cls=normalize))
    tokens = enc(torch.rand(2, 3, 32, 32))
    norms = tokens[:, 0].norm(dim=-1)
    assert torch.allclose(norms, torch.ones(2), atol=1e-5) == normalize


def test_tiny_profile_model_trains_reloads_and_samples(tmp_path):
    """The tiny profile's `model` section (lumos, learned variance) through the shared train
    loop, a checkpoint reload and I2I variations (pixart, a params change, as tests/test_i2i.py)."""
    from PIL import Image

    from lumos.config import DEFAULT_PARAMS, Optimizer, load_params
    from lumos.data.extract import encode_images
    from lumos.data.features import FeatureShards, write_feature_shard
    from lumos.encoders import build_vae, build_vision_encoder
    from lumos.models import backbone_args
    from lumos.sample.i2i import load_model, variations
    from lumos.tasks.i2i import I2ITask
    from lumos.train.loop import RunSpec, train

    profile = without_run_outputs(load_params(DEFAULT_PARAMS).active)
    assert profile.model.backbone == "lumos" and profile.model.learn_sigma
    model_cfg, backbone = profile.model, "lumos"
    g = torch.Generator().manual_seed(0)
    images = [Image.fromarray((torch.rand(40, 48, 3, generator=g) * 255).byte().numpy()) for _ in range(4)]
    vae = build_vae(profile.vae)
    encoder = build_vision_encoder(profile.vision_encoder.model_copy(update={"resolution": 32}))
    write_feature_shard(tmp_path / "f/a.safetensors", [f"k{i}" for i in range(4)],
                        encode_images(images, 32, vae, encoder, batch_size=4, device="cpu"), {})
    task = I2ITask(FeatureShards(tmp_path / "f"), model_cfg.variant, 0.1,
                   GaussianDiffusion(1000, model_cfg.vlb_weight), architecture=backbone_args(model_cfg))
    spec = RunSpec(steps=2, global_batch=2, micro_batch=2, optimizer=Optimizer(lr=1e-3, warmup_steps=1),
                   precision="fp32", zero_stage=0, ema_decay=0.9, seed=0, checkpoint_every=2, log_every=1)
    result = train(task, spec, tmp_path / "run", {"model_args": task.model_args()})
    assert len(result["losses"]) == 2 and all(math.isfinite(x) and x > 0 for x in result["losses"])
    model, config = load_model(tmp_path / "run/checkpoints/step-0000002")
    assert config["model_args"]["backbone"] == backbone and model.backbone == backbone and model.learn_sigma
    grid = variations(model, vae, encoder, images[:1], 2, 32, Diffusion(sample_steps=2, cfg_scale=2.0), seed=0)
    assert grid.shape == (3, 3, 32, 32) and torch.isfinite(grid).all()

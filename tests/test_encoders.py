"""Frozen encoders (lumos.encoders): tiny random builds of the real library classes."""

from __future__ import annotations

import open_clip
import pytest
import timm
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from timm.models.vision_transformer import VisionTransformer
from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel, ViTModel

from lumos.config import VAE, VisionEncoder
from lumos.encoders import (ENCODERS, LatentVAE, build_vae, build_vision_encoder, num_tokens,
                            select_tokens, token_count)
from lumos.encoders.clip import TINY_MODEL, parse_clip_pretrained
from lumos.encoders.dino import HFViTEncoder
from lumos.encoders.frozen import seeded
from lumos.encoders.mocov3 import load_mocov3

FAMILIES = ["dino", "dinov2", "mocov3", "clip"]
MODES = ["cls", "patch", "all", "topk"]
WIDTH = {"dino": 32, "dinov2": 32, "mocov3": 32, "clip": 64}
PATCHES = 16  # 64 px: 4x4 patches of 16 px; dinov2's 14 px patches see the 56 px it rounds to
K = 8


def vcfg(name: str, tokens: str = "cls", **kw) -> VisionEncoder:
    return VisionEncoder(**{"name": name, "pretrained": None, "tokens": tokens, "topk": K,
                            "resolution": 64, **kw})


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """[0,1] images at a size the encoders must resize from."""
    return torch.rand(3, 3, 80, 72, generator=torch.Generator().manual_seed(1))


# ----------------------------------------------------------------------------- vision encoders
def test_every_family_is_registered():
    assert sorted(ENCODERS) == sorted(FAMILIES)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", FAMILIES)
def test_shape_determinism_and_freezing(name, mode, images):
    enc = build_vision_encoder(vcfg(name, mode))
    expected_m = {"cls": 1, "patch": PATCHES, "all": 1 + PATCHES, "topk": 1 + K}[mode]
    out = enc(images)
    assert out.shape == (3, expected_m, WIDTH[name])
    assert enc.width == WIDTH[name] and enc.num_tokens == expected_m == num_tokens(enc.cfg)
    assert torch.isfinite(out).all()
    # Same config -> same weights -> same tokens (random tiny builds are seeded).
    again = build_vision_encoder(vcfg(name, mode))(images)
    torch.testing.assert_close(out, again, rtol=0, atol=0)
    # Frozen (eq. 1): no grads, and eval mode survives a parent's .train().
    assert not any(p.requires_grad for p in enc.parameters())
    enc.train()
    assert not any(m.training for m in enc.modules())
    assert not out.requires_grad


@pytest.mark.parametrize("name", FAMILIES)
def test_token_modes_are_views_of_the_same_tokens(name, images):
    outs = {m: build_vision_encoder(vcfg(name, m))(images) for m in MODES}
    every = outs["all"]
    torch.testing.assert_close(outs["cls"], every[:, :1], rtol=0, atol=0)
    torch.testing.assert_close(outs["patch"], every[:, 1:], rtol=0, atol=0)
    # topk: [CLS], then the K patches with the highest cosine similarity to [CLS], best first.
    cls, patches = every[:, :1], every[:, 1:]
    sim = torch.stack([torch.tensor([F.cosine_similarity(p, c[0], dim=0).item() for p in ps])
                       for c, ps in zip(cls, patches)])  # (B,P), computed patch by patch
    order = sim.argsort(dim=1, descending=True)[:, :K]
    expected = torch.cat([cls, torch.stack([ps[o] for ps, o in zip(patches, order)])], dim=1)
    torch.testing.assert_close(outs["topk"], expected, rtol=0, atol=0)
    chosen_sim = torch.gather(sim, 1, order)
    assert (chosen_sim[:, :-1] >= chosen_sim[:, 1:]).all()
    assert not torch.equal(outs["topk"][:, 1:], patches[:, :K])  # not just the first K


@pytest.mark.parametrize("name", FAMILIES)
def test_topk_larger_than_patch_count_is_rejected(name):
    with pytest.raises(ValueError, match=r"topk=17\b.*\(16\)"):
        build_vision_encoder(vcfg(name, "topk", topk=17))
    assert build_vision_encoder(vcfg(name, "topk", topk=16)).num_tokens == 17


def test_select_tokens_and_counts():
    cls = torch.tensor([[[1.0, 0.0]]])
    patches = torch.tensor([[[0.0, 1.0], [1.0, 0.1], [-1.0, 0.0], [2.0, 1.0]]])
    top = select_tokens(cls, patches, "topk", 2)
    torch.testing.assert_close(top, torch.tensor([[[1.0, 0.0], [1.0, 0.1], [2.0, 1.0]]]))
    assert [token_count(m, 196, 119) for m in MODES] == [1, 196, 197, 120]  # paper: 120 = T5
    with pytest.raises(ValueError, match="topk=5"):
        select_tokens(cls, patches, "topk", 5)
    with pytest.raises(ValueError, match="unknown token mode"):
        token_count("mean", 4, 1)


def test_input_checks(images):
    enc = build_vision_encoder(vcfg("dino"))
    with pytest.raises(ValueError, match=r"in \[0.0, 1.0\]"):
        enc(images * 2 - 1)  # [-1,1] pixels are the VAE's convention, not the encoder's
    with pytest.raises(ValueError, match=r"\(B,3,H,W\)"):
        enc(images[:, :1])


def test_families_read_the_backbones_last_normed_tokens(images):
    """CLS and patches are where each library puts them (after the final norm)."""
    dino = build_vision_encoder(vcfg("dino", "all"))
    h = dino.backbone(pixel_values=dino.preprocess(images)).last_hidden_state
    cls = torch.nn.functional.normalize(h[:, :1], dim=-1)  # normalize_cls, on as released
    torch.testing.assert_close(dino(images), torch.cat([cls, h[:, 1:]], dim=1))
    raw = build_vision_encoder(vcfg("dino", "all", normalize_cls=False))
    torch.testing.assert_close(raw(images), h)

    moco = build_vision_encoder(vcfg("mocov3", "all"))
    feats = moco.backbone.forward_features(moco.preprocess(images))
    torch.testing.assert_close(moco(images), feats)

    clip = build_vision_encoder(vcfg("clip", "cls"))
    visual = clip.backbone
    pooled = visual(clip.preprocess(images))  # open_clip's image embedding = ln_post(CLS) @ proj
    torch.testing.assert_close(clip(images)[:, 0] @ visual.proj, pooled, rtol=1e-5, atol=1e-5)


def test_dinov2_register_tokens_are_skipped(images):
    config = Dinov2WithRegistersConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                       intermediate_size=64, patch_size=14, image_size=56,
                                       num_register_tokens=4)
    model = seeded(lambda: Dinov2WithRegistersModel(config))
    enc = HFViTEncoder(model, vcfg("dinov2", "all"), "dinov2")
    out = enc(images)
    h = model(pixel_values=enc.preprocess(images)).last_hidden_state  # CLS, 4 registers, 16 patches
    assert h.shape[1] == 21 and out.shape == (3, 17, 32)
    cls = torch.nn.functional.normalize(h[:, :1], dim=-1)
    torch.testing.assert_close(out, torch.cat([cls, h[:, 5:]], dim=1))


# ----------------------------------------------------------------------------- pretrained paths
@pytest.mark.parametrize("name", ["dino", "dinov2"])
def test_transformers_checkpoint_loads_by_path(name, tmp_path, images):
    tiny = build_vision_encoder(vcfg(name, "all"))
    tiny.backbone.save_pretrained(tmp_path)
    loaded = build_vision_encoder(vcfg(name, "all", pretrained=str(tmp_path)))
    torch.testing.assert_close(loaded(images), tiny(images))
    # Another resolution: position embeddings are interpolated (DINO-B is 224, the tiny 64).
    bigger = build_vision_encoder(vcfg(name, "patch", pretrained=str(tmp_path), resolution=128))
    assert bigger(images).shape[1] == bigger.num_patches == (128 // tiny.patch_size) ** 2


def _moco_checkpoint(model: VisionTransformer, path) -> None:
    """MoCo v3's layout: base and momentum encoders and a predictor under ``module.``."""
    sd = model.state_dict()
    state = {f"module.base_encoder.{k}": v for k, v in sd.items()}
    state |= {f"module.momentum_encoder.{k}": torch.zeros_like(v) for k, v in sd.items()}
    state |= {"module.base_encoder.head.0.weight": torch.zeros(8, 32),
              "module.predictor.0.weight": torch.zeros(8, 8)}
    torch.save({"epoch": 300, "arch": "vit_base", "state_dict": state}, path)


def test_mocov3_checkpoint_loading(tmp_path, images):
    def tiny(side=64):
        return VisionTransformer(img_size=side, patch_size=16, embed_dim=32, depth=2, num_heads=2,
                                 mlp_ratio=2.0, num_classes=0)
    source = seeded(tiny, seed=1).eval()
    _moco_checkpoint(source, tmp_path / "moco.pth.tar")
    target = seeded(tiny).eval()  # a different init, overwritten by the load
    load_mocov3(target, tmp_path / "moco.pth.tar")
    x = torch.rand(2, 3, 64, 64)
    torch.testing.assert_close(target.forward_features(x), source.forward_features(x))

    wider = seeded(lambda: tiny(96))  # a 6x6 grid: pos_embed resampled from 4x4
    load_mocov3(wider, tmp_path / "moco.pth.tar")
    torch.testing.assert_close(wider.blocks[0].attn.qkv.weight, source.blocks[0].attn.qkv.weight)

    state = torch.load(tmp_path / "moco.pth.tar", weights_only=True)
    del state["state_dict"]["module.base_encoder.blocks.1.mlp.fc1.weight"]
    torch.save(state, tmp_path / "broken.pth.tar")
    with pytest.raises(ValueError, match="blocks.1.mlp.fc1.weight"):
        load_mocov3(seeded(tiny), tmp_path / "broken.pth.tar")
    with pytest.raises(FileNotFoundError, match="mocov3"):
        build_vision_encoder(vcfg("mocov3", pretrained="mocov3-vit-b"))
    assert "vit_base_patch16_224" in timm.list_models("vit_base_patch16_224")


def test_clip_checkpoint_path_and_name_parsing(tmp_path, images):
    tiny = build_vision_encoder(vcfg("clip", "all"))
    model = seeded(lambda: open_clip.create_model(TINY_MODEL, pretrained=None))
    torch.save(model.state_dict(), tmp_path / "clip.pt")
    ckpt = f"{TINY_MODEL}:{tmp_path}/clip.pt"
    loaded = build_vision_encoder(vcfg("clip", "all", pretrained=ckpt))
    torch.testing.assert_close(loaded(images), tiny(images))
    bigger = build_vision_encoder(vcfg("clip", "all", pretrained=ckpt, resolution=96))
    assert bigger(images).shape == (3, 1 + 36, 64)  # position embeddings resized to 6x6
    assert parse_clip_pretrained("ViT-L-14:openai") == ("ViT-L-14", "openai")
    assert parse_clip_pretrained("hf-hub:org/repo") == ("hf-hub:org/repo", None)
    with pytest.raises(ValueError, match="ARCH:TAG"):
        parse_clip_pretrained("ViT-L-14")


# ----------------------------------------------------------------------------- VAE
@pytest.fixture(scope="module")
def vae() -> LatentVAE:
    return build_vae(VAE(pretrained=None, scaling_factor=0.18215))


def test_vae_encode_sample_decode(vae):
    x = torch.rand(2, 3, 64, 48, generator=torch.Generator().manual_seed(0)) * 2 - 1
    f = vae.downsample
    mean, std = vae.encode(x)
    assert vae.latent_channels == 4 and f == 8
    assert mean.shape == std.shape == (2, 4, 64 // f, 48 // f)
    assert (std > 0).all()
    raw = vae.vae.encode(x).latent_dist  # the paper's "latents x 0.18215"
    torch.testing.assert_close(mean, raw.mean * 0.18215)
    torch.testing.assert_close(std, raw.std * 0.18215)

    z = vae.sample(mean, std, torch.Generator().manual_seed(3))
    eps = torch.randn(mean.shape, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(z, mean + std * eps)
    assert not torch.equal(z, vae.sample(mean, std, torch.Generator().manual_seed(4)))

    img = vae.decode(z)
    assert img.shape == x.shape and img.min() >= -1 and img.max() <= 1
    torch.testing.assert_close(img, vae.vae.decode(z / 0.18215).sample.clamp(-1, 1))


def test_vae_is_frozen_deterministic_and_checks_inputs(vae, tmp_path):
    assert not any(p.requires_grad for p in vae.parameters())
    vae.train()
    assert not any(m.training for m in vae.modules())
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    again = build_vae(VAE(pretrained=None))
    torch.testing.assert_close(again.encode(x), vae.encode(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"in \[-1.0, 1.0\]"):
        vae.encode(x * 3)
    with pytest.raises(ValueError, match="multiple of the VAE's factor 8"):
        vae.encode(x[..., :30])
    vae.vae.save_pretrained(tmp_path)  # the hub-name/local-path route
    loaded = build_vae(VAE(pretrained=str(tmp_path), scaling_factor=0.5))
    assert isinstance(loaded.vae, AutoencoderKL)
    torch.testing.assert_close(loaded.encode(x)[0], vae.encode(x)[0] / 0.18215 * 0.5)


def test_unrelated_vit_is_not_a_registered_family():
    with pytest.raises(KeyError, match="known"):
        ENCODERS["siglip"]
    assert isinstance(build_vision_encoder(vcfg("dino")).backbone, ViTModel)


def test_mocov3_checkpoint_builds_by_arch_and_path(tmp_path, images):
    """The encoder grid's MoCo v3 entry loads through build_vision_encoder: ``[timm_arch:]path``
    (a real timm ViT config, timm's own test_vit here; the paper's ViT-B/16 is the default arch)."""
    source = seeded(lambda: timm.create_model("test_vit", num_classes=0, img_size=64)).eval()
    path = tmp_path / "moco-vit-tiny.pth.tar"
    _moco_checkpoint(source, path)
    enc = build_vision_encoder(vcfg("mocov3", "cls", pretrained=f"test_vit:{path}"))
    x = enc.preprocess(images)
    torch.testing.assert_close(enc.backbone.forward_features(x), source.forward_features(x))
    assert enc(images).shape == (3, 1, 64)
    small = VisionTransformer(img_size=64, patch_size=16, embed_dim=32, depth=6, num_heads=2, num_classes=0)
    with pytest.raises(ValueError, match="do not fit.*'<arch>:"):  # another size: say to name the arch
        load_mocov3(small, path)


def test_random_patch_control_is_seeded_per_image(images):
    """F.2's control: [CLS] + k random patches, the same for an image in any batch, other
    patches than top-k's, and other ones under another patch_seed."""
    enc = build_vision_encoder(vcfg("dino", "random"))
    out = enc(images)
    assert out.shape == (3, 1 + K, 32) and enc.num_tokens == 1 + K == num_tokens(enc.cfg)
    torch.testing.assert_close(enc(images[1:2]), out[1:2])  # batch-independent
    cls, patches = enc.features(images)
    assert torch.equal(out[:, :1], cls)
    chosen = [{int((patches[b] == t).all(-1).nonzero()[0]) for t in out[b, 1:]} for b in range(3)]
    assert all(len(c) == K for c in chosen) and len({frozenset(c) for c in chosen}) > 1
    topk = build_vision_encoder(vcfg("dino", "topk"))(images)
    assert not torch.equal(topk, out)
    other = build_vision_encoder(vcfg("dino", "random", patch_seed=1))(images)
    assert not torch.equal(other, out)

"""Importing released weights: state dicts in the layout of ant-research/lumos's LumosI2I-XL/2,
LumosT2I-XL/2 and LumosT2IMS-XL/2 (every key and shape, on the meta device; and a tiny one with
the same names) convert with every key used and none left over; `lumos import-checkpoint`
writes a loadable checkpoint; a diffusers PixArt-alpha transformer becomes the NVS/I2V prior."""

from __future__ import annotations

import pytest
import torch
from diffusers import PixArtTransformer2DModel

from lumos.cli import main
from lumos.models import ConditionedDiT, NVSDiT, VideoDiT
from lumos.models.release import convert_lumos
from lumos.sample.i2i import load_model
from lumos.tasks.priors import init_from, prior_checkpoint


def released_layout(depth: int, width: int, patch: int = 2, channels: int = 4, learn_sigma: bool = True,
                    caption: int = 768, tokens: int = 1, grid: int = 16, multi_aspect: bool = False) -> dict:
    """Key -> shape of the released models' state_dict (LumosI2I / LumosT2I / LumosT2IMS), as
    read from lumos_diffusion/model/lumos/*.py: timm PatchEmbed and Mlp, timm Attention (qkv,
    proj), MultiHeadCrossAttention (q_linear, kv_linear, proj), adaLN_modulation.1, the
    T2IFinalLayer's scale_shift_table, the CaptionEmbedder's y_proj and y_embedding buffer."""
    out = channels * (2 if learn_sigma else 1)
    shapes = {"pos_embed": (1, grid * grid, width),
              "x_embedder.proj.weight": (width, channels, patch, patch), "x_embedder.proj.bias": (width,),
              "t_embedder.mlp.0.weight": (width, 256), "t_embedder.mlp.0.bias": (width,),
              "t_embedder.mlp.2.weight": (width, width), "t_embedder.mlp.2.bias": (width,),
              "y_embedder.y_embedding": (tokens, caption),
              "y_embedder.y_proj.fc1.weight": (width, caption), "y_embedder.y_proj.fc1.bias": (width,),
              "y_embedder.y_proj.fc2.weight": (width, width), "y_embedder.y_proj.fc2.bias": (width,),
              "final_layer.scale_shift_table": (2, width),
              "final_layer.linear.weight": (patch * patch * out, width),
              "final_layer.linear.bias": (patch * patch * out,)}
    for i in range(depth):
        b = f"blocks.{i}."
        shapes.update({b + "attn.qkv.weight": (3 * width, width), b + "attn.qkv.bias": (3 * width,),
                       b + "attn.proj.weight": (width, width), b + "attn.proj.bias": (width,),
                       b + "cross_attn.q_linear.weight": (width, width), b + "cross_attn.q_linear.bias": (width,),
                       b + "cross_attn.kv_linear.weight": (2 * width, width),
                       b + "cross_attn.kv_linear.bias": (2 * width,),
                       b + "cross_attn.proj.weight": (width, width), b + "cross_attn.proj.bias": (width,),
                       b + "mlp.fc1.weight": (4 * width, width), b + "mlp.fc1.bias": (4 * width,),
                       b + "mlp.fc2.weight": (width, 4 * width), b + "mlp.fc2.bias": (width,),
                       b + "adaLN_modulation.1.weight": (6 * width, width),
                       b + "adaLN_modulation.1.bias": (6 * width,)})
    if multi_aspect:
        for e in ("csize_embedder", "ar_embedder"):
            third = width // 3
            shapes.update({f"{e}.mlp.0.weight": (third, 256), f"{e}.mlp.0.bias": (third,),
                           f"{e}.mlp.2.weight": (third, third), f"{e}.mlp.2.bias": (third,)})
    return shapes


XL = {"depth": 28, "width": 1152}
RELEASES = {
    "LumosI2I-XL/2": {**XL, "caption": 768, "tokens": 1},  # DINO-B [CLS], 256 px
    "LumosT2I-XL/2": {**XL, "caption": 4096, "tokens": 120},  # Flan-T5-XXL, 256 px
    "LumosT2IMS-XL/2": {**XL, "caption": 4096, "tokens": 120, "grid": 64, "multi_aspect": True},  # 1024 px
}


@pytest.mark.parametrize("name", sorted(RELEASES))
def test_xl_release_layouts_convert_with_every_key_used(name):
    shapes = released_layout(**RELEASES[name])
    state = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    converted, args = convert_lumos(state)
    assert args["variant"] == "XL/2" and args["learn_sigma"] and args["backbone"] == "lumos"
    assert args["size_conditioning"] == RELEASES[name].get("multi_aspect", False)
    assert len(converted) == len(state)  # every released key landed on a distinct model key
    with torch.device("meta"):
        model = ConditionedDiT(**args)
    assert set(converted) == set(model.state_dict())  # ... and every model key got one
    assert converted["null_condition"].shape == shapes["y_embedder.y_embedding"]
    if name == "LumosI2I-XL/2":  # Table 3: ~0.8 B parameters
        assert 0.75e9 < sum(p.numel() for p in model.parameters()) < 0.85e9


def _tiny_release(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    shapes = released_layout(depth=2, width=32, caption=24, tokens=1, grid=4)
    return {k: torch.randn(s, generator=g) * 0.1 for k, s in shapes.items()}


def test_import_checkpoint_cli_writes_a_loadable_checkpoint(tmp_path):
    state = _tiny_release()
    pth = tmp_path / "Lumos_I2I.pth"
    torch.save({"state_dict": state}, pth)
    assert main(["import-checkpoint", "lumos-i2i", str(pth), str(tmp_path / "imported")]) == 0
    ckpt = tmp_path / "imported/checkpoints/step-0000000"
    model, config = load_model(ckpt)
    assert config["task"] == "i2i" and config["condition"] == "vision" and config["model_args"]["latent_size"] == 8
    own = model.state_dict()
    for key, tensor in state.items():
        name = "null_condition" if key == "y_embedder.y_embedding" else "transformer." + key
        assert torch.equal(own[name], tensor), key
    out = model(torch.randn(2, 4, 8, 8), torch.tensor([5, 900]), torch.randn(2, 1, 24))
    assert out.shape == (2, 8, 8, 8) and out.abs().sum() > 0
    # the imported checkpoint is a prior by path
    assert prior_checkpoint(str(tmp_path / "imported")) == ckpt


def test_import_rejects_a_state_dict_that_does_not_fit(tmp_path):
    state = _tiny_release()
    with pytest.raises(ValueError, match="unused released keys"):
        convert_lumos({**state, "blocks.0.attn.rel_pos_h": torch.zeros(3, 16)})
    del state["blocks.1.mlp.fc2.bias"]
    with pytest.raises(ValueError, match="without a value"):
        convert_lumos(state)
    pth = tmp_path / "bad.pth"
    torch.save({"optimizer": {"lr": 1.0}}, pth)
    assert main(["import-checkpoint", "lumos-t2i", str(pth), str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out/checkpoints/step-0000000").exists()


@pytest.fixture
def pixart_alpha(tmp_path):
    """A tiny PixArt-alpha-layout transformer (T5-wide captions, learned sigma, its own latent
    size), saved in diffusers' pipeline layout (<folder>/transformer)."""
    torch.manual_seed(0)
    model = PixArtTransformer2DModel(num_layers=2, num_attention_heads=2, attention_head_dim=16, patch_size=2,
                                     in_channels=4, out_channels=8, sample_size=16, caption_channels=40,
                                     cross_attention_dim=32, norm_type="ada_norm_single",
                                     use_additional_conditions=False)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(tmp_path / "pixart-alpha" / "transformer")
    return tmp_path / "pixart-alpha", model


def test_pixart_alpha_is_the_nvs_and_i2v_prior(tmp_path, pixart_alpha):
    folder, source = pixart_alpha
    roots = {"pixart-alpha": tmp_path / "models/priors/pixart-alpha"}
    ckpt = prior_checkpoint("pixart-alpha", roots, pixart_alpha=str(folder))
    assert prior_checkpoint("pixart-alpha", roots, pixart_alpha=str(folder)) == ckpt  # converted once
    args = {"variant": "tiny", "latent_channels": 4, "latent_size": 8, "condition_dim": 24, "condition_tokens": 1,
            "backbone": "pixart", "learn_sigma": True}
    nvs = NVSDiT(**args).eval()
    report = init_from(nvs, ckpt, condition="vision")
    own = nvs.state_dict()
    for key, tensor in source.state_dict().items():  # every transformer weight but the caption path
        name = "transformer." + key
        if not key.startswith("caption_projection.") and name in report["copied"]:
            assert torch.equal(own[name], tensor), key
    assert len(report["copied"]) > 20 and report["widened"] == ["transformer.pos_embed.proj.weight"]
    assert any(n.startswith("transformer.caption_projection.") for n in report["initialised"])
    # step 0: the NVS model is the PixArt-alpha model (re-conditioned) on the target latents
    base = ConditionedDiT(**args).eval()
    init_from(base, ckpt, condition="vision")
    base.transformer.caption_projection.load_state_dict(nvs.transformer.caption_projection.state_dict())
    g = torch.Generator().manual_seed(1)
    z, cond = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 1, 24, generator=g)
    t = torch.tensor([10, 600])
    with torch.no_grad():
        assert torch.allclose(nvs(z, t, cond, torch.randn(2, 4, 8, 8), torch.randn(2, 12)), base(z, t, cond),
                              atol=1e-5)
    video = VideoDiT(max_frames=4, **args)
    report = init_from(video, ckpt, condition="vision")
    assert all(n.startswith(("temporal.", "transformer.caption_projection.", "null_condition"))
               or n.endswith("pos_embed") for n in report["initialised"])
    with pytest.raises(ValueError, match="model.backbone: pixart"):
        init_from(NVSDiT(**{**args, "backbone": "lumos"}), ckpt, condition="vision")
    tiny = prior_checkpoint("pixart-alpha", {"pixart-alpha": tmp_path / "tiny"}, pixart_alpha=None)
    init_from(NVSDiT(**{**args, "latent_size": 4}), tiny, condition="vision")  # the tiny profile's stand-in

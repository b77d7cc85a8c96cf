"""evaluate-i2i in bounded batches (lumos/eval/batched.py): never one batch of all images, the
same features as one batch when the protocol fits in one, reference features independent of
batching."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from lumos.config import VAE, Diffusion, VisionEncoder
from lumos.encoders import build_vae, build_vision_encoder
from lumos.eval import batched
from lumos.eval.features import TinyImageFeatures, extract_features
from lumos.eval.image_metrics import to_uint8
from lumos.models import ConditionedDiT
from lumos.sample import i2i

from conftest import perturbed

RES, SETTINGS = 32, Diffusion(sample_steps=2, cfg_scale=2.0)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("val")
    g = torch.Generator().manual_seed(0)
    paths = []
    for i in range(5):
        path = root / f"n{i:02d}.png"
        Image.fromarray((torch.rand(40, 48, 3, generator=g) * 255).byte().numpy()).save(path)
        paths.append(path)
    vae = build_vae(VAE(pretrained=None))
    encoder = build_vision_encoder(VisionEncoder(pretrained=None, resolution=RES))
    tokens = encoder(torch.zeros(1, 3, RES, RES))
    torch.manual_seed(0)
    model = perturbed(ConditionedDiT(variant="tiny", latent_channels=vae.latent_channels,
                                     latent_size=RES // vae.downsample, condition_dim=tokens.shape[-1],
                                     condition_tokens=tokens.shape[1]))
    return paths, model, vae, encoder, TinyImageFeatures(16, 32, 0)


def test_variation_features_come_in_bounded_batches(setup, monkeypatch):
    paths, model, vae, encoder, extractor = setup
    sizes = []
    real = i2i.variations
    monkeypatch.setattr(i2i, "variations", lambda m, v, e, images, *a: sizes.append(len(images)) or real(m, v, e, images, *a))
    gen, ref = batched.i2i_variation_features(model, vae, encoder, extractor, paths, RES, SETTINGS, 0, 2)
    assert sizes == [2, 2, 1] and gen.shape == ref.shape == (5, 16) and gen.dtype == torch.float64
    # one batch of everything: the old path (variations over all images, then the extractor)
    images = [batched._load_rgb(p) for p in paths]
    grid = real(model, vae, encoder, images, 1, RES, SETTINGS, 0)
    whole_gen = extract_features(to_uint8(grid[1::2]), extractor)
    whole_ref = extract_features(to_uint8(grid[0::2]), extractor)
    one, other = batched.i2i_variation_features(model, vae, encoder, extractor, paths, RES, SETTINGS, 0, 8)
    # float32 convolutions may round differently by batch size (seen on an AMD EPYC): 1e-5 apart
    assert torch.allclose(one, whole_gen, atol=1e-5) and torch.allclose(other, whole_ref, atol=1e-5)
    assert torch.allclose(ref, whole_ref, atol=1e-5)  # the inputs do not depend on the batching
    assert not torch.allclose(gen, ref)  # samples are not the inputs
    with pytest.raises(ValueError, match="no reference images"):
        batched.i2i_variation_features(model, vae, encoder, extractor, [], RES, SETTINGS, 0, 2)

"""Frozen encoders behind one interface (DESIGN 3): the latent VAE E and the image encoder
tau_img of eq. (1), chosen by ``params.yaml`` (``vae``, ``vision_encoder``)."""

from lumos.encoders.vae import LatentVAE, build_vae
from lumos.encoders.vision import ENCODERS, VisionTokenEncoder, build_vision_encoder, num_tokens
from lumos.encoders.tokens import TOKEN_MODES, select_tokens, token_count
from lumos.encoders import clip, dino, mocov3  # noqa: E402,F401  (register the families)

__all__ = [
    "ENCODERS", "LatentVAE", "TOKEN_MODES", "VisionTokenEncoder", "build_vae",
    "build_vision_encoder", "num_tokens", "select_tokens", "token_count",
]

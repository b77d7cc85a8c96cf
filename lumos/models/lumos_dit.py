"""The released Lumos backbone (paper 4.1: DiT-XL/2 with cross-attention), written from the
paper and the description of ant-research/lumos: DiT blocks with per-block adaLN-Zero
modulation of self-attention and MLP, an ungated cross-attention to the condition tokens between
them, a fixed 2-D sin-cos position embedding, a final layer modulated by a learned shift/scale
table plus the timestep embedding, and optionally (multi-aspect T2I) size and aspect-ratio
embeddings added to the timestep embedding.

Module names follow the release (``x_embedder``, ``t_embedder``, ``y_embedder``, ``blocks.i.attn``,
``blocks.i.cross_attn``, ``blocks.i.adaLN_modulation``, ``final_layer``, ``csize_embedder``,
``ar_embedder``) so that importing its weights is a rename of a few keys
(lumos.models.release).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


def sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """(M,) positions -> (M, dim) [sin | cos] features (MAE / DiT)."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    angles = positions.double().reshape(-1, 1) * omega[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def sincos_2d(dim: int, h: int, w: int, base_size: int) -> torch.Tensor:
    """(h*w, dim) position embedding of an h x w patch grid; positions are scaled to the base
    grid (PixArt's multi-aspect convention), so the square base grid gets 0..base-1."""
    ys = torch.arange(h, dtype=torch.float64) / (h / base_size)
    xs = torch.arange(w, dtype=torch.float64) / (w / base_size)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    # half the channels encode the column, half the row (w first, as DiT's meshgrid)
    return torch.cat([sincos_1d(dim // 2, gx), sincos_1d(dim // 2, gy)], dim=1).float()


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class MLP(nn.Module):
    """fc1 -> GELU(tanh) -> fc2 (timm's Mlp key names)."""

    def __init__(self, dim: int, hidden: int, out: int | None = None) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, out or dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class FrequencyEmbedder(nn.Module):
    """Scalar(s) -> sinusoidal features (256) -> MLP (DiT's timestep embedder)."""

    def __init__(self, width: int, frequencies: int = 256) -> None:
        super().__init__()
        self.frequencies = frequencies
        self.mlp = nn.Sequential(nn.Linear(frequencies, width), nn.SiLU(), nn.Linear(width, width))

    def features(self, s: torch.Tensor) -> torch.Tensor:
        half = self.frequencies // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, device=s.device, dtype=torch.float32) / half)
        args = s.float()[:, None] * freqs[None]
        return torch.cat([args.cos(), args.sin()], dim=-1)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        """(B,) -> (B, width); (B, k) -> (B, k * width) (one embedding per column, concatenated)."""
        if s.ndim == 1:
            return self.mlp(self.features(s).to(self.mlp[0].weight.dtype))
        b, k = s.shape
        return self(s.reshape(-1)).reshape(b, -1)


class PatchEmbed(nn.Module):
    def __init__(self, channels: int, width: int, patch: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(channels, width, patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class SelfAttention(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d))


class CrossAttention(nn.Module):
    """Image tokens attend to the condition tokens; padded condition tokens are masked out."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q_linear = nn.Linear(width, width)
        self.kv_linear = nn.Linear(width, 2 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, n, d = x.shape
        hd = d // self.heads
        q = self.q_linear(x).view(b, n, self.heads, hd).transpose(1, 2)
        k, v = self.kv_linear(y).view(b, y.shape[1], 2, self.heads, hd).permute(2, 0, 3, 1, 4)
        bias = None if mask is None else mask.bool()[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class LumosBlock(nn.Module):
    """x += g1 * SA(mod(LN x)); x += CA(x, y); x += g2 * MLP(mod(LN x)); (shift, scale, gate) x 2
    come from the timestep embedding through this block's own adaLN-Zero linear."""

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.attn = SelfAttention(width, heads)
        self.cross_attn = CrossAttention(width, heads)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mlp = MLP(width, int(width * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))

    def forward(self, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        mods = self.adaLN_modulation(t)[:, None].chunk(6, dim=-1)
        shift1, scale1, gate1, shift2, scale2, gate2 = mods
        x = x + gate1 * self.attn(modulate(self.norm1(x), shift1, scale1))
        x = x + self.cross_attn(x, y, mask)
        return x + gate2 * self.mlp(modulate(self.norm2(x), shift2, scale2))


class FinalLayer(nn.Module):
    """LN, shift/scale = learned table + timestep embedding, linear to patch pixels."""

    def __init__(self, width: int, patch: int, out_channels: int) -> None:
        super().__init__()
        self.norm_final = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(width, patch * patch * out_channels)
        self.scale_shift_table = nn.Parameter(torch.randn(2, width) / width**0.5)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        shift, scale = (self.scale_shift_table[None] + t[:, None]).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class ConditionEmbedder(nn.Module):
    """The condition projection (encoder width -> model width); the null condition of CFG is the
    wrapper's ``null_condition`` (the release's ``y_embedder.y_embedding``)."""

    def __init__(self, condition_dim: int, width: int) -> None:
        super().__init__()
        self.y_proj = MLP(condition_dim, width, width)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.y_proj(y)


class LumosTransformer(nn.Module):
    """(B,C,h,w) z_t, (B,) t, (B,M,d) tokens [, (B,M) mask] -> (B, C or 2C, h, w)."""

    def __init__(self, num_layers: int, num_attention_heads: int, attention_head_dim: int, patch_size: int,
                 in_channels: int, out_channels: int, sample_size: int, caption_channels: int,
                 size_conditioning: bool = False, pixels_per_latent: int = 8) -> None:
        super().__init__()
        width = num_attention_heads * attention_head_dim
        self.patch, self.out_channels, self.base_size = patch_size, out_channels, sample_size // patch_size
        self.pixels_per_latent = pixels_per_latent
        self.gradient_checkpointing = False
        self.x_embedder = PatchEmbed(in_channels, width, patch_size)
        self.t_embedder = FrequencyEmbedder(width)
        self.y_embedder = ConditionEmbedder(caption_channels, width)
        self.register_buffer("pos_embed", sincos_2d(width, self.base_size, self.base_size, self.base_size)[None])
        self.blocks = nn.ModuleList(LumosBlock(width, num_attention_heads) for _ in range(num_layers))
        self.final_layer = FinalLayer(width, patch_size, out_channels)
        self.size_conditioning = size_conditioning
        if size_conditioning:  # multi-aspect T2I: (h, w) and h/w, width/3 each (PixArt-alpha)
            self.csize_embedder = FrequencyEmbedder(width // 3)
            self.ar_embedder = FrequencyEmbedder(width // 3)
        self._initialise()

    def _initialise(self) -> None:
        """DiT's init: xavier linears, zero adaLN / cross-attention output / final linear."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        w = self.x_embedder.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        embedders = [self.t_embedder] + ([self.csize_embedder, self.ar_embedder] if self.size_conditioning else [])
        for e in embedders:
            nn.init.normal_(e.mlp[0].weight, std=0.02)
            nn.init.normal_(e.mlp[2].weight, std=0.02)
        nn.init.normal_(self.y_embedder.y_proj.fc1.weight, std=0.02)
        nn.init.normal_(self.y_embedder.y_proj.fc2.weight, std=0.02)
        for block in self.blocks:
            for zero in (block.adaLN_modulation[-1], block.cross_attn.proj):
                nn.init.zeros_(zero.weight)
                nn.init.zeros_(zero.bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    def enable_gradient_checkpointing(self) -> None:
        self.gradient_checkpointing = True

    def _size_embedding(self, h: int, w: int, batch: int, like: torch.Tensor) -> torch.Tensor:
        """Embeddings of the image size (pixels) and aspect ratio, zero-padded to the width."""
        hw = torch.tensor([[h * self.pixels_per_latent, w * self.pixels_per_latent]], device=like.device)
        ar = torch.tensor([[h / w]], device=like.device)
        emb = torch.cat([self.csize_embedder(hw), self.ar_embedder(ar)], dim=1).to(like.dtype)
        return F.pad(emb, (0, like.shape[1] - emb.shape[1])).expand(batch, -1)

    def forward(self, x: torch.Tensor, timestep: torch.Tensor, condition: torch.Tensor,
                condition_mask: torch.Tensor | None = None) -> torch.Tensor:
        b, _, h, w = x.shape
        gh, gw = h // self.patch, w // self.patch
        pos = (self.pos_embed if (gh, gw) == (self.base_size,) * 2
               else sincos_2d(self.pos_embed.shape[-1], gh, gw, self.base_size)[None].to(self.pos_embed))
        tokens = self.x_embedder(x) + pos.to(x.dtype)
        t = self.t_embedder(timestep)
        if self.size_conditioning:
            t = t + self._size_embedding(h, w, b, t)
        y = self.y_embedder(condition.to(tokens.dtype))
        for block in self.blocks:
            if self.gradient_checkpointing and torch.is_grad_enabled():
                tokens = checkpoint(block, tokens, y, t, condition_mask, use_reentrant=False)
            else:
                tokens = block(tokens, y, t, condition_mask)
        out = self.final_layer(tokens, t)  # (B, gh*gw, p*p*C_out)
        p, c = self.patch, self.out_channels
        out = out.view(b, gh, gw, p, p, c).permute(0, 5, 1, 3, 2, 4)
        return out.reshape(b, c, gh * p, gw * p)

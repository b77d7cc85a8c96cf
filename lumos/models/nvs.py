"""The NVS denoiser of eq. (S1): the I2I DiT with the input view's latent concatenated to the
noisy target latent (input channels doubled) and the relative camera pose (R, T) embedded and
added to the timestep embedding; the input view's encoder tokens go through cross-attention.

The weights that are new relative to the I2I prior (the extra input channels and the pose
embedding's output layer) start at zero, so at step 0 the model is exactly the I2I model.
"""

from __future__ import annotations

import torch
from torch import nn

from lumos.models.dit import ConditionedDiT

POSE_DIM = 12  # relative R (3x3, row-major) and T (3): input camera -> target camera (OpenCV)


class NVSDiT(ConditionedDiT):
    def __init__(self, pose_dim: int = POSE_DIM, **dit_args) -> None:
        dit_args["input_channels"] = 2 * dit_args["latent_channels"]
        super().__init__(**dit_args)
        self.pose_embedding = nn.Sequential(nn.Linear(pose_dim, self.width), nn.SiLU(),
                                            nn.Linear(self.width, self.width))
        nn.init.zeros_(self.pose_embedding[-1].weight)
        nn.init.zeros_(self.pose_embedding[-1].bias)
        self._pose_emb: torch.Tensor | None = None
        # Both backbones embed t once, then modulate every block and the final layer from that
        # embedding: adding the pose there conditions all of them, as eq. (S1) asks.
        self.timestep_embedder().register_forward_hook(self._add_pose)

    def _add_pose(self, module: nn.Module, args, output: torch.Tensor) -> torch.Tensor:
        return output if self._pose_emb is None else output + self._pose_emb.to(output.dtype)

    def forward(self, z_t: torch.Tensor, t: torch.Tensor, condition: torch.Tensor,
                input_latent: torch.Tensor, pose: torch.Tensor,
                condition_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B,C,h,w) noisy target, (B,) t, (B,M,d) input-view tokens, (B,C,h,w) input-view
        latent, (B,12) relative pose -> (B,C,h,w) predicted noise."""
        self._pose_emb = self.pose_embedding(pose.to(self.pose_embedding[0].weight.dtype))
        try:
            return super().forward(torch.cat([z_t, input_latent.to(z_t.dtype)], dim=1), t, condition,
                                   condition_mask)
        finally:
            self._pose_emb = None

"""Diffusion backbones: a DiT with cross-attention (the released Lumos DiT or diffusers' PixArt), and its
NVS (eq. S1) and I2V (eq. S2) extensions; `MODEL_CLASSES` names them for checkpoints."""

from lumos.models.dit import BACKBONES, CONDITION_PARAMETERS, VARIANTS, ConditionedDiT, backbone_args
from lumos.models.nvs import NVSDiT
from lumos.models.transfer import transfer_weights
from lumos.models.video import VideoDiT

MODEL_CLASSES = {"dit": ConditionedDiT, "nvs": NVSDiT, "video": VideoDiT}

__all__ = ["BACKBONES", "CONDITION_PARAMETERS", "MODEL_CLASSES", "VARIANTS", "ConditionedDiT", "NVSDiT", "VideoDiT",
           "backbone_args", "transfer_weights"]

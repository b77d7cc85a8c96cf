"""Feature extractors for the distribution metrics, behind one small interface.

Every extractor is an ``nn.Module`` in eval mode with an int ``num_features``:

* image extractors take uint8 images ``(B, 3, H, W)`` and return ``(B, D)`` (FID, KID);
* video extractors take uint8 or [0, 1] float videos ``(B, T, 3, H, W)`` and return ``(B, D)``
  (FVD, KVD).

Which network (the ``eval`` params section):

* FID/KID (Tables 1-2): torch-fidelity's InceptionV3 (``inception-v3-compat``, the TF FID
  network torchmetrics uses) with weights loaded **by path** (torch-fidelity's
  ``weights-inception-2015-12-05-6726825d.pth``); without a path, a torchvision ResNet
  (one block per stage) with random weights drawn from a fixed seed, its ``num_classes``-wide
  head as the feature. Deterministic, offline, not comparable with published numbers.
* FVD/KVD (Table 5): the I3D TorchScript file that the common FVD code loads (StyleGAN-V,
  ``fvd-comparison``, DynamiCrafter's evaluation): input (B, C, T, 224, 224) in [-1, 1],
  called with ``rescale=False, resize=False, return_features=True`` -> (B, 400) logits before
  the softmax. Neither pytorchvideo nor torchvision ships I3D, so without a path we use
  torchvision's ``VideoResNet`` (the R3D family: 3D convs, one block per stage) with seeded
  random weights.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet
from torchvision.models.video.resnet import BasicBlock as BasicBlock3D
from torchvision.models.video.resnet import BasicStem, Conv3DSimple, VideoResNet

from lumos.encoders.frozen import seeded
from lumos.io import local_file

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)  # torchvision's video models
KINETICS_STD = (0.22803, 0.22145, 0.216989)


def _frozen(module: nn.Module) -> nn.Module:
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def _unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] or float [0, 1] -> float [0, 1]."""
    return x.float() / 255.0 if x.dtype == torch.uint8 else x.float()


class InceptionFeatures(nn.Module):
    """FID's standard InceptionV3 (torch-fidelity), 2048-d pool features, weights by path."""

    def __init__(self, weights_path: str | Path, dims: int = 2048) -> None:
        super().__init__()
        from torchmetrics.image.fid import NoTrainInceptionV3

        weights_path = local_file(weights_path)  # a path, or an fsspec URL fetched once
        self.net = NoTrainInceptionV3("inception-v3-compat", [str(dims)], str(weights_path))
        self.num_features = dims
        _frozen(self)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8:
            raise ValueError(f"expected uint8 images, got {images.dtype}")
        return self.net(images).reshape(len(images), -1).float()  # resizes to 299 itself


class TinyImageFeatures(nn.Module):
    """A seeded random torchvision ResNet (BasicBlock x [1,1,1,1]); its head is the feature."""

    def __init__(self, num_features: int = 64, resolution: int = 64, seed: int = 0) -> None:
        super().__init__()
        self.net = seeded(lambda: ResNet(BasicBlock, [1, 1, 1, 1], num_classes=num_features), seed)
        self.num_features = num_features
        self.resolution = resolution
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        _frozen(self)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(_unit(images), size=(self.resolution,) * 2, mode="bilinear",
                          antialias=True, align_corners=False)
        return self.net((x - self.mean) / self.std)


class I3DFeatures(nn.Module):
    """The FVD I3D TorchScript (Kinetics-400), loaded by path; (B, 400) features."""

    def __init__(self, weights_path: str | Path) -> None:
        super().__init__()
        weights_path = local_file(weights_path)  # a path, or an fsspec URL fetched once
        self.net = torch.jit.load(str(weights_path), map_location="cpu").eval()
        self.num_features = 400

    @torch.no_grad()
    def forward(self, videos: torch.Tensor) -> torch.Tensor:
        x = _unit(videos)  # (B, T, 3, H, W)
        b, t = x.shape[:2]
        x = x.flatten(0, 1)
        h, w = x.shape[-2:]  # short side to 224, centre crop, as the common FVD code does
        scale = 224 / min(h, w)
        x = F.interpolate(x, size=(max(224, round(h * scale)), max(224, round(w * scale))),
                          mode="bilinear", align_corners=False)
        top, left = (x.shape[-2] - 224) // 2, (x.shape[-1] - 224) // 2
        x = x[..., top:top + 224, left:left + 224]
        x = x.unflatten(0, (b, t)).permute(0, 2, 1, 3, 4) * 2 - 1  # (B, C, T, H, W) in [-1, 1]
        return self.net(x.contiguous(), rescale=False, resize=False, return_features=True).float()


class TinyVideoFeatures(nn.Module):
    """A seeded random torchvision VideoResNet (R3D, one block per stage); its head is the feature."""

    def __init__(self, num_features: int = 64, resolution: int = 32, seed: int = 0) -> None:
        super().__init__()
        self.net = seeded(lambda: VideoResNet(BasicBlock3D, [Conv3DSimple] * 4, [1, 1, 1, 1],
                                              BasicStem, num_classes=num_features), seed)
        self.num_features = num_features
        self.resolution = resolution
        self.register_buffer("mean", torch.tensor(KINETICS_MEAN).view(1, 3, 1, 1, 1))
        self.register_buffer("std", torch.tensor(KINETICS_STD).view(1, 3, 1, 1, 1))
        _frozen(self)

    @torch.no_grad()
    def forward(self, videos: torch.Tensor) -> torch.Tensor:
        x = _unit(videos)  # (B, T, 3, H, W)
        b, t = x.shape[:2]
        x = F.interpolate(x.flatten(0, 1), size=(self.resolution,) * 2, mode="bilinear",
                          antialias=True, align_corners=False)
        x = x.unflatten(0, (b, t)).permute(0, 2, 1, 3, 4)  # (B, C, T, H, W)
        return self.net((x - self.mean) / self.std)


def image_extractor(inception_weights: str | Path | None = None, num_features: int = 64,
                    resolution: int = 64, seed: int = 0) -> nn.Module:
    """Inception by path when given, else the tiny seeded ResNet."""
    if inception_weights is not None:
        return InceptionFeatures(inception_weights)
    return TinyImageFeatures(num_features, resolution, seed)


def video_extractor(i3d_weights: str | Path | None = None, num_features: int = 64,
                    resolution: int = 32, seed: int = 0) -> nn.Module:
    """I3D TorchScript by path when given, else the tiny seeded VideoResNet."""
    if i3d_weights is not None:
        return I3DFeatures(i3d_weights)
    return TinyVideoFeatures(num_features, resolution, seed)


@torch.no_grad()
def extract_features(items: torch.Tensor, extractor: nn.Module, batch_size: int = 64) -> torch.Tensor:
    """Run ``extractor`` over ``items`` (images or videos, batch first) in batches -> (N, D) float64."""
    if len(items) == 0:
        raise ValueError("no items to extract features from")
    out = [extractor(items[i:i + batch_size]).double().cpu() for i in range(0, len(items), batch_size)]
    return torch.cat(out)

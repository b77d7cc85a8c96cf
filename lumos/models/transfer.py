"""Initialising a model from a parent checkpoint (section 3.2: the I2I prior transfers to T2I,
NVS and I2V). Tensors whose name and shape match are copied; an input projection that gained
channels keeps the parent's weights for the old channels and zeros for the new ones (NVS); the
condition projection is re-initialised when the condition encoder changes (DINO <-> T5);
everything else the child has (pose embedding, temporal layers) keeps its own initialisation,
and so does a fixed buffer (sin-cos positions) computed for another latent size.
"""

from __future__ import annotations

import torch
from torch import nn


def _widens(parent: torch.Tensor, child: torch.Tensor) -> bool:
    """A conv/linear weight with more input channels (dim 1) and otherwise the same shape."""
    return (parent.ndim == child.ndim >= 2 and parent.shape[0] == child.shape[0]
            and parent.shape[1] < child.shape[1] and parent.shape[2:] == child.shape[2:])


@torch.no_grad()
def transfer_weights(parent: dict[str, torch.Tensor], child: nn.Module,
                     reinitialise: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """Load ``parent`` into ``child`` in place; returns which tensors were copied, widened, kept."""
    state = child.state_dict()
    parameters = {name for name, _ in child.named_parameters()}
    report: dict[str, list[str]] = {"copied": [], "widened": [], "initialised": []}
    for name, own in state.items():
        src = parent.get(name)
        if src is None or name.startswith(reinitialise):
            report["initialised"].append(name)
        elif src.shape == own.shape:
            own.copy_(src)
            report["copied"].append(name)
        elif name not in parameters:  # a fixed buffer for another geometry: the child's own
            report["initialised"].append(name)
        elif _widens(src, own):
            own.zero_()
            own[:, : src.shape[1]] = src
            report["widened"].append(name)
        else:
            raise ValueError(f"cannot transfer {name}: parent {tuple(src.shape)} vs child {tuple(own.shape)}")
    return report

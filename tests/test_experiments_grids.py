"""Ablation grids (issue 17 item 5): the encoder grid sets each encoder's own weights."""

from __future__ import annotations

import pytest

from lumos.experiments import GRIDS, Grid, queue_commands


def _settings(cmd: list[str]) -> dict[str, str]:
    return dict(cmd[i + 1].split("=", 1) for i, a in enumerate(cmd) if a == "-S")


def test_encoder_grid_pairs_each_encoder_with_its_weights():
    tiny = [_settings(c) for c in queue_commands("encoder", "tiny")]
    assert [(s["profiles.tiny.vision_encoder.name"], s["profiles.tiny.vision_encoder.pretrained"]) for s in tiny] \
        == [("dino", "null"), ("mocov3", "null"), ("clip", "null")]
    paper = [_settings(c) for c in queue_commands("encoder", "paper")]
    assert [s["profiles.paper.vision_encoder.pretrained"] for s in paper] == [
        "facebook/dino-vitb16", "models/encoders/mocov3-vit-b-300ep.pth.tar", "ViT-B-16:openai"]
    names = [c[c.index("-n") + 1] for c in queue_commands("encoder", "paper")]
    assert names == ["encoder-name-dino", "encoder-name-mocov3", "encoder-name-clip"]


def test_zipped_axes_must_have_equal_lengths_and_products_stay_products():
    with pytest.raises(ValueError, match="unequal"):
        Grid("x", {"a": [1, 2], "b": [1]}, "t", zipped=True).points()
    assert len(GRIDS["dropout-cfg"].points("tiny")) == 4

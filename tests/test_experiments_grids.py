"""Ablation grids (issue 17 item 5): what each `lumos ablate` grid queues, per profile."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import pytest
import yaml

from lumos.config import load_params, parse_params
from lumos.experiments import GRIDS, Grid, listing, queue_commands


def _settings(cmd: list[str]) -> dict[str, str]:
    return dict(cmd[i + 1].split("=", 1) for i, a in enumerate(cmd) if a == "-S")


def _targets(cmd: list[str]) -> list[str]:
    return cmd[[i for i, a in enumerate(cmd) if a in ("-S", "-n")][-1] + 2:]


@pytest.fixture(scope="module")
def profiles():
    params = load_params("params.yaml")
    return params.profiles


def test_encoder_grid_pairs_each_encoder_with_its_weights_and_reaches_t2i(profiles):
    tiny = [_settings(c) for c in queue_commands("encoder", "tiny", profile=profiles["tiny"])]
    assert [(s["profiles.tiny.vision_encoder.name"], s["profiles.tiny.vision_encoder.pretrained"]) for s in tiny] \
        == [("dino", "null"), ("mocov3", "null"), ("clip", "null")]
    paper_cmds = queue_commands("encoder", "paper", profile=profiles["paper"])
    assert [_settings(c)["profiles.paper.vision_encoder.pretrained"] for c in paper_cmds] == [
        "facebook/dino-vitb16", "models/encoders/mocov3-vit-b-300ep.pth.tar", "ViT-L-14:openai"]
    assert [c[c.index("-n") + 1] for c in paper_cmds] == [
        "encoder-visionencoder-dino", "encoder-visionencoder-mocov3", "encoder-visionencoder-clip"]
    for grid in ("encoder", "tokens", "topk", "data-scale"):  # Figs. 10b, 9b, S2b, 2b: the T2I metric too
        assert all(_targets(c) == ["evaluate-i2i", "evaluate-t2i"] for c in queue_commands(grid, "tiny", profile=profiles["tiny"]))


def test_data_scale_and_caption_noise_read_their_values_from_the_profile(profiles):
    tiny = [_settings(c) for c in queue_commands("data-scale", "tiny", profile=profiles["tiny"])]
    assert [s["profiles.tiny.train.max_samples"] for s in tiny] == ["16", "32", "64", "128"]
    paper = [_settings(c) for c in queue_commands("data-scale", "paper", profile=profiles["paper"])]
    assert paper[0]["profiles.paper.train.max_samples"] == "10000000"
    other = profiles["tiny"].model_copy(update={"ablate": profiles["tiny"].ablate.model_copy(
        update={"caption_noise": [0.2, 0.8]})})
    noise = [_settings(c) for c in queue_commands("caption-noise", "tiny", profile=other)]
    assert [(s["profiles.tiny.t2i_data.caption_noise"], s["profiles.tiny.t2i.prior"]) for s in noise] == [
        ("0.2", "i2i"), ("0.2", "none"), ("0.8", "i2i"), ("0.8", "none")]


def test_priors_text_encoder_and_topk_grids(profiles):
    priors = [_settings(c) for c in queue_commands("priors", "tiny", profile=profiles["tiny"])]
    assert [(s["profiles.tiny.train.condition"], s["profiles.tiny.t2i.prior"]) for s in priors] == [
        ("image", "i2i"), ("class", "i2i"), ("none", "i2i"), ("image", "none")]
    assert {s["profiles.tiny.train.sources"] for s in priors} == {"[imagenet-mini]"}
    text = [_settings(c) for c in queue_commands("text-encoder", "paper", profile=profiles["paper"])]
    assert [(s["profiles.paper.vision_encoder.name"], s["profiles.paper.text_encoder.name"],
             s["profiles.paper.text_encoder.pretrained"]) for s in text] == [
        ("dino", "t5", "google/flan-t5-xxl"), ("dino", "clip", "ViT-L-14:openai"),
        ("clip", "t5", "google/flan-t5-xxl"), ("clip", "clip", "ViT-L-14:openai")]
    topk = [_settings(c)["profiles.tiny.vision_encoder.tokens"] for c in queue_commands("topk", "tiny", profile=profiles["tiny"])]
    assert topk == ["cls", "topk", "random"]
    tokens = [_settings(c) for c in queue_commands("tokens", "paper", profile=profiles["paper"])]
    assert {s["profiles.paper.vision_encoder.pretrained"] for s in tokens} == {"ViT-L-14:openai"}  # Fig. 9: CLIP


def _set(data: dict, dotted: str, value: str) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        data = data[part]
    data[leaf] = yaml.safe_load(value)  # `[a,b]`, `null`, numbers: as DVC's override grammar reads them


def test_every_grid_point_is_a_valid_params_file(profiles):
    """Each point's -S settings, applied to params.yaml, validate (names, types, values); one
    list-valued point goes through DVC's own override code."""
    from dvc.utils.hydra import apply_overrides

    base = yaml.safe_load(Path("params.yaml").read_text())
    names = set()
    for grid in GRIDS:
        for profile_name in ("tiny", "paper"):
            for cmd in queue_commands(grid, profile_name, profile=profiles[profile_name]):
                data = copy.deepcopy(base)
                for key, value in _settings(cmd).items():
                    _set(data, key, value)
                parse_params(data)
                names.add((profile_name, cmd[cmd.index("-n") + 1]))
    assert len(names) == 2 * sum(len(g.points("tiny", profiles["tiny"])) for g in GRIDS.values())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "params.yaml"
        path.write_text("profiles: {tiny: {train: {sources: null, condition: image}, t2i: {prior: none}}}\n")
        apply_overrides(str(path), [f"{k}={v}" for k, v in _settings(
            queue_commands("priors", "tiny", profile=profiles["tiny"])[1]).items()])
        assert yaml.safe_load(path.read_text())["profiles"]["tiny"] == {
            "train": {"sources": ["imagenet-mini"], "condition": "class"}, "t2i": {"prior": "i2i"}}


def test_axes_must_have_equal_lengths_and_axes_multiply():
    with pytest.raises(ValueError, match="unequal"):
        Grid("F", "x", [{"a": [1, 2], "b": [1]}], ("t",)).points()
    assert len(GRIDS["dropout-cfg"].points("tiny")) == 4


def test_ablate_lists_every_grid_with_its_figure(profiles):
    out = "\n".join(listing("tiny", profiles["tiny"]))
    for name in ("encoder", "tokens", "topk", "data-scale", "priors", "text-encoder", "caption-noise"):
        assert any(line.startswith(name + " ") for line in out.splitlines()), name
    assert "Fig. 8a" in out and "Fig. 11" in out and "Fig. 2a" in out and "10 runs" in out

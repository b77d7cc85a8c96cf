"""Transferring the I2I prior (section 3.2): what is copied, what starts at zero, and that the
NVS and I2V models equal the I2I model at step 0; buckets; the I2V first frame stays fixed."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from lumos.config import Diffusion
from lumos.data.buckets import bucket_table, nearest_bucket
from lumos.data.nvs import relative_pose
from lumos.models import CONDITION_PARAMETERS, ConditionedDiT, NVSDiT, VideoDiT
from lumos.render.cameras import relative_pose as relative_pose_np
from lumos.sample.i2v import image_to_video_latents
from lumos.tasks.priors import init_from, prior_checkpoint
from lumos.train.lineage import dataset_versions

from conftest import perturbed

ARGS = {"variant": "tiny", "latent_channels": 4, "latent_size": 8, "condition_dim": 24, "condition_tokens": 1}


@pytest.fixture
def i2i_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = perturbed(ConditionedDiT(**ARGS))
    ckpt = tmp_path / "models/i2i/checkpoints/step-0000010"
    ckpt.mkdir(parents=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(ckpt / "model.safetensors"))
    ema = {k: v + 0.01 for k, v in state.items()}  # EMA differs: the transfer must take it
    save_file(ema, str(ckpt / "ema.safetensors"))
    (ckpt / "config.json").write_text(json.dumps({"task": "i2i", "model_args": ARGS, "step": 10}))
    (ckpt / "DONE").write_text("10")
    return ckpt, model, ema


def test_i2i_to_t2i_copies_exactly_the_shared_tensors(i2i_checkpoint):
    ckpt, _, ema = i2i_checkpoint
    torch.manual_seed(5)
    t2i = ConditionedDiT(**{**ARGS, "condition_dim": 32, "condition_tokens": 16})
    fresh = {k: v.clone() for k, v in t2i.state_dict().items()}
    report = init_from(t2i, ckpt, condition="text")
    state = t2i.state_dict()
    condition = {k for k in state if k.startswith(CONDITION_PARAMETERS)}
    assert condition == set(report["initialised"]) and len(condition) == 5  # projection (2 linears) + null
    for name, tensor in state.items():
        if name in condition:
            assert torch.equal(tensor, fresh[name]), name  # re-initialised for T5's width
        else:
            assert torch.equal(tensor, ema[name]), name  # every other weight: the prior's (EMA)
    assert sorted(report["copied"]) == sorted(set(state) - condition)


def test_same_width_text_encoder_still_reinitialises_the_projection(i2i_checkpoint):
    ckpt, _, ema = i2i_checkpoint
    t2i = ConditionedDiT(**ARGS)  # a T5 as wide as DINO: the projection must still start afresh
    report = init_from(t2i, ckpt, condition="text")
    assert set(report["initialised"]) == {k for k in t2i.state_dict() if k.startswith(CONDITION_PARAMETERS)}
    assert not torch.equal(t2i.null_condition, ema["null_condition"])


def test_nvs_at_step_zero_is_the_i2i_model(i2i_checkpoint):
    ckpt, _, ema = i2i_checkpoint
    i2i = ConditionedDiT(**ARGS).eval()
    i2i.load_state_dict(ema)
    nvs = NVSDiT(**ARGS).eval()
    report = init_from(nvs, ckpt, condition="vision")
    assert report["widened"] == ["transformer.pos_embed.proj.weight"]
    proj = nvs.transformer.pos_embed.proj.weight
    assert proj.shape[1] == 8 and torch.equal(proj[:, 4:], torch.zeros_like(proj[:, 4:]))
    g = torch.Generator().manual_seed(2)
    z, cond = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 1, 24, generator=g)
    t = torch.tensor([0, 400, 999])
    view, pose = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 12, generator=g)
    with torch.no_grad():
        expected = i2i(z, t, cond)
        assert torch.allclose(nvs(z, t, cond, view, pose), expected, atol=1e-6)
        # ...and once its new weights move, the input view and the pose do matter
        last = nvs.pose_embedding[-1].weight
        last.add_(0.1 * torch.randn(last.shape, generator=g))
        assert not torch.allclose(nvs(z, t, cond, view, pose), expected, atol=1e-3)


def test_i2v_at_step_zero_is_the_per_frame_i2i_model(i2i_checkpoint):
    ckpt, _, ema = i2i_checkpoint
    i2i = ConditionedDiT(**ARGS).eval()
    i2i.load_state_dict(ema)
    video = VideoDiT(max_frames=16, **ARGS).eval()
    report = init_from(video, ckpt, condition="vision")
    assert all(name.startswith("temporal.") for name in report["initialised"])
    g = torch.Generator().manual_seed(3)
    z, cond = torch.randn(2, 5, 4, 8, 8, generator=g), torch.randn(2, 1, 24, generator=g)
    t = torch.randint(0, 1000, (2, 5), generator=g)
    with torch.no_grad():
        per_frame = torch.stack([i2i(z[:, f], t[:, f], cond) for f in range(5)], dim=1)
        assert torch.allclose(video(z, t, cond), per_frame, atol=1e-5)
        out = video.temporal[0].attention.to_out[0].weight  # trained temporal layers mix frames
        out.add_(0.1 * torch.randn(out.shape, generator=g))
        assert not torch.allclose(video(z, t, cond), per_frame, atol=1e-3)


def test_first_frame_stays_fixed_through_i2v_sampling():
    torch.manual_seed(0)
    video = perturbed(VideoDiT(max_frames=16, **ARGS))
    first = torch.randn(2, 4, 8, 8)
    seen = []
    z = image_to_video_latents(video, first, torch.randn(2, 1, 24), 6,
                               Diffusion(sample_steps=4, cfg_scale=2.0), seed=0, watch=lambda z: seen.append(z))
    assert z.shape == (2, 6, 4, 8, 8) and len(seen) == 4
    for step in seen:
        assert torch.equal(step[:, 0], first)
    assert torch.equal(z[:, 0], first) and not torch.allclose(z[:, 1], first)


def test_i2v_strength_starts_later_frames_from_the_first_frame():
    """strength < 1: every frame starts as frame 0 noised to the level of the steps that run
    (fewer solver steps), so a small strength leaves the later frames near frame 0."""
    torch.manual_seed(0)
    video = perturbed(VideoDiT(max_frames=16, **ARGS))
    first = torch.randn(2, 4, 8, 8)
    settings = Diffusion(sample_steps=10, cfg_scale=2.0)
    runs = {}
    for strength in (1.0, 0.3, 0.1):
        seen = []
        z = image_to_video_latents(video, first, torch.randn(2, 1, 24, generator=torch.Generator().manual_seed(1)), 4,
                                   settings, seed=0, watch=lambda z: seen.append(z), strength=strength)
        assert torch.equal(z[:, 0], first) and all(torch.equal(s[:, 0], first) for s in seen)
        runs[strength] = (z, len(seen))
    assert runs[1.0][1] == 10 and runs[0.3][1] == 1 + 3 and runs[0.1][1] == 1 + 1  # + the noised start
    gap = {s: float((z[:, 1:] - first[:, None]).abs().mean()) for s, (z, _) in runs.items()}
    assert gap[0.1] < 0.5 * gap[0.3] and gap[0.3] < 0.5 * gap[1.0]
    with pytest.raises(ValueError, match="strength"):
        image_to_video_latents(video, first, torch.randn(2, 1, 24), 4, settings, seed=0, strength=0.0)


def test_relative_pose_matches_the_numpy_definition():
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(2, 3, 3, generator=g))
    w2c = torch.eye(4).repeat(2, 1, 1)
    w2c[:, :3, :3], w2c[:, :3, 3] = q, torch.randn(2, 3, generator=g)
    r, t = relative_pose_np(w2c[0].double().numpy(), w2c[1].double().numpy())
    got = relative_pose(w2c[:1], w2c[1:])[0]
    assert torch.allclose(got[:9].view(3, 3).double(), torch.from_numpy(r), atol=1e-5)
    assert torch.allclose(got[9:].double(), torch.from_numpy(t), atol=1e-5)


def test_bucket_table_and_nearest_bucket():
    table = bucket_table(64)
    assert (64, 64) in table and all(h % 16 == 0 and w % 16 == 0 for h, w in table)
    assert any(h > w for h, w in table) and any(h < w for h, w in table)
    assert nearest_bucket(500, 510, table) == (64, 64)
    h, w = nearest_bucket(300, 900, table)
    assert w > h
    paper = bucket_table(1024)  # PixArt's own 1024 table
    assert (1024, 1024) in paper and len(paper) >= 30


def test_priors_resolve_or_say_what_is_missing(tmp_path, i2i_checkpoint):
    ckpt, _, _ = i2i_checkpoint
    roots = {"i2i": ckpt.parent.parent, "t2i": tmp_path / "models/t2i"}
    assert prior_checkpoint("i2i", roots) == ckpt
    assert prior_checkpoint("none", roots) is None
    with pytest.raises(FileNotFoundError, match="prior 't2i'"):
        prior_checkpoint("t2i", roots)


def test_dataset_versions_come_from_dvc_lock(tmp_path):
    lock = tmp_path / "dvc.lock"
    lock.write_text("schema: '2.0'\nstages:\n  features-i2i:\n    outs:\n    - path: datasets/features/i2i\n"
                    "      md5: abc.dir\n")
    v = dataset_versions({"features": "datasets/features/i2i", "inside": "datasets/features/i2i/x.safetensors",
                          "other": "datasets/elsewhere"}, lock)
    assert v["features"]["dvc_md5"] == "abc.dir" and v["inside"]["dvc_md5"] == "abc.dir"
    assert v["other"]["dvc_md5"] is None

"""evaluate-nvs and evaluate-i2v on held-out sets (issue 17, Tables 4-5): the GSO per-object
folders rendered at the GSO cameras, UCF-101 / MSR-VTT clips streamed one at a time, with tiny
real models (the project's DiTs, the tiny VAE and vision encoder of the tiny profile); and the
T2I stages' held-out probe (eval.every) on the COCO-layout captions."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import save_file

from lumos.demo.heldout import build_heldout
from lumos.encoders import build_vae, build_vision_encoder
from lumos.models import NVSDiT, VideoDiT

from conftest import perturbed, without_run_outputs


@pytest.fixture(scope="module")
def heldout(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval17") / "mini-world" / "heldout"  # a stand-in path
    manifest = build_heldout(root, n=4, seed=0)
    return root, manifest


def _checkpoint(root, model_class: str, model, args: dict):
    ckpt = root / "checkpoints" / "step-0000001"
    ckpt.mkdir(parents=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(ckpt / "model.safetensors"))
    save_file(state, str(ckpt / "ema.safetensors"))
    (ckpt / "config.json").write_text(json.dumps({"model_class": model_class, "model_args": args}))
    (ckpt / "DONE").write_text("1")
    (root / "summary.json").write_text(json.dumps({"prior": "i2i"}))
    return ckpt


def _args(profile, side: int, **extra) -> dict:
    x = torch.rand(1, 3, side, side)
    mean, _ = build_vae(profile.vae).encode(x * 2 - 1)
    cond = build_vision_encoder(profile.vision_encoder)(x)
    return {"variant": "tiny", "latent_channels": mean.shape[1], "latent_size": mean.shape[-1],
            "condition_dim": cond.shape[-1], "condition_tokens": cond.shape[1], **extra}


def _profile(params, heldout_root, tmp_path, training_uids=("objaverse-000",)):
    p = without_run_outputs(params.active)
    objects = tmp_path / "objects.json"
    objects.write_text(json.dumps({uid: f"{uid}.glb" for uid in training_uids}))
    ev = p.eval.model_copy(update={
        "objects": {"gso": p.eval.objects["gso"].model_copy(update={"reference": str(heldout_root / "gso"),
                                                                    "samples": 1})},
        # 4 frames keep the test fast (the pipeline generates the protocol's 16)
        "videos": {k: v.model_copy(update={"reference": str(heldout_root / k), "samples": 2, "frames": 4})
                   for k, v in p.eval.videos.items()},
        "kid_subsets": 2})
    nvs = p.nvs.model_copy(update={"objects": str(objects), "eval_azimuths": 3})  # 16 in the pipeline
    return p.model_copy(update={"eval": ev, "nvs": nvs,
                                "diffusion": p.diffusion.model_copy(update={"sample_steps": 2})})


def test_evaluate_nvs_renders_heldout_gso_objects_and_scores_per_elevation(params, heldout, tmp_path):
    from lumos.eval.stages import run_evaluate_nvs

    root, manifest = heldout
    profile = _profile(params, root, tmp_path)
    args = _args(profile, profile.nvs.resolution)
    torch.manual_seed(0)
    _checkpoint(tmp_path / "models/nvs", "nvs", perturbed(NVSDiT(**args)), args)
    renders = tmp_path / "renders"
    m = run_evaluate_nvs(profile, tmp_path / "models/nvs", renders, tmp_path / "metrics")
    gso = m["gso"]
    assert gso["objects"] == sorted(manifest["gso_objects"])[:1] and gso["samples"] == 1
    assert gso["stand_in"] is True and gso["reference"] == str(root / "gso")
    n_az = profile.nvs.eval_azimuths
    assert gso["elevation_0"]["views"] == n_az - 1  # the condition view is not a target
    assert gso["elevation_30"]["views"] == n_az
    for row in (gso["elevation_0"], gso["elevation_30"]):
        assert 0 < row["psnr"] < 60 and -1 <= row["ssim"] <= 1 and row["lpips"] >= 0
    assert json.loads((tmp_path / "metrics/nvs.json").read_text())["gso"]["samples"] == 1
    obj = renders / "gso" / gso["objects"][0]
    cams = json.loads((obj / "cameras.json").read_text())["views"]
    assert len(cams) == 2 * n_az and {c["elevation_deg"] for c in cams} == {0.0, 30.0}
    done = (obj / "_DONE").stat().st_mtime_ns
    from lumos.eval.nvs_heldout import gso_objects, render_heldout
    from lumos.render.stages import renderer_for

    render_heldout(gso_objects(root / "gso", 1), renders / "gso", profile.nvs, renderer_for(profile.nvs))
    assert (obj / "_DONE").stat().st_mtime_ns == done  # a rerun does not render again


def test_evaluate_nvs_refuses_a_training_object(params, heldout, tmp_path):
    from lumos.eval.stages import run_evaluate_nvs

    root, manifest = heldout
    profile = _profile(params, root, tmp_path, training_uids=["objaverse-000", sorted(manifest["gso_objects"])[0]])
    args = _args(profile, profile.nvs.resolution)
    _checkpoint(tmp_path / "models/nvs", "nvs", NVSDiT(**args), args)
    with pytest.raises(ValueError, match="training objects"):
        run_evaluate_nvs(profile, tmp_path / "models/nvs", tmp_path / "renders", tmp_path / "metrics")
    assert not (tmp_path / "renders").exists()


def test_evaluate_i2v_generates_from_heldout_first_frames(params, heldout, tmp_path):
    from lumos.eval.stages import run_evaluate_i2v

    root, manifest = heldout
    profile = _profile(params, root, tmp_path)
    args = _args(profile, profile.i2v.resolution, max_frames=profile.i2v.frames)
    torch.manual_seed(0)
    _checkpoint(tmp_path / "models/i2v", "video", perturbed(VideoDiT(**args)), args)
    profile = profile.model_copy(update={"eval": profile.eval.model_copy(  # UCF-101: test_evaluate_clips_...
        update={"videos": {"msrvtt": profile.eval.videos["msrvtt"]}})})
    m = run_evaluate_i2v(profile, tmp_path / "models/i2v", tmp_path / "metrics")
    for name in ("msrvtt",):
        entry = m[name]
        assert entry["samples"] == 2 and entry["stand_in"] is True and entry["skipped"] == 0
        assert entry["reference"] == str(root / name) and "first frame" in entry["protocol"]
        assert entry["fvd"] > 0 and 0 < entry["pic"] <= 1
    assert "webvid" not in m and "ucf101" not in m and m["prior"] == "i2i"  # only the sets in eval.videos


def test_evaluate_clips_streams_skips_broken_clips_and_scores_a_static_clip(params, heldout, tmp_path):
    from lumos.eval.features import video_extractor
    from lumos.eval.i2v_heldout import evaluate_clips, heldout_rows
    from lumos.eval.image_metrics import lpips_model

    root, _ = heldout
    ucf = tmp_path / "ucf101"
    shutil.copytree(root / "ucf101", ucf)
    broken_class = sorted(p for p in ucf.iterdir())[0]
    (broken_class / "v_Broken_g01_c00.avi").write_bytes(b"not a video")
    rows = heldout_rows("ucf101", ucf)
    assert rows[0].videoid == "v_Broken_g01_c00"  # sorted first: read, rejected, counted
    proto = params.active.eval.videos["ucf101"].model_copy(update={"frames": 4})
    calls = []

    def still(first, frames, seed):  # every frame is the input: PIC's maximum
        calls.append(seed)
        return first[None].expand(frames, -1, -1, -1)

    m = evaluate_clips(rows, 2, proto, still, video_extractor(None, 16, proto.resolution, 0), lpips_model(),
                       seed=5, kid_subsets=2, kid_subset_size=3)
    assert m["skipped"] == 1 and len(m["keys"]) == 2 and calls == [5, 6]
    assert m["pic"] == pytest.approx(1.0, abs=1e-6) and m["fvd"] > 0
    with pytest.raises(ValueError, match="no reader"):
        heldout_rows("kinetics", ucf)


def test_t2i_probe_scores_heldout_coco_pairs_at_each_stage_resolution(params, heldout):
    from lumos.eval.probes import T2IProbes
    from lumos.models import ConditionedDiT

    root, manifest = heldout
    p = without_run_outputs(params.active)
    coco = p.eval.images["coco30k"].model_copy(update={"reference": str(root / "coco/val2014"),
                                                       "prompts": str(root / "coco/annotations/captions_val2014.json")})
    probes = T2IProbes(p.model_copy(update={"eval": p.eval.model_copy(update={"images": {"coco30k": coco}})}))
    assert [x["prompt"] for x in probes.pairs] == manifest["coco_captions"]  # held-out captions, raw
    small, large = probes.at(32), probes.at(64)
    assert small.z0.shape[-1] * 2 == large.z0.shape[-1] and small.items == large.items == 4
    args = {"variant": "tiny", "latent_channels": small.z0.shape[1], "latent_size": small.z0.shape[-1],
            "condition_dim": probes.emb.shape[-1], "condition_tokens": probes.emb.shape[1]}
    torch.manual_seed(0)
    a, b = perturbed(ConditionedDiT(**args)), perturbed(ConditionedDiT(**args), seed=2)
    va = small(a)["eval/heldout_loss_coco"]
    assert va == small(a)["eval/heldout_loss_coco"] and va > 0  # fixed noise and timesteps
    assert va != pytest.approx(small(b)["eval/heldout_loss_coco"])


def test_evaluate_t2i_reports_raw_and_long_caption_fid_on_heldout_coco(params, heldout, tmp_path):
    from lumos.caption.stages import build_captioner
    from lumos.encoders.t5 import T5TextEncoder
    from lumos.eval.long_captions import long_captions
    from lumos.eval.references import coco_prompts
    from lumos.eval.stages import run_evaluate_t2i
    from lumos.models import ConditionedDiT, backbone_args

    root, manifest = heldout
    p = _profile(params, root, tmp_path)
    coco = p.eval.images["coco30k"].model_copy(update={
        "reference": str(root / "coco/val2014"), "prompts": str(root / "coco/annotations/captions_val2014.json"),
        "samples": 2})
    profile = p.model_copy(update={"eval": p.eval.model_copy(update={"images": {"coco30k": coco}})})
    text = T5TextEncoder.from_config(profile.text_encoder)
    side = profile.t2i.stages[-1].resolution
    args = {**_args(profile, side), "condition_dim": text.width, "condition_tokens": profile.text_encoder.max_length,
            **backbone_args(profile.model), "size_conditioning": profile.t2i.stages[-1].multi_aspect}
    torch.manual_seed(0)
    _checkpoint(tmp_path / "models/t2i/stages/stage-0", "dit", perturbed(ConditionedDiT(**args)), args)
    cache = tmp_path / "captions"
    m = run_evaluate_t2i(profile, tmp_path / "models/t2i", tmp_path / "metrics", cache)
    raw, long = m["coco30k"], m["coco30k_long"]
    assert raw["samples"] == long["samples"] == 2 and raw["reference"] == long["reference"] and long["stand_in"]
    assert "long captions" in long["protocol"] and long["fid"] >= 0 and raw["fid"] >= 0
    # Table 3's strict tags on the samples, and on the VAE's reconstructions of the same images
    # (the ceiling of any sampler decoding through this VAE; the random test VAE's is ~0)
    from lumos.eval.alignment import TAGS

    for tags in (raw["alignment"], raw["alignment_vae_reconstruction"]):
        assert set(tags) == set(TAGS) and all(0.0 <= v <= 1.0 for v in tags.values())
    assert raw["alignment_vae_reconstruction"]["colour"] < 0.5
    saved = json.loads((cache / "coco30k.json").read_text())
    assert len(saved["captions"]) == 2 and saved["captions"] != manifest["coco_captions"][:2]
    assert saved["fingerprint"]["keys"] == [x["key"] for x in coco_prompts(coco.prompts, coco.reference, 2)]
    # the cache is read back for the same captioner and images, and rewritten for another prompt
    prompts = coco_prompts(coco.prompts, coco.reference, 2)
    before = (cache / "coco30k.json").stat().st_mtime_ns
    assert long_captions(prompts, build_captioner(profile), cache / "coco30k.json") == saved["captions"]
    assert (cache / "coco30k.json").stat().st_mtime_ns == before
    other = profile.model_copy(update={"captioner": profile.captioner.model_copy(update={"prompt": "Describe briefly."})})
    long_captions(prompts, build_captioner(other), cache / "coco30k.json")
    assert json.loads((cache / "coco30k.json").read_text())["fingerprint"]["prompt"] == "Describe briefly."

"""lumos.eval: every metric on cases with known answers, tiny real networks, no weights needed."""

from __future__ import annotations

import copy
import io

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from lumos.config import ConfigError, parse_params
from lumos.demo.scenes import COLOURS, encode, render, sample_scene
from lumos.eval import (
    ClipScorer,
    alignment_score,
    alignment_scores,
    clip_score,
    fid_kid,
    fvd_kvd,
    gso_views,
    image_extractor,
    lpips,
    lpips_model,
    nvs_metrics,
    pic,
    psnr,
    ssim,
    video_extractor,
    video_metrics,
)
from lumos.eval.alignment import TAGS
from lumos.eval.features import InceptionFeatures, extract_features

from conftest import ROOT


def _images(n: int, side: int, seed: int) -> torch.Tensor:
    """Smooth random images in [0, 1] (low-frequency noise upsampled), (n, 3, side, side)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 6, 6, generator=g)
    return torch.nn.functional.interpolate(low, size=(side, side), mode="bilinear", align_corners=False)


@pytest.fixture(scope="module")
def lp():
    return lpips_model("alex", seed=0)


# --------------------------------------------------------------------------- FID / KID
def test_fid_kid_identical_near_zero_and_shifted_larger():
    ext = image_extractor(num_features=32, resolution=32, seed=0)
    a, b = _images(24, 32, 0), _images(24, 32, 1)
    same = fid_kid(a, a, ext, kid_subsets=20, kid_subset_size=12)
    other = fid_kid(b, a, ext, kid_subsets=20, kid_subset_size=12)
    shifted = fid_kid((a * 0.4 + 0.6), a, ext, kid_subsets=20, kid_subset_size=12)
    assert same["fid"] == pytest.approx(0.0, abs=1e-6)
    assert abs(same["kid"]) < 1e-3
    assert shifted["fid"] > other["fid"] > same["fid"]
    assert shifted["kid"] > same["kid"] + 10 * abs(same["kid"])
    assert same["n_generated"] == same["n_reference"] == 24


def test_fid_accepts_pil_of_any_size_and_is_deterministic():
    a = _images(6, 40, 2)
    pil = [Image.fromarray((x.permute(1, 2, 0).numpy() * 255).astype(np.uint8)).resize((40 + 7 * i, 40))
           for i, x in enumerate(a)]
    with pytest.raises(ValueError, match="resolution"):
        fid_kid(pil, a, image_extractor())
    r1 = fid_kid(pil, a, image_extractor(seed=3), resolution=40, kid_subset_size=4)
    r2 = fid_kid(pil, a, image_extractor(seed=3), resolution=40, kid_subset_size=4)
    assert r1 == r2


def test_inception_loads_by_path(tmp_path):
    """The FID Inception class with weights from a file (here torchvision's InceptionV3 layout,
    randomly initialised: the real file is torch-fidelity's pt_inception weights)."""
    from torchvision.models import inception_v3

    net = inception_v3(weights=None, num_classes=1008, aux_logits=False, init_weights=False)
    torch.save(net.state_dict(), tmp_path / "inception.pth")
    ext = InceptionFeatures(tmp_path / "inception.pth")
    feats = extract_features((_images(3, 32, 0) * 255).to(torch.uint8), ext)
    assert feats.shape == (3, 2048) and torch.isfinite(feats).all()
    with pytest.raises(FileNotFoundError):
        InceptionFeatures(tmp_path / "missing.pth")


# --------------------------------------------------------------------------- PSNR / SSIM / LPIPS
def test_psnr_ssim_lpips_identical_and_monotone_in_noise(lp):
    a = _images(4, 48, 0)
    g = torch.Generator().manual_seed(0)
    noisy = [(a + s * torch.randn(a.shape, generator=g)).clamp(0, 1) for s in (0.02, 0.1, 0.3)]
    assert torch.isinf(psnr(a, a)).all()
    assert torch.allclose(ssim(a, a), torch.ones(4))
    assert torch.equal(lpips(a, a, lp), torch.zeros(4))
    p = [psnr(x, a).mean() for x in noisy]
    s = [ssim(x, a).mean() for x in noisy]
    d = [lpips(x, a, lp).mean() for x in noisy]
    assert p[0] > p[1] > p[2] and s[0] > s[1] > s[2] and d[0] < d[1] < d[2]
    u8 = (a * 255).round().to(torch.uint8)
    assert torch.isinf(psnr(u8, u8)).all()


def test_lpips_backbone_weights_by_path(tmp_path, lp):
    from torchvision.models import alexnet

    torch.manual_seed(123)
    tv = alexnet(weights=None)
    torch.save(tv.state_dict(), tmp_path / "alexnet.pth")
    loaded = lpips_model("alex", backbone_weights=str(tmp_path / "alexnet.pth"))
    assert torch.equal(loaded.net.slice1[0].weight, tv.features[0].weight)
    assert torch.equal(getattr(loaded.net.slice5, "10").weight, tv.features[10].weight)
    a, b = _images(2, 48, 0), _images(2, 48, 1)
    assert not torch.allclose(lpips(a, b, loaded), lpips(a, b, lp))


def test_nvs_metrics_per_elevation_as_table_4(lp):
    views = gso_views(16, (0.0, 30.0))
    assert len(views) == 32 and views[0] == (0.0, 0.0) and views[17] == (30.0, 22.5)
    target = _images(32, 32, 5)
    pred = target.clone()
    pred[16:] = (pred[16:] + 0.1 * torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    rows = nvs_metrics(pred, target, [e for e, _ in views], lp)
    assert set(rows) == {"elevation_0", "elevation_30"}
    assert rows["elevation_0"] == {"psnr": float("inf"), "ssim": pytest.approx(1.0), "lpips": 0.0, "views": 16}
    e30 = rows["elevation_30"]
    assert 10 < e30["psnr"] < 40 and e30["ssim"] < 1 and e30["lpips"] > 0 and e30["views"] == 16
    with pytest.raises(ValueError, match="elevations"):
        nvs_metrics(pred, target, [0.0] * 3, lp)


# --------------------------------------------------------------------------- CLIP score
def test_clip_score_range_determinism_and_text_dependence():
    a = _images(3, 64, 0)
    texts = ["one small red circle at the center", "two shapes: a blue square", "a green triangle"]
    s1 = clip_score(a, texts, ClipScorer(None, seed=0))
    s2 = clip_score(a, texts, ClipScorer(None, seed=0))
    assert s1 == s2
    assert all(0.0 <= v <= 100.0 for v in s1["per_sample"])
    assert s1["clip_score"] == pytest.approx(np.mean(s1["per_sample"]))
    assert s1["per_sample"] == pytest.approx([100 * max(c, 0.0) for c in s1["cosine"]], abs=1e-4)
    s3 = clip_score(a, texts[::-1], ClipScorer(None, seed=0))
    assert s3["cosine"] != s1["cosine"] and s3["cosine"][1] == s1["cosine"][1]


# --------------------------------------------------------------------------- FVD / KVD / PIC
def test_fvd_kvd_identical_near_zero_and_shifted_larger():
    ext = video_extractor(num_features=32, resolution=16, seed=0)
    g = torch.Generator().manual_seed(0)
    v = torch.rand(6, 6, 3, 16, 16, generator=g)
    w = torch.rand(6, 6, 3, 16, 16, generator=g)
    same = fvd_kvd(v, v, ext, kid_subsets=10, kid_subset_size=6)
    shifted = fvd_kvd(w * 0.3, v, ext, kid_subsets=10, kid_subset_size=6)
    assert same["fvd"] == pytest.approx(0.0, abs=1e-6) and abs(same["kvd"]) < 1e-3
    assert shifted["fvd"] > 100 * max(same["fvd"], 1e-9) and shifted["kvd"] > same["kvd"]


def test_pic_is_one_for_frozen_input_and_lower_for_motion(lp):
    first = _images(2, 32, 0)
    frozen = first.unsqueeze(1).expand(-1, 4, -1, -1, -1)
    moving = torch.stack([first, _images(2, 32, 1), _images(2, 32, 2), _images(2, 32, 3)], dim=1)
    assert pic(frozen, first, lp)["pic"] == pytest.approx(1.0)
    assert pic(moving, first, lp)["pic"] < 1.0
    ext = video_extractor(num_features=16, resolution=16)
    row = video_metrics(frozen, moving, first, ext, lp, kid_subset_size=2)
    assert set(row) == {"fvd", "kvd", "kvd_std", "pic"} and row["pic"] == pytest.approx(1.0)


# --------------------------------------------------------------------------- mini-world alignment
@pytest.fixture(scope="module")
def scenes_and_images():
    """40 mini-world scenes rendered and JPEG/PNG-encoded exactly as demo/world.py does."""
    scenes, images = [], []
    for i in range(40):
        rng = np.random.default_rng([0, 0, i])
        scene = sample_scene(rng, 200, 900, 4)
        fmt = "png" if rng.random() < 0.3 else "jpg"
        images.append(Image.open(io.BytesIO(encode(render(scene), fmt))))
        scenes.append(scene.to_dict())
    return scenes, images


def test_alignment_of_rendered_scenes_is_exact(scenes_and_images):
    scenes, images = scenes_and_images
    r = alignment_scores(images, scenes)
    assert r["n"] == 40
    assert {k: r[k] for k in TAGS} == dict.fromkeys(TAGS, 1.0)
    found = r["per_image"][0]["objects"]
    named = scenes[0]["shapes"]
    assert sorted((o["row"], o["col"], o["colour"], o["kind"]) for o in found) == \
        sorted((s["row"], s["col"], s["colour"], s["kind"]) for s in named)


def test_alignment_of_square_scenes_at_a_t2i_sample_size_is_exact():
    """Held-out T2I scenes are square; a 64 px sample of one still shows every shape's kind."""
    scenes = [sample_scene(np.random.default_rng([1, i]), 64, 64, 4) for i in range(40)]
    r = alignment_scores([render(s) for s in scenes], scenes)
    assert r["overall"] == 1.0


def _palette_blocks(rng, n, side=64):
    palette = np.array(list(COLOURS.values()), dtype=np.uint8)
    return Image.fromarray(palette[rng.integers(0, len(palette), (n, n))]).resize((side, side), Image.NEAREST)


@pytest.mark.parametrize("junk", ["noise", "blocks", "flat_grey", "flat_red", "swapped_captions"])
def test_alignment_of_junk_is_near_zero(scenes_and_images, junk):
    """GenEval counts only exactly what the prompt names: junk scores ~0 on every tag."""
    scenes, images = scenes_and_images
    rng = np.random.default_rng(7)
    shown = {
        "noise": lambda: [Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)) for _ in scenes],
        "blocks": lambda: [_palette_blocks(rng, int(rng.integers(2, 9))) for _ in scenes],
        "flat_grey": lambda: [Image.new("RGB", (64, 64), (128, 128, 128))] * len(scenes),
        "flat_red": lambda: [Image.new("RGB", (64, 64), COLOURS["red"])] * len(scenes),
        "swapped_captions": lambda: images,
    }[junk]()
    captions = scenes[1:] + scenes[:1] if junk == "swapped_captions" else scenes
    r = alignment_scores(shown, captions)
    assert r["overall"] <= 0.025
    for tag in ("colour", "position", "shape"):
        assert r[tag] <= 0.05, (tag, r[tag])
    assert r["count"] <= 0.35  # 1-4 shapes: a swapped caption's count is right by chance ~1/4


def test_alignment_extra_object_or_wrong_shape_fails_the_tag():
    """Exactly what is named and nothing more: one extra shape, or one shape's kind changed."""
    from dataclasses import replace

    from lumos.demo.scenes import Shape
    scene = sample_scene(np.random.default_rng([3, 1]), 300, 300, 1)
    s0 = scene.shapes[0]
    free = next(c for c in range(9) if c != s0.row * 3 + s0.col)
    extra = replace(scene, shapes=(s0, Shape("square", s0.colour, "medium", free // 3, free % 3)))
    r = alignment_score(render(extra), scene)
    assert r["count"] == r["colour"] == r["position"] == r["overall"] == 0.0
    other_kind = next(k for k in ("circle", "square", "triangle", "diamond", "ellipse") if k != s0.kind)
    r = alignment_score(render(replace(scene, shapes=(replace(s0, kind=other_kind),))), scene)
    assert (r["count"], r["colour"], r["position"], r["shape"], r["overall"]) == (1.0, 1.0, 1.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="scenes"):
        alignment_scores([render(scene)] * 2, [scene] * 3)


# --------------------------------------------------------------------------- the eval params section
@pytest.fixture(scope="module")
def raw():
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_eval_section_in_both_profiles(raw):
    p = parse_params(raw)
    tiny, paper = p.profiles["tiny"].eval, p.profiles["paper"].eval
    assert tiny.inception_weights is None and tiny.clip_model is None and tiny.i3d_weights is None
    assert paper.images["coco30k"].samples == 30000 and set(paper.videos) == {"ucf101", "msrvtt"}
    assert paper.videos["ucf101"].frames == 16


@pytest.mark.parametrize("key,value,words", [
    (("lpips_net",), "resnet", "lpips_net"),
    (("kid_subset_size",), 1, "kid_subset_size"),
    (("images", "coco", "samples"), 0, "images.coco.samples"),
    (("alignment", "min_fraction"), 1.5, "alignment.min_fraction"),
    (("fid_weights",), "x.pth", "unknown key"),
])
def test_bad_eval_values_fail_naming_the_key(raw, key, value, words):
    data = copy.deepcopy(raw)
    node = data["profiles"]["tiny"]["eval"]
    if key[0] == "images":
        node["images"]["coco"] = {"reference": "r", "samples": 1, "resolution": 8}
    for k in key[:-1]:
        node = node[k]
    node[key[-1]] = value
    with pytest.raises(ConfigError, match=words.replace(".", r"\.")) as err:
        parse_params(data, "p.yaml")
    assert "profiles.tiny.eval" in str(err.value)

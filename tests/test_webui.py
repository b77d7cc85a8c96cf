"""`lumos demo`: the Gradio page, driven in the project's Chromium, serves I2I variations, an
interpolation between two uploaded images and T2I at a chosen bucket, sampled by the pipeline's
own functions from tiny checkpoints in the project's layout, all on loopback."""

from __future__ import annotations

import io
import json

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from lumos.cli import build_parser
from lumos.config import VAE, Diffusion, TextEncoder, VisionEncoder
from lumos.encoders import build_vae, build_vision_encoder
from lumos.encoders.t5 import T5TextEncoder
from lumos.models import MODEL_CLASSES
from lumos.report.browser import chromium_page, chromium_path
from lumos.sample.i2i import interpolation
from lumos.sample.t2i import text_to_image

from conftest import free_port

RES, T2I_RES, FRAMES, SEED = 32, 64, 3, 7
SAMPLER = Diffusion(sampler="dpm-solver++", sample_steps=2, cfg_scale=3.0)
ENCODERS = {"vae": VAE(pretrained=None), "vision_encoder": VisionEncoder(pretrained=None, resolution=RES),
            "text_encoder": TextEncoder(pretrained=None, max_length=8)}


def _save_checkpoint(ckpt, config: dict, seed: int) -> None:
    """model + EMA safetensors, config.json and DONE, as the training loop writes them; random
    non-zero weights everywhere so samples depend on the condition (as in test_transfer)."""
    torch.manual_seed(seed)
    model = MODEL_CLASSES[config["model_class"]](**config["model_args"])
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    ckpt.mkdir(parents=True)
    save_file(state, str(ckpt / "model.safetensors"))
    save_file(state, str(ckpt / "ema.safetensors"))
    (ckpt / "config.json").write_text(json.dumps(config))
    (ckpt / "DONE").write_text(str(config["step"]))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """models/i2i and models/t2i (one progressive stage, multi-aspect) of tiny real classes."""
    root = tmp_path_factory.mktemp("project") / "models"
    vae, encoder = build_vae(ENCODERS["vae"]), build_vision_encoder(ENCODERS["vision_encoder"])
    text = T5TextEncoder.from_config(ENCODERS["text_encoder"])
    dumped = {k: v.model_dump() for k, v in ENCODERS.items()}
    base = {"model_class": "dit", "diffusion": SAMPLER.model_dump(), "step": 1}
    i2i_args = {"variant": "tiny", "latent_channels": vae.latent_channels, "latent_size": RES // vae.downsample,
                "condition_dim": encoder.width, "condition_tokens": encoder.num_tokens}
    _save_checkpoint(root / "i2i/checkpoints/step-0000001", {
        **base, "task": "i2i", "condition": "vision", "model_args": i2i_args, "train": {"resolution": RES},
        "encoders": {k: dumped[k] for k in ("vae", "vision_encoder")}}, seed=1)
    t2i_args = {**i2i_args, "latent_size": T2I_RES // vae.downsample, "condition_dim": text.width,
                "condition_tokens": ENCODERS["text_encoder"].max_length}
    _save_checkpoint(root / "t2i/stages/stage-0/checkpoints/step-0000001", {
        **base, "task": "t2i", "condition": "text", "model_args": t2i_args, "stage": 0,
        "stage_settings": {"resolution": T2I_RES, "multi_aspect": True},
        "encoders": {k: dumped[k] for k in ("vae", "text_encoder")}}, seed=2)
    return root


@pytest.fixture(scope="module")
def uploads(tmp_path_factory):
    d = tmp_path_factory.mktemp("uploads")
    g = torch.Generator().manual_seed(0)
    paths = []
    for name, size in (("a.png", (48, 40)), ("b.png", (40, 56))):
        pixels = (torch.rand(size[1], size[0], 3, generator=g) * 255).byte().numpy()
        Image.fromarray(pixels).save(d / name)
        paths.append(d / name)
    return paths


@pytest.fixture(scope="module")
def demo(models, params):
    from lumos.webui import build_app, load_i2i, load_t2i, running

    if chromium_path() is None:
        pytest.fail("Chromium is not installed: run scripts/install-system.sh")
    profile = params.active
    i2i, t2i = load_i2i(models / "i2i", profile), load_t2i(models / "t2i", profile)
    app = build_app(i2i, t2i, seed=0, frames=FRAMES)
    requests: list[str] = []
    with running(app, free_port()) as url, chromium_page() as page:
        page.on("request", lambda r: requests.append(r.url))
        page.goto(url)
        page.wait_for_selector("#var-run", timeout=20000)
        yield i2i, t2i, app, page, requests
    import urllib.request
    with pytest.raises(OSError):  # stopped: nothing listens any more
        urllib.request.urlopen(url, timeout=5)


def _gallery(page, elem: str, count: int) -> list[Image.Image]:
    """The gallery's images once ``count`` have loaded, fetched and decoded."""
    sel = f"#{elem} img"
    page.wait_for_function(
        f"[...document.querySelectorAll('{sel}')].filter(i => i.complete && i.naturalWidth > 0).length >= {count}",
        timeout=30000)
    srcs = page.eval_on_selector_all(sel, "els => els.map(e => e.src)")
    assert len(srcs) == count, srcs
    return [Image.open(io.BytesIO(page.request.get(s).body())).convert("RGB") for s in srcs]


def _tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def _upload(page, elem: str, path) -> None:
    page.locator(f"#{elem} input[type=file]").set_input_files(str(path))
    page.wait_for_selector(f"#{elem} img", timeout=15000)  # the upload's preview


def _pixels(images) -> torch.Tensor:
    import numpy as np

    return torch.stack([torch.from_numpy(np.array(im)).permute(2, 0, 1).float() / 255 for im in images])


def test_interpolation_between_two_uploads_matches_the_pipeline(demo, uploads):
    i2i, _, _, page, _ = demo
    _tab(page, "Interpolation")
    _upload(page, "interp-a", uploads[0])
    _upload(page, "interp-b", uploads[1])
    page.fill("#interp-seed input", str(SEED))
    page.click("#interp-run")
    shown = _gallery(page, "interp-out", FRAMES + 2)  # A, FRAMES weights, B
    assert all(im.size == (RES, RES) for im in shown)
    a, b = (Image.open(p).convert("RGB") for p in uploads)
    expected = interpolation(i2i.model, i2i.vae, i2i.encoder, a, b, FRAMES, RES, SAMPLER, SEED)
    got = _pixels(shown)
    assert (got - expected).abs().max() <= 1.5 / 255  # the pipeline's strip, as 8-bit PNGs
    samples = got[1:-1]
    assert (samples[0] - samples[-1]).abs().mean() > 1e-3  # the condition moves along the strip


def test_one_variation_of_an_upload(demo, uploads):
    _, _, _, page, _ = demo
    _tab(page, "I2I variations")
    _upload(page, "var-image", uploads[1])
    page.fill("#var-count input[type=number]", "1")
    page.locator("#var-count input[type=number]").press("Enter")
    page.click("#var-run")
    shown = _gallery(page, "var-out", 2)  # the input as the model sees it, one sample
    assert [im.size for im in shown] == [(RES, RES)] * 2
    assert (_pixels(shown[:1]) - _pixels(shown[1:])).abs().mean() > 0.02  # a sample, not the input


def test_text_to_image_at_a_chosen_bucket(demo):
    _, t2i, _, page, _ = demo
    _tab(page, "Text to image")
    wide = min(t2i.buckets, key=lambda hw: hw[0] / hw[1])  # the widest bucket
    from lumos.webui.app import bucket_label
    page.locator("#t2i-size input").click()
    page.get_by_role("option", name=bucket_label(wide)).click()
    page.fill("#t2i-prompt textarea", "a red cube on a blue floor")
    page.click("#t2i-run")
    (shown,) = _gallery(page, "t2i-out", 1)
    assert shown.size == (wide[1], wide[0]) and wide[1] > wide[0]
    expected = text_to_image(t2i.model, t2i.vae, t2i.text_encoder, ["a red cube on a blue floor"], *wide,
                             SAMPLER, 0)
    assert (_pixels([shown]) - expected).abs().max() <= 1.5 / 255


def test_nothing_leaves_loopback(demo):
    from gradio import analytics

    *_, app, _, requests = demo
    assert not analytics.analytics_enabled() and not app.analytics_enabled  # lumos.env's setting
    assert app.server_name == "127.0.0.1" and not app.share
    url = app.local_url
    assert url.startswith("http://127.0.0.1:")
    assert requests and all(r.startswith(url.rstrip("/")) or r.startswith(("data:", "blob:")) for r in requests), \
        sorted({r for r in requests if not r.startswith(url.rstrip("/"))})


def test_demo_command_parses_and_refuses_a_missing_or_wrong_checkpoint(tmp_path, models, params, capsys):
    from lumos.webui.cli import run_demo

    args = build_parser().parse_args(["demo", "--i2i", "a", "--t2i", "b", "--port", "7861"])
    assert (str(args.i2i), str(args.t2i), args.port) == ("a", "b", 7861)
    assert run_demo(params.active, tmp_path / "nothing", None, None) == 1
    assert "nothing" in capsys.readouterr().err
    assert run_demo(params.active, models / "t2i", None, None) == 1  # a T2I checkpoint is no I2I one
    assert "text-conditioned" in capsys.readouterr().err


def test_bad_input_is_a_clear_error(models, params):
    from lumos.webui import load_i2i
    from lumos.webui.app import run_interpolation, run_text_to_image, run_variations

    i2i = load_i2i(models / "i2i/checkpoints/step-0000001", params.active)  # a checkpoint folder works too
    image = Image.new("RGB", (40, 40))
    with pytest.raises(ValueError, match="upload image B"):
        run_interpolation(i2i, image, None, 3, 0, 2, 3.0)
    with pytest.raises(ValueError, match="upload an image"):
        run_variations(i2i, None, 1, 0, 2, 3.0)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        run_variations(i2i, image, 1, 0, 0, 3.0)
    with pytest.raises(ValueError, match="CFG scale >= 1"):
        run_variations(i2i, image, 1, 0, 2, 0.5)
    with pytest.raises(ValueError, match="enter a prompt"):
        run_text_to_image(None, "  ", "64x64", 1, 0, 2, 3.0)

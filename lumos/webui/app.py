"""The demo's page: one tab per task, each a thin call into the pipeline's samplers.

Callbacks take PIL images and plain numbers and return (image, caption) pairs for a gallery, so
they run the same with or without a browser."""

from __future__ import annotations

import torch
from PIL import Image

from lumos.config import Diffusion
from lumos.sample.i2i import interpolation, variations
from lumos.sample.t2i import text_to_image
from lumos.webui.checkpoints import I2IDemo, T2IDemo

TITLE = "Lumos: visual generative priors without text"
MAX_SEED = 2**31 - 1


def to_pil(image: torch.Tensor) -> Image.Image:
    """A (3,H,W) image in [0, 1] as an 8-bit RGB PIL image."""
    return Image.fromarray((image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy())


def sampling(base: Diffusion, steps: float, cfg_scale: float) -> Diffusion:
    """The checkpoint's sampler with the UI's steps and CFG scale, validated like params.yaml."""
    try:
        return Diffusion.model_validate({**base.model_dump(), "sample_steps": int(steps),
                                         "cfg_scale": float(cfg_scale)})
    except ValueError as err:
        raise ValueError(f"steps must be >= 1 and CFG scale >= 1: {err}") from None


def _need(image: Image.Image | None, what: str) -> Image.Image:
    if image is None:
        raise ValueError(f"upload {what} first")
    return image.convert("RGB")


def run_variations(demo: I2IDemo, image: Image.Image | None, count: float, seed: float, steps: float,
                   cfg_scale: float) -> list[tuple[Image.Image, str]]:
    """[the input as the model sees it, ``count`` samples conditioned on its tokens]."""
    grid = variations(demo.model, demo.vae, demo.encoder, [_need(image, "an image")], int(count),
                      demo.resolution, sampling(demo.diffusion, steps, cfg_scale), int(seed))
    return [(to_pil(grid[0]), "input")] + [(to_pil(x), f"sample {i + 1}") for i, x in enumerate(grid[1:])]


def run_interpolation(demo: I2IDemo, a: Image.Image | None, b: Image.Image | None, frames: float,
                      seed: float, steps: float, cfg_scale: float) -> list[tuple[Image.Image, str]]:
    """[A, samples along (1-w) tau(A) + w tau(B) for ``frames`` weights in [0, 1], B]."""
    strip = interpolation(demo.model, demo.vae, demo.encoder, _need(a, "image A"), _need(b, "image B"),
                          int(frames), demo.resolution, sampling(demo.diffusion, steps, cfg_scale), int(seed))
    weights = torch.linspace(0, 1, int(frames)).tolist()
    captions = ["A"] + [f"w = {w:.2f}" for w in weights] + ["B"]
    return [(to_pil(x), c) for x, c in zip(strip, captions)]


def bucket_label(hw: tuple[int, int]) -> str:
    return f"{hw[0]}x{hw[1]} (h/w {hw[0] / hw[1]:.2f})"


def run_text_to_image(demo: T2IDemo, prompt: str, bucket: str, count: float, seed: float, steps: float,
                      cfg_scale: float) -> list[tuple[Image.Image, str]]:
    """``count`` images of ``prompt`` at the chosen bucket's height x width."""
    if not prompt or not prompt.strip():
        raise ValueError("enter a prompt first")
    sizes = {bucket_label(hw): hw for hw in demo.buckets}
    if bucket not in sizes:
        raise ValueError(f"unknown size {bucket!r}: choose one of {sorted(sizes)}")
    h, w = sizes[bucket]
    images = text_to_image(demo.model, demo.vae, demo.text_encoder, [prompt.strip()] * int(count), h, w,
                           sampling(demo.diffusion, steps, cfg_scale), int(seed))
    return [(to_pil(x), f"{h}x{w} #{i + 1}") for i, x in enumerate(images)]


def _as_gradio_error(fn):
    """Bad input (no image, bad steps) shows as a message in the page instead of a stack trace."""
    import functools

    import gradio as gr

    @functools.wraps(fn)
    def wrapped(*args):
        try:
            return fn(*args)
        except ValueError as err:
            raise gr.Error(str(err)) from None

    return wrapped


def _controls(defaults: Diffusion, seed: int, prefix: str):
    import gradio as gr

    with gr.Row():
        seed_box = gr.Number(value=seed, precision=0, minimum=0, maximum=MAX_SEED, label="Seed",
                             elem_id=f"{prefix}-seed")
        steps = gr.Slider(1, 200, value=defaults.sample_steps, step=1, label="Steps", elem_id=f"{prefix}-steps")
        cfg = gr.Slider(1.0, 20.0, value=defaults.cfg_scale, step=0.1, label="CFG scale", elem_id=f"{prefix}-cfg")
    return seed_box, steps, cfg


def build_app(i2i: I2IDemo | None, t2i: T2IDemo | None, seed: int = 0, frames: int = 8):
    """The Gradio Blocks: tabs for what the given checkpoints can do (at least one)."""
    import functools

    import gradio as gr

    if i2i is None and t2i is None:
        raise ValueError("the demo needs an I2I or a T2I checkpoint")
    with gr.Blocks(title="Lumos demo", analytics_enabled=False) as app:
        gr.Markdown(f"# {TITLE}")
        with gr.Tabs():
            if i2i is not None:
                with gr.Tab("I2I variations", id="variations"):
                    gr.Markdown(f"Checkpoint `{i2i.checkpoint}`, {i2i.resolution} px")
                    image = gr.Image(type="pil", label="Image", elem_id="var-image")
                    count = gr.Slider(1, 16, value=4, step=1, label="Samples", elem_id="var-count")
                    controls = _controls(i2i.diffusion, seed, "var")
                    run = gr.Button("Generate", variant="primary", elem_id="var-run")
                    out = gr.Gallery(label="Variations", columns=5, format="png", elem_id="var-out")
                    run.click(_as_gradio_error(functools.partial(run_variations, i2i)),
                              [image, count, *controls], out)
                with gr.Tab("Interpolation", id="interpolation"):
                    gr.Markdown("Samples conditioned on (1-w) tau(A) + w tau(B), one starting noise "
                                "(supplement I.4)")
                    with gr.Row():
                        a = gr.Image(type="pil", label="Image A", elem_id="interp-a")
                        b = gr.Image(type="pil", label="Image B", elem_id="interp-b")
                    n = gr.Slider(2, 16, value=frames, step=1, label="Weights", elem_id="interp-frames")
                    controls = _controls(i2i.diffusion, seed, "interp")
                    run = gr.Button("Interpolate", variant="primary", elem_id="interp-run")
                    out = gr.Gallery(label="A, interpolation, B", columns=6, format="png", elem_id="interp-out")
                    run.click(_as_gradio_error(functools.partial(run_interpolation, i2i)),
                              [a, b, n, *controls], out)
            if t2i is not None:
                with gr.Tab("Text to image", id="t2i"):
                    gr.Markdown(f"Checkpoint `{t2i.checkpoint}`")
                    prompt = gr.Textbox(label="Prompt", lines=2, elem_id="t2i-prompt")
                    with gr.Row():
                        size = gr.Dropdown([bucket_label(hw) for hw in t2i.buckets],
                                           value=bucket_label(t2i.default), label="Size (aspect-ratio bucket)",
                                           elem_id="t2i-size")
                        count = gr.Slider(1, 8, value=1, step=1, label="Images", elem_id="t2i-count")
                    controls = _controls(t2i.diffusion, seed, "t2i")
                    run = gr.Button("Generate", variant="primary", elem_id="t2i-run")
                    out = gr.Gallery(label="Images", columns=4, format="png", elem_id="t2i-out")
                    run.click(_as_gradio_error(functools.partial(run_text_to_image, t2i)),
                              [prompt, size, count, *controls], out)
    return app.queue(default_concurrency_limit=1)  # one sampling at a time: the CPU/GPU is shared

"""Procedural compositional scenes: sample parameters, render them, caption them.

A scene is 1-4 shapes, each in its own cell of a 3x3 grid, on a textured background. Because
the caption is written from the parameters, a generated image's count, colours and positions
can later be checked exactly against them (an offline cousin of GenEval, DESIGN 4).
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image, ImageDraw

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 210, 40),
    "purple": (140, 60, 190),
    "orange": (245, 140, 30),
    "white": (250, 250, 250),
    "black": (20, 20, 20),
}
BACKGROUND_COLOURS: dict[str, tuple[int, int, int]] = {
    "gray": (128, 128, 128),
    "beige": (225, 210, 180),
    "teal": (60, 120, 120),
    "pink": (240, 190, 200),
}
SHAPES = ("circle", "square", "triangle", "diamond", "ellipse")
TEXTURES = ("plain", "stripes", "checker", "dots", "gradient")
SIZES = {"small": 0.45, "medium": 0.7, "large": 0.95}  # fraction of the cell's short side
ROWS = ("top", "middle", "bottom")
COLS = ("left", "center", "right")
NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight"}


@dataclass(frozen=True)
class Shape:
    kind: str
    colour: str
    size: str
    row: int  # 0..2 (top..bottom)
    col: int  # 0..2 (left..right)

    @property
    def position(self) -> str:
        if (self.row, self.col) == (1, 1):
            return "center"
        if self.row == 1:
            return COLS[self.col]
        if self.col == 1:
            return ROWS[self.row]
        return f"{ROWS[self.row]} {COLS[self.col]}"


@dataclass(frozen=True)
class Scene:
    width: int
    height: int
    texture: str
    background: str
    shapes: tuple[Shape, ...]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["shapes"] = [dict(asdict(s), position=s.position) for s in self.shapes]
        return d


def sample_scene(rng: np.random.Generator, min_side: int, max_side: int, max_shapes: int) -> Scene:
    """Draw one scene's parameters; every shape gets a distinct grid cell."""
    n = int(rng.integers(1, min(max_shapes, 9) + 1))
    cells = rng.choice(9, size=n, replace=False)
    shapes = tuple(
        Shape(
            kind=str(rng.choice(SHAPES)),
            colour=str(rng.choice(list(COLOURS))),
            size=str(rng.choice(list(SIZES))),
            row=int(c) // 3,
            col=int(c) % 3,
        )
        for c in sorted(cells)
    )
    return Scene(
        width=int(rng.integers(min_side, max_side + 1)),
        height=int(rng.integers(min_side, max_side + 1)),
        texture=str(rng.choice(TEXTURES)),
        background=str(rng.choice(list(BACKGROUND_COLOURS))),
        shapes=shapes,
    )


def caption(scene: Scene) -> str:
    """The raw caption, written from the parameters: count, then each shape, then background."""
    n = len(scene.shapes)
    parts = [f"a {s.size} {s.colour} {s.kind} at the {s.position}" for s in scene.shapes]
    listed = parts[0] if n == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    noun = "shape" if n == 1 else "shapes"
    texture = "plain" if scene.texture == "plain" else {
        "stripes": "striped", "checker": "checkered", "dots": "dotted", "gradient": "gradient",
    }[scene.texture]
    return f"{NUMBER_WORDS[n]} {noun}: {listed}, on a {texture} {scene.background} background"


def _background(scene: Scene) -> np.ndarray:
    h, w = scene.height, scene.width
    base = np.array(BACKGROUND_COLOURS[scene.background], dtype=np.float32)
    img = np.broadcast_to(base, (h, w, 3)).copy()
    yy, xx = np.mgrid[0:h, 0:w]
    period = max(8, min(h, w) // 12)
    if scene.texture == "stripes":
        mask = (xx + yy) // period % 2 == 0
    elif scene.texture == "checker":
        mask = (xx // period + yy // period) % 2 == 0
    elif scene.texture == "dots":
        mask = ((xx % period - period / 2) ** 2 + (yy % period - period / 2) ** 2) < (period / 4) ** 2
    elif scene.texture == "gradient":
        img *= (0.6 + 0.4 * yy / max(h - 1, 1))[..., None]
        mask = None
    else:
        mask = None
    if mask is not None:
        img[mask] *= 0.8
    return img.clip(0, 255).astype(np.uint8)


def render(scene: Scene) -> Image.Image:
    """Rasterise a scene with PIL (deterministic for fixed parameters)."""
    img = Image.fromarray(_background(scene))
    draw = ImageDraw.Draw(img)
    cw, ch = scene.width / 3, scene.height / 3
    for s in scene.shapes:
        cx, cy = (s.col + 0.5) * cw, (s.row + 0.5) * ch
        r = SIZES[s.size] * min(cw, ch) / 2
        fill = COLOURS[s.colour]
        if s.kind == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        elif s.kind == "square":
            draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=fill)
        elif s.kind == "triangle":
            draw.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=fill)
        elif s.kind == "diamond":
            draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=fill)
        elif s.kind == "ellipse":
            draw.ellipse([cx - r, cy - r / 2, cx + r, cy + r / 2], fill=fill)
    return img


def encode(img: Image.Image, fmt: str) -> bytes:
    """JPEG (quality 90) or PNG bytes."""
    buf = io.BytesIO()
    if fmt == "jpg":
        img.save(buf, format="JPEG", quality=90)
    elif fmt == "png":
        img.save(buf, format="PNG", compress_level=3)
    else:
        raise ValueError(f"unknown image format {fmt!r}")
    return buf.getvalue()

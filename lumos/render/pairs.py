"""(input view, target view, relative pose) pairs from rendered objects (Zero-1-to-3, eq. S1)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from lumos.render.cameras import Camera, relative_pose, zero123_pose
from lumos.render.renderer import DONE


def composite(rgba: np.ndarray, background: float = 1.0) -> np.ndarray:
    """RGBA uint8 -> RGB float32 in [0, 1] over a flat background (Zero-1-to-3 uses white)."""
    x = rgba.astype(np.float32) / 255.0
    a = x[..., 3:4]
    return x[..., :3] * a + background * (1.0 - a)


class NVSPairs:
    """Pairs of views of the same object from ``render_dir/<uid>/`` (finished objects only).

    ``pairs_per_object=None`` gives every ordered pair (a, b), a != b; an int draws that many
    distinct ordered pairs per object from ``seed`` (deterministic). Items are dicts with
    ``input``/``target`` (RGBA uint8, or RGB float32 composited on white when ``rgb=True``),
    ``R`` (3, 3) and ``T`` (3,) taking input-camera to target-camera coordinates (OpenCV),
    ``zero123`` (d polar [rad], sin d azimuth, cos d azimuth, d radius), ``uid``, ``a``, ``b``.
    """

    def __init__(
        self, render_dir: Path | str, pairs_per_object: int | None = None, seed: int = 0, rgb: bool = False
    ) -> None:
        self.render_dir = Path(render_dir)
        self.rgb = rgb
        self.meta: dict[str, dict] = {}
        self.pairs: list[tuple[str, int, int]] = []
        rng = np.random.default_rng(seed)
        for d in sorted(p for p in self.render_dir.iterdir() if (p / DONE).exists()):
            meta = json.loads((d / "cameras.json").read_text())
            self.meta[d.name] = meta
            n = len(meta["views"])
            every = [(a, b) for a in range(n) for b in range(n) if a != b]
            if pairs_per_object is not None and pairs_per_object < len(every):
                pick = rng.choice(len(every), size=pairs_per_object, replace=False)
                every = [every[i] for i in sorted(pick)]
            self.pairs += [(d.name, a, b) for a, b in every]

    def __len__(self) -> int:
        return len(self.pairs)

    def _image(self, uid: str, i: int) -> np.ndarray:
        view = self.meta[uid]["views"][i]
        img = np.asarray(Image.open(self.render_dir / uid / view["image"]).convert("RGBA"))
        return composite(img) if self.rgb else img

    def __getitem__(self, k: int) -> dict:
        uid, a, b = self.pairs[k]
        va, vb = self.meta[uid]["views"][a], self.meta[uid]["views"][b]
        r, t = relative_pose(np.asarray(va["w2c"]), np.asarray(vb["w2c"]))
        cam = lambda v: Camera(v["elevation_deg"], v["azimuth_deg"], v["radius"])  # noqa: E731
        return {
            "uid": uid,
            "a": a,
            "b": b,
            "input": self._image(uid, a),
            "target": self._image(uid, b),
            "R": r,
            "T": t,
            "zero123": zero123_pose(cam(va), cam(vb)),
        }

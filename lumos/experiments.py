"""The paper's ablations (section 4.3, Figs. 8-12; Tables 4-5 for the priors) as DVC experiment
grids: each grid point is `dvc exp run --queue -S <param>=<value> -n <name> <target>`, run with
`dvc exp run --run-all` (or `dvc queue start`) and compared with `dvc exp show`.

Params are set on the active profile (`profiles.<profile>....`), so the same grid runs at tiny
or paper scale. Targets stop each experiment at the evaluation that answers its question.
"""

from __future__ import annotations

import itertools
import subprocess
from dataclasses import dataclass, field

from lumos.config import DEFAULT_PARAMS, load_params


@dataclass(frozen=True)
class Grid:
    """A product of parameter values; ``target`` is the DVC stage each experiment reproduces."""

    about: str
    axes: dict[str, list]
    target: str
    zipped: bool = False  # axes vary together (point i takes each axis' i-th value), not a product
    per_profile: dict[str, dict[str, list]] = field(default_factory=dict)  # profile -> axes replaced

    def points(self, profile: str | None = None) -> list[dict[str, object]]:
        axes = {**self.axes, **self.per_profile.get(profile or "", {})}
        keys = list(axes)
        if self.zipped:
            if len({len(v) for v in axes.values()}) != 1:
                raise ValueError(f"zipped axes of unequal length: { {k: len(v) for k, v in axes.items()} }")
            return [dict(zip(keys, values)) for values in zip(*(axes[k] for k in keys))]
        return [dict(zip(keys, values)) for values in itertools.product(*(axes[k] for k in keys))]


GRIDS: dict[str, Grid] = {
    "encoder": Grid("vision encoder of the I2I prior, each with its own weights (Fig. 9)",
                    {"vision_encoder.name": ["dino", "mocov3", "clip"],
                     "vision_encoder.pretrained": [None, None, None]},  # tiny: random encoders
                    "evaluate-i2i", zipped=True,
                    per_profile={"paper": {"vision_encoder.pretrained": [
                        "facebook/dino-vitb16", "models/encoders/mocov3-vit-b-300ep.pth.tar", "ViT-B-16:openai"]}}),
    "tokens": Grid("condition tokens: [CLS], patches, all, CLS + top-k patches (Fig. 10)",
                   {"vision_encoder.tokens": ["cls", "patch", "all", "topk"]}, "evaluate-i2i"),
    "data-scale": Grid("I2I data scale (Fig. 11): the first N cached samples",
                       {"train.max_samples": [16, 32, 64, 128]}, "evaluate-i2i"),
    "dropout-cfg": Grid("condition dropout x CFG scale (Fig. 12)",
                        {"model.condition_dropout": [0.0, 0.1], "diffusion.cfg_scale": [1.0, 4.5]},
                        "evaluate-i2i"),
    "cfg": Grid("CFG scale at sampling time only (Fig. 12 b)",
                {"diffusion.cfg_scale": [1.0, 2.0, 4.5, 7.0]}, "evaluate-i2i"),
    "prior-t2i": Grid("T2I from the I2I prior vs. from scratch (Fig. 5)",
                      {"t2i.prior": ["i2i", "none"]}, "evaluate-t2i"),
    # Tables 4-5's T2I prior is PixArt-alpha (model.pixart_alpha): every point of these grids
    # uses PixArt's architecture, so the I2I prior and scratch runs compare like with like.
    "prior-nvs": Grid("NVS from the I2I prior, PixArt-alpha (the T2I prior), or scratch (Table 4)",
                      {"model.backbone": ["pixart"], "nvs.train.prior": ["i2i", "pixart-alpha", "none"]},
                      "evaluate-nvs"),
    "prior-i2v": Grid("I2V from the I2I prior, PixArt-alpha (the T2I prior), or scratch (Table 5)",
                      {"model.backbone": ["pixart"], "i2v.train.prior": ["i2i", "pixart-alpha", "none"]},
                      "evaluate-i2v"),
}


@dataclass(frozen=True)
class Points(Grid):
    """Named grid points instead of a product (each point sets several params together)."""

    listed: tuple[dict, ...] = ()

    def points(self, profile: str | None = None) -> list[dict[str, object]]:
        return [dict(p) for p in self.listed]


# The paper's claim (Table 2, Fig. 5): T2I from the I2I prior on 10 % of the pairs against T2I
# from scratch on all of them; `dvc exp show` puts their alignment and FID side by side.
GRIDS["paper-claim"] = Points("T2I: I2I prior on 10 % of pairs vs scratch on 100 % (Fig. 5)", {},
                              "evaluate-t2i", listed=({"t2i.prior": "i2i", "t2i.pair_fraction": 0.1},
                                                      {"t2i.prior": "none", "t2i.pair_fraction": 1.0}))


def _name(grid: str, point: dict) -> str:
    tail = "-".join(f"{k.split('.')[-1]}={v}" for k, v in point.items() if k != "vision_encoder.pretrained")
    return f"{grid}-{tail}".replace("_", "").replace("=", "-").replace(".", "p")


def queue_commands(grid: str, profile: str, overrides: dict[str, object] | None = None) -> list[list[str]]:
    """The `dvc exp run --queue` command of every point of ``grid`` (``overrides``: extra params
    set on every point, e.g. shorter schedules for a smoke run)."""
    if grid not in GRIDS:
        raise KeyError(f"unknown grid {grid!r}; known: {sorted(GRIDS)}")
    g = GRIDS[grid]
    commands = []
    for point in g.points(profile):
        cmd = ["dvc", "exp", "run", "--queue", "-n", _name(grid, point)]
        for key, value in {**(overrides or {}), **point}.items():
            cmd += ["-S", f"profiles.{profile}.{key}={'null' if value is None else value}"]
        commands.append(cmd + [g.target])
    return commands


def queue(grid: str, run: bool = False, params: str = str(DEFAULT_PARAMS),
          overrides: dict[str, object] | None = None) -> list[str]:
    """Queue every point of ``grid`` (and run the queue when ``run``); returns the names."""
    profile = load_params(params).profile
    names = []
    for cmd in queue_commands(grid, profile, overrides):
        subprocess.run(cmd, check=True)
        names.append(cmd[cmd.index("-n") + 1])
    if run:
        subprocess.run(["dvc", "exp", "run", "--run-all"], check=True)
    return names

"""The paper's ablations (section 4.3, Figs. 2a-b, 5, 8-12; supplement F.1-F.2; Tables 4-5 for
the priors) as DVC experiment grids: each grid point is
`dvc exp run --queue -S <param>=<value> -n <name> <targets>`, run with `dvc exp run --run-all`
(or `dvc queue start`) and compared with `dvc exp show`.

Params are set on the active profile (`profiles.<profile>....`), so the same grid runs at tiny
or paper scale; values that depend on the scale (data sizes, noise levels) are read from the
profile's `ablate` section. Targets stop each experiment at the evaluations that answer its
question: a prior's grid reaches both its own I2I FID and the downstream T2I metrics (the
T2I fine-tune from that prior, then evaluate-t2i: Figs. 2b, 9b, 10b).
"""

from __future__ import annotations

import itertools
import subprocess
from dataclasses import dataclass, field

from lumos.config import DEFAULT_PARAMS, Profile, load_params

PRIOR_AND_T2I = ("evaluate-i2i", "evaluate-t2i")  # the prior's I2I FID and its T2I transfer


@dataclass(frozen=True)
class FromParams:
    """A value read from the active profile (e.g. the axis ``ablate.data_scale.sizes``)."""

    path: str

    def read(self, profile: Profile | None, key: str) -> object:
        if profile is None:
            raise ValueError(f"{key} reads {self.path} from params: give the profile")
        node = profile
        for part in self.path.split("."):
            node = getattr(node, part)
        return node


Values = list | FromParams


@dataclass(frozen=True)
class Grid:
    """A product of axes; each axis is one or more params that vary together (point i of an axis
    takes every one of its params' i-th value). ``targets`` are the DVC stages each experiment
    reproduces; ``fixed`` params are set on every point."""

    figure: str
    about: str
    axes: list[dict[str, Values]]
    targets: tuple[str, ...]
    per_profile: dict[str, dict[str, object]] = field(default_factory=dict)  # profile -> axis/fixed values
    fixed: dict[str, object] = field(default_factory=dict)  # FromParams: the profile's value

    def _values(self, key: str, values: Values, profile_name: str, profile: Profile | None) -> list:
        values = self.per_profile.get(profile_name, {}).get(key, values)
        return list(values.read(profile, key) if isinstance(values, FromParams) else values)

    def points(self, profile_name: str = "", profile: Profile | None = None) -> list[dict[str, object]]:
        axes = []
        for axis in self.axes:
            columns = {k: self._values(k, v, profile_name, profile) for k, v in axis.items()}
            lengths = {k: len(v) for k, v in columns.items()}
            if len(set(lengths.values())) != 1:
                raise ValueError(f"params of one axis vary together but have unequal lengths: {lengths}")
            axes.append([dict(zip(columns, values)) for values in zip(*columns.values())])
        return [{k: v for part in combo for k, v in part.items()} for combo in itertools.product(*axes)]

    def settings(self, profile_name: str = "", profile: Profile | None = None) -> dict[str, object]:
        """``fixed`` resolved: a FromParams value (a list or scalar) read from the profile."""
        out = {}
        for key, value in self.fixed.items():
            value = self.per_profile.get(profile_name, {}).get(key, value)
            out[key] = value.read(profile, key) if isinstance(value, FromParams) else value
        return out


ENCODER_WEIGHTS = {  # the paper profile's weights of each vision encoder (tiny: random, None)
    "dino": "facebook/dino-vitb16",  # 4.1: DINO-B
    "mocov3": "models/encoders/mocov3-vit-b-300ep.pth.tar",  # MoCo v3 ViT-B/16, as RCG (4.1)
    "clip": "ViT-L-14:openai",  # Fig. 11: "CLIP-L"
}

GRIDS: dict[str, Grid] = {
    "encoder": Grid("Fig. 10", "vision encoder of the I2I prior, each with its own weights; I2I FID (a) and T2I (b)",
                    [{"vision_encoder.name": ["dino", "mocov3", "clip"],
                      "vision_encoder.pretrained": [None, None, None]}],  # tiny: random encoders
                    PRIOR_AND_T2I,
                    per_profile={"paper": {"vision_encoder.pretrained": list(ENCODER_WEIGHTS.values())}}),
    "tokens": Grid("Fig. 9", "CLIP's condition tokens: [CLS], patches, all; I2I FID (a) and T2I (b)",
                   [{"vision_encoder.tokens": ["cls", "patch", "all"]}], PRIOR_AND_T2I,
                   fixed={"vision_encoder.name": "clip", "vision_encoder.pretrained": None},
                   per_profile={"paper": {"vision_encoder.pretrained": ENCODER_WEIGHTS["clip"]}}),
    "topk": Grid("Fig. S2 (F.2)", "DINO [CLS] alone vs [CLS] + top-k patches vs [CLS] + k random patches",
                 [{"vision_encoder.tokens": ["cls", "topk", "random"]}], PRIOR_AND_T2I),
    "data-scale": Grid("Fig. 2b", "I2I data scale: seeded random subsets of ablate.data_scale.sizes",
                       [{"train.max_samples": FromParams("ablate.data_scale.sizes")}], PRIOR_AND_T2I),
    "priors": Grid("Fig. 8a", "T2I from image-, class- or un-conditioned priors (all on ImageNet) or scratch",
                   [{"train.condition": ["image", "class", "none", "image"],
                     "t2i.prior": ["i2i", "i2i", "i2i", "none"]}], ("evaluate-t2i",),
                   fixed={"train.sources": FromParams("ablate.prior_sources")}),
    "text-encoder": Grid("Fig. 11", "T5 vs CLIP text encoder, on a DINO (a) and a CLIP (b) I2I prior",
                         [{"vision_encoder.name": ["dino", "clip"], "vision_encoder.pretrained": [None, None]},
                          {"text_encoder.name": ["t5", "clip"], "text_encoder.pretrained": [None, None]}],
                         ("evaluate-t2i",),
                         per_profile={"paper": {
                             "vision_encoder.pretrained": [ENCODER_WEIGHTS["dino"], ENCODER_WEIGHTS["clip"]],
                             "text_encoder.pretrained": ["google/flan-t5-xxl", ENCODER_WEIGHTS["clip"]]}}),
    "caption-noise": Grid("Fig. 2a, S1", "captions replaced by wrong ones (ablate.caption_noise): "
                          "T2I from the I2I prior vs from scratch; CLIP score (2a) and FID (S1)",
                          [{"t2i_data.caption_noise": FromParams("ablate.caption_noise")},
                           {"t2i.prior": ["i2i", "none"]}], ("evaluate-t2i",)),
    "dropout-cfg": Grid("Fig. 12a", "condition dropout x CFG scale",
                        [{"model.condition_dropout": [0.0, 0.1]}, {"diffusion.cfg_scale": [1.0, 4.5]}],
                        ("evaluate-i2i",)),
    "cfg": Grid("Fig. 12b", "CFG scale at sampling time only",
                [{"diffusion.cfg_scale": [1.0, 2.0, 4.5, 7.0]}], ("evaluate-i2i",)),
    "prior-t2i": Grid("Fig. 5", "T2I from the I2I prior vs. from scratch",
                      [{"t2i.prior": ["i2i", "none"]}], ("evaluate-t2i",)),
    # The paper's claim (Table 2, Fig. 5) in miniature: the I2I prior on 10 % of the pairs against
    # scratch on all of them; `dvc exp show` puts their alignment and FID side by side.
    "paper-claim": Grid("Table 2, Fig. 5", "T2I: I2I prior on 10 % of the pairs vs scratch on 100 %",
                        [{"t2i.prior": ["i2i", "none"], "t2i.pair_fraction": [0.1, 1.0]}], ("evaluate-t2i",)),
    # Tables 4-5's T2I prior is PixArt-alpha (model.pixart_alpha): every point of these grids
    # uses PixArt's architecture, so the I2I prior and scratch runs compare like with like.
    "prior-nvs": Grid("Table 4, Fig. 2d", "NVS from the I2I prior, PixArt-alpha (the T2I prior), or scratch",
                      [{"model.backbone": ["pixart"]}, {"nvs.train.prior": ["i2i", "pixart-alpha", "none"]}],
                      ("evaluate-nvs",)),
    "prior-i2v": Grid("Table 5, Fig. 2d", "I2V from the I2I prior, PixArt-alpha (the T2I prior), or scratch",
                      [{"model.backbone": ["pixart"]}, {"i2v.train.prior": ["i2i", "pixart-alpha", "none"]}],
                      ("evaluate-i2v",)),
}


def _format(value: object) -> str:
    """A value as `dvc exp run -S` (Hydra's override grammar) reads it."""
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_format(v) for v in value) + "]"
    return str(value)


def _label(key: str) -> str:
    """``vision_encoder.name`` -> ``vision_encoder``; ``train.max_samples`` -> ``max_samples``."""
    parts = key.split(".")
    return parts[-2] if parts[-1] == "name" and len(parts) > 1 else parts[-1]


def _name(grid: str, point: dict) -> str:
    tail = "-".join(f"{_label(k)}={v}" for k, v in point.items() if not k.endswith(".pretrained"))
    return f"{grid}-{tail}".replace("_", "").replace("=", "-").replace(".", "p")


def point_settings(grid: str, profile_name: str, profile: Profile | None = None,
                   overrides: dict[str, object] | None = None) -> list[tuple[str, dict[str, object]]]:
    """(experiment name, params to set) of every point of ``grid``."""
    if grid not in GRIDS:
        raise KeyError(f"unknown grid {grid!r}; known: {sorted(GRIDS)}")
    g = GRIDS[grid]
    fixed = g.settings(profile_name, profile)
    return [(_name(grid, point), {**(overrides or {}), **fixed, **point})
            for point in g.points(profile_name, profile)]


def queue_commands(grid: str, profile_name: str, overrides: dict[str, object] | None = None,
                   profile: Profile | None = None) -> list[list[str]]:
    """The `dvc exp run --queue` command of every point of ``grid`` (``overrides``: extra params
    set on every point, e.g. shorter schedules for a smoke run). ``profile``: the active
    profile's values, for grids that read them (default: params.yaml's ``profile_name``)."""
    if profile is None:
        params = load_params(DEFAULT_PARAMS)
        profile = params.profiles.get(profile_name)
    commands = []
    for name, settings in point_settings(grid, profile_name, profile, overrides):
        cmd = ["dvc", "exp", "run", "--queue", "-n", name]
        for key, value in settings.items():
            cmd += ["-S", f"profiles.{profile_name}.{key}={_format(value)}"]
        commands.append(cmd + list(GRIDS[grid].targets))
    return commands


def listing(profile_name: str, profile: Profile) -> list[str]:
    """One line per grid: name, figure, runs at this profile, targets, question (`lumos ablate`)."""
    return [f"{name:13s} {g.figure:16s} {len(g.points(profile_name, profile)):2d} runs -> "
            f"{' + '.join(g.targets)}: {g.about}" for name, g in GRIDS.items()]


def queue(grid: str, run: bool = False, params: str = str(DEFAULT_PARAMS),
          overrides: dict[str, object] | None = None) -> list[str]:
    """Queue every point of ``grid`` (and run the queue when ``run``); returns the names."""
    loaded = load_params(params)
    names = []
    for cmd in queue_commands(grid, loaded.profile, overrides, loaded.active):
        subprocess.run(cmd, check=True)
        names.append(cmd[cmd.index("-n") + 1])
    if run:
        subprocess.run(["dvc", "exp", "run", "--run-all"], check=True)
    return names

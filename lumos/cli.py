"""The ``lumos`` command: one sub-command per pipeline stage, plus helper tools.

Stages run the library directly (no Prefect, no DVC); ``dvc repro`` runs the same code through
the Prefect flows in ``flows/``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import yaml

from lumos.config import DEFAULT_PARAMS, ConfigError, load_params
from lumos.registry import Registry


@dataclass(frozen=True)
class Command:
    help: str
    add_args: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    stage: bool  # a pipeline stage (listed as such) or a tool


COMMANDS: Registry[Command] = Registry("command")


def _no_args(p: argparse.ArgumentParser) -> None:
    pass


# --------------------------------------------------------------------------- stages
def _mini_world_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, help="output folder (default: datasets/mini-world)")


def _mini_world(args: argparse.Namespace) -> int:
    from lumos.demo import build_mini_world

    cfg = load_params(args.params).active.mini_world
    manifest = build_mini_world(cfg, args.out)
    print(json.dumps(manifest, indent=1))
    return 0


COMMANDS.register("mini-world")(Command(
    "stage: generate the embedded mini-world (procedural images, LAION metadata, bad rows)",
    _mini_world_args, _mini_world, stage=True))


def _curation_stage(stage: str):
    def run(args: argparse.Namespace) -> int:
        from lumos.curation import stages

        profile = load_params(args.params).active
        for source in stages.sources(profile, args.sources):
            print(json.dumps({"stage": stage, "source": source.name,
                              **stages.STAGES[stage](profile, source)}))
        return 0

    return run


def _sources_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", action="append", dest="sources", metavar="NAME",
                   help="only this source (repeatable; default: every source in params)")


for _stage, _help in (
    ("select", "DuckDB selection over each source's metadata (resolution, aesthetic, safety, dedup)"),
    ("download", "img2dataset download of the selection into WebDataset shards (resumable)"),
    ("score", "decode each image once: true size, pHash, aesthetic (cached per shard)"),
    ("keep", "apply the keep thresholds to the cached scores"),
):
    COMMANDS.register(f"curate-{_stage}")(Command(
        f"stage: {_help}", _sources_arg, _curation_stage(_stage), stage=True))


def _catalog_build(args: argparse.Namespace) -> int:
    from lumos.curation import stages

    print(json.dumps(stages.run_catalog(), indent=1))
    return 0


COMMANDS.register("curate-catalog")(Command(
    "stage: (re)build datasets/catalog.duckdb over every source's results", _no_args,
    _catalog_build, stage=True))


def _profile_stage(target: str):
    """A command running ``module:function(profile)`` on the active profile, printing its result."""
    module, function = target.split(":")

    def run(args: argparse.Namespace) -> int:
        stage = getattr(importlib.import_module(module), function)
        print(json.dumps(stage(load_params(args.params).active), indent=1, default=str))
        return 0

    run.target = target  # type: ignore[attr-defined]  (what the command runs, for tests and --help readers)
    return run


for _name, _target, _help in (
    ("train-vae", "lumos.train.vae:run_stage",
     "tiny profile: train the small AutoencoderKL on mini-world images -> models/vae"),
    ("features-i2i", "lumos.tasks.i2i_stages:run_features",
     "cache VAE latents and frozen-encoder tokens of the catalog's images, per shard"),
    ("train-i2i", "lumos.tasks.i2i_stages:run_train",
     "train the I2I prior (eq. 1) on the cached features with DeepSpeed; resumes"),
    ("sample-i2i", "lumos.tasks.i2i_stages:run_sample",
     "I2I variations and an interpolation strip from the last checkpoint"),
    ("t2i-subset", "lumos.caption.stages:run_subset",
     "the T2I subset of the catalog (resolution, aesthetic > 5.5, quotas)"),
    ("caption", "lumos.caption.stages:run_caption",
     "InternVL long captions of the T2I subset, resumable per shard"),
    ("features-t5", "lumos.caption.stages:run_text_features",
     "T5 embeddings of raw and long captions, cached per shard"),
    ("prepare-webvid", "lumos.video.stages:run_prepare_webvid",
     "WebVid-format clips -> 16 frames at interval 3, sharded, with rejects"),
    ("render-objaverse", "lumos.render.stages:run_render",
     "render every object at nvs.views random cameras + the GSO protocol"),
    ("features-t2i", "lumos.tasks.t2i_stages:run_features",
     "VAE latents of the T2I subset at each Table S1 resolution (aspect buckets for multi-scale)"),
    ("train-t2i", "lumos.tasks.t2i_stages:run_train",
     "T2I from the prior (t2i.prior): progressive stages of Table S1, caption mixing; resumes"),
    ("sample-t2i", "lumos.tasks.t2i_stages:run_sample",
     "T2I samples of mini-world prompts at each t2i.sample aspect ratio"),
    ("features-nvs", "lumos.tasks.nvs_stages:run_features",
     "VAE latents, encoder tokens and cameras of every rendered view (objaverse + gso)"),
    ("train-nvs", "lumos.tasks.nvs_stages:run_train",
     "NVS (eq. S1) from the prior (nvs.train.prior); resumes"),
    ("sample-nvs", "lumos.tasks.nvs_stages:run_sample",
     "novel views of GSO-protocol objects from one input view; strips"),
    ("features-i2v", "lumos.tasks.i2v_stages:run_features",
     "per-frame VAE latents and first-frame tokens of the prepared clips"),
    ("train-i2v", "lumos.tasks.i2v_stages:run_train",
     "I2V (eq. S2) from the prior (i2v.train.prior); resumes"),
    ("sample-i2v", "lumos.tasks.i2v_stages:run_sample",
     "clips (MP4 + GIF) generated from the first frames of prepared clips"),
    ("evaluate-i2i", "lumos.eval.stages:run_evaluate_i2i", "FID/KID of I2I samples -> metrics/i2i.json"),
    ("evaluate-t2i", "lumos.eval.stages:run_evaluate_t2i",
     "FID/KID (raw and long captions), CLIP score, alignment of T2I samples -> metrics/t2i.json"),
    ("evaluate-nvs", "lumos.eval.stages:run_evaluate_nvs",
     "PSNR/SSIM/LPIPS per elevation of held-out GSO objects -> metrics/nvs.json"),
    ("evaluate-i2v", "lumos.eval.stages:run_evaluate_i2v",
     "FVD/KVD/PIC from held-out UCF-101/MSR-VTT first frames -> metrics/i2v.json"),
):
    COMMANDS.register(_name)(Command(f"stage: {_help}", _no_args, _profile_stage(_target), stage=True))


def _report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", type=Path, default=Path("."), help="project folder to report on (default: .)")
    p.add_argument("--out", type=Path, help="HTML file (default: <root>/reports/report.html)")


def _report(args: argparse.Namespace) -> int:
    from lumos.report import build_report

    print(json.dumps(build_report(args.root, args.out), indent=1))
    return 0


COMMANDS.register("report")(Command(
    "stage: one self-contained HTML report: metrics tables, curves, samples, funnel, lineage",
    _report_args, _report, stage=True))


# --------------------------------------------------------------------------- tools
def _catalog_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("sql", help='a query, e.g. "SELECT source, count(*) FROM images GROUP BY 1"')
    p.add_argument("--catalog", type=Path, help="catalog file (default: datasets/catalog.duckdb)")


def _catalog(args: argparse.Namespace) -> int:
    import duckdb

    from lumos.curation.catalog import DEFAULT_CATALOG, query

    try:
        query(args.sql, args.catalog or DEFAULT_CATALOG).show(max_rows=1000)
    except (duckdb.Error, FileNotFoundError) as err:
        print(f"lumos catalog: {err}", file=sys.stderr)
        return 1
    return 0


COMMANDS.register("catalog")(Command(
    "tool: run SQL on the catalog (views: images, rejects, rejects_by_reason, funnel)",
    _catalog_args, _catalog, stage=False))
def _params(args: argparse.Namespace) -> int:
    params = load_params(args.params)
    print(f"# {args.params}: valid; active profile: {params.profile}")
    print(yaml.safe_dump(params.active.model_dump(mode="json"), sort_keys=False), end="")
    return 0


def _serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", type=Path, help="folder to serve (default: datasets/mini-world)")


def _serve(args: argparse.Namespace) -> int:
    import threading

    from lumos.demo import DEFAULT_OUT, serve_mini_world

    cfg = load_params(args.params).active.mini_world
    root = args.root or DEFAULT_OUT
    with serve_mini_world(root, cfg.base_url) as url:
        print(f"serving {root} at {url} (Ctrl-C stops)", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
    return 0


def _ablate_args(p: argparse.ArgumentParser) -> None:
    from lumos.experiments import GRIDS

    p.add_argument("grid", nargs="?", choices=sorted(GRIDS), help="the ablation to queue (none: list them)")
    p.add_argument("--run", action="store_true", help="then run the queue (`dvc exp run --run-all`)")
    p.add_argument("--dry", action="store_true", help="print the dvc commands only")


def _ablate(args: argparse.Namespace) -> int:
    import shlex

    from lumos.experiments import listing, queue, queue_commands

    params = load_params(args.params)
    if args.grid is None:
        print("\n".join(listing(params.profile, params.active)))
        return 0
    if args.dry:
        for cmd in queue_commands(args.grid, params.profile, profile=params.active):
            print(shlex.join(cmd))
        return 0
    names = queue(args.grid, run=args.run, params=str(args.params))
    print(f"queued {len(names)}: {', '.join(names)}" + ("" if args.run else "; run: dvc exp run --run-all"))
    return 0


COMMANDS.register("ablate")(Command(
    "tool: queue a section 4.3 ablation grid as DVC experiments (then `dvc exp show`)",
    _ablate_args, _ablate, stage=False))
def _server_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["start", "stop", "status", "env"])
    p.add_argument("--no-ray", action="store_true", help="start no local Ray head")
    p.add_argument("--no-stage-server", action="store_true",
                   help="no warm stage processes: each stage starts its own Python")


def _server(args: argparse.Namespace) -> int:
    from lumos import services

    if args.action == "start":
        running = services.start(ray=False if args.no_ray else None, stages=not args.no_stage_server)
        print(f"Prefect UI: {running.api_url.removesuffix('/api')}   Ray: {running.ray_address or '-'}"
              f"   (logs in {services.state_dir()})")
        print('point a shell at them: eval "$(lumos server env)"')
    elif args.action == "stop":
        print("\n".join(f"stopped {s}" for s in services.stop()) or "nothing was running")
    else:
        running = services.read()
        if running is None:
            print("not running (lumos server start)", file=sys.stderr)
            return 1
        print(services.shell_exports(running) if args.action == "env"
              else json.dumps(running.__dict__, indent=1))
    return 0


COMMANDS.register("server")(Command(
    "tool: start|stop|status the run's local Prefect server, deployments and Ray head (env: export lines)",
    _server_args, _server, stage=False))
COMMANDS.register("params")(Command(
    "tool: validate params.yaml and print the active profile", _no_args, _params, stage=False))
COMMANDS.register("serve")(Command(
    "tool: serve the mini-world on 127.0.0.1 at mini_world.base_url", _serve_args, _serve,
    stage=False))


def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--i2i", type=Path, metavar="CKPT",
                   help="I2I checkpoint or run folder (default: models/i2i if trained)")
    p.add_argument("--t2i", type=Path, metavar="CKPT",
                   help="T2I checkpoint or run folder (default: models/t2i if trained)")
    p.add_argument("--port", type=int, help="port on 127.0.0.1 (default: a free one)")


def _demo(args: argparse.Namespace) -> int:
    from lumos.webui.cli import run_demo

    return run_demo(load_params(args.params).active, args.i2i, args.t2i, args.port)


COMMANDS.register("demo")(Command(
    "tool: interactive web UI on 127.0.0.1: I2I variations, interpolation, T2I at an aspect ratio",
    _demo_args, _demo, stage=False))


def _import_checkpoint_args(p: argparse.ArgumentParser) -> None:
    from lumos.models.release import RELEASES

    p.add_argument("release", choices=sorted(RELEASES), help="which released model the file holds")
    p.add_argument("path", type=Path, help="the released .pth (loaded with torch.load(weights_only=True))")
    p.add_argument("out", type=Path, help="run folder to write (then `prior: OUT`, or models/i2i for sample-i2i)")


def _import_checkpoint(args: argparse.Namespace) -> int:
    from lumos.models.release import import_release

    try:
        ckpt = import_release(args.release, args.path, args.out)
    except (ValueError, FileNotFoundError) as err:
        print(f"lumos: {err}", file=sys.stderr)
        return 2
    print(ckpt)
    return 0


COMMANDS.register("import-checkpoint")(Command(
    "tool: convert a released Lumos .pth (lumos-i2i | lumos-t2i) into this project's checkpoint layout",
    _import_checkpoint_args, _import_checkpoint, stage=False))

def build_parser() -> argparse.ArgumentParser:
    stages = [name for name, c in COMMANDS.items() if c.stage]
    parser = argparse.ArgumentParser(
        prog="lumos",
        description="Lumos: visual generative priors without text. "
        f"Pipeline stages: {', '.join(stages)}.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--params", type=Path, default=DEFAULT_PARAMS,
                        help="params file (default: params.yaml)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, cmd in COMMANDS.items():
        p = sub.add_parser(name, help=cmd.help, description=cmd.help, parents=[common])
        cmd.add_args(p)
        p.set_defaults(run=cmd.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except ConfigError as err:
        print(f"lumos: invalid params\n{err}", file=sys.stderr)
        return 2
    except KeyError as err:  # an unknown source or registry name
        print(f"lumos: {err.args[0]}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

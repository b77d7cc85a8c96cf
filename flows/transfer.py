"""Flows of the transfer tasks (section 3.2, 4.2; supplement H.2-H.4): for each of T2I, NVS and
I2V, features -> train (from `prior: i2i | t2i | none`) -> samples.

    python -m flows.transfer features-t2i|train-t2i|sample-t2i|features-nvs|...   # what dvc runs

Training goes through `lumos.train.launch` (the `deepspeed` launcher, or in-process, as
`launch.mode` says); sample flows publish their images as a markdown artifact.
"""

from __future__ import annotations

import base64
import importlib
import json
from pathlib import Path

from lumos.config import DEFAULT_PARAMS, load_params
from lumos.train.launch import run_training_stage
from flows._cli import run_from_command_line
from flows._progress import shard_progress, unit_progress
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

TASKS = ("t2i", "nvs", "i2v")
TITLES = {"t2i": "Lumos-T2I", "nvs": "Lumos-NVS", "i2v": "Lumos-I2V"}


def _inline(path: Path, mime: str) -> str:
    return f"![{path.name}](data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()})"


def _pictures(task: str, out: Path) -> list[str]:
    pattern = {"t2i": "grid-*.png", "nvs": "strip-*.png", "i2v": "*.gif"}[task]
    mime = "image/gif" if task == "i2v" else "image/png"
    return [_inline(p, mime) for p in sorted(out.glob(pattern))]


def _stages(task: str):
    """lumos.tasks.<task>_stages, imported when a flow runs (each stage process needs one task's
    models only: importing all three costs seconds per DVC stage)."""
    return importlib.import_module(f"lumos.tasks.{task}_stages")


def _make_flows(task: str) -> dict:
    title = TITLES[task]

    @flow(name=f"features-{task}", log_prints=True)
    def features_flow(params: str = str(DEFAULT_PARAMS)) -> dict:
        result = _stages(task).run_features(load_params(params).active,
                                            on_shard=shard_progress(f"features-{task}", task))
        get_run_logger().info("features-%s: %s", task, result)
        return result

    @flow(name=f"train-{task}", log_prints=True)
    def train_flow(params: str = str(DEFAULT_PARAMS)) -> dict:
        summary = run_training_stage(f"train-{task}", load_params(params).active.launch, params,
                                     result_file=Path("models") / task / "summary.json")
        create_markdown_artifact(key=f"train-{task}", description=f"{title} training summary",
                                 markdown=f"## {title}\n\n```json\n{json.dumps(summary, indent=1)}\n```\n")
        return summary

    @flow(name=f"sample-{task}", log_prints=True)
    def sample_flow(params: str = str(DEFAULT_PARAMS)) -> dict:
        from lumos.runtime.units import reporting_units

        stages = _stages(task)
        with reporting_units(unit_progress(f"sample-{task}")):
            result = stages.run_sample(load_params(params).active)
        create_markdown_artifact(key=f"sample-{task}", description=f"{title} samples",
                                 markdown=f"## {title} samples\n\n" + "\n\n".join(_pictures(task, stages.SAMPLES)))
        return result

    return {f"features-{task}": features_flow, f"train-{task}": train_flow, f"sample-{task}": sample_flow}


FLOWS = {name: f for task in TASKS for name, f in _make_flows(task).items()}

if __name__ == "__main__":
    run_from_command_line(__doc__, FLOWS)

"""Flows of the I2I prior (section 3.1, supplement H.1): features -> train -> sample.

    python -m flows.i2i features|train|sample     # one stage (what dvc runs)
"""

from __future__ import annotations

import json

from lumos.config import DEFAULT_PARAMS, load_params
from lumos.tasks import i2i_stages
from lumos.train.launch import run_training_stage
from flows._cli import run_from_command_line
from flows._progress import shard_progress, unit_progress
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact


@flow(name="features-i2i", log_prints=True)
def features_flow(params: str = str(DEFAULT_PARAMS)) -> dict:
    result = i2i_stages.run_features(load_params(params).active,
                                     on_shard=shard_progress("features-i2i", "catalog"))
    get_run_logger().info("features-i2i: %s", result)
    return result


@flow(name="train-i2i", log_prints=True)
def train_flow(params: str = str(DEFAULT_PARAMS)) -> dict:
    # launch.mode: deepspeed runs `deepspeed ... --module lumos.cli train-i2i` with its logs
    # streamed here (a failure fails this run); inprocess calls i2i_stages.run_train directly.
    summary = run_training_stage("train-i2i", load_params(params).active.launch, params,
                                 result_file=i2i_stages.MODELS / "summary.json")
    create_markdown_artifact(
        key="train-i2i", description="Lumos-I2I training summary",
        markdown=f"## Lumos-I2I\n\n```json\n{json.dumps(summary, indent=1)}\n```\n")
    return summary


@flow(name="sample-i2i", log_prints=True)
def sample_flow(params: str = str(DEFAULT_PARAMS)) -> dict:
    from lumos.runtime.units import reporting_units

    with reporting_units(unit_progress("sample-i2i")):
        result = i2i_stages.run_sample(load_params(params).active)
    get_run_logger().info("sample-i2i: %s", result)
    return result


FLOWS = {"features": features_flow, "train": train_flow, "sample": sample_flow}

if __name__ == "__main__":
    run_from_command_line(__doc__, FLOWS)

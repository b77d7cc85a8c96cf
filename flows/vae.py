"""Flow `train-vae` (tiny profile): the small AutoencoderKL that every features-* stage uses.

    python -m flows.vae      # what dvc runs
"""

from __future__ import annotations

from lumos.config import DEFAULT_PARAMS, load_params
from lumos.train.vae import run_stage
from flows._cli import run_from_command_line
from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact


@flow(name="train-vae")
def train_vae_flow(params: str = str(DEFAULT_PARAMS)) -> dict:
    summary = run_stage(load_params(params).active)
    flat = {k: v for k, v in summary.items() if isinstance(v, (int, float, str, bool))}
    create_table_artifact(key="train-vae", table=[flat], description="tiny VAE: held-out PSNR")
    get_run_logger().info("train-vae: %s", summary)
    return summary


if __name__ == "__main__":
    run_from_command_line(__doc__, train_vae_flow)

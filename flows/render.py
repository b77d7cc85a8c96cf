"""Flow `render-objaverse` (supplement G.3): 32 random views per object + the GSO protocol.

    python -m flows.render      # what dvc runs
"""

from __future__ import annotations

from lumos.config import DEFAULT_PARAMS, load_params
from lumos.render.stages import run_render
from flows._cli import run_from_command_line
from flows._progress import shard_progress
from prefect import flow, get_run_logger


@flow(name="render-objaverse")
def render_flow(params: str = str(DEFAULT_PARAMS)) -> dict:
    stats = run_render(load_params(params).active, on_shard=shard_progress("render-objaverse", "objects"))
    get_run_logger().info("render-objaverse: %s", stats)
    return stats


if __name__ == "__main__":
    run_from_command_line(__doc__, render_flow)

"""Flow `mini-world`: generate the embedded procedural world (DESIGN 4) as a dataset.

Run by the DVC stage of the same name (`python -m flows.mini_world`); inside `dvc repro`
Prefect starts a temporary local server on its own, so no server has to be running.
"""

from __future__ import annotations

from lumos.config import DEFAULT_PARAMS, load_params
from lumos.demo import DEFAULT_OUT, build_mini_world
from flows._cli import run_from_command_line
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact


@flow(name="mini-world", log_prints=True)
def mini_world_flow(params: str = str(DEFAULT_PARAMS)) -> dict:
    cfg = load_params(params).active.mini_world
    manifest = build_mini_world(cfg)
    rows = "\n".join(f"| {kind} | {n} |" for kind, n in manifest["kinds"].items())
    create_markdown_artifact(
        key="mini-world-rows",
        markdown=f"## Mini-world (seed {cfg.seed})\n\n| kind | rows |\n|---|---|\n{rows}\n",
        description="Rows of the mini-world's metadata, by kind (ok or deliberately bad)",
    )
    get_run_logger().info("mini-world: %d rows in %s", manifest["rows"], DEFAULT_OUT)
    return manifest


if __name__ == "__main__":
    run_from_command_line(__doc__, mini_world_flow)

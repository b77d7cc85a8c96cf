"""Flow `prepare-webvid` (supplement G.4): WebVid-format clips -> 16 frames at interval 3.

    python -m flows.video      # what dvc runs
"""

from __future__ import annotations

from lumos.config import DEFAULT_PARAMS, load_params
from lumos.video.stages import run_prepare_webvid
from flows._cli import run_from_command_line
from flows._progress import shard_progress
from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact


@flow(name="prepare-webvid")
def prepare_webvid_flow(params: str = str(DEFAULT_PARAMS)) -> dict:
    stats = run_prepare_webvid(load_params(params).active,
                               on_shard=shard_progress("prepare-webvid", "webvid"))
    flat = {k: v for k, v in stats.items() if isinstance(v, (int, float, str))}
    create_table_artifact(key="prepare-webvid", table=[flat], description="I2V clips prepared")
    get_run_logger().info("prepare-webvid: %s", stats)
    return stats


if __name__ == "__main__":
    run_from_command_line(__doc__, prepare_webvid_flow)

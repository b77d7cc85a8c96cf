"""Flows of the text-image set (supplement G.2, H.2): T2I subset -> InternVL captions -> T5 cache.

    python -m flows.caption subset|caption|t5     # one stage (what dvc runs)
"""

from __future__ import annotations

from lumos.caption import stages
from lumos.config import DEFAULT_PARAMS, load_params
from flows._cli import run_from_command_line
from flows._progress import shard_progress
from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact


@flow(name="t2i-subset")
def subset_flow(params: str = str(DEFAULT_PARAMS)) -> dict:
    result = stages.run_subset(load_params(params).active)
    get_run_logger().info("t2i subset: %s", result)
    return result


@flow(name="caption")
def caption_flow(params: str = str(DEFAULT_PARAMS)) -> dict:
    result = stages.run_caption(load_params(params).active, on_shard=shard_progress("caption", "t2i-subset"))
    create_table_artifact(
        key="caption-throughput", description="InternVL captioning of the T2I subset",
        table=[{"images captioned": result["images_captioned"], "shards": result["shards_captioned"],
                "shards cached": result["shards_cached"],
                "images/s": round(result["images_per_s"] or 0.0, 3)}])
    get_run_logger().info("caption: %s", result)
    return result


@flow(name="features-t5")
def t5_flow(params: str = str(DEFAULT_PARAMS)) -> dict:
    result = stages.run_text_features(load_params(params).active,
                                      on_shard=shard_progress("features-t5", "t2i-subset"))
    get_run_logger().info("features-t5: %s", result)
    return result


FLOWS = {"subset": subset_flow, "caption": caption_flow, "t5": t5_flow}

if __name__ == "__main__":
    run_from_command_line(__doc__, FLOWS)

"""Flows `curate-*`: supplement G.1's curation, one flow per DVC stage, and `curate` for all.

    python -m flows.curate select|download|score|keep|catalog   # one stage (what dvc runs)
    python -m flows.curate all [--source NAME ...]              # the whole chain

Each source is a Prefect task; a bad row never fails a run (it is recorded in the rejects).
"""

from __future__ import annotations

import argparse

from lumos.config import DEFAULT_PARAMS, load_params
from lumos.curation import stages
from lumos.demo import DEFAULT_OUT as MINI_WORLD_DIR
from flows._progress import shard_progress, transient_only
from prefect import flow, get_run_logger, task
from prefect.artifacts import (create_markdown_artifact, create_progress_artifact,
                               create_table_artifact, update_progress_artifact)

from flows.mini_world import mini_world_flow


@task(task_run_name="{stage}:{source_name}", retries=2, retry_delay_seconds=5,
      retry_condition_fn=transient_only)
def run_stage(stage: str, source_name: str, params: str) -> dict:
    profile = load_params(params).active
    source = stages.sources(profile, [source_name])[0]
    if stages.reports_shards(profile, stage):  # per-shard fan-out on Ray: progress per shard
        result = stages.STAGES[stage](profile, source, on_shard=shard_progress(stage, source_name))
    else:
        result = stages.STAGES[stage](profile, source)
    get_run_logger().info("%s %s: %s", stage, source_name, result)
    return result


def _stage_flow(stage: str):
    @flow(name=f"curate-{stage}", log_prints=True)
    def stage_flow(params: str = str(DEFAULT_PARAMS), sources: list[str] | None = None) -> dict:
        names = [s.name for s in stages.sources(load_params(params).active, sources)]
        # One source after another, in this thread: img2dataset parallelises inside and
        # installs signal handlers, which only the main thread may do.
        return {n: run_stage(stage, n, params) for n in names}

    return stage_flow


STAGE_FLOWS = {stage: _stage_flow(stage) for stage in stages.STAGES}


@flow(name="curate-catalog")
def catalog_flow() -> list[dict]:
    funnel = stages.run_catalog()
    create_table_artifact(key="curation-funnel", table=funnel,
                          description="rows -> selected -> downloaded -> decoded -> kept")
    return funnel


@flow(name="curate", log_prints=True)
def curate_flow(params: str = str(DEFAULT_PARAMS), sources: list[str] | None = None,
                readers: list[str] | None = None) -> list[dict]:
    """The whole chain for some sources (default: all); `curate-laion` picks readers=[laion]."""
    chosen = stages.sources(load_params(params).active, sources, readers)
    if not chosen:
        raise ValueError(f"no source in {params} matches sources={sources} readers={readers}")
    names = [s.name for s in chosen]
    if any(s.serve_mini_world for s in chosen) and not MINI_WORLD_DIR.exists():
        mini_world_flow(params)
    progress = create_progress_artifact(0.0, description=f"curation of {', '.join(names)}")
    for i, stage in enumerate(stages.STAGES, start=1):
        STAGE_FLOWS[stage](params, names)
        update_progress_artifact(progress, 100.0 * i / (len(stages.STAGES) + 1))
    funnel = catalog_flow()
    update_progress_artifact(progress, 100.0)
    rows = "\n".join(f"| {f['source']} | {f['rows_in']} | {f['selected']} | {f['downloaded']} | "
                     f"{f['decoded']} | {f['passed']} | {f['unique']} | {f['kept']} | "
                     f"{'all' if f['target'] is None else f['target']} | {f['reached']} |" for f in funnel)
    create_markdown_artifact(
        key="curate-funnel",
        markdown="## Curation funnel\n\n| source | rows | selected | downloaded | decoded | passed | unique "
                 "| kept | quota target | reached |\n"
                 f"|---|---|---|---|---|---|---|---|---|---|\n{rows}\n")
    return funnel


if __name__ == "__main__":  # img2dataset spawns workers: keep this guard
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=[*stages.STAGES, "catalog", "all"])
    parser.add_argument("--params", default=str(DEFAULT_PARAMS))
    parser.add_argument("--source", action="append", dest="sources")
    parser.add_argument("--reader", action="append", dest="readers")
    args = parser.parse_args()
    if args.stage == "catalog":
        catalog_flow()
    elif args.stage == "all":
        curate_flow(args.params, args.sources, args.readers)
    else:
        STAGE_FLOWS[args.stage](args.params, args.sources)

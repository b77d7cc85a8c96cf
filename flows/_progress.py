"""What the flows of per-shard stages share: per-shard progress in Prefect, retries on transient faults."""

from __future__ import annotations

from lumos.runtime.ray import TRANSIENT_ERRORS
from prefect import get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact


def transient_only(task, task_run, state) -> bool:
    """Retry a stage on a transient fault (connection, timeout) only, never on a bad input.
    A dead Ray worker is retried inside the stage, per shard (lumos/runtime/ray.py)."""
    try:
        state.result()
    except TRANSIENT_ERRORS:
        return True
    except BaseException:  # noqa: BLE001 - any other failure is final
        return False
    return False


def shard_progress(stage: str, source_name: str):
    """A Prefect progress artifact for one stage of one source, updated as each shard finishes."""
    artifact = create_progress_artifact(0.0, key=f"{stage}-{source_name}".lower().replace("_", "-"),
                                        description=f"{stage} {source_name}: shards done")

    def on_shard(done: int, total: int, outcome: str) -> None:
        update_progress_artifact(artifact, 100.0 * done / total)
        get_run_logger().info("%s %s: shard %d/%d %s", stage, source_name, done, total, outcome)

    return on_shard


def unit_progress(stage: str):
    """The generation units of a sample-*/evaluate-* stage (lumos/runtime/units.py) as a Prefect
    progress artifact: ``with reporting_units(unit_progress("evaluate-t2i")): ...``. Each
    ``run_units`` call (a benchmark, a caption set, a wave of clips) restarts the bar."""
    artifact = create_progress_artifact(0.0, key=f"{stage}-units", description=f"{stage}: generation units done")

    def on_unit(done: int, total: int, _result) -> None:  # a result holds tensors: not logged
        update_progress_artifact(artifact, 100.0 * done / total)
        get_run_logger().info("%s: unit %d/%d done", stage, done, total)

    return on_unit

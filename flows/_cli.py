"""The command line every flow module shares: `python -m flows.X [STAGE] [--params FILE]`."""

from __future__ import annotations

import argparse
import os
from contextlib import AbstractContextManager, nullcontext

from lumos.config import DEFAULT_PARAMS

HEARTBEAT_VARIABLES = ("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "PREFECT_RUNNER_HEARTBEAT_FREQUENCY")


def stage_heartbeats() -> AbstractContextManager:
    """Prefect settings for one stage's flow run: no flow-run heartbeats unless the environment
    asks for them. Prefect 3 ends every flow run by joining its heartbeat thread, which sleeps in
    1 s steps: about 0.9 s per stage, a third of the tiny pipeline's time outside stage work
    (bench/pipeline_overhead.py). Heartbeats only feed a zombie-run automation, which this project
    does not set up; set PREFECT_FLOWS_HEARTBEAT_FREQUENCY (seconds) to have them."""
    if any(name in os.environ for name in HEARTBEAT_VARIABLES):
        return nullcontext()
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    return temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None})


def run_from_command_line(doc: str | None, flows) -> None:
    """Run one flow, or the stage named on the command line from a {stage: flow} table."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    if isinstance(flows, dict):
        parser.add_argument("stage", choices=list(flows))
    parser.add_argument("--params", default=str(DEFAULT_PARAMS))
    args = parser.parse_args()
    with stage_heartbeats():
        (flows[args.stage] if isinstance(flows, dict) else flows)(args.params)

"""The command line every flow module shares: `python -m flows.X [STAGE] [--params FILE]`."""

from __future__ import annotations

import argparse

from lumos.config import DEFAULT_PARAMS


def run_from_command_line(doc: str | None, flows) -> None:
    """Run one flow, or the stage named on the command line from a {stage: flow} table."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    if isinstance(flows, dict):
        parser.add_argument("stage", choices=list(flows))
    parser.add_argument("--params", default=str(DEFAULT_PARAMS))
    args = parser.parse_args()
    (flows[args.stage] if isinstance(flows, dict) else flows)(args.params)

"""Flows `evaluate-*` (issue 8; Tables 1-5): each task's samples -> metrics/<task>.json.

    python -m flows.evaluate evaluate-i2i|evaluate-t2i|evaluate-nvs|evaluate-i2v   # what dvc runs
"""

from __future__ import annotations

import importlib
import json

from lumos.config import DEFAULT_PARAMS, load_params
from flows._cli import run_from_command_line
from flows._progress import unit_progress
from prefect import flow
from prefect.artifacts import create_markdown_artifact


def _make_flow(task: str):
    @flow(name=f"evaluate-{task}", log_prints=True)
    def evaluate_flow(params: str = str(DEFAULT_PARAMS)) -> dict:
        run = getattr(importlib.import_module("lumos.eval.stages"), f"run_evaluate_{task}")  # heavy: on use
        from lumos.runtime.units import reporting_units

        with reporting_units(unit_progress(f"evaluate-{task}")):
            metrics = run(load_params(params).active)
        create_markdown_artifact(key=f"evaluate-{task}", description=f"metrics/{task}.json",
                                 markdown=f"## {task} metrics\n\n```json\n{json.dumps(metrics, indent=1)}\n```\n")
        return metrics

    return evaluate_flow


FLOWS = {f"evaluate-{task}": _make_flow(task) for task in ("i2i", "t2i", "nvs", "i2v")}

if __name__ == "__main__":
    run_from_command_line(__doc__, FLOWS)

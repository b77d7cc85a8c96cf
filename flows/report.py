"""Flow `report` (issue 8): metrics, curves, samples, funnel and lineage -> reports/report.html.

    python -m flows.report       # what dvc runs
"""

from __future__ import annotations

from lumos.config import DEFAULT_PARAMS
from lumos.report import build_report
from flows._cli import run_from_command_line
from prefect import flow
from prefect.artifacts import create_markdown_artifact


@flow(name="report", log_prints=True)
def report_flow(params: str = str(DEFAULT_PARAMS)) -> dict:
    result = build_report(".")
    missing = "".join(f"\n- {m}" for m in result["missing"]) or " none"
    create_markdown_artifact(key="report", description="the project report",
                             markdown=f"## Report\n\n`{result['out']}` ({result['bytes']} bytes)\n\n"
                                      f"Missing inputs:{missing}\n")
    return result


if __name__ == "__main__":
    run_from_command_line(__doc__, report_flow)

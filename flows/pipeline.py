"""Flow `lumos-pipeline`: `dvc repro` run from the Prefect UI or API.

    prefect deployment run lumos-pipeline/lumos-pipeline --watch    # served by flows/serve.py

DVC decides what reruns (the stage graph lives in dvc.yaml alone); each stage's own flow run
reports to the same server, so the UI shows every stage that ran, with its artifacts, beside
this run, which streams DVC's output to its log and fails when `dvc repro` fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import deque
from pathlib import Path

from prefect import flow, get_run_logger

from flows._cli import run_from_command_line

ROOT = Path(__file__).resolve().parents[1]


@flow(name="lumos-pipeline", log_prints=True)
def pipeline_flow(targets: list[str] | None = None, force: bool = False) -> dict:
    logger = get_run_logger()
    cmd = [str(Path(sys.executable).parent / "dvc"), "repro", *(["--force"] if force else []), *(targets or [])]
    logger.info("running %s in %s", " ".join(cmd), ROOT)
    tail: deque[str] = deque(maxlen=40)
    ran = []
    with subprocess.Popen(cmd, cwd=ROOT, env=dict(os.environ), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, bufsize=1) as proc:
        for line in proc.stdout:
            line = line.rstrip()
            tail.append(line)
            if line.startswith("Running stage '"):
                ran.append(line.split("'")[1])
            logger.info(line)
    if proc.returncode != 0:
        raise RuntimeError(f"dvc repro failed (exit {proc.returncode}):\n" + "\n".join(tail))
    return {"stages_run": ran}


if __name__ == "__main__":
    run_from_command_line(__doc__, lambda params: pipeline_flow())

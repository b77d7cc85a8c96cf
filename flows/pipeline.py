"""Flow `lumos-pipeline`: the whole graph of dvc.yaml as Prefect subflows, for operators who
run it from the Prefect UI (`prefect deployment run lumos-pipeline/lumos-pipeline`).

    python -m flows.pipeline

`dvc repro` remains the way to rerun only what changed; this flow runs every stage (each
stage skips its finished shards, objects and clips, and training resumes from its last
checkpoint).
"""

from __future__ import annotations

from lumos.config import DEFAULT_PARAMS
from prefect import flow
from prefect.artifacts import create_progress_artifact, update_progress_artifact

from flows._cli import run_from_command_line
from flows.caption import FLOWS as CAPTION_FLOWS
from flows.curate import curate_flow
from flows.evaluate import FLOWS as EVALUATE_FLOWS
from flows.i2i import FLOWS as I2I_FLOWS
from flows.mini_world import mini_world_flow
from flows.render import render_flow
from flows.report import report_flow
from flows.transfer import FLOWS as TRANSFER_FLOWS
from flows.vae import train_vae_flow
from flows.video import prepare_webvid_flow

# In dependency order (the edges of dvc.yaml).
STEPS = [
    ("mini-world", mini_world_flow),
    ("curate", curate_flow),
    ("train-vae", train_vae_flow),
    ("features-i2i", I2I_FLOWS["features"]),
    ("train-i2i", I2I_FLOWS["train"]),
    ("sample-i2i", I2I_FLOWS["sample"]),
    ("t2i-subset", CAPTION_FLOWS["subset"]),
    ("caption", CAPTION_FLOWS["caption"]),
    ("features-t5", CAPTION_FLOWS["t5"]),
    ("prepare-webvid", prepare_webvid_flow),
    ("render-objaverse", render_flow),
    *TRANSFER_FLOWS.items(),  # features/train/sample of t2i, then nvs (may start from t2i), then i2v
    *EVALUATE_FLOWS.items(),
    ("report", report_flow),
]


@flow(name="lumos-pipeline", log_prints=True)
def pipeline_flow(params: str = str(DEFAULT_PARAMS)) -> dict:
    progress = create_progress_artifact(0.0, description="lumos-pipeline: stages done")
    results = {}
    for i, (name, step) in enumerate(STEPS, start=1):
        results[name] = step(params)
        update_progress_artifact(progress, 100.0 * i / len(STEPS))
    return results


if __name__ == "__main__":  # img2dataset (inside curate) spawns workers: keep this guard
    run_from_command_line(__doc__, pipeline_flow)

"""Serve every Lumos deployment from this process, which also runs them (the local worker).

    python -m flows.serve        # started for you by `lumos server start` (run.sh)

Deployments: `curate/curate-<reader>` for each source reader (laion, coyo, sam, journeydb,
imagenet, folder: the whole curation chain for the sources of that kind in params.yaml),
`curate/curate-all`, `mini-world/mini-world`, and `features-i2i/features-i2i`,
`train-i2i/train-i2i`, `sample-i2i/sample-i2i`, `t2i-subset/t2i-subset`, `caption/caption`,
`features-t5/features-t5`, `prepare-webvid/prepare-webvid`, `render-objaverse/render-objaverse`,
`{features,train,sample}-{t2i,nvs,i2v}/...`, `evaluate-{i2i,t2i,nvs,i2v}/...`, `report/report`,
and `lumos-pipeline/lumos-pipeline` (`dvc repro`: DVC picks the stages that rerun, each shows
as its own flow run). Runs execute in the project root.
"""

from __future__ import annotations

from lumos.curation.sources import READERS
from prefect import serve

from flows.caption import FLOWS as CAPTION_FLOWS
from flows.curate import curate_flow
from flows.evaluate import FLOWS as EVALUATE_FLOWS
from flows.i2i import FLOWS as I2I_FLOWS
from flows.mini_world import mini_world_flow
from flows.pipeline import pipeline_flow
from flows.render import render_flow
from flows.report import report_flow
from flows.transfer import FLOWS as TRANSFER_FLOWS
from flows.video import prepare_webvid_flow

if __name__ == "__main__":  # img2dataset (inside curate) spawns workers: keep this guard
    deployments = [curate_flow.to_deployment(name=f"curate-{r}", parameters={"readers": [r]},
                                             description=f"Curate every `{r}` source of params.yaml")
                   for r in READERS]
    deployments.append(curate_flow.to_deployment(name="curate-all", description="Curate every source"))
    deployments.append(mini_world_flow.to_deployment(name="mini-world"))
    deployments += [f.to_deployment(name=f"{stage}-i2i") for stage, f in I2I_FLOWS.items()]
    deployments += [f.to_deployment(name=f.name) for f in (*CAPTION_FLOWS.values(), prepare_webvid_flow, render_flow,
                                                           *TRANSFER_FLOWS.values(), *EVALUATE_FLOWS.values(),
                                                           report_flow)]
    deployments.append(pipeline_flow.to_deployment(name="lumos-pipeline",
                                                   description="dvc repro: every stage that changed, in dvc.yaml's graph"))
    serve(*deployments)

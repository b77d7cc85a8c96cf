"""Serve every Lumos deployment from this process, which also runs them (the local worker).

    python -m flows.serve        # started for you by scripts/prefect-up.sh

Deployments: `curate/curate-<reader>` for each source reader (laion, coyo, sam, journeydb,
imagenet, folder: the whole curation chain for the sources of that kind in params.yaml),
`curate/curate-all`, and `mini-world/mini-world`. Runs execute in the project root.
"""

from __future__ import annotations

from lumos.curation.sources import READERS
from prefect import serve

from flows.curate import curate_flow
from flows.mini_world import mini_world_flow

if __name__ == "__main__":  # img2dataset (inside curate) spawns workers: keep this guard
    deployments = [curate_flow.to_deployment(name=f"curate-{r}", parameters={"readers": [r]},
                                             description=f"Curate every `{r}` source of params.yaml")
                   for r in READERS]
    deployments.append(curate_flow.to_deployment(name="curate-all", description="Curate every source"))
    deployments.append(mini_world_flow.to_deployment(name="mini-world"))
    serve(*deployments)

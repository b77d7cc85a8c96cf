#!/usr/bin/env bash
# The main job end to end: install, then `dvc repro` on the active profile (tiny by default),
# every stage reporting to one local Prefect server (started once and kept for its UI, with a
# local Ray head for the data plane; `lumos server stop` ends them) unless PREFECT_API_URL is set.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/env.sh
if [ -z "${PREFECT_API_URL:-}" ]; then
  lumos server start
  eval "$(lumos server env)"
fi
dvc repro "$@"
echo "Prefect UI: ${PREFECT_API_URL%/api}   report: reports/report.html"

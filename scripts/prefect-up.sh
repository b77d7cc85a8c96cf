#!/usr/bin/env bash
# Start the local Prefect server (SQLite, 127.0.0.1), the deployments' process and a Ray head:
# the same as `lumos server start` (see lumos/services.py). Stop them with scripts/prefect-down.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
lumos server start "$@"

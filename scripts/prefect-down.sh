#!/usr/bin/env bash
# Stop what scripts/prefect-up.sh (`lumos server start`) started.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
lumos server stop

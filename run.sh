#!/usr/bin/env bash
# The main job end to end: install, then `dvc repro` on the active profile (tiny by default).
set -euo pipefail
cd "$(dirname "$0")"
source scripts/env.sh
dvc repro "$@"

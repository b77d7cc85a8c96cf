#!/usr/bin/env bash
# The test suite: install, then pytest (tiny real models, loopback servers, no network).
set -euo pipefail
cd "$(dirname "$0")"
source scripts/env.sh
python -m pytest "$@"

#!/usr/bin/env bash
# The test suite: install (plus Debian's Chromium for the browser tests), then pytest (tiny real
# models, loopback servers started by the tests themselves, no network).
set -euo pipefail
cd "$(dirname "$0")"
source scripts/env.sh
bash scripts/install-system.sh
python -m pytest "$@"

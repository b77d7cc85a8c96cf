#!/usr/bin/env bash
# The test suite: install (plus Debian's Chromium for the browser tests), then pytest (tiny real
# models, loopback servers started by the tests themselves, no network).
set -euo pipefail
cd "$(dirname "$0")"
source scripts/env.sh
bash scripts/install-system.sh
# Two workers (pytest-xdist), each test file on one of them: the whole-pipeline file runs beside
# the rest. LUMOS_TEST_WORKERS=0 runs everything in this process.
python -m pytest -n "${LUMOS_TEST_WORKERS:-2}" --dist loadfile "$@"

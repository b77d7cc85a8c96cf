#!/usr/bin/env bash
# System packages the tests need: Debian's Chromium (and ChromeDriver) for the browser tests of
# the report and the Prefect UI. Idempotent: does nothing when /usr/bin/chromium is there.
# Needs root (or sudo) and Debian's package registry; a test tool's own browser download
# (`playwright install`) does not work on these machines.
set -euo pipefail

if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then exit 0; fi

SUDO=()
if [ "$(id -u)" != 0 ]; then SUDO=(sudo); fi
APT=("${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get)
pkgs=(chromium chromium-driver)

echo "installing ${pkgs[*]} from Debian's packages..."
start=$SECONDS
if ! "${APT[@]}" install -y --no-install-recommends "${pkgs[@]}"; then
  # A fresh machine's package lists may be stale or empty: refresh them once and retry.
  "${APT[@]}" update
  "${APT[@]}" install -y --no-install-recommends "${pkgs[@]}"
fi
echo "chromium installed in $((SECONDS - start)) s: $(/usr/bin/chromium --version 2>/dev/null || echo '?')"

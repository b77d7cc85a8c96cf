#!/usr/bin/env bash
# Install Lumos into ./.venv from the pinned set in requirements.lock. Idempotent: a stamp
# named after the hash of its inputs makes a second run return at once.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
stamp="$VENV/.installed-$( (cat pyproject.toml requirements.lock requirements-blender.lock scripts/install.sh; echo "no-blender=${LUMOS_NO_BLENDER:-0}") | sha256sum | cut -c1-16)"
if [ -f "$stamp" ]; then exit 0; fi

PY=$(command -v python3.11 || command -v python3)
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/pip" install --quiet --disable-pip-version-check -c requirements.lock)

# The CPU-only torch wheel some machines keep in find-links breaks torchvision (DESIGN 6):
# take torch and torchvision from the package registry.
export PIP_FIND_LINKS=""
echo "installing torch + torchvision (first time: a few minutes)..."
"${PIP[@]}" torch torchvision
# DeepSpeed ships as an sdist whose setup.py imports torch: build it against the torch above,
# with no ops pre-compiled (the CPU accelerator builds what it needs on first use).
DS_BUILD_OPS=0 "${PIP[@]}" --no-build-isolation deepspeed
echo "installing lumos and its dependencies..."
"${PIP[@]}" -e ".[dev]"
# img2dataset pulls the Python 3.6 `dataclasses` backport, which shadows the standard library
# inside Prefect's server subprocess (DESIGN 6): remove it.
"$VENV/bin/pip" uninstall --quiet -y dataclasses 2>/dev/null || true

# Renderer "cycles" (the paper profile): bpy pins numpy<2 and the project numpy 2, so Blender
# gets its own venv, run as a subprocess by lumos/render/cycles.py (~375 MB wheel, ~1 GB
# installed, 15-40 s here). LUMOS_NO_BLENDER=1 skips it (then only renderer "raycast" works).
if [ "${LUMOS_NO_BLENDER:-0}" != 1 ]; then
    if PY311=$(command -v python3.11); then
        echo "installing bpy (Blender Cycles) into .venv-blender..."
        [ -x .venv-blender/bin/python ] || "$PY311" -m venv .venv-blender
        echo '*' > .venv-blender/.gitignore  # keeps the venv out of git, as Python 3.13's venv does
        .venv-blender/bin/pip install --quiet --disable-pip-version-check -r requirements-blender.lock
    else
        echo "no python3.11 (bpy needs it): skipping .venv-blender; renderer 'cycles' unavailable"
    fi
fi

rm -f "$VENV"/.installed-*
touch "$stamp"
echo "installed into $VENV"

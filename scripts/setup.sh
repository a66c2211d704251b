#!/usr/bin/env bash
# Set up inmaterio on a fresh machine that has Python >= 3.11 and pip.
# Installs the CPU build of PyTorch first (so nothing pulls the CUDA packages),
# then the package with its test dependencies, in editable mode (the dev extra
# includes Ray, so the tests of the Ray executor run against a real local Ray).
# Override the torch requirement with INMATERIO_TORCH, e.g. INMATERIO_TORCH="torch>=2.6".
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet --disable-pip-version-check "${INMATERIO_TORCH:-torch==2.13.0}"
python -m pip install --quiet --disable-pip-version-check -e ".[dev]"

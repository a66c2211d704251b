#!/usr/bin/env bash
# Set up inmaterio on a fresh machine that has Python >= 3.11 and pip.
# Installs the CPU build of PyTorch first (so nothing pulls the CUDA packages),
# then the package with its test dependencies, in editable mode (the dev extra
# includes Ray, so the tests of the Ray executor run against a real local Ray).
# Override the torch requirement with INMATERIO_TORCH, e.g. INMATERIO_TORCH="torch>=2.6".
# On Debian/Ubuntu it also installs ngspice (the executable and libngspice) when missing, as root or through
# sudo; where that is impossible it warns and goes on (the package works without ngspice; the tests that
# compare the native circuit solver with ngspice then skip, or fail when INMATERIO_REQUIRE_NGSPICE=1, as in CI).
set -euo pipefail
cd "$(dirname "$0")/.."

have_ngspice() {
    command -v ngspice >/dev/null 2>&1 &&
        python -c "import ctypes; ctypes.CDLL('libngspice.so.0')" 2>/dev/null
}
install_ngspice() {
    command -v apt-get >/dev/null 2>&1 || return 1
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || return 1
        sudo="sudo"
    fi
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ngspice libngspice0 >/dev/null
}
if ! have_ngspice; then
    if install_ngspice && have_ngspice; then
        echo "setup: installed ngspice ($(command -v ngspice))"
    else
        echo "setup: WARNING: could not install ngspice (needs apt-get and root or sudo): install it with" \
            "\`apt-get install ngspice libngspice0\`; inmaterio works without it, the ngspice comparisons are skipped" >&2
    fi
fi
python -m pip install --quiet --disable-pip-version-check "${INMATERIO_TORCH:-torch==2.13.0}"
python -m pip install --quiet --disable-pip-version-check -e ".[dev]"

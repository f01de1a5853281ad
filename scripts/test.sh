#!/usr/bin/env bash
# Install the test extras (and PoCL, the CPU OpenCL driver) in a fresh virtualenv, then run the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! ls /etc/OpenCL/vendors/*pocl* >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq pocl-opencl-icd ocl-icd-libopencl1 >/dev/null
fi
VENV="${XREDUCE_TEST_VENV:-.venv-test}"
python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q ".[test]"
export XREDUCE_REQUIRE_OPENCL=1  # OpenCL tests must run on PoCL, never skip
"$VENV/bin/python" -m pytest -n 2 -q -p no:cacheprovider tests
# every >>> example of the installed package runs (or is marked +SKIP), from outside the
# source tree so that the installed, compiled package is the one imported
PYTHON="$(cd "$VENV" && pwd)/bin/python"
(cd "${TMPDIR:-/tmp}" && "$PYTHON" -m pytest -q -p no:cacheprovider --doctest-modules \
    --pyargs xreduce)

#!/usr/bin/env bash
# Set everything up on a fresh Debian/Ubuntu machine: gfortran, a Python 3.11 virtual
# environment in .venv with the project and its pinned dependencies, then build and check the
# Turbospectrum engine and fetch the atmosphere-emulator weights into the user cache.
# Idempotent: re-running only does what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v gfortran >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "setup: installing gfortran (apt-get)"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gfortran >/dev/null
    else
        echo "error: gfortran not found; install it (sudo apt-get install gfortran, or conda install -c conda-forge gfortran) and re-run" >&2
        exit 1
    fi
fi

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $PYTHON"
    "$PYTHON" -m venv .venv
fi
echo "setup: installing the project and its dependencies into .venv"
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e ".[test,hpc]"
echo "setup: building/checking the engine"
.venv/bin/python -m gridgen engine build

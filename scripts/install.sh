#!/bin/sh
# Install wildfire-kd into a virtual environment: the one install path, used by `make install` and the Dockerfile.
#   scripts/install.sh VENV         the package and its pinned runtime dependencies (the image)
#   scripts/install.sh VENV dev     the same plus the dev tools: pytest, ruff, hadolint, zizmor (the README)
set -eu
venv=${1:?usage: scripts/install.sh VENV [dev]}
extras=${2:-}
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
if [ "$extras" = dev ]; then
    "$venv/bin/python" -m pip install --quiet -e ".[dev]"
else
    "$venv/bin/python" -m pip install --quiet -e .
fi

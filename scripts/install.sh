#!/bin/sh
# Install wildfire-kd into a virtual environment: the one install path, used by `make install` and the Dockerfile.
#   scripts/install.sh VENV                  the package and its runtime dependencies (pyproject's ranges, not a
#                                            lock: OpenCV, say, is whatever is newest, and its augmentation moves
#                                            training figures; BENCHMARKS.md names the versions behind each)
#   scripts/install.sh VENV openvino,ncnn    the same plus the export formats (the image)
#   scripts/install.sh VENV dev              all of it plus the dev tools: pytest, ruff, hadolint, zizmor (the README)
set -eu
venv=${1:?usage: scripts/install.sh VENV [EXTRA[,EXTRA...]]}
extras=${2:-}
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
if [ -n "$extras" ]; then
    "$venv/bin/python" -m pip install --quiet -e ".[$extras]"
else
    "$venv/bin/python" -m pip install --quiet -e .
fi

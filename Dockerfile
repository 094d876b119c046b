# wildfire-kd: the model-build pipeline in one image.
#   docker build -t wildfire-kd .
#   docker run --gpus all -v /path/to/data:/data:ro -v /path/to/weights:/weights:ro -v "$PWD/out":/out \
#       wildfire-kd train --data /data/data.yaml --teacher /weights/teacher.pt --out /out
# Mount points: /data (dataset, read-only), /weights (teacher and optional yolov8n.pt, read-only), /out (results).
# A slim Python base is enough: PyTorch's CUDA wheels carry the CUDA libraries and `--gpus all` brings the driver.
# Tests build FROM a local Debian base instead (--build-arg BASE_IMAGE=...); production keeps this pinned tag.
ARG BASE_IMAGE=python:3.11.7-slim-bookworm
FROM ${BASE_IMAGE}

ARG GIT_COMMIT=unknown
ARG DEBIAN_FRONTEND=noninteractive

# opencv (an ultralytics dependency) needs these shared libraries, which a slim image lacks.
# DL3008 (pin apt versions) is ignored on purpose: Debian replaces package versions with each security update, so
# exact pins break the build within weeks; the base image tag pins the distribution release instead.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 libxcb1 \
    && rm -rf /var/lib/apt/lists/*

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH \
    YOLO_OFFLINE=1 \
    YOLO_AUTOINSTALL=0 \
    YOLO_CONFIG_DIR=/tmp/wildfire-kd \
    MPLCONFIGDIR=/tmp/wildfire-kd/matplotlib \
    WILDFIRE_KD_GIT_COMMIT=${GIT_COMMIT}

WORKDIR /opt/wildfire-kd
COPY pyproject.toml README.md ./
COPY scripts/install.sh scripts/install.sh
COPY configs/ configs/
COPY build/ build/
# the same install script as the README's `make install`, without the dev tools
RUN scripts/install.sh /opt/venv \
    && useradd --create-home --uid 1000 --shell /usr/sbin/nologin kd \
    && mkdir -p /data /weights /out \
    && chown kd:kd /out

USER 1000:1000
WORKDIR /out
VOLUME ["/out"]
ENTRYPOINT ["wildfire-kd"]
CMD ["--help"]

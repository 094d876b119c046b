# wildfire-kd: the model-build pipeline in one image, and (target `edge`) the camera runtime alone.
#   docker build -t wildfire-kd .
#   docker build --target edge -t wildfire-kd-edge .     # numpy, onnxruntime, OpenCV: `wildfire-kd-edge`
#   docker run --gpus all -v /path/to/data:/data:ro -v /path/to/weights:/weights:ro -v "$PWD/out":/out \
#       wildfire-kd train --data /data/data.yaml --teacher /weights/teacher.pt --out /out
# Mount points: /data (dataset, read-only), /weights (teacher and optional yolov8n.pt, read-only), /out (results).
# A slim Python base is enough: PyTorch's CUDA wheels carry the CUDA libraries and `--gpus all` brings the driver.
# Tests build FROM a local Debian base instead (--build-arg BASE_IMAGE=...); production keeps this pinned tag.
# Every metadata instruction comes before the dependency install and one COPY after it: builders that store each
# layer in full (the vfs driver) then copy the multi-GB torch layer once, not once per instruction.
ARG BASE_IMAGE=python:3.11.7-slim-bookworm
FROM ${BASE_IMAGE} AS pipeline

ARG GIT_COMMIT=unknown
ARG DEBIAN_FRONTEND=noninteractive

# opencv (an ultralytics dependency) needs these shared libraries, which a slim image lacks.
# DL3008 (pin apt versions) is ignored on purpose: Debian replaces package versions with each security update, so
# exact pins break the build within weeks; the base image tag pins the distribution release instead.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 libxcb1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 1000 --shell /usr/sbin/nologin kd \
    && mkdir -p /data /weights /out /opt/venv /opt/wildfire-kd \
    && chown 1000:1000 /out /opt/venv /opt/wildfire-kd

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

USER 1000:1000
WORKDIR /out
VOLUME ["/out"]
ENTRYPOINT ["wildfire-kd"]
CMD ["--help"]

# Dependencies first, in a layer only pyproject.toml invalidates: the install is editable, so the source copied
# afterwards is what runs, and a code change does not download torch again.
COPY --chown=1000:1000 pyproject.toml README.md /opt/wildfire-kd/
COPY --chown=1000:1000 scripts/install.sh /opt/wildfire-kd/scripts/install.sh
COPY --chown=1000:1000 build/wildfire_kd/__init__.py /opt/wildfire-kd/build/wildfire_kd/__init__.py
# the same install script as the README's `make install`, without the dev tools. DL3003 (use WORKDIR) is
# ignored on purpose: WORKDIR is /out for users, and switching it here would add a full layer copy under vfs.
# hadolint ignore=DL3003
RUN cd /opt/wildfire-kd && scripts/install.sh /opt/venv openvino,ncnn

# one layer for the source: .dockerignore admits only pyproject.toml, README.md, scripts/install.sh, configs/, build/
COPY --chown=1000:1000 . /opt/wildfire-kd/

# --- edge: what a field camera runs (wildfire-kd-edge: student.onnx over frames, temporal alarms) ---------------
# Last, so that the legacy builder (which builds every stage before the target) builds it only when asked for.
#   docker run --rm --network none -v /frames:/frames:ro -v /models:/models:ro -v "$PWD/out":/out \
#       wildfire-kd-edge --onnx /models/student.onnx /frames --sequence --out /out
#   docker run -d -v /etc/wildfire:/etc/wildfire:ro -v /models:/models:ro -v wildfire-state:/state wildfire-kd-edge \
#       serve --cameras /etc/wildfire/cameras.yaml --model /models/student.onnx --state /state --host 0.0.0.0
FROM ${BASE_IMAGE} AS edge
# /state: the camera service's state folder (`serve --state /state`); a named volume mounted there takes its owner
RUN useradd --create-home --uid 1000 --shell /usr/sbin/nologin kd \
    && mkdir -p /out /opt/edge /state \
    && chown 1000:1000 /out /opt/edge /state
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/opt/edge/src \
    PATH=/opt/edge/venv/bin:$PATH
USER 1000:1000
WORKDIR /out
ENTRYPOINT ["python3", "-m", "wildfire_kd.edge"]
CMD ["--help"]
# serve's /healthz and /metrics
EXPOSE 9108
# one inference runtime per image: onnxruntime (default), openvino (Intel CPUs) or ncnn (ARM boards)
ARG EDGE_RUNTIME=onnxruntime
COPY --chown=1000:1000 build/wildfire_kd/edge/requirements.txt \
    build/wildfire_kd/edge/requirements-${EDGE_RUNTIME}.txt /opt/edge/
# pip leaves with the install (the camera never installs anything), and so do the wheels' tests and type stubs
RUN python3 -m venv /opt/edge/venv \
    && /opt/edge/venv/bin/pip install --no-deps -r /opt/edge/requirements.txt \
        -r "/opt/edge/requirements-${EDGE_RUNTIME}.txt" \
    && /opt/edge/venv/bin/pip uninstall -y pip setuptools \
    && find /opt/edge/venv \( -name tests -o -name __pycache__ \) -type d -prune -exec rm -rf {} + \
    && find /opt/edge/venv -name "*.pyi" -delete
# the edge package whole, and the pure helpers it imports (tests/test_edge_imports.py checks this list against the
# imports): if it ever imports more (torch, ultralytics, pydantic), the edge container test fails
COPY --chown=1000:1000 build/wildfire_kd/__init__.py build/wildfire_kd/errors.py build/wildfire_kd/guard.py \
    build/wildfire_kd/layout.py \
    /opt/edge/src/wildfire_kd/
COPY --chown=1000:1000 build/wildfire_kd/edge /opt/edge/src/wildfire_kd/edge

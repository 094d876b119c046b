"""The container image (`wildfire-kd image build` / `image run`) through the Docker SDK.

`run_request` is a pure function (what the container gets: all GPUs, the mounts, the caller's uid, the
environment), so it is tested without an engine; `run` hands it to the engine, streams the logs and returns
the container's exit code as its own.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from . import __version__
from .errors import InputError, StageFailure
from .reports import git_commit

IMAGE_NAME = "wildfire-kd"
TARGETS = {"pipeline": IMAGE_NAME, "edge": f"{IMAGE_NAME}-edge"}  # Dockerfile stage -> image name
MOUNTS = {"data": ("/data", "ro"), "weights": ("/weights", "ro"), "out": ("/out", "rw")}


def image_tag(commit: str | None = None, name: str = IMAGE_NAME) -> str:
    commit = commit if commit is not None else git_commit()
    return f"{name}:{__version__}-{commit[:12]}" if commit else f"{name}:{__version__}"


def client():
    import docker

    try:
        # no read timeout: a build or a container runs as long as it runs (logs can be quiet for minutes, and the
        # vfs storage driver copies the whole image to create a container); Ctrl-C stops waiting
        engine = docker.from_env(timeout=None)
        engine.ping()
    except Exception as e:  # no socket, permission denied, engine down
        raise InputError(f"no Docker engine answers ({e}); start one or set DOCKER_HOST") from e
    return engine


def build(
    context: str | Path = ".",
    tag: str | None = None,
    base_image: str | None = None,
    engine=None,
    network_mode: str | None = None,
    target: str = "pipeline",
    runtime: str | None = None,
) -> list[str]:
    """Build the Dockerfile's ``target`` stage (pipeline: wildfire-kd, edge: wildfire-kd-edge) from ``context``;
    tags it with version-commit and latest; streams the build log. ``runtime``: the edge image's inference runtime
    (onnxruntime by default; openvino and ncnn images are named wildfire-kd-edge-<runtime>)."""
    from .edge.runtimes import RUNTIMES

    context = Path(context)
    if not (context / "Dockerfile").is_file():
        raise InputError(f"{context} has no Dockerfile (run from the wildfire-kd checkout or pass --context)")
    if target not in TARGETS:
        raise InputError(f"--target {target!r}: the Dockerfile has {', '.join(TARGETS)}")
    if runtime is not None and (target != "edge" or runtime not in RUNTIMES):
        raise InputError(
            f"--runtime {runtime!r}: the edge target takes one of {', '.join(RUNTIMES)} (--target edge --runtime ...)"
        )
    engine = engine or client()
    commit = git_commit() or "unknown"
    name = TARGETS[target] + (f"-{runtime}" if runtime not in (None, "onnxruntime") else "")
    tags = [tag or image_tag(commit, name), f"{name}:latest"]
    buildargs = {"GIT_COMMIT": commit, **({"BASE_IMAGE": base_image} if base_image else {})}
    if runtime:
        buildargs["EDGE_RUNTIME"] = runtime
    stream = engine.api.build(
        path=str(context),
        tag=tags[0],
        buildargs=buildargs,
        rm=True,
        decode=True,
        network_mode=network_mode,
        target=target,
    )
    for chunk in stream:
        if "error" in chunk:
            raise StageFailure(f"image build failed: {chunk['error'].strip()}")
        if text := chunk.get("stream"):
            sys.stdout.write(text)
    image = engine.images.get(tags[0])
    for extra in tags[1:]:
        repo, _, label = extra.partition(":")
        image.tag(repo, label)
    return tags


def parse_user(user: str | None) -> dict[str, int]:
    """``--user UID[:GID]`` as run_request's uid/gid (empty: the caller's own); a name or anything else: exit 2."""
    if not user:
        return {}
    uid, _, gid = user.partition(":")
    if not uid.isdigit() or not (gid.isdigit() or gid == "") or user.count(":") > 1:
        raise InputError(f"--user {user!r}: expected numeric UID or UID:GID, e.g. --user 1000:1000 (`id -u`:`id -g`)")
    return {"uid": int(uid), "gid": int(gid or uid)}


def run_request(
    command: list[str],
    image: str | None = None,
    data: str | Path | None = None,
    weights: str | Path | None = None,
    out: str | Path | None = None,
    gpus: bool = True,
    network: str | None = None,
    uid: int | None = None,
    gid: int | None = None,
) -> dict[str, Any]:
    """Keyword arguments for ``docker.containers.create``: what the container gets, nothing else."""
    from docker.types import DeviceRequest

    volumes = {}
    for name, host in (("data", data), ("weights", weights), ("out", out)):
        if host is None:
            continue
        path = Path(host).resolve()
        if name != "out" and not path.is_dir():
            raise InputError(f"--{name} {host}: not a folder (mount a folder, it appears at {MOUNTS[name][0]})")
        if name == "out":
            path.mkdir(parents=True, exist_ok=True)
        bind, mode = MOUNTS[name]
        volumes[str(path)] = {"bind": bind, "mode": mode}
    request: dict[str, Any] = {
        "image": image or f"{IMAGE_NAME}:latest",
        "command": list(command),
        "volumes": volumes,
        # the caller's uid, so files written into /out belong to whoever ran the command
        "user": f"{os.getuid() if uid is None else uid}:{os.getgid() if gid is None else gid}",
        "environment": {"YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "0", "PYTHONUNBUFFERED": "1"},
        "working_dir": "/out",
        "shm_size": "8g",  # dataloader workers share batches through /dev/shm
    }
    if gpus:
        request["device_requests"] = [DeviceRequest(count=-1, capabilities=[["gpu"]])]
    if network:
        request["network_mode"] = network
    return request


def _start_error(error: Exception, request: dict[str, Any]) -> InputError:
    """What the engine's refusal means for the user, and what to do (exit 2)."""
    text = " ".join(str(getattr(error, "explanation", None) or error).split())
    if "could not select device driver" in text or "nvidia" in text.lower():
        return InputError(
            f"the Docker engine cannot give the container GPUs ({text}): install the NVIDIA Container Toolkit on this "
            "host, or run without GPUs: wildfire-kd image run --no-gpus ..."
        )
    if type(error).__name__ == "ImageNotFound" or "No such image" in text:
        return InputError(f"image {request['image']} not found ({text}): build it with `wildfire-kd image build`")
    return InputError(f"the Docker engine refused to start {request['image']}: {text}")


def run(request: dict[str, Any], engine=None) -> int:
    """Create and start the container, stream its output, remove it; returns its exit code.

    A container that cannot start (no GPU runtime, missing image) is removed and reported as bad input."""
    import docker

    engine = engine or client()
    try:
        container = engine.containers.create(**request)
    except docker.errors.DockerException as e:
        raise _start_error(e, request) from None
    try:
        try:
            container.start()
        except docker.errors.DockerException as e:
            raise _start_error(e, request) from None
        for chunk in container.logs(stream=True, follow=True):
            sys.stdout.buffer.write(chunk)
            sys.stdout.flush()
        return int(container.wait()["StatusCode"])
    finally:
        container.remove(force=True)

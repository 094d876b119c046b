"""The Docker SDK commands: the request is checked without an engine; the real run needs one."""

from __future__ import annotations

import os
import re

import pytest

from conftest import REPO
from wildfire_kd.container import IMAGE_NAME, image_tag, run_request
from wildfire_kd.errors import InputError


def test_run_request_asks_for_all_gpus_mounts_uid_and_offline_env(tmp_path):
    data, weights, out = tmp_path / "data", tmp_path / "weights", tmp_path / "out"
    data.mkdir()
    weights.mkdir()
    req = run_request(
        ["build", "--data", "/data/data.yaml"],
        image="wildfire-kd:test",
        data=data,
        weights=weights,
        out=out,
        network="none",
        uid=1234,
        gid=567,
    )
    (gpu,) = req["device_requests"]
    assert gpu["Count"] == -1 and gpu["Capabilities"] == [["gpu"]]  # all GPUs, like --gpus all
    assert req["volumes"] == {
        str(data.resolve()): {"bind": "/data", "mode": "ro"},
        str(weights.resolve()): {"bind": "/weights", "mode": "ro"},
        str(out.resolve()): {"bind": "/out", "mode": "rw"},
    }
    assert out.is_dir(), "the output folder exists before the container writes into it"
    assert req["user"] == "1234:567" and req["network_mode"] == "none"
    assert req["environment"]["YOLO_OFFLINE"] == "1" and req["environment"]["YOLO_AUTOINSTALL"] == "0"
    assert req["command"] == ["build", "--data", "/data/data.yaml"] and req["image"] == "wildfire-kd:test"


def test_run_request_defaults_to_the_callers_uid_and_can_skip_gpus(tmp_path):
    req = run_request(["--help"], gpus=False)
    assert req["user"] == f"{os.getuid()}:{os.getgid()}"
    assert "device_requests" not in req and req["volumes"] == {} and req["image"] == f"{IMAGE_NAME}:latest"


def test_run_request_refuses_a_missing_data_folder(tmp_path):
    with pytest.raises(InputError, match="--data .*not a folder"):
        run_request(["train"], data=tmp_path / "missing")


def test_image_tag_carries_version_and_commit():
    assert image_tag("0123456789abcdef0123") == "wildfire-kd:0.1.0-0123456789ab"


def test_dockerignore_keeps_data_runs_and_weights_out():
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    assert ignore[1] == "*" or "*" in ignore  # deny by default
    allowed = {line[1:] for line in ignore if line.startswith("!")}
    assert allowed == {
        "pyproject.toml",
        "README.md",
        "scripts/install.sh",
        "configs/",
        "build/",
    }
    assert "**/*.pt" in ignore and "**/*.onnx" in ignore


def test_dockerfile_installs_like_the_readme():
    dockerfile = (REPO / "Dockerfile").read_text()
    makefile = (REPO / "Makefile").read_text()
    assert (
        "&& scripts/install.sh /opt/venv openvino,ncnn\n" in dockerfile and "scripts/install.sh $(VENV) dev" in makefile
    )
    assert 'ENTRYPOINT ["wildfire-kd"]' in dockerfile and 'CMD ["--help"]' in dockerfile
    assert "USER 1000:1000" in dockerfile and "YOLO_OFFLINE=1" in dockerfile


def test_a_container_that_cannot_start_is_removed_and_reported_as_bad_input():
    import docker

    from wildfire_kd.container import run

    removed = []

    class Container:
        def start(self):
            raise docker.errors.APIError(
                "500 Server Error", explanation='could not select device driver "" with capabilities: [[gpu]]'
            )

        def remove(self, force):
            removed.append(force)

    class Engine:
        class containers:  # noqa: N801 - the Docker SDK's attribute name
            @staticmethod
            def create(**request):
                return Container()

    with pytest.raises(InputError, match=r"cannot give the container GPUs .*NVIDIA Container Toolkit.*--no-gpus"):
        run(run_request(["--help"]), engine=Engine())
    assert removed == [True], "the created container is removed, not left in state Created"


def test_the_model_build_workflow_mounts_the_config_it_passes():
    """The config is named relative to the repository; the container must see that very file (it saw only configs/,
    so any other path failed inside the container)."""
    import yaml

    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "model-build.yml").read_text())
    step = next(s for s in workflow["jobs"]["build-model"]["steps"] if s.get("name", "").startswith("Build the model"))
    script = step["run"]
    mount = re.search(r'-v "\$\{GITHUB_WORKSPACE\}:(/\w+):ro"', script)
    assert mount, "the checkout is mounted read-only"
    assert f'--config "{mount.group(1)}/${{CONFIG}}"' in script
    assert 'realpath -e "${CONFIG}"' in script, "a path outside the repository is refused before the build starts"


@pytest.mark.parametrize("user", ["kd", "1000:kd", "1000:1000:1", "-1", ""])
def test_image_run_user_must_be_numeric(user):
    from conftest import invoke_cli

    if not user:  # empty: the caller's own ids
        from wildfire_kd.container import parse_user

        assert parse_user(user) == {}
        return
    r = invoke_cli("image", "run", "--user", user, "--", "train")
    assert r.returncode == 2, r.stderr
    assert f"--user {user!r}: expected numeric UID or UID:GID" in r.stderr and "Traceback" not in r.stderr


def test_image_run_user_gives_the_ids():
    from wildfire_kd.container import parse_user

    assert parse_user("1234") == {"uid": 1234, "gid": 1234}
    assert parse_user("1234:100") == {"uid": 1234, "gid": 100}


def test_an_edge_image_per_runtime_gets_its_build_argument_and_its_own_name(monkeypatch):
    from wildfire_kd import container

    requests = []

    class Engine:
        class api:  # noqa: N801 - the Docker SDK's attribute name
            @staticmethod
            def build(**request):
                requests.append(request)
                return iter([{"stream": "built\n"}])

        class images:  # noqa: N801
            @staticmethod
            def get(tag):
                class Image:
                    def tag(self, repo, label):
                        pass

                return Image()

    monkeypatch.setattr(container, "git_commit", lambda: "abc")
    tags = container.build(REPO, engine=Engine(), target="edge", runtime="openvino")
    assert requests[0]["buildargs"]["EDGE_RUNTIME"] == "openvino" and requests[0]["target"] == "edge"
    assert tags[1] == "wildfire-kd-edge-openvino:latest"
    tags = container.build(REPO, engine=Engine(), target="edge")
    assert "EDGE_RUNTIME" not in requests[1]["buildargs"] and tags[1] == "wildfire-kd-edge:latest"
    for target, runtime in (("pipeline", "ncnn"), ("edge", "tensorrt")):
        with pytest.raises(InputError, match=r"--runtime .*onnxruntime, openvino, ncnn"):
            container.build(REPO, engine=Engine(), target=target, runtime=runtime)
    # the Dockerfile's default is the image a plain `--target edge` builds
    assert "ARG EDGE_RUNTIME=onnxruntime" in (REPO / "Dockerfile").read_text()

"""Training you can watch: TensorBoard event files and an MLflow run, offline by default (`train.loggers`).

TensorBoard writes RUN/tensorboard/ (a resumed run appends to the same folder, which TensorBoard reads as one run).
MLflow logs into MLFLOW_TRACKING_URI when it is set, else into a local SQLite database OUT/mlflow.db with the
artifacts under OUT/mlartifacts (MLflow 3 keeps its plain-file store in maintenance mode); telemetry is off. The
run's id is kept in RUN/tracking.json, so a resumed run, the after-train validation and `build`'s artifacts all
land in the same MLflow run. What is logged: every per-epoch column (losses with the KD terms, val metrics,
learning rates), the resolved config as parameters, the student-vs-teacher figures and gates, and (build) the
ONNX files, reports and MODEL_CARD.md. Needs the optional packages: pip install 'wildfire-kd[tracking]'.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .errors import InputError
from .layout import MLFLOW_ARTIFACTS, MLFLOW_DB, TENSORBOARD_DIR, TRACKING_STATE
from .reports import write_json

EXPERIMENT = "wildfire-kd"
PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow"}


def check_available(loggers: list[str]) -> None:
    """Exit 2 now, naming the extra, when a requested tracker's package is missing."""
    import importlib.util

    missing = [name for name in loggers if importlib.util.find_spec(PACKAGES[name]) is None]
    if missing:
        raise InputError(
            f"train.loggers asks for {', '.join(missing)}, but {' and '.join(PACKAGES[m] for m in missing)} "
            "is not installed: pip install 'wildfire-kd[tracking]' (or remove it from train.loggers)"
        )
    if "mlflow" in loggers:
        check_mlflow_server(os.environ.get("MLFLOW_TRACKING_URI"))


SERVER_TIMEOUT_S = 5.0  # an MLflow server answers its API at once; a dead or wrong one must not hang a training


def check_mlflow_server(uri: str | None) -> None:
    """An http(s) MLFLOW_TRACKING_URI must be an MLflow server that answers now (exit 2 naming the variable), not
    after the training it was to record: a closed port hung MLflow's own retries for minutes, a wrong URL failed
    at the first epoch. Local stores (sqlite:, file:, a path) need no check."""
    import json as json_module
    import urllib.error
    import urllib.request

    if not uri or not uri.startswith(("http://", "https://")):
        return
    probe = uri.rstrip("/") + "/api/2.0/mlflow/experiments/search?max_results=1"
    fix = "start the server, fix the URL, or unset MLFLOW_TRACKING_URI for the local database"
    try:
        with urllib.request.urlopen(probe, timeout=SERVER_TIMEOUT_S) as answer:
            json_module.loads(answer.read() or b"{}")
    except urllib.error.HTTPError as e:
        if e.code in (401, 403):
            return  # a server that wants credentials: MLflow reads them from its own variables
        raise InputError(
            f"MLFLOW_TRACKING_URI={uri} answers HTTP {e.code} to MLflow's API: not an MLflow server; {fix}"
        ) from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise InputError(f"MLFLOW_TRACKING_URI={uri}: no MLflow server answers ({reason}); {fix}") from None


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


class Trackers:
    """The trackers of one training run. Open with :meth:`open`; every method is a no-op for absent trackers."""

    def __init__(self, run_dir: Path, loggers: list[str], out_dir: Path):
        self.run_dir, self.loggers, self.out_dir = Path(run_dir), list(loggers), Path(out_dir)
        self.writer = None
        self.mlflow = None
        self.mlflow_run_id: str | None = None

    @classmethod
    def open(cls, run_dir: str | Path, loggers: list[str], out_dir: str | Path, params: dict[str, Any]) -> Trackers:
        """Start (or, when RUN/tracking.json names one, continue) the run in each tracker."""
        trackers = cls(Path(run_dir), loggers, Path(out_dir))
        state_path = trackers.run_dir / TRACKING_STATE
        state = json.loads(state_path.read_text(encoding="utf-8")) if state_path.is_file() else {}
        if "tensorboard" in loggers:
            from torch.utils.tensorboard import SummaryWriter

            trackers.writer = SummaryWriter(log_dir=str(trackers.run_dir / TENSORBOARD_DIR))
        if "mlflow" in loggers:
            trackers._open_mlflow(state.get("mlflow_run_id"), params)
            state.update(mlflow_run_id=trackers.mlflow_run_id, mlflow_tracking_uri=trackers.mlflow.get_tracking_uri())
        write_json(state_path, state)
        return trackers

    def _open_mlflow(self, run_id: str | None, params: dict[str, Any]) -> None:
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # offline: no usage reports
        os.environ.setdefault("DO_NOT_TRACK", "1")
        import mlflow

        uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(self.out_dir / MLFLOW_DB).resolve()}"
        mlflow.set_tracking_uri(uri)
        if run_id is None:
            experiment = mlflow.get_experiment_by_name(EXPERIMENT)
            artifacts = (self.out_dir / MLFLOW_ARTIFACTS).resolve().as_uri()  # not ./mlruns of the working directory
            experiment_id = experiment.experiment_id if experiment else mlflow.create_experiment(EXPERIMENT, artifacts)
            run = mlflow.start_run(experiment_id=experiment_id, run_name=self.run_dir.name)
            mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        else:  # a resumed run: the same MLflow run, not a new one
            run = mlflow.start_run(run_id=run_id)
        self.mlflow, self.mlflow_run_id = mlflow, run.info.run_id

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        clean = {k: float(v) for k, v in metrics.items() if v is not None and _finite(v)}
        if self.writer is not None:
            for key, value in clean.items():
                self.writer.add_scalar(key, value, step)
            self.writer.flush()
        if self.mlflow is not None:
            self.mlflow.log_metrics({_mlflow_key(k): v for k, v in clean.items()}, step=step)

    def log_summary(self, figures: dict[str, Any]) -> None:
        """End-of-run figures (student vs teacher, gates): metrics where numeric, tags otherwise."""
        flat = flatten(figures)
        numbers = {k: v for k, v in flat.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        self.log_metrics(numbers, step=0)
        if self.mlflow is not None:
            self.mlflow.set_tags({_mlflow_key(k): str(v)[:500] for k, v in flat.items() if k not in numbers})

    def log_artifacts(self, paths: list[Path], folder: str | None = None) -> None:
        if self.mlflow is not None:
            for path in paths:
                if Path(path).is_file():
                    self.mlflow.log_artifact(str(path), artifact_path=folder)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self.mlflow is not None:
            self.mlflow.end_run()
            self.mlflow = None


def _finite(value: Any) -> bool:
    import math

    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _mlflow_key(key: str) -> str:
    """MLflow keys allow letters, digits, _ - . / and spaces: ultralytics' 'metrics/mAP50(B)' loses its brackets."""
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in key)

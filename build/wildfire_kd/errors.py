"""Error types whose class decides the process exit code (see DESIGN.md, "Commands")."""

from __future__ import annotations


class WildfireKDError(Exception):
    """Base class: a failure the user can act on. ``exit_code`` is what the CLI returns."""

    exit_code = 3


class InputError(WildfireKDError):
    """Bad input or configuration: a missing file, a wrong value, a dataset that does not fit the teacher."""

    exit_code = 2


class GateFailure(WildfireKDError):
    """A quality gate failed: the run worked but its result must not ship."""

    exit_code = 1


class StageFailure(GateFailure):
    """A stage's own check failed: the ONNX checker, the simplifier, parity out of tolerance."""


class TrainingDiverged(GateFailure):
    """Too many consecutive optimizer steps had a non-finite loss or gradient."""


class TrainingTerminated(WildfireKDError):
    """SIGTERM (e.g. `docker stop`): the current step finished, the last epoch checkpoint is intact."""

    exit_code = 143

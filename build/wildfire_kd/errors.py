"""Error types whose class decides the process exit code (the README's "When things go wrong").

0 success · 1 the model is not good enough (a gate, parity out of tolerance, training diverged) · 2 bad input or
configuration · 3 the tool broke (a stage's own tool failed, or any unexpected exception) · 4 the disk the output goes
to is full (the machine, not the input nor the tool: the previous complete outputs are kept) · 143 SIGTERM.
"""

from __future__ import annotations

DEBUG_ENV = "WILDFIRE_KD_DEBUG"  # "1": an internal error prints its traceback (`wildfire-kd --debug`)
INTERNAL_ERROR_EXIT = 3


class WildfireKDError(Exception):
    """Base class: a failure the user can act on. ``exit_code`` is what the CLI returns."""

    exit_code = 3


class InputError(WildfireKDError):
    """Bad input or configuration: a missing file, a wrong value, a dataset that does not fit the teacher."""

    exit_code = 2


class GateFailure(WildfireKDError):
    """The run worked but its result must not ship: a quality gate, parity out of tolerance."""

    exit_code = 1


class TrainingDiverged(GateFailure):
    """Too many consecutive optimizer steps had a non-finite loss or gradient."""


class StageFailure(WildfireKDError):
    """A stage's own tool broke (the exporter, the ONNX checker, the simplifier, the image build): not the model."""

    exit_code = 3


class TrainingTerminated(WildfireKDError):
    """SIGTERM (e.g. `docker stop`): the current step finished, the last epoch checkpoint is intact."""

    exit_code = 143


class DiskFull(WildfireKDError):
    """No space left where the output goes: free some or write elsewhere. What was complete before is kept (every
    output is written beside its final name and renamed over it)."""

    exit_code = 4

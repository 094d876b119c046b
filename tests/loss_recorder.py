"""`python tests/loss_recorder.py RECORD ARGS...`: the CLI, with every training loss the model returned recorded.

Each optimizer-bound loss (computed with gradients on) is appended to RECORD as one JSON number: the sum of the
vector the model's loss returned, per image. The batch-log tests compare the logged ``total`` with these, so they
check the log against the criterion's own output rather than against a copy of the objective.
"""

from __future__ import annotations

import json
import sys

from wildfire_kd.ultralytics_env import prepare_ultralytics

prepare_ultralytics()

import torch  # noqa: E402
from ultralytics.nn.distill_model import DistillationModel  # noqa: E402
from ultralytics.nn.tasks import BaseModel  # noqa: E402

RECORD = sys.argv.pop(1)
_depth = 0  # ultralytics' feature-KD wrapper calls the student's loss inside its own: record the outermost only


def recording(loss):
    def wrapper(self, batch, preds=None):
        global _depth
        _depth += 1
        try:
            vector, items = loss(self, batch, preds)
        finally:
            _depth -= 1
        if _depth == 0 and torch.is_grad_enabled():
            with open(RECORD, "a", encoding="utf-8") as f:
                f.write(json.dumps(float(vector.detach().sum()) / batch["img"].shape[0]) + "\n")
        return vector, items

    return wrapper


BaseModel.loss = recording(BaseModel.loss)
DistillationModel.loss = recording(DistillationModel.loss)

if __name__ == "__main__":
    from wildfire_kd.cli import main

    main()

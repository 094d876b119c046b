"""The `train` stage and the distillation it runs. Start at stage.py.

stage.py    train(): the inputs checked once, the trainer, the after-train validation, train.json
trainer.py  DistillationTrainer: ultralytics' DetectionTrainer with the teacher, the KD criterion, the stability
            guard, the batch log and the trackers
loss.py     the objective (dense and pseudo criteria): the only place it is written
"""

from .stage import TrainResult, train

__all__ = ["TrainResult", "train"]

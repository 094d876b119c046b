"""The `validate` stage: student against teacher on the same split. Start at stage.py.

stage.py           validate / validate_from_config: load both models once, evaluate, write the reports
metrics.py         accuracy and cost through ultralytics' validator, the operating point, teacher agreement
camera_figures.py  false alarms on smoke-free frames and recall by object size at the operating point
gates.py           the configured thresholds against the figures
report.py          validation.md and validation.png
result.py          ValidationResult: what validation.json holds, and ValidationResult.load to read it back
"""

from .result import Gate, ModelFigures, ValidationResult
from .stage import validate, validate_from_config

__all__ = ["Gate", "ModelFigures", "ValidationResult", "validate", "validate_from_config"]

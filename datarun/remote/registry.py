"""The workflows a task.json may name: the function that turns a submission into predictions.

Kept apart from the workflows themselves, so `ramp.py` can build on `workflows.py` (its
TaskFailure, PhaseClock, import_submission) without the two importing each other.
"""

from collections.abc import Callable

from .ramp import run_ramp
from .workflows import run_estimator

WORKFLOWS: dict[str, Callable] = {"estimator": run_estimator, "ramp": run_ramp}

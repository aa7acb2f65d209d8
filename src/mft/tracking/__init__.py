"""Experiment tracking (`report_to`): TensorBoard, Weights & Biases and MLflow, files under the run directory.

`Tracking` (session.py) is what the pipeline logs through; one `Tracker` per library (base.py) forwards it.
What is logged under which name: `scalars.py` and docs/tracking.md.
"""

from mft.tracking.base import EXTRA, TRACKERS, Tracker, check_trackers, trackers_of
from mft.tracking.session import Tracking, read_metrics

__all__ = ["EXTRA", "TRACKERS", "Tracker", "Tracking", "check_trackers", "read_metrics", "trackers_of"]

"""The tracker interface: what every experiment tracker (`report_to`) is told, and which ones exist.

A tracker only forwards what it is given to its library; what is logged, when, and never twice is decided by
`Tracking` (`session.py`), and what the numbers are by `scalars.py`.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mft.errors import MftError
from mft.rundir import RunDir

# name -> (module:Class, the package it needs, the pip extra that brings it)
TRACKERS: dict[str, tuple[str, str]] = {
    "tensorboard": ("mft.tracking.tensorboard_tracker:TensorBoardTracker", "tensorboard"),
    "wandb": ("mft.tracking.wandb_tracker:WandbTracker", "wandb"),
    "mlflow": ("mft.tracking.mlflow_tracker:MlflowTracker", "mlflow"),
}
EXTRA = "track"  # pip install 'mft[track]' brings every tracker's package

_TRAIN = re.compile(r"(train/iter_\d+/[^/]+)/[^/]+")


def axis_of(name: str) -> str:
    """The x axis of scalar `name`: 'iteration' for the per-iteration figures, '<prefix>/step' for a
    training curve ('train/iter_1/gen_0/loss' -> 'train/iter_1/gen_0/step', its optimizer steps)."""
    m = _TRAIN.fullmatch(name)
    return f"{m.group(1)}/step" if m else "iteration"


def trackers_of(report_to: Sequence[str]) -> list[str]:
    """The trackers a `report_to` setting names ('none' names none)."""
    return [t for t in report_to if t != "none"]


def check_trackers(report_to: Sequence[str]) -> None:
    """Refuse, before any model work, a tracker whose package is not installed: one line naming the extra."""
    for name in trackers_of(report_to):
        if name not in TRACKERS:
            choices = ", ".join(TRACKERS)
            raise MftError(f"unknown tracker {name!r} in report_to", hint=f"choose from {choices}, or none")
        package = TRACKERS[name][1]
        if importlib.util.find_spec(package) is None:
            raise MftError(
                f"report_to {name} needs the {package} package, which is not installed",
                hint=f"pip install 'mft[{EXTRA}]' (or pip install {package}), or drop {name} from report_to",
            )


class Tracker(ABC):
    """One experiment tracker's run, opened on a run directory (its files, where it keeps any, go there).

    `fresh` is True when the tracker holds none of what earlier processes logged (a new W&B / MLflow run, an
    emptied TensorBoard directory): `Tracking` then replays `metrics.json` into it first. `state()` is what
    `tracking.json` keeps so that the next process continues the same tracker run.
    """

    name = "tracker"
    fresh = True

    @abstractmethod
    def __init__(self, rd: RunDir, title: str, group: str | None, state: dict[str, Any], logged: int) -> None:
        """`title` names the run (a reproduce's method runs share `group`); `state` is what `state()` gave
        last time; `logged` is how many points `metrics.json` holds."""

    @abstractmethod
    def log_params(self, params: dict[str, Any]) -> None:
        """The run's settings (JSON values, mappings nested)."""

    @abstractmethod
    def log_scalars(self, scalars: dict[str, float], step: int) -> None:
        """Scalars that share one x axis (`axis_of`) at `step` on it."""

    @abstractmethod
    def log_image(self, tag: str, png: Path, step: int) -> None:
        """A PNG file as image `tag` at iteration `step`."""

    def state(self) -> dict[str, Any]:
        return {}

    @abstractmethod
    def finish(self) -> None:
        """Flush and close."""


def make_tracker(
    name: str, rd: RunDir, title: str, group: str | None, state: dict[str, Any], logged: int
) -> Tracker:
    module, _, cls = TRACKERS[name][0].partition(":")
    tracker: Tracker = getattr(importlib.import_module(module), cls)(rd, title, group, state, logged)
    return tracker

"""TensorBoard: event files in `<run>/tensorboard/` (`tensorboard --logdir runs/<name>`), offline by nature.

Each process rewrites the directory: the event files of earlier processes are removed and everything
`metrics.json` holds is written again first (`Tracking`'s replay), so a resumed run's event files hold each
(tag, step) once, as an uninterrupted run's do, whatever an earlier process logged before it was killed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mft.rundir import RunDir
from mft.tracking.base import Tracker


class TensorBoardTracker(Tracker):
    name = "tensorboard"
    fresh = True  # always: the directory is rewritten from metrics.json

    def __init__(self, rd: RunDir, title: str, group: str | None, state: dict[str, Any], logged: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        rd.tensorboard.mkdir(parents=True, exist_ok=True)
        for old in rd.tensorboard.glob("events.out.tfevents.*"):
            old.unlink()
        self.writer: Any = SummaryWriter(log_dir=str(rd.tensorboard), flush_secs=10)

    def log_params(self, params: dict[str, Any]) -> None:
        # TensorBoard's text plugin renders markdown: an indented block keeps the JSON as written
        text = "\n".join("    " + line for line in json.dumps(params, indent=2, sort_keys=True).splitlines())
        self.writer.add_text("config", text, 0)

    def log_scalars(self, scalars: dict[str, float], step: int) -> None:
        for name, value in scalars.items():
            self.writer.add_scalar(name, value, step)

    def log_image(self, tag: str, png: Path, step: int) -> None:
        from matplotlib.image import imread

        self.writer.add_image(tag, imread(png), step, dataformats="HWC")

    def finish(self) -> None:
        self.writer.close()

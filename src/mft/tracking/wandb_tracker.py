"""Weights & Biases: `wandb.init(dir=<run>)`, so its files are in `<run>/wandb/`.

Mode: WANDB_MODE where set; else online where WANDB_API_KEY is set, offline otherwise (never the network
unasked; `wandb sync <run>/wandb/offline-run-*` uploads an offline run later). The run's id is kept in
`tracking.json`, and a resumed mft run continues the same W&B run (`resume="allow"`).

Each scalar is plotted against its own axis (`define_metric`): the iteration, or a training curve's
optimizer step. W&B's own row counter (`step=`) must only grow over the whole W&B run, across processes:
a process starts it at the number of points metrics.json holds (at least the rows logged before, since a
row holds at least one point), so a row an earlier process sent is never overwritten.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from mft.rundir import RunDir
from mft.tracking.base import Tracker, axis_of

PROJECT = "mft"  # WANDB_PROJECT wins


class WandbTracker(Tracker):
    name = "wandb"

    def __init__(self, rd: RunDir, title: str, group: str | None, state: dict[str, Any], logged: int) -> None:
        import wandb

        self.wandb: Any = wandb
        run_id = state.get("id")
        self.fresh = not isinstance(run_id, str)
        mode = os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
        self.run: Any = wandb.init(
            project=os.environ.get("WANDB_PROJECT") or PROJECT,
            name=title,
            group=group,
            id=run_id if isinstance(run_id, str) else secrets.token_hex(6),
            resume="allow",
            dir=str(rd.path),
            mode=mode,  # type: ignore[arg-type]
            settings=wandb.Settings(console="off", disable_git=True, save_code=False, x_disable_stats=True),
        )
        self.row = 0 if self.fresh else logged
        self.defined: set[str] = set()

    def state(self) -> dict[str, Any]:
        return {"id": self.run.id}

    def log_params(self, params: dict[str, Any]) -> None:
        self.run.config.update(params, allow_val_change=True)

    def _define(self, name: str, axis: str) -> None:
        if name not in self.defined:
            if axis not in self.defined:
                self.run.define_metric(axis, hidden=axis != "iteration")
                self.defined.add(axis)
            self.run.define_metric(name, step_metric=axis)
            self.defined.add(name)

    def log_scalars(self, scalars: dict[str, float], step: int) -> None:
        rows: dict[str, dict[str, Any]] = {}
        for name, value in scalars.items():
            axis = axis_of(name)
            self._define(name, axis)
            rows.setdefault(axis, {axis: step})[name] = value
        for row in rows.values():
            self.run.log(row, step=self.row)
            self.row += 1

    def log_image(self, tag: str, png: Path, step: int) -> None:
        self._define(tag, "iteration")
        self.run.log({"iteration": step, tag: self.wandb.Image(str(png))}, step=self.row)
        self.row += 1

    def finish(self) -> None:
        self.run.finish()

"""`Tracking`: the one object the pipeline logs through, fanning out to the trackers `report_to` names.

It keeps the run's `metrics.json` (every scalar sent: name -> [[step, value], ...]), which is what makes a
resumed run log what an uninterrupted one would: a (name, step) already there is never sent again, and a
tracker that holds none of it yet (TensorBoard, whose event files are rewritten by each process; a W&B or
MLflow run made by this process) is first sent all of it. The trackers are sent a point before
`metrics.json` records it, so a kill between the two sends it again (the same step, the same value).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from mft.backends.base import StepCallback, TrainStep
from mft.records import write_json_atomic
from mft.rundir import RunDir, parse_timing_key
from mft.tracking.base import Tracker, axis_of, check_trackers, make_tracker, trackers_of
from mft.tracking.scalars import iteration_scalars


class Tracking:
    """The trackers of one run directory and its `metrics.json`; with no tracker every call does nothing
    (and nothing is written)."""

    def __init__(self, rd: RunDir, trackers: list[Tracker]) -> None:
        self.rd = rd
        self.trackers = trackers
        self.ledger: dict[str, dict[int, float]] = read_metrics(rd.metrics) if trackers else {}

    @classmethod
    def open(cls, path: Path, report_to: Sequence[str], title: str, group: str | None = None) -> Tracking:
        """Open (or continue) the trackers of run directory `path`; an MftError names a missing package."""
        names = trackers_of(report_to)
        check_trackers(names)
        rd = RunDir(path)
        if not names:
            return cls(rd, [])
        states = _read_json(rd.tracking)
        logged = sum(len(points) for points in read_metrics(rd.metrics).values())
        trackers: list[Tracker] = []
        try:
            for name in names:
                trackers.append(make_tracker(name, rd, title, group, states.get(name) or {}, logged))
                states[name] = trackers[-1].state()
                write_json_atomic(rd.tracking, states)  # before logging: a kill continues this tracker run
        except BaseException:
            for tracker in trackers:
                tracker.finish()
            raise
        tracking = cls(rd, trackers)
        for tracker in trackers:
            if tracker.fresh:
                tracking._replay(tracker)
        return tracking

    @property
    def active(self) -> bool:
        return bool(self.trackers)

    def _replay(self, tracker: Tracker) -> None:
        """Send `tracker` everything metrics.json holds, one axis and step at a time, in order."""
        rows: dict[tuple[str, int], dict[str, float]] = {}
        for name, points in self.ledger.items():
            for step, value in points.items():
                rows.setdefault((axis_of(name), step), {})[name] = value
        for (_, step), scalars in sorted(rows.items()):
            tracker.log_scalars(scalars, step)

    # -- what the pipeline logs ------------------------------------------------------------------------------
    def log_params(self, params: dict[str, Any]) -> None:
        for tracker in self.trackers:
            tracker.log_params(params)

    def log(self, scalars: Mapping[str, float], step: int) -> None:
        """Send the scalars not logged at `step` yet (each call's names share one axis, see `axis_of`), then
        record them in metrics.json."""
        if not self.trackers:
            return
        new = {
            name: float(value)
            for name, value in scalars.items()
            if step not in self.ledger.get(name, {}) and math.isfinite(value)
        }
        if not new:
            return
        for tracker in self.trackers:
            tracker.log_scalars(new, step)
        for name, value in new.items():
            self.ledger.setdefault(name, {})[step] = value
        write_json_atomic(
            self.rd.metrics,
            {name: [[s, v] for s, v in sorted(points.items())] for name, points in self.ledger.items()},
        )

    def log_stage(self, key: str, seconds: float) -> None:
        """After a stage (`timings.json` key `key`) finished: its seconds and what its iteration's finished
        files now give (accuracies, data sizes, diversity)."""
        parsed = parse_timing_key(key)
        if parsed is None or not self.trackers:
            return
        k, stage = parsed
        self.log({f"seconds/{stage}": seconds, **iteration_scalars(self.rd, k)}, k)

    def train_curves(self, k: int) -> Callable[[str], StepCallback] | None:
        """For `stage_finetune`: agent slot -> the callback its finetune reports optimizer steps to, logged
        as train/iter_<k>/<slot>/{loss, lr, tokens} (and what else the objective measures, GRPO's reward and
        KL); None where nothing is tracked."""
        if not self.trackers:
            return None

        def for_agent(slot: str) -> StepCallback:
            prefix = f"train/iter_{k}/{slot}"

            def on_step(s: TrainStep) -> None:
                points = {"loss": s.loss, "lr": s.lr, "tokens": s.tokens, **s.extra}
                self.log({f"{prefix}/{name}": value for name, value in points.items()}, s.step)

            return on_step

        return for_agent

    def log_images(self, plots: Path, step: int) -> None:
        """Every PNG in `plots` (the report's) as image report/<name> at iteration `step`."""
        for png in sorted(plots.glob("*.png")) if self.trackers else []:
            for tracker in self.trackers:
                tracker.log_image(f"report/{png.stem}", png, step)

    def close(self) -> None:
        for tracker in self.trackers:
            tracker.finish()

    def __enter__(self) -> Tracking:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _read_json(path: Path) -> dict[str, Any]:
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def read_metrics(path: Path) -> dict[str, dict[int, float]]:
    """metrics.json as name -> {step: value} (empty where there is none)."""
    return {
        name: {int(step): float(value) for step, value in points}
        for name, points in _read_json(path).items()
        if isinstance(points, list)
    }

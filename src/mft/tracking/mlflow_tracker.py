"""MLflow: MLFLOW_TRACKING_URI where set, else a file store in `<run>/mlflow/`
(`mlflow ui --backend-store-uri runs/<name>/mlflow`); the experiment is MLFLOW_EXPERIMENT_NAME or 'mft'.

The run's id is kept in `tracking.json`, and a resumed mft run continues the same MLflow run. Recent MLflow
keeps its file store only behind MLFLOW_ALLOW_FILE_STORE, which is set for the default store (a database
needs MLflow's server packages; a file store needs nothing but the run directory).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from mft.rundir import RunDir
from mft.tracking.base import Tracker

EXPERIMENT = "mft"  # MLFLOW_EXPERIMENT_NAME wins
BATCH = 100  # MLflow's log_batch takes at most 100 params (and 1000 metrics) per call


class MlflowTracker(Tracker):
    name = "mlflow"

    def __init__(self, rd: RunDir, title: str, group: str | None, state: dict[str, Any], logged: int) -> None:
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            rd.mlflow.mkdir(parents=True, exist_ok=True)
            uri = rd.mlflow.resolve().as_uri()
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client: Any = MlflowClient(tracking_uri=uri)
        run_id = state.get("run_id") if state.get("tracking_uri") == uri else None
        if isinstance(run_id, str):
            try:
                self.client.update_run(run_id, status="RUNNING")
            except MlflowException:
                run_id = None  # that run is gone from the store: start another, sent everything
        self.fresh = not isinstance(run_id, str)
        if not isinstance(run_id, str):
            experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME") or EXPERIMENT
            found = self.client.get_experiment_by_name(experiment)
            exp_id = found.experiment_id if found is not None else self.client.create_experiment(experiment)
            tags = {"mft.run_dir": str(rd.path), **({"mft.group": group} if group else {})}
            run_id = self.client.create_run(exp_id, run_name=title, tags=tags).info.run_id
        self.run_id: str = run_id
        self.uri = uri

    def state(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "tracking_uri": self.uri}

    def log_params(self, params: dict[str, Any]) -> None:
        """Parameters not logged yet: MLflow refuses to change one, and a resumed run may change
        `iterations` or `runs_dir` (the run keeps the first value)."""
        from mlflow.entities import Param

        have = self.client.get_run(self.run_id).data.params
        new = [
            Param(k, v if isinstance(v, str) else json.dumps(v, sort_keys=True))
            for k, v in sorted(params.items())
            if k not in have
        ]
        for lo in range(0, len(new), BATCH):
            self.client.log_batch(self.run_id, params=new[lo : lo + BATCH])

    def log_scalars(self, scalars: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(name, value, now, step) for name, value in scalars.items()]
        for lo in range(0, len(metrics), 10 * BATCH):
            self.client.log_batch(self.run_id, metrics=metrics[lo : lo + 10 * BATCH])

    def log_image(self, tag: str, png: Path, step: int) -> None:
        self.client.log_artifact(self.run_id, str(png), artifact_path=str(Path(tag).parent))

    def finish(self) -> None:
        self.client.set_terminated(self.run_id)

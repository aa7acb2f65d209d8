"""Experiment tracking (`report_to`): what TensorBoard, W&B (offline) and MLflow (file store) receive, read
back with each library's own reader, against the run's metrics.json and results.json; a resumed run logs
what an uninterrupted one does, once. The loop runs with a scripted backend whose finetune reports a few
optimizer steps (the hf trainer's steps: tests/integration/test_train_curve.py)."""

from __future__ import annotations

import glob
import json
import struct
import time
import types
from pathlib import Path
from typing import Any

import pytest

from mft.backends.base import Agent, StepCallback, TrainStep
from mft.config import RunConfig
from mft.pipeline.run import run
from mft.tracking import read_metrics
from tests.conftest import ScriptedBackend
from tests.unit.test_pipeline import _cfg, _respond

pytest.importorskip("tensorboard")
pytest.importorskip("wandb")
pytest.importorskip("mlflow")

ALL = ["tensorboard", "wandb", "mlflow"]
STEPS = 3  # optimizer steps each scripted finetune reports


def _backend() -> ScriptedBackend:
    backend = ScriptedBackend(_respond)

    def finetune(
        agent: Agent, examples, out_dir: Path, settings=None, *, on_step: StepCallback | None = None
    ):  # type: ignore[no-untyped-def]
        for s in range(1, STEPS + 1):
            if on_step is not None:
                on_step(TrainStep(s, loss=len(examples) / s, lr=1e-3 * (1 - (s - 1) / STEPS), tokens=10 * s))
        out_dir.mkdir(parents=True)
        (out_dir / "adapter_model.safetensors").write_text(agent.name)
        return Agent(agent.name, str(out_dir))

    backend.finetune = finetune  # type: ignore[method-assign]
    return backend


def _tracked_cfg(path: Path, iterations: int) -> RunConfig:
    return _cfg(path, iterations=iterations, min_examples=1, diversity_problems=2, report_to=ALL)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, RunConfig]:
    """'resumed': 1 iteration, then continued to 2 by a second `run` (as `mft run --iterations 2` does);
    'whole': 2 iterations at once. Offline W&B, a file-store MLflow, nothing outside the temp directory."""
    root = tmp_path_factory.mktemp("tracking")
    with pytest.MonkeyPatch.context() as mp:
        for var in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "WANDB_API_KEY", "WANDB_PROJECT"):
            mp.delenv(var, raising=False)
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("WANDB_SILENT", "true")
        for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
            mp.setenv(var, str(root / "wandb-home"))
        # every process-run starts in the same second, as on a fast machine: W&B then suffixes the
        # directory of the second one, which a reader must still order after the first
        from wandb.sdk import wandb_init

        second = time.time()
        mp.setattr(wandb_init, "time", types.SimpleNamespace(time=lambda: second))
        out = {}
        for name, plan in (("resumed", [1, 2]), ("whole", [2])):
            for iterations in plan:  # the last one writes the report, as `mft run` does
                cfg = _tracked_cfg(root / name, iterations)
                run(cfg, progress=False, backend=_backend(), report=iterations == plan[-1])
            out[name] = cfg
    return out


def _ledger(cfg: RunConfig) -> dict[str, dict[int, float]]:
    return read_metrics(cfg.run_dir / "metrics.json")


def _deterministic(ledger: dict[str, dict[int, float]]) -> dict[str, dict[int, float]]:
    return {name: points for name, points in ledger.items() if not name.startswith("seconds/")}


def test_metrics_json_holds_the_runs_results_sizes_and_training_curves(runs) -> None:
    cfg = runs["whole"]
    ledger = _ledger(cfg)
    for k in (0, 1, 2):
        results = json.loads((cfg.run_dir / f"iter_{k}/eval/results.json").read_text())
        for reading in ("single", "majority", "debate"):
            assert ledger[f"accuracy/{reading}"][k] == results["accuracy"][reading]["mean"]
            assert ledger[f"accuracy/{reading}_se"][k] == results["accuracy"][reading]["se"]
        tokens = results["usage"]["generated_tokens"]  # None: the scripted backend has no tokenizer
        assert ledger.get("tokens/eval", {}).get(k) == tokens
        diversity = json.loads((cfg.run_dir / f"iter_{k}/diversity.json").read_text())
        assert ledger["diversity/consensus"][k] == diversity["consensus"]["mean"]
        assert {"eval", "diversity"} <= {n.split("/")[1] for n in ledger if n.startswith("seconds/")}
    for k in (1, 2):
        sizes = json.loads((cfg.run_dir / f"iter_{k}/data/sizes.json").read_text())
        assert ledger["data/D_G"][k] == sum(sizes[f"gen_{n}"]["examples"] for n in range(cfg.agents))
        corrected = sum(sizes[f"critic_{n}"]["corrected (D_C-)"] for n in range(cfg.agents))
        assert ledger["data/D_C_minus"][k] == corrected
        assert ledger["data/critic_1/D_C_minus"][k] == sizes["critic_1"]["corrected (D_C-)"]
        trained = [s for s in sizes if sizes[s]["examples"] >= cfg.min_examples]
        assert trained, "the scripted society trains some agent"
        for slot in trained:
            n = sizes[slot]["examples"]
            assert ledger[f"train/iter_{k}/{slot}/loss"] == {s: n / s for s in range(1, STEPS + 1)}
            assert ledger[f"train/iter_{k}/{slot}/tokens"] == {s: 10.0 * s for s in range(1, STEPS + 1)}
        untrained = [s for s in sizes if s not in trained]
        assert all(f"train/iter_{k}/{slot}/loss" not in ledger for slot in untrained)


def test_a_resumed_run_logs_what_an_uninterrupted_one_does(runs) -> None:
    assert _deterministic(_ledger(runs["resumed"])) == _deterministic(_ledger(runs["whole"]))
    assert _ledger(runs["resumed"]).keys() == _ledger(runs["whole"]).keys()


def _tensorboard(cfg: RunConfig) -> tuple[Any, list[str]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = sorted(glob.glob(str(cfg.run_dir / "tensorboard" / "events.out.tfevents.*")))
    # every file's events, read one file at a time: duplicates across files would show
    events: dict[str, list[tuple[int, float]]] = {}
    images: list[str] = []
    for f in files:
        acc = EventAccumulator(f, size_guidance={"scalars": 0, "images": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            events.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
        images += acc.Tags()["images"]
    return events, images


@pytest.mark.parametrize("name", ["resumed", "whole"])
def test_tensorboard_event_files_hold_metrics_json_once(runs, name) -> None:
    cfg = runs[name]
    events, images = _tensorboard(cfg)
    ledger = _ledger(cfg)
    assert set(events) == set(ledger)
    for tag, points in events.items():
        steps = [s for s, _ in points]
        assert len(steps) == len(set(steps)), f"{tag}: a step logged twice"
        assert dict(points) == pytest.approx(ledger[tag], rel=1e-6)  # float32 in the event file
    results = json.loads((cfg.run_dir / "iter_2/eval/results.json").read_text())
    assert dict(events["accuracy/debate"])[2] == pytest.approx(results["accuracy"]["debate"]["mean"])
    assert any(t.endswith("/loss") and t.startswith("train/iter_2/") for t in events)
    assert "report/accuracy" in images


def _wandb_records(path: str) -> list[Any]:
    """The records of a W&B transaction log (`run-<id>.wandb`), read with W&B's own protobuf: a 7-byte
    header, then LevelDB-style 32 KiB blocks of chunks (crc32, length, type: full / first / middle / last)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B"
    records, pos, buf, block = [], 7, b"", 32768
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:  # zero padding to the block's end
            pos += left
            continue
        buf += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(buf)
            records.append(record)
            buf = b""
    return records


def _wandb_order(path: str) -> tuple[str, int]:
    """W&B names a process-run's directory `offline-run-<second>-<id>`, adding `-1`, `-2`, ... when a
    directory of that second exists already: plain name order would put `...-<id>-1` before `...-<id>`."""
    stamp, _, rest = Path(path).parent.name.removeprefix("offline-run-").partition("-")
    suffix = rest.removeprefix(Path(path).stem.removeprefix("run-"))
    return stamp, int(suffix.lstrip("-") or 0)


@pytest.mark.parametrize("name", ["resumed", "whole"])
def test_wandb_offline_run_holds_metrics_json_once_in_one_run(runs, name) -> None:
    cfg = runs[name]
    state = json.loads((cfg.run_dir / "tracking.json").read_text())
    files = sorted(glob.glob(str(cfg.run_dir / "wandb" / "offline-run-*" / "run-*.wandb")), key=_wandb_order)
    # one W&B process-run per `run` call, each continuing the same W&B run
    assert len(files) == (2 if name == "resumed" else 1)
    assert {Path(f).name for f in files} == {f"run-{state['wandb']['id']}.wandb"}
    logged: dict[str, list[tuple[int, float]]] = {}
    rows: list[int] = []
    config: dict[str, Any] = {}
    images: set[str] = set()
    for f in files:
        for record in _wandb_records(f):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                config.update({u.key: json.loads(u.value_json) for u in record.run.config.update})
            if kind == "config":
                config.update({u.key: json.loads(u.value_json) for u in record.config.update})
            if kind == "history":
                items = record.history.item
                # an image is a nest of fields (its file, size, ...) under its tag
                images |= {i.nested_key[0] for i in items if len(i.nested_key) > 1}
                flat = [i for i in items if len(i.nested_key) <= 1]
                row = {"".join(i.nested_key) or i.key: json.loads(i.value_json) for i in flat}
                rows.append(row["_step"])
                scalars = {
                    n: v for n, v in row.items() if not n.startswith("_") and isinstance(v, float | int)
                }
                axes = {n for n in scalars if n == "iteration" or n.endswith("/step")}
                assert len(axes) == 1, row
                (axis,) = axes
                for n, v in scalars.items():
                    if n != axis:
                        logged.setdefault(n, []).append((row[axis], v))
    assert rows == sorted(rows) and len(rows) == len(set(rows)), "W&B's row step must only grow"
    ledger = _ledger(cfg)
    assert {n: dict(points) for n, points in logged.items()} == ledger
    assert all(len(points) == len(set(s for s, _ in points)) for points in logged.values())
    assert config["agents"] == cfg.agents and config["report_to"] == ALL
    assert "report/accuracy" in images


@pytest.mark.parametrize("name", ["resumed", "whole"])
def test_mlflow_file_store_holds_params_and_metrics_json_in_one_run(runs, name) -> None:
    from mlflow.tracking import MlflowClient

    cfg = runs[name]
    state = json.loads((cfg.run_dir / "tracking.json").read_text())["mlflow"]
    assert state["tracking_uri"] == (cfg.run_dir / "mlflow").resolve().as_uri()
    client = MlflowClient(tracking_uri=state["tracking_uri"])
    experiment = client.get_experiment_by_name("mft")
    assert experiment is not None
    (only,) = client.search_runs([experiment.experiment_id])
    assert only.info.run_id == state["run_id"] and only.info.status == "FINISHED"
    assert only.data.params["agents"] == str(cfg.agents)
    assert only.data.params["iterations"] == "1" if name == "resumed" else "2"  # MLflow keeps the first
    ledger = _ledger(cfg)
    for name_ in ledger:
        history = client.get_metric_history(only.info.run_id, name_)
        assert sorted((m.step, m.value) for m in history) == sorted(ledger[name_].items()), name_
    artifacts = [a.path for a in client.list_artifacts(only.info.run_id, "report")]
    assert "report/accuracy.png" in artifacts


def test_no_tracker_writes_no_tracking_files(scripted, tmp_path: Path) -> None:
    from tests.unit.test_pipeline import FinetuningScripted

    cfg = _cfg(tmp_path, iterations=1)
    assert cfg.report_to == ["none"]
    run(cfg, progress=False, backend=FinetuningScripted(scripted).backend)
    left = {p.name for p in cfg.run_dir.iterdir()}
    assert not left & {"metrics.json", "tracking.json", "tensorboard", "wandb", "mlflow"}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("tb", "field 'report_to.0': Input should be 'none', 'tensorboard', 'wandb' or 'mlflow'"),
        ("none,wandb", "field 'report_to': Value error, 'none' cannot be combined with a tracker"),
    ],
)
def test_a_bad_tracker_is_one_line(tmp_path: Path, capsys, value: str, message: str) -> None:
    from mft.cli import main

    assert main(["run", "--report-to", value, "--runs-dir", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not any(tmp_path.iterdir())


def test_trackers_come_as_a_yaml_list_or_a_comma_list(tmp_path: Path) -> None:
    from mft.config import load_config

    path = tmp_path / "c.yaml"
    path.write_text("report_to: [tensorboard, mlflow]\n")
    assert load_config(RunConfig, path).report_to == ["tensorboard", "mlflow"]
    assert load_config(RunConfig, path, {"report_to": "wandb, tensorboard"}).report_to == [
        "wandb",
        "tensorboard",
    ]


def test_a_trackers_missing_package_is_one_line_naming_the_extra(tmp_path: Path, capsys, monkeypatch) -> None:
    import importlib.util

    from mft.cli import main

    def no_run(*args: object) -> None:
        raise AssertionError("the run started: the missing package was not refused first")

    monkeypatch.setattr("mft.pipeline.run.open_run", no_run)
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else find_spec(name, *a)
    )
    argv = ["run", "--report-to", "tensorboard,wandb", "--runs-dir", str(tmp_path), "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "report_to wandb needs the wandb package" in err and "pip install 'mft[track]'" in err
    assert not any(tmp_path.iterdir()), "refused before the run directory is made"


def test_iteration_scalars_sum_each_agents_counts(tmp_path: Path) -> None:
    from mft.records import write_json_atomic
    from mft.rundir import RunDir
    from mft.tracking.scalars import iteration_scalars

    rd = RunDir(tmp_path)
    critic = {"examples": 5, "corrected (D_C-)": 3, "kept available (D_C+)": 4}
    write_json_atomic(
        rd.sizes(1),
        {
            "gen_0": {"examples": 2},
            "gen_1": {"examples": 7},
            "critic_0": critic,
            "critic_1": {**critic, "corrected (D_C-)": 1},
        },
    )
    out = iteration_scalars(rd, 1)
    assert (out["data/D_G"], out["data/D_C_minus"], out["data/D_C_plus"]) == (9, 4, 8)
    assert (out["data/critic_1/D_C_minus"], out["data/critic_1/examples"]) == (1, 5)
    write_json_atomic(rd.sizes(2), {"model": {"examples": 6, "rationalized": 2}})  # a one-model method
    assert iteration_scalars(rd, 2) == {"data/model/examples": 6, "data/model/rationalized": 2}


def test_a_tracker_added_later_is_sent_everything_logged_before(tmp_path: Path, monkeypatch) -> None:
    from mlflow.tracking import MlflowClient

    from mft.tracking import Tracking

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    with Tracking.open(tmp_path, ["tensorboard"], "t") as tracking:
        tracking.log({"accuracy/debate": 0.5}, 0)
        tracking.log({"train/iter_1/gen_0/loss": 2.0}, 1)
    with Tracking.open(tmp_path, ["tensorboard", "mlflow"], "t") as tracking:
        tracking.log({"accuracy/debate": 0.9}, 0)  # logged before: not sent again
        tracking.log({"accuracy/debate": 0.7}, 1)
    state = json.loads((tmp_path / "tracking.json").read_text())["mlflow"]
    client = MlflowClient(tracking_uri=state["tracking_uri"])
    history = {
        name: sorted((m.step, m.value) for m in client.get_metric_history(state["run_id"], name))
        for name in ("accuracy/debate", "train/iter_1/gen_0/loss")
    }
    assert history == {"accuracy/debate": [(0, 0.5), (1, 0.7)], "train/iter_1/gen_0/loss": [(1, 2.0)]}


def test_reproduce_tracks_each_method_as_a_run_and_its_report_beside_them(tmp_path: Path) -> None:
    from mft.pipeline.reproduce import reproduce

    def runner(cfg: RunConfig, progress: bool, backend: object) -> list[dict[str, Any]]:
        return run(cfg, progress=progress, backend=_backend())

    base = _cfg(tmp_path, name="cmp", iterations=1, min_examples=1, report_to=["tensorboard"])
    root = reproduce(base, methods=["ours", "majority_ft"], progress=False, runner=runner)
    for method in ("ours", "majority_ft"):
        events, _ = _tensorboard(RunConfig(**{**base.model_dump(), "runs_dir": root, "name": method}))
        assert dict(events["accuracy/debate"]) == pytest.approx(_ledger_of(root / method)["accuracy/debate"])
    _, images = _tensorboard(base)  # the reproduce directory's own: the comparison report's plots
    assert "report/accuracy" in images


def _ledger_of(path: Path) -> dict[str, dict[int, float]]:
    return read_metrics(path / "metrics.json")


def test_a_mixed_society_draws_every_agents_curve_through_its_base(tmp_path: Path) -> None:
    # the composite backend hands each finetune's step callback to the backend of the agent's base
    from mft.backends.mixed import MixedBackend

    cfg = _cfg(tmp_path, agents=["base-a", "base-b"], iterations=1, min_examples=1, report_to=["tensorboard"])
    run(cfg, progress=False, backend=MixedBackend({"base-a": _backend(), "base-b": _backend()}), report=False)
    trained = {name.split("/")[2] for name in _ledger(cfg) if name.startswith("train/iter_1/")}
    sizes = json.loads((cfg.run_dir / "iter_1" / "data" / "sizes.json").read_text())
    assert trained == {slot for slot, size in sizes.items() if size["examples"] >= 1}
    assert {slot[-1] for slot in trained} == {"0", "1"}  # agents of both bases

"""Read a run directory or a reproduce directory into plain data, checking every field the report uses.

Nothing here imports torch or loads a model: the report is a pure function of the saved JSON files. Where
the files are is `RunDir`'s knowledge; what must be in them, and the error when it is not, is this module's.
A file that is missing, not valid JSON or lacks a field raises one MftError naming the file and the field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mft import methods
from mft.errors import MftError
from mft.eval.diversity import DIVERSITY_VERSION
from mft.eval.dynamics import (
    AnswerChanges,
    Pool,
    answer_changes,
    answer_changes_of_outcomes,
    target_precision,
)
from mft.eval.metrics import Estimate
from mft.eval.outcomes import READINGS, read_outcomes
from mft.manifest import MANIFEST
from mft.records import DebateRecord, read_jsonl
from mft.report.curves import Curves, read_curves
from mft.report.files import as_estimate, as_object, is_number, read_json, short
from mft.rundir import REPRODUCE, RunDir

# diversity.json's metrics, in the report's column order (mft.eval.diversity says what each one is)
DIVERSITY_METRICS = (
    "consensus",
    "agreement",
    "embedding_dissimilarity",
    "held_out_nll",
    "kl_from_base",
    "kl",
)

_RESULTS_HINT = "it is written by `mft eval --iteration {k}`; delete it and re-run that command"
_RUN_HINT = (
    f"pass a run directory (runs/<name>, made by `mft run`) or a reproduce directory (with {REPRODUCE})"
)


@dataclass
class Iteration:
    k: int
    accuracy: dict[str, Estimate]  # single / majority / debate
    problems: int | None
    generated_tokens: int | None  # None: an older run without usage
    sizes: dict[str, dict[str, int]] | None = None  # iter_k/data/sizes.json (k >= 1)
    diversity: dict[str, Estimate] = field(default_factory=dict)  # iter_k/diversity.json
    kl_agents: dict[str, Estimate] = field(default_factory=dict)  # its kl_from_base.per_agent
    diversity_outdated: bool = False  # a diversity.json of an older definition: not shown
    # read from the debate files with the gold answers (mft.eval.dynamics); None: not measurable
    changes: AnswerChanges | None = None  # the test debate's answers, round 1 -> last round
    targets: dict[str, Pool] | None = None  # the training debate's pools (k >= 1)
    # iter_k/eval/outcomes.jsonl.gz: uid -> reading -> the problem's score (None: not kept, an older run)
    outcomes: dict[str, dict[str, float]] | None = None


@dataclass
class Run:
    """One method's run directory."""

    key: str  # method key: a reproduce.json key, or derived from the manifest
    label: str
    path: Path
    task: str
    config: dict[str, Any]
    iterations: dict[int, Iteration]  # only those with an eval/results.json, sorted by k
    timings: dict[str, float]
    training: Curves = field(default_factory=dict)  # its agents' per-step training measures (GRPO)

    @property
    def planned(self) -> int:
        return int(self.config.get("iterations", max(self.iterations, default=0)))

    @property
    def last(self) -> Iteration | None:
        """The last finetuned iteration (k >= 1) with results, or None when none has finished."""
        done = [k for k in self.iterations if k >= 1]
        return self.iterations[max(done)] if done else None

    @property
    def interaction(self) -> str:
        """How its later rounds asked the agents: debate (also before the setting existed) or cooperative."""
        return str(self.config.get("interaction", "debate"))

    @property
    def harness(self) -> str:
        """N x M, and what differs from the paper's debate: cooperative, a sampling temperature other than
        1.0 (a method's own in `method_temperatures`, the paper's Fig. 10)."""
        parts = [f"{self.n_agents or '?'} agents x {self.config.get('rounds', '?')} rounds"]
        if self.interaction != "debate":
            parts.append(self.interaction)
        temperature = self.config.get("temperature", 1.0)
        if temperature != 1.0:
            parts.append(f"temperature {temperature:g}")
        return ", ".join(parts)

    @property
    def n_agents(self) -> int | None:
        """N: the `agents` setting, a count or a list of each agent's base model (a mixed society)."""
        agents = self.config.get("agents")
        if isinstance(agents, list):
            return len(agents)
        return agents if isinstance(agents, int) else None

    @property
    def models(self) -> str:
        """The base model, or in a mixed society each agent's base (and the summarizer's), as the report
        names them."""
        agents = self.config.get("agents")
        summarizer = self.config.get("summarizer_model")
        if not isinstance(agents, list):
            on = f", summaries by `{summarizer}`" if summarizer else ""
            return f"model `{self.config.get('model', '?')}`{on}"
        listed = ", ".join(f"agent {i} `{model}`" for i, model in enumerate(agents))
        return f"a mixed society ({listed}; summaries by `{summarizer or agents[0]}`)"


@dataclass
class Study:
    """What `mft report` reads: one run (kind 'run') or a reproduce directory of several ('reproduce')."""

    path: Path
    name: str
    kind: str
    task: str
    runs: list[Run]  # in the table's order
    base: Iteration | None  # iteration 0, shared by all methods
    base_from: Run | None
    notes: list[str] = field(default_factory=list)

    def run(self, key: str) -> Run | None:
        return next((r for r in self.runs if r.key == key), None)

    @property
    def base_harness(self) -> str:
        """The setting of the base readings (Base, Majority, Debate): the harness of the run they are from."""
        return (self.base_from or self.runs[0]).harness if self.runs else ""

    @property
    def own_setting_runs(self) -> list[Run]:
        """The runs in another setting than the base readings (their own temperature, cooperative)."""
        return [r for r in self.runs if r.harness != self.base_harness]


# -- reading and checking -----------------------------------------------------------------------------------
def read_results(path: Path, k: int) -> Iteration:
    hint = _RESULTS_HINT.format(k=k)
    data = as_object(read_json(path, hint), path, "the file", hint)
    if "iteration" in data and data["iteration"] != k:
        raise MftError(f"{path}: field 'iteration' is {short(data['iteration'])}, expected {k}", hint=hint)
    if "accuracy" not in data:
        raise MftError(f"{path}: field 'accuracy' is missing", hint=hint)
    acc = as_object(data["accuracy"], path, "field 'accuracy'", hint)
    accuracy = {r: as_estimate(acc.get(r), path, f"accuracy.{r}", hint) for r in READINGS}
    problems = data.get("problems")
    if problems is not None and not is_number(problems):
        raise MftError(f"{path}: field 'problems' is {short(problems)}, not a number", hint=hint)
    tokens = None
    usage = data.get("usage")
    if usage is not None:
        usage = as_object(usage, path, "field 'usage'", hint)
        if usage.get("generated_tokens") is not None:
            if not is_number(usage["generated_tokens"]):
                raise MftError(f"{path}: field 'usage.generated_tokens' is not a number", hint=hint)
            tokens = int(usage["generated_tokens"])
    return Iteration(k, accuracy, None if problems is None else int(problems), tokens)


def read_sizes(path: Path) -> dict[str, dict[str, int]]:
    hint = "it is written by `mft build-data`; delete it and re-run that command"
    data = as_object(read_json(path, hint), path, "the file", hint)
    out: dict[str, dict[str, int]] = {}
    for agent, entry in data.items():
        entry = as_object(entry, path, f"field '{agent}'", hint)
        if not is_number(entry.get("examples")):
            raise MftError(f"{path}: field '{agent}.examples' is missing or not a number", hint=hint)
        out[agent] = {k: int(v) for k, v in entry.items() if is_number(v)}
    return out


def read_diversity(path: Path) -> tuple[dict[str, Estimate], dict[str, Estimate]] | None:
    """The metrics and the per-agent KL from the base model; None for a file of an older definition
    (without this `version`: round-1 metrics), which is not mixed with the current ones."""
    hint = "it is written by the diversity evaluation; delete it and re-run that stage"
    data = as_object(read_json(path, hint), path, "the file", hint)
    if data.get("version") != DIVERSITY_VERSION:
        return None
    # a metric with no data (mean null, e.g. KL with one agent) is left out, as if it were not measured
    metrics = {
        m: as_estimate(data[m], path, m, hint)
        for m in DIVERSITY_METRICS
        if m in data and not (isinstance(data[m], dict) and data[m].get("mean") is None)
    }
    per_agent = data.get("kl_from_base", {}).get("per_agent", {}) if "kl_from_base" in metrics else {}
    per_agent = as_object(per_agent, path, "field 'kl_from_base.per_agent'", hint)
    agents = {
        a: as_estimate(e, path, f"kl_from_base.per_agent.{a}", hint)
        for a, e in per_agent.items()
        if not (isinstance(e, dict) and e.get("mean") is None)
    }
    return metrics, agents


def read_timings(path: Path) -> dict[str, float]:
    if not path.exists():
        return {}
    hint = "it is written by `mft run`; fix or delete it (only the report's cost table uses it)"
    data = as_object(read_json(path, hint), path, "the file", hint)
    for key, value in data.items():
        if not is_number(value):
            raise MftError(f"{path}: field '{key}' is {short(value)}, not a number of seconds", hint=hint)
    return {k: float(v) for k, v in data.items()}


def _method_key(config: dict[str, Any]) -> str:
    """The table row of a run from its config (`methods.of_run`). A method the table does not know keeps its
    own name as its key, so a run from a newer or older mft still gets a row (after the known ones) instead
    of an error."""
    try:
        return methods.of_run(
            config.get("method"), bool(config.get("summarize")), str(config.get("interaction", "debate"))
        ).key
    except KeyError:
        return str(config["method"])


def read_run(path: Path, key: str | None = None, label: str | None = None) -> Run:
    rd = RunDir(path)
    manifest_path = rd.manifest
    hint = "it is written by `mft run`; this directory is not a complete run"
    manifest = as_object(read_json(manifest_path, hint), manifest_path, "the file", hint)
    config = as_object(manifest.get("config"), manifest_path, "field 'config'", hint)
    if not isinstance(config.get("task"), str):
        raise MftError(f"{manifest_path}: field 'config.task' is missing or not a string", hint=hint)
    planned = config.get("iterations", 0)
    if not is_number(planned) or planned < 0:
        raise MftError(f"{manifest_path}: field 'config.iterations' is not a number", hint=hint)
    iterations: dict[int, Iteration] = {}
    outcome_lines: dict[int, list[dict[str, Any]]] = {}  # read once: the paired rows and the dynamics
    # Iteration directories on disk and up to the configured count: a run still in progress is reported
    # with the iterations it has finished.
    for k in sorted(rd.iterations_on_disk() | set(range(int(planned) + 1))):
        if not rd.results(k).exists():
            continue
        it = read_results(rd.results(k), k)
        if k >= 1 and rd.sizes(k).exists():
            it.sizes = read_sizes(rd.sizes(k))
        if rd.outcomes(k).exists():
            outcome_lines[k] = read_outcomes(rd.outcomes(k))
            it.outcomes = {o["uid"]: o["correct"] for o in outcome_lines[k]}
        if rd.diversity(k).exists():
            diversity = read_diversity(rd.diversity(k))
            if diversity is None:
                it.diversity_outdated = True
            else:
                it.diversity, it.kl_agents = diversity
        iterations[k] = it
    _read_dynamics(rd, config, iterations, outcome_lines)
    if not iterations:
        raise MftError(
            f"{path} has no evaluated iteration (no iter_<k>/eval/results.json)",
            hint="run `mft run` (or `mft eval --iteration 0`) first",
        )
    key = key or _method_key(config)
    return Run(
        key=key,
        label=label or methods.LABELS.get(key, key),
        path=path,
        task=config["task"],
        config=config,
        iterations=iterations,
        timings=read_timings(rd.timings),
        training=read_curves(path),
    )


def _read_dynamics(
    rd: RunDir,
    config: dict[str, Any],
    iterations: dict[int, Iteration],
    outcome_lines: dict[int, list[dict[str, Any]]],
) -> None:
    """Each iteration's answer changes (its finished test debate, else its outcomes) and target precision
    (the training debate its data was built from), judged by the run's task; left None where the task
    cannot be built here (e.g. a custom task whose data file has moved), as the gold answers are read
    through it."""
    from mft.tasks import get_task

    try:
        options = config.get("task_options")
        task = get_task(config["task"], options if isinstance(options, dict) else {}, data=config.get("data"))
    except MftError:
        return
    for k, it in iterations.items():
        test = rd.eval_debate(k)
        if test.exists():
            it.changes = answer_changes(read_jsonl(test, DebateRecord, repair=False), task.is_equivalent)
        elif k in outcome_lines:  # a results directory keeps the outcomes, not the debate
            it.changes = answer_changes_of_outcomes(outcome_lines[k], task.is_equivalent)
        if k >= 1 and it.sizes is not None and rd.train_debate(k).exists():
            train = read_jsonl(rd.train_debate(k), DebateRecord, repair=False)
            it.targets = target_precision(train, task.is_equivalent)


def _order(key: str, position: int) -> tuple[int, int]:
    """Known rows in the report's order, then unknown method keys as they were listed."""
    order = methods.REPORT_ORDER
    return (order.index(key), 0) if key in order else (len(order), position)


def load(path: Path) -> Study:
    """A run directory (manifest.json) or a reproduce directory (reproduce.json) as a Study."""
    path = Path(path)
    if not path.is_dir():
        what = "does not exist" if not path.exists() else "is not a directory"
        raise MftError(f"{path} {what}", hint=_RUN_HINT)
    notes: list[str] = []
    repro_path = path / REPRODUCE
    if repro_path.exists():
        hint = 'it maps method keys to run sub-directories: {"task": ..., "methods": {"ours": "ours"}}'
        repro = as_object(read_json(repro_path, hint), repro_path, "the file", hint)
        run_dirs = as_object(repro.get("methods"), repro_path, "field 'methods'", hint)
        labels = as_object(repro.get("labels", {}), repro_path, "field 'labels'", hint)
        runs: list[Run] = []
        for key, sub in run_dirs.items():
            if not isinstance(sub, str):
                raise MftError(f"{repro_path}: field 'methods.{key}' must be a directory name", hint=hint)
            label = labels.get(key) if isinstance(labels.get(key), str) else None
            run_dir = path / sub
            if not RunDir(run_dir).is_run():
                notes.append(f"{label or methods.LABELS.get(key, key)}: {sub}/ has no run yet (skipped)")
                continue
            runs.append(read_run(run_dir, key, label))
        if not runs:
            raise MftError(f"{repro_path}: none of its method directories holds a run yet", hint=_RUN_HINT)
        kind = "reproduce"
        repro_task = repro.get("task")
        task = repro_task if isinstance(repro_task, str) else runs[0].task
    elif RunDir(path).is_run():
        runs = [read_run(path)]
        kind = "run"
        task = runs[0].task
    else:
        raise MftError(
            f"{path} is not a run directory or a reproduce directory (no {MANIFEST} or {REPRODUCE})",
            hint=_RUN_HINT,
        )
    for r in runs:
        if r.task != task:
            notes.append(f"{r.label}: its manifest says task {r.task!r}, not {task!r}")
    runs = [r for _, r in sorted(enumerate(runs), key=lambda ir: _order(ir[1].key, ir[0]))]
    # Iteration 0 (the base society) is shared by all methods: it is read from the first method of the
    # table's order (the order `mft reproduce` runs them in) that has it, else from any run that has it;
    # never from a run whose later rounds were not a debate (its iteration 0 is a row of its own,
    # Cooperative (base): its last round is not the base model's debate).
    debating = [r for r in runs if r.interaction == "debate" and 0 in r.iterations]
    base_from = next(
        (r for m in methods.METHODS for r in debating if r.key == m.key), debating[0] if debating else None
    )
    if base_from is None:
        notes.append(
            "no debating run (interaction: debate) has iteration 0 (the base model), so Base / Majority / "
            "Debate are omitted"
        )
    return Study(
        path=path,
        name=path.resolve().name,
        kind=kind,
        task=task,
        runs=runs,
        base=base_from.iterations[0] if base_from else None,
        base_from=base_from,
        notes=notes,
    )


def with_base(run: Run, study: Study) -> dict[int, Iteration]:
    """The run's iterations, with the shared iteration 0 filled in where the run has none."""
    its = dict(run.iterations)
    if 0 not in its and study.base is not None:
        its[0] = study.base
    return dict(sorted(its.items()))

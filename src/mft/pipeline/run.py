"""The multiagent finetuning loop, one readable function per stage.

Run directory (artifacts are the interface between stages; every stage can be re-run alone from them):

    runs/<name>/manifest.json             config, seed, versions, problem hashes
    runs/<name>/iter_0/eval/              the base model's debate on the test split (reference)
    runs/<name>/iter_<k>/debate.jsonl     the society of iteration k-1 debating the train split
    runs/<name>/iter_<k>/data/            gen_<n>.jsonl, critic_<n>.jsonl, sizes.json
    runs/<name>/iter_<k>/agents/          gen_<n>/, critic_<n>/ (LoRA adapters), society.json
    runs/<name>/iter_<k>/eval/            debate.jsonl + results.json of the new society on the test split

Resume: debate and eval files are appended per finished chunk; datasets, adapters and result files are
written to a temp name and renamed, and each stage skips what already exists. Killing the process at any
moment and re-running the same command continues from the last finished unit.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from mft.backends.base import Agent, Backend, Sampling
from mft.config import RunConfig, build_task
from mft.data.builders import (
    critic_split,
    generator_examples,
    majority_examples,
    mix_critic,
    pooled_examples,
    star_examples,
)
from mft.debate.engine import DebateSettings, Society, run_debate
from mft.errors import MftError
from mft.eval.metrics import as_dict, debate_accuracies
from mft.executor import FinetuneJob, RayChunkRunner, ray_finetune
from mft.faults import checkpoint
from mft.records import DebateRecord, Message, Problem, read_jsonl, write_json_atomic
from mft.tasks.base import Task


def problems_hash(problems: list[Problem]) -> str:
    h = hashlib.sha256()
    for p in problems:
        h.update(f"{p.id}\t{p.question}\t{p.answer}\n".encode())
    return h.hexdigest()


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("mft", "torch", "transformers", "peft"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


# Settings added after runs were made, with the value that does what those runs did: a run directory whose
# manifest lacks one continues only with that value (and is refused with any other, as for any setting).
SETTINGS_BEFORE_THEY_EXISTED: dict[str, Any] = {"ft_group_by_length": False, "ft_precision": "fp32"}


def settings_diff(old_config: dict[str, Any], cfg: RunConfig) -> list[str]:
    """The settings of `cfg` that differ from a manifest's `old_config` (those that change results)."""
    config = json.loads(cfg.model_dump_json())
    ignore = {"runs_dir", "iterations"}  # moving the directory or asking for more iterations is fine
    before = {**SETTINGS_BEFORE_THEY_EXISTED, **old_config}
    return sorted(k for k in config if k not in ignore and before.get(k) != config[k])


def write_or_check_manifest(cfg: RunConfig, train: list[Problem], test: list[Problem], task: Task) -> None:
    """First run: write the manifest. Later runs: refuse to mix a run directory with another config."""
    path = cfg.run_dir / "manifest.json"
    config = json.loads(cfg.model_dump_json())
    if path.exists():
        old = json.loads(path.read_text())
        diff = settings_diff(old["config"], cfg)
        if diff:
            raise MftError(
                f"{cfg.run_dir} was made with other settings ({', '.join(diff)} differ)",
                hint="use another --name, or delete that directory to start fresh",
            )
        return
    write_json_atomic(
        path,
        {
            "config": config,
            "seed": cfg.seed,
            "task": {"name": task.name, "version": task.version},
            "versions": _versions(),
            "problems": {"train": problems_hash(train), "test": problems_hash(test)},
            "data": getattr(task, "loads", {}),  # source, pool sizes, skipped bad-gold rows
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    )


def open_run(cfg: RunConfig, task: Task) -> tuple[list[Problem], list[Problem]]:
    """Load the run's problems (before any model work) and write or check its manifest."""
    train = task.load("train", cfg.n_train, seed=cfg.split_seed)
    test = task.load("test", cfg.n_test, seed=cfg.split_seed)
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    write_or_check_manifest(cfg, train, test, task)
    return train, test


_RUNNERS: dict[tuple[Any, ...], RayChunkRunner] = {}


def chunk_runner_for(cfg: RunConfig) -> RayChunkRunner | None:
    """Ray actors for debate chunks, started once per process and reused by every stage of the run."""
    if cfg.executor != "ray":
        return None
    options = {"batch_size": cfg.batch_size, **cfg.backend_options}
    key = (cfg.backend, cfg.model, json.dumps(options, sort_keys=True), cfg.ray_workers, cfg.ray_address)
    if key not in _RUNNERS:
        _RUNNERS[key] = RayChunkRunner(
            cfg.backend,
            cfg.model,
            options,
            workers=cfg.ray_workers,
            address=cfg.ray_address,
            num_cpus=cfg.ray_num_cpus,
            num_gpus=cfg.ray_num_gpus,
        )
    return _RUNNERS[key]


def release_runners() -> None:
    """Stop the debate actors so their CPUs/GPUs are free for the finetune tasks (no deadlock on a full
    cluster); the next debate stage starts new ones."""
    for runner in _RUNNERS.values():
        runner.close()
    _RUNNERS.clear()


SINGLE_MODEL_METHODS = ("single_ft", "majority_ft", "star")


def training_rounds(cfg: RunConfig) -> int:
    """Rounds of the training debate: majority FT and STaR sample N independent answers (one round)."""
    return 1 if cfg.method in ("majority_ft", "star") else cfg.rounds


def slots_of(cfg: RunConfig) -> list[str]:
    """The models a method finetunes each iteration (their dataset files are named after them)."""
    if cfg.method in SINGLE_MODEL_METHODS:
        return ["model"]
    names = [f"gen_{n}" for n in range(cfg.agents)]
    return names if cfg.method == "ours_no_critic" else names + [f"critic_{n}" for n in range(cfg.agents)]


def settings_for(cfg: RunConfig, seed: int, task: Task, rounds: int | None = None) -> DebateSettings:
    max_new = cfg.max_new_tokens or task.max_new_tokens
    sampling = Sampling(temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=max_new)
    return DebateSettings(
        rounds=rounds or cfg.rounds,
        summarize=cfg.summarize,
        sampling=sampling,
        seed=seed,
        chunk_size=cfg.chunk_size,
    )


def society_after(cfg: RunConfig, k: int) -> Society:
    """The society that iteration k produced (k = 0: N copies of the base, generators and critics alike)."""
    if k == 0:
        return Society.of_base(cfg.agents)
    path = cfg.run_dir / f"iter_{k}" / "agents" / "society.json"
    if not path.exists():
        raise MftError(
            f"{path} is missing: iteration {k} has not finished finetuning",
            hint="run `mft run` (or `mft finetune`) for that iteration first",
        )
    data = json.loads(path.read_text())

    def agent(entry: dict[str, Any]) -> Agent:  # adapters are stored relative to the run directory
        if entry.get("model_id"):  # a model id a server knows (openai backend), stored verbatim
            return Agent(entry["name"], entry["model_id"])
        adapter = entry["adapter"]
        return Agent(entry["name"], None if adapter is None else str(cfg.run_dir / adapter))

    critics = data.get("critics") or None  # none: the generators answer every round
    return Society(
        generators=[agent(a) for a in data["generators"]],
        critics=None if critics is None else [agent(a) for a in critics],
    )


# -- stages ------------------------------------------------------------------------------------------------
def stage_debate(
    cfg: RunConfig, k: int, backend: Backend, task: Task, train: list[Problem], progress: bool = True
) -> list[DebateRecord]:
    """Iteration k's training debates, by the society of iteration k-1 (no labels used downstream)."""
    return run_debate(
        backend,
        task,
        train,
        society_after(cfg, k - 1),
        settings_for(cfg, cfg.seed + k, task, rounds=training_rounds(cfg)),
        cfg.run_dir / f"iter_{k}" / "debate.jsonl",
        progress=progress,
        chunk_runner=chunk_runner_for(cfg),
    )


def stage_build_data(cfg: RunConfig, k: int, task: Task) -> dict[str, Any]:
    """Per-agent datasets from iteration k's debate records; written once, then reused."""
    data_dir = cfg.run_dir / f"iter_{k}" / "data"
    sizes_path = data_dir / "sizes.json"
    if sizes_path.exists():
        return json.loads(sizes_path.read_text())
    records = read_jsonl(cfg.run_dir / f"iter_{k}" / "debate.jsonl", DebateRecord)
    if len(records) < cfg.n_train:
        raise MftError(
            f"iteration {k}: debate has {len(records)} of {cfg.n_train} problems",
            hint="finish the debate stage first",
        )
    sizes: dict[str, Any] = {}
    if cfg.method in SINGLE_MODEL_METHODS:
        if cfg.method == "majority_ft":
            examples = majority_examples(records, task.is_equivalent)
        elif cfg.method == "star":
            examples = star_examples(records, task.is_equivalent)
        else:
            examples = pooled_examples(
                records, task.is_equivalent, cfg.critic_positive_fraction, seed=f"{cfg.seed}:{k}"
            )
        _write_examples(data_dir / "model.jsonl", examples)
        sizes["model"] = {"examples": len(examples)}
        write_json_atomic(sizes_path, sizes)
        return sizes
    for n in range(cfg.agents):
        gen = generator_examples(records, n, task.is_equivalent)
        split = critic_split(records, n, task.is_equivalent)
        critic = mix_critic(split, cfg.critic_positive_fraction, seed=f"{cfg.seed}:{k}:{n}")
        _write_examples(data_dir / f"gen_{n}.jsonl", gen)
        sizes[f"gen_{n}"] = {"examples": len(gen)}
        if cfg.method == "ours_no_critic":
            continue
        _write_examples(data_dir / f"critic_{n}.jsonl", critic)
        sizes[f"critic_{n}"] = {
            "examples": len(critic),
            "corrected (D_C-)": len(split.corrected),
            "kept available (D_C+)": len(split.kept),
        }
    write_json_atomic(sizes_path, sizes)
    return sizes


def _write_examples(path: Path, examples: list[list[Message]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for ex in examples:
            fh.write(json.dumps({"messages": [m.model_dump() for m in ex]}) + "\n")
    checkpoint(f"write {path.name}")
    tmp.replace(path)


def read_examples(path: Path) -> list[list[Message]]:
    with open(path, encoding="utf-8") as fh:
        return [[Message(**m) for m in json.loads(line)["messages"]] for line in fh if line.strip()]


def _stored_agent(cfg: RunConfig, agent: Agent) -> dict[str, Any]:
    """society.json's entry: an adapter directory inside the run relative to it, anything else verbatim."""
    if agent.adapter is None:
        return {"name": agent.name, "adapter": None}
    path = Path(agent.adapter)
    if path.is_dir() and path.resolve().is_relative_to(cfg.run_dir.resolve()):
        return {"name": agent.name, "adapter": str(path.resolve().relative_to(cfg.run_dir.resolve()))}
    return {"name": agent.name, "adapter": None, "model_id": agent.adapter}


def stage_finetune(cfg: RunConfig, k: int, backend: Backend, progress: bool = True) -> Society:
    """Finetune each of the 2N agents on its own data, from its own previous weights; skip finished ones."""
    from tqdm.auto import tqdm

    iter_dir = cfg.run_dir / f"iter_{k}"
    society_path = iter_dir / "agents" / "society.json"
    if society_path.exists():
        return society_after(cfg, k)
    prev = society_after(cfg, k - 1)
    sizes = json.loads((iter_dir / "data" / "sizes.json").read_text())
    lora = {
        "rank": cfg.lora_rank,
        "alpha": cfg.lora_alpha,
        "dropout": cfg.lora_dropout,
        "target_modules": cfg.lora_targets
        if cfg.lora_targets == "all-linear"
        else [t.strip() for t in cfg.lora_targets.split(",")],
        "epochs": cfg.ft_epochs,
        "lr": cfg.ft_lr,
        "batch_size": cfg.ft_batch_size,
        "group_by_length": cfg.ft_group_by_length,
        "precision": cfg.ft_precision,
        "seed": cfg.seed + k,
        "method": cfg.ft_method,
    }
    skipped: dict[str, str] = {}
    agents: dict[str, Agent] = {}
    todo: list[FinetuneJob] = []
    # (slot name, the agent it continues from): each model continues from its own previous weights
    previous = {f"gen_{n}": prev.generators[n] for n in range(cfg.agents)}
    previous.update({f"critic_{n}": (prev.critics or prev.generators)[n] for n in range(cfg.agents)})
    previous["model"] = prev.generators[0]
    slots = [(name, previous[name]) for name in slots_of(cfg)]
    for name, before in slots:
        out_dir = iter_dir / "agents" / name
        start_from = before.adapter  # None in iteration 1: a fresh LoRA on the base
        finished = backend.finished_agent(name, out_dir)
        if finished is not None:  # finished before a restart
            agents[name] = finished
        elif sizes[name]["examples"] < cfg.min_examples:
            skipped[name] = f"{sizes[name]['examples']} examples < min_examples={cfg.min_examples}"
            agents[name] = Agent(name, start_from)
        else:
            todo.append(FinetuneJob(name, start_from, iter_dir / "data" / f"{name}.jsonl", out_dir))
    if cfg.executor == "ray" and todo:
        release_runners()
        trained = ray_finetune(
            cfg.model,
            todo,
            lora,
            address=cfg.ray_address,
            num_cpus=cfg.ray_num_cpus,
            num_gpus=cfg.ray_num_gpus,
        )
        agents.update({a.name: a for a in trained})
    else:
        for job in tqdm(todo, desc=f"finetune iter {k}", unit="agent", disable=not progress):
            examples = read_examples(job.examples_path)
            agents[job.name] = backend.finetune(
                Agent(job.name, job.start_from), examples, job.out_dir, **lora
            )
    result: dict[str, Any] = {"generators": [], "critics": []}
    if cfg.method in SINGLE_MODEL_METHODS:  # one model plays every agent, in every round
        result["generators"] = [_stored_agent(cfg, agents["model"])] * cfg.agents
        result["critics"] = None
    else:
        for name, _ in slots:
            result["generators" if name.startswith("gen_") else "critics"].append(
                _stored_agent(cfg, agents[name])
            )
        result["critics"] = result["critics"] or None
    for name, why in skipped.items():
        print(f"iteration {k}: agent {name} keeps its previous weights ({why})")
    write_json_atomic(society_path, {**result, "skipped": skipped})
    return society_after(cfg, k)


def stage_eval(
    cfg: RunConfig, k: int, backend: Backend, task: Task, test: list[Problem], progress: bool = True
) -> dict[str, Any]:
    """Debate of iteration k's society on the test split: generators answer round 1, critics later."""
    eval_dir = cfg.run_dir / f"iter_{k}" / "eval"
    results_path = eval_dir / "results.json"
    if results_path.exists():
        return json.loads(results_path.read_text())
    records = run_debate(
        backend,
        task,
        test,
        society_after(cfg, k),
        settings_for(cfg, cfg.seed + 1000 + k, task),
        eval_dir / "debate.jsonl",
        progress=progress,
        chunk_runner=chunk_runner_for(cfg),
    )
    results = {
        "iteration": k,
        "accuracy": as_dict(debate_accuracies(records, task)),
        "problems": len(records),
        "usage": {"generated_tokens": generated_tokens(backend, records)},
    }
    if k >= 1:
        train_records = read_jsonl(cfg.run_dir / f"iter_{k}" / "debate.jsonl", DebateRecord)
        results["usage"]["train_debate_generated_tokens"] = generated_tokens(backend, train_records)
    write_json_atomic(results_path, results)
    return results


_ENCODERS: dict[str, Any] = {}


def stage_diversity(
    cfg: RunConfig, k: int, backend: Backend, task: Task, progress: bool = True
) -> dict[str, Any]:
    """Diversity of iteration k's society on its first `diversity_problems` test debates (round-1 answers)."""
    from mft.eval.diversity import compute_diversity, load_encoder

    path = cfg.run_dir / f"iter_{k}" / "diversity.json"
    if path.exists():
        return json.loads(path.read_text())
    records = read_jsonl(cfg.run_dir / f"iter_{k}" / "eval" / "debate.jsonl", DebateRecord)
    encoder = None
    if cfg.embedding_model:
        if cfg.embedding_model not in _ENCODERS:
            _ENCODERS[cfg.embedding_model] = load_encoder(cfg.embedding_model)
        encoder = _ENCODERS[cfg.embedding_model]
    society = society_after(cfg, k)
    scorer = backend if hasattr(backend, "score_responses") else None
    if scorer is not None:
        for agent in society.generators:
            backend.add_agent(agent)
    result = compute_diversity(
        records,
        task,
        scorer=scorer,
        agents=society.generators if scorer is not None else None,
        encoder=encoder,
        max_problems=cfg.diversity_problems,
        progress=progress,
    )
    write_json_atomic(path, result)
    return result


def generated_tokens(backend: Backend, records: list[DebateRecord]) -> int | None:
    """Tokens the agents (and the summariser) generated in these debates, by the backend's tokenizer."""
    texts = [x for r in records for rnd in r.responses for x in rnd]
    texts += [x for r in records for rnd in r.summaries for x in rnd]
    return backend.count_tokens(texts)


def run(cfg: RunConfig, progress: bool = True, backend: Backend | None = None) -> list[dict[str, Any]]:
    """The whole loop; returns the per-iteration eval results (iteration 0 = the base society)."""
    task = build_task(cfg)
    train, test = open_run(cfg, task)
    if cfg.diversity_problems and cfg.embedding_model:
        from mft.eval.diversity import check_encoder

        check_encoder(cfg.embedding_model)  # a missing encoder stops here, not after the first eval
    if backend is None:
        from mft.backends import get_backend

        backend = get_backend(cfg.backend, cfg.model, batch_size=cfg.batch_size, **cfg.backend_options)
    timings_path = cfg.run_dir / "timings.json"
    timings: dict[str, float] = json.loads(timings_path.read_text()) if timings_path.exists() else {}

    def timed(key: str, fn: Any, *args: Any) -> Any:
        t = time.time()
        out = fn(*args)
        timings[key] = timings.get(key, 0.0) + round(time.time() - t, 2)
        write_json_atomic(timings_path, timings)
        return out

    results = [timed("iter_0/eval", stage_eval, cfg, 0, backend, task, test, progress)]
    if cfg.diversity_problems:
        timed("iter_0/diversity", stage_diversity, cfg, 0, backend, task, progress)
    for k in range(1, cfg.iterations + 1):
        timed(f"iter_{k}/debate", stage_debate, cfg, k, backend, task, train, progress)
        timed(f"iter_{k}/build_data", stage_build_data, cfg, k, task)
        timed(f"iter_{k}/finetune", stage_finetune, cfg, k, backend, progress)
        results.append(timed(f"iter_{k}/eval", stage_eval, cfg, k, backend, task, test, progress))
        if cfg.diversity_problems:
            timed(f"iter_{k}/diversity", stage_diversity, cfg, k, backend, task, progress)
    return results

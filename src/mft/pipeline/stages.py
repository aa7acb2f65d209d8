"""The stages of one iteration, each a function that reads its inputs from the run directory and writes its
outputs there, so every stage can be re-run alone (`mft debate-train | build-data | finetune | eval`).

Resume: debate and eval files are appended per finished chunk; datasets, adapters and result files are
written to a temp name and renamed, and each stage skips what already exists. Killing the process at any
moment and re-running the same command continues from the last finished unit.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, cast

from mft.backends.base import Agent, Backend, GenerationRequest, StepCallback
from mft.config import RunConfig
from mft.data.builders import wrong_samples
from mft.data.examples import read_training_data, write_examples
from mft.debate.engine import SUMMARIZER, Society, run_debate
from mft.errors import MftError
from mft.eval.metrics import as_dict
from mft.eval.outcomes import accuracies, outcomes_of, write_outcomes
from mft.method_data import BuildContext
from mft.methods import of_run
from mft.pipeline.assemble import (
    debate_settings,
    finetune_settings,
    objective_of,
    stage_seed,
    trainer_options,
)
from mft.pipeline.executor import FinetuneJob, chunk_runner_for, ray_finetune, release_runners
from mft.records import (
    DebateRecord,
    Message,
    Problem,
    Rationale,
    append_jsonl,
    read_debates,
    read_jsonl,
    write_json_atomic,
)
from mft.rundir import RunDir
from mft.tasks.base import Task

if TYPE_CHECKING:
    from mft.eval.likelihood import Scorer


def check_max_new_tokens(backend: Backend, max_new: int) -> None:
    """Refuse a response budget the model's context cannot hold (before any generation: a huge one would
    otherwise preallocate a KV cache of that many tokens)."""
    context = backend.context_length()
    if context is not None and max_new >= context:
        model = backend.describe().get("model", backend.name)
        raise MftError(
            f"max_new_tokens {max_new} does not fit in the context of model {model!r} ({context} tokens, "
            "prompt included)",
            hint=f"set max_new_tokens (--max-new-tokens) well below {context}, or leave it unset for the "
            "task's default",
        )


def society_after(cfg: RunConfig, k: int) -> Society:
    """The society that iteration k produced (k = 0: N copies of the base, generators and critics alike)."""
    return RunDir(cfg.run_dir).society_for(k, cfg)


def generated_tokens(backend: Backend, records: list[DebateRecord]) -> int | None:
    """Tokens the agents (and the summariser) generated in these debates, by the backend's tokenizer (in a
    mixed society, each text by its writer's base's tokenizer, summed over the bases)."""
    by_agent: dict[str, list[str]] = {}
    for r in records:
        for names, texts in zip(r.agents, r.responses, strict=True):
            for name, text in zip(names, texts, strict=True):
                by_agent.setdefault(name, []).append(text)
    by_agent[SUMMARIZER] = [x for r in records for rnd in r.summaries for x in rnd]
    counts = [backend.count_agent_tokens(a, t) for a, t in by_agent.items() if t]
    if not counts:
        return backend.count_tokens([])
    return None if None in counts else sum(c or 0 for c in counts)


# -- 1. debate --------------------------------------------------------------------------------------------
def stage_debate(
    cfg: RunConfig, k: int, backend: Backend, task: Task, train: list[Problem], progress: bool = True
) -> list[DebateRecord]:
    """Iteration k's training debates, by the society of iteration k-1 (no labels used downstream)."""
    method = of_run(cfg.method, cfg.summarize, cfg.interaction)
    settings = debate_settings(
        cfg, task, stage_seed(cfg.seed, "debate", k), rounds=method.training_rounds(cfg.rounds)
    )
    records = run_debate(
        backend,
        task,
        train,
        society_after(cfg, k - 1),
        replace(settings, agent_ids=method.tells_ids(k - 1)),
        RunDir(cfg.run_dir).train_debate(k),
        progress=progress,
        chunk_runner=chunk_runner_for(cfg),
    )
    if rationalizing(cfg):
        stage_rationalize(cfg, k, backend, task, records, progress)
    return records


def rationalizing(cfg: RunConfig) -> bool:
    return of_run(cfg.method, cfg.summarize, cfg.interaction).rationalizes and cfg.star_rationalize


def stage_rationalize(
    cfg: RunConfig, k: int, backend: Backend, task: Task, records: list[DebateRecord], progress: bool = True
) -> list[Rationale]:
    """STaR's rationalization of iteration k's training samples: every wrong round-1 sample is asked again of
    the agent that wrote it, with the gold answer as a hint (`Task.hint_prompt`). Appended per chunk of
    requests, each chunk sampled with a seed of its own index, so a resumed run writes what an uninterrupted
    one would."""
    from tqdm.auto import tqdm

    path = RunDir(cfg.run_dir).rationales(k)
    done = {(x.problem_id, x.slot) for x in read_jsonl(path, Rationale)}
    society = society_after(cfg, k - 1)
    for agent in society.generators:
        backend.add_agent(agent)
    sampling = debate_settings(cfg, task, stage_seed(cfg.seed, "debate", k)).sampling
    wrong = wrong_samples(records, task.is_equivalent)
    size = cfg.chunk_size * cfg.n_agents
    chunks = [wrong[i : i + size] for i in range(0, len(wrong), size)]
    for c, chunk in enumerate(tqdm(chunks, desc=f"rationalize iter {k}", unit="chunk", disable=not progress)):
        if all((r.problem.id, slot) in done for r, slot in chunk):
            continue
        prompts = [task.hint_prompt(r.problem) for r, _ in chunk]
        requests = [
            GenerationRequest(society.generators[slot].name, [Message(role="user", content=prompt)])
            for (_, slot), prompt in zip(chunk, prompts, strict=True)
        ]
        digest = hashlib.blake2b(f"{cfg.seed}:{k}:rationalize:{c}".encode(), digest_size=4).digest()
        responses = backend.generate(requests, dataclasses.replace(sampling, seed=int.from_bytes(digest)))
        append_jsonl(
            path,
            [
                Rationale(
                    problem_id=r.problem.id,
                    slot=slot,
                    hinted_prompt=prompt,
                    response=response,
                    answer=task.extract_answer(response),
                )
                for (r, slot), prompt, response in zip(chunk, prompts, responses, strict=True)
                if (r.problem.id, slot) not in done
            ],
        )
    return read_jsonl(path, Rationale)


def read_rationales(
    cfg: RunConfig, k: int, records: list[DebateRecord], task: Task
) -> list[Rationale] | None:
    """Iteration k's rationalizations (None where the run makes none), all of them or an MftError."""
    if not rationalizing(cfg):
        return None
    rationales = read_jsonl(RunDir(cfg.run_dir).rationales(k), Rationale)
    have = {(x.problem_id, x.slot) for x in rationales}
    missing = sum((r.problem.id, slot) not in have for r, slot in wrong_samples(records, task.is_equivalent))
    if missing:
        raise MftError(
            f"iteration {k}: {missing} wrong sample(s) of the training debate are not rationalized yet",
            hint=f"finish the debate stage first (mft debate-train --iteration {k})",
        )
    return rationales


# -- 2. per-agent data ------------------------------------------------------------------------------------
def stage_build_data(cfg: RunConfig, k: int, task: Task) -> dict[str, Any]:
    """Per-agent datasets from iteration k's debate records; written once, then reused."""
    rd = RunDir(cfg.run_dir)
    if rd.sizes(k).exists():
        loaded: dict[str, Any] = json.loads(rd.sizes(k).read_text())
        return loaded
    records = read_debates(rd.train_debate(k))
    if len(records) < cfg.n_train:
        raise MftError(
            f"iteration {k}: debate has {len(records)} of {cfg.n_train} problems",
            hint="finish the debate stage first",
        )
    ctx = BuildContext(
        cfg.n_agents,
        cfg.critic_corrected_share,
        cfg.seed,
        k,
        mask_critic_first_answer=cfg.critic_mask_first_answer,
        rationales=read_rationales(cfg, k, records, task),
        generator_objective=objective_of(cfg, "gen_0"),
        critic_objective=objective_of(cfg, "critic_0"),
    )
    datasets = of_run(cfg.method, cfg.summarize, cfg.interaction).build(records, task.is_equivalent, ctx)
    for slot, dataset in datasets.items():
        write_examples(rd.examples(k, slot), dataset.items())
    sizes: dict[str, Any] = {slot: dataset.sizes for slot, dataset in datasets.items()}
    write_json_atomic(rd.sizes(k), sizes)  # last: its presence means every dataset is written
    return sizes


# -- 3. finetune ------------------------------------------------------------------------------------------
def stage_finetune(
    cfg: RunConfig,
    k: int,
    backend: Backend,
    task: Task,
    progress: bool = True,
    train_curves: Callable[[str], StepCallback] | None = None,
) -> Society:
    """Finetune each agent on its own data, from its own previous weights; skip finished ones.
    `train_curves`, where given, maps an agent's slot to the callback its finetune reports each optimizer
    step to (local executor only: Ray's finetunes run in other processes and stream nothing)."""
    from tqdm.auto import tqdm

    rd = RunDir(cfg.run_dir)
    if rd.society_file(k).exists():
        return society_after(cfg, k)
    prev = society_after(cfg, k - 1)
    sizes = json.loads(rd.sizes(k).read_text())
    method = of_run(cfg.method, cfg.summarize, cfg.interaction)
    settings = finetune_settings(cfg, k, task)
    # each model continues from its own previous weights (one model: from generator 0, which it played)
    previous = {f"gen_{n}": prev.generators[n] for n in range(cfg.n_agents)}
    previous.update({f"critic_{n}": (prev.critics or prev.generators)[n] for n in range(cfg.n_agents)})
    previous["model"] = prev.generators[0]
    slots = method.slot_names(cfg.n_agents)
    skipped: dict[str, str] = {}
    agents: dict[str, Agent] = {}
    todo: list[FinetuneJob] = []
    for name in slots:
        out_dir = rd.agent_dir(k, name)
        start_from = previous[name].adapter  # None in iteration 1: a fresh LoRA on the base
        base = previous[name].base  # an agent stays on its base (None: the one base model)
        finished = backend.finished_agent(name, out_dir)
        if finished is not None:  # finished before a restart
            agents[name] = replace(finished, base=base)
        elif sizes[name]["examples"] < cfg.min_examples:
            skipped[name] = f"{sizes[name]['examples']} examples < min_examples={cfg.min_examples}"
            agents[name] = Agent(name, start_from, base)
        else:
            todo.append(
                FinetuneJob(
                    name,
                    start_from,
                    rd.examples(k, name),
                    out_dir,
                    base=base,
                    objective=objective_of(cfg, name),
                )
            )
    if cfg.executor == "ray" and todo:
        release_runners()
        trained = ray_finetune(
            cfg.backend,
            cfg.primary_model,
            trainer_options(cfg),
            todo,
            settings,
            address=cfg.ray_address,
            num_cpus=cfg.ray_num_cpus,
            num_gpus=cfg.ray_num_gpus,
        )
        agents.update({a.name: a for a in trained})
    else:
        for job in tqdm(todo, desc=f"finetune iter {k}", unit="agent", disable=not progress):
            data = read_training_data(job.examples_path, job.objective)
            on_step = train_curves(job.name) if train_curves is not None else None
            job_settings = replace(settings, objective=job.objective)
            agents[job.name] = backend.finetune(
                Agent(job.name, job.start_from, job.base), data, job.out_dir, job_settings, on_step=on_step
            )
    for name, why in skipped.items():
        print(f"iteration {k}: agent {name} keeps its previous weights ({why})")
    if method.slots == "one_model":  # one model plays every agent, in every round
        rd.write_society(k, [agents["model"]] * cfg.n_agents, None, skipped)
    else:
        critics = [agents[name] for name in slots if name.startswith("critic_")]
        rd.write_society(k, [agents[name] for name in slots if name.startswith("gen_")], critics, skipped)
    return society_after(cfg, k)


# -- 4. evaluation ----------------------------------------------------------------------------------------
def stage_eval(
    cfg: RunConfig, k: int, backend: Backend, task: Task, test: list[Problem], progress: bool = True
) -> dict[str, Any]:
    """Debate of iteration k's society on the test split: generators answer round 1, critics later."""
    rd = RunDir(cfg.run_dir)
    if rd.results(k).exists():
        if not rd.outcomes(k).exists() and rd.eval_debate(k).exists():  # an evaluation from before them
            write_outcomes(rd.outcomes(k), outcomes_of(read_debates(rd.eval_debate(k)), task))
        loaded: dict[str, Any] = json.loads(rd.results(k).read_text())
        return loaded
    records = run_debate(
        backend,
        task,
        test,
        society_after(cfg, k),
        replace(
            debate_settings(cfg, task, stage_seed(cfg.seed, "eval", k)),
            agent_ids=of_run(cfg.method, cfg.summarize, cfg.interaction).tells_ids(k),
        ),
        rd.eval_debate(k),
        progress=progress,
        chunk_runner=chunk_runner_for(cfg),
    )
    outcomes = outcomes_of(records, task)
    write_outcomes(rd.outcomes(k), outcomes)  # before results.json, whose presence means the stage is done
    results: dict[str, Any] = {
        "iteration": k,
        "accuracy": as_dict(accuracies(outcomes)),
        "problems": len(records),
        "usage": {"generated_tokens": generated_tokens(backend, records)},
    }
    if k >= 1:
        train_records = read_debates(rd.train_debate(k))
        results["usage"]["train_debate_generated_tokens"] = generated_tokens(backend, train_records)
    write_json_atomic(rd.results(k), results)
    return results


def _scorer(backend: Backend) -> Scorer | None:
    """The backend as a scorer of responses where it is one (`can_score`: hf, vllm; a mixed society where
    every base's backend is), else None."""
    return cast("Scorer", backend) if backend.can_score() else None


_ENCODERS: dict[str, Any] = {}
# The base model as an agent of its own (no adapter), the reference of the KL-from-base metric.
BASE_SCORER = "base_model"


def stage_diversity(
    cfg: RunConfig, k: int, backend: Backend, task: Task, progress: bool = True
) -> dict[str, Any]:
    """Diversity of iteration k's society on its test debates (all, or the first `diversity_problems`)."""
    from mft.eval.diversity import DIVERSITY_VERSION, compute_diversity
    from mft.eval.encoders import load_encoder

    rd = RunDir(cfg.run_dir)
    if rd.diversity(k).exists():
        loaded: dict[str, Any] = json.loads(rd.diversity(k).read_text())
        if loaded.get("version") == DIVERSITY_VERSION:
            return loaded  # a file of an older definition is measured again, never mixed in
    records = read_debates(rd.eval_debate(k))
    encoder = None
    if cfg.embedding_model:
        if cfg.embedding_model not in _ENCODERS:
            _ENCODERS[cfg.embedding_model] = load_encoder(cfg.embedding_model)
        encoder = _ENCODERS[cfg.embedding_model]
    society = society_after(cfg, k)
    scorer = _scorer(backend)
    agents = [*society.generators, *(society.critics or [])]
    # the reference of each agent's KL: the base model; in a mixed society, each agent's own base
    references = {b: Agent(f"{BASE_SCORER}_{i}", base=b) for i, b in enumerate(cfg.base_models())}
    base: str | dict[str, str] = BASE_SCORER
    if cfg.mixed:
        base = {a.name: references[a.base or cfg.primary_model].name for a in agents}
    if scorer is not None:
        for agent in [*agents, *(references.values() if cfg.mixed else [Agent(BASE_SCORER)])]:
            backend.add_agent(agent)
    result = compute_diversity(
        records,
        task,
        scorer=scorer,
        encoder=encoder,
        max_problems=cfg.diversity_problems,
        base=base,
        same_as_base=[a.name for a in agents if a.adapter is None],
        progress=progress,
    )
    write_json_atomic(rd.diversity(k), result)
    return result

"""Batched synchronous multiagent debate.

Synchronous: in round r > 1 every agent sees the other agents' round r-1 responses (or a summary of them)
and nobody sees a response of the same round. Each agent keeps its whole conversation, so its own earlier
answers are in its context, as in the paper.

Batching: problems are processed in fixed chunks; within a chunk one round is one backend call covering
every agent x every problem. Chunk k always holds the same problems and samples with a seed derived from
(run seed, k, round), so a resumed run produces exactly what an uninterrupted one would.

Resumability: each finished chunk's records are appended to the JSONL file (flushed + fsynced); on start,
problems already in the file are skipped; a chunk that was only partly written is regenerated and only its
missing records are written.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from mft.backends.base import Agent, Backend, GenerationRequest, Sampling
from mft.debate.consensus import majority_vote
from mft.errors import MftError
from mft.records import DebateRecord, Interaction, Message, Problem, append_jsonl, read_debates
from mft.tasks.base import Task

# (task, [(chunk index, problems)], society, settings) -> each chunk's records, in the order given
ChunkRunner = Callable[..., Iterable[list[DebateRecord]]]


SUMMARIZER = "summarizer"  # the agent that writes the summaries (the base model, or agent 0's in a mixed one)


@dataclass
class Society:
    """Who answers what: generators answer round 1, critics the later rounds (default: the generators)."""

    generators: list[Agent]
    critics: list[Agent] | None = None
    summarizer: Agent = field(default_factory=lambda: Agent(SUMMARIZER))

    @classmethod
    def of_base(cls, n: int, bases: list[str] | None = None, summarizer: str | None = None) -> Society:
        """N copies of the base model (iteration 0 of the method); in a mixed society agent i is a copy of
        `bases[i]` and the summarizer of `summarizer`."""
        if bases is None:
            return cls(generators=[Agent(f"agent_{i}") for i in range(n)])
        if len(bases) != n:
            raise MftError(f"{n} agents but {len(bases)} base models")
        return cls(
            generators=[Agent(f"agent_{i}", base=bases[i]) for i in range(n)],
            summarizer=Agent(SUMMARIZER, base=summarizer or bases[0]),
        )

    def bases(self) -> list[str] | None:
        """Each slot's base model in a mixed society (None: every agent on the backend's one model)."""
        if all(a.base is None for a in self.all_agents()):
            return None
        return [a.base or "" for a in self.generators]

    @property
    def size(self) -> int:
        return len(self.generators)

    def agent(self, slot: int, round_: int) -> Agent:
        if round_ == 0 or self.critics is None:
            return self.generators[slot]
        return self.critics[slot]

    def all_agents(self) -> list[Agent]:
        return [*self.generators, *(self.critics or []), self.summarizer]


@dataclass
class DebateSettings:
    rounds: int = 2
    summarize: bool = False
    sampling: Sampling = field(default_factory=Sampling)
    seed: int = 0
    chunk_size: int = 64
    # every agent's request opens with a system message naming the agent it plays (`agent_id_prompt`):
    # the Unique ID baseline, one model conditioned on agent ids. Records keep the conversations without it.
    agent_ids: bool = False
    # "cooperative": a later round asks the agents to work together towards one answer
    # (`Task.cooperative_prompt`) instead of updating their own in the light of the others' (a debate)
    interaction: Interaction = "debate"


def agent_id_prompt(slot: int, round_: int) -> str:
    """The system message that tells one model which agent answers: generation agent n in round 1,
    critic agent n later (the paper's unique ID per generation or critic agent)."""
    role = "generation" if round_ == 0 else "critic"
    return f"You are {role} agent {slot + 1}."


def _request(
    society: Society, settings: DebateSettings, slot: int, round_: int, conv: list[Message]
) -> GenerationRequest:
    opening = [Message(role="system", content=agent_id_prompt(slot, round_))] if settings.agent_ids else []
    return GenerationRequest(society.agent(slot, round_).name, opening + list(conv))


def _seed(*parts: object) -> int:
    return int.from_bytes(hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=4).digest(), "big")


def debate_chunk(
    backend: Backend,
    task: Task,
    problems: list[Problem],
    society: Society,
    settings: DebateSettings,
    chunk_index: int,
) -> list[DebateRecord]:
    """Run the full debate on a few problems; one backend call per round (plus one for summaries)."""
    n = society.size
    convs = [[[Message(role="user", content=task.question_prompt(p))] for _ in range(n)] for p in problems]
    responses: list[list[list[str]]] = [[] for _ in problems]  # [problem][round][slot]
    summaries: list[list[list[str]]] = [[] for _ in problems]
    for r in range(settings.rounds):
        sampling = Sampling(**{**settings.sampling.__dict__, "seed": _seed(settings.seed, chunk_index, r)})
        if r > 0:
            prev = [resp[r - 1] for resp in responses]
            if settings.summarize:
                reqs = [
                    GenerationRequest(
                        society.summarizer.name,
                        [
                            Message(
                                role="user", content=task.summarize_prompt(problems[p], _others(prev[p], s))
                            )
                        ],
                    )
                    for p in range(len(problems))
                    for s in range(n)
                ]
                sum_sampling = Sampling(
                    **{**sampling.__dict__, "seed": _seed(settings.seed, chunk_index, r, "sum")}
                )
                flat = backend.generate(reqs, sum_sampling)
                for p in range(len(problems)):
                    summaries[p].append(flat[p * n : (p + 1) * n])
                    for s in range(n):
                        later = task.summary_debate_prompt(problems[p], flat[p * n + s])
                        convs[p][s].append(Message(role="user", content=_together(task, settings, n, later)))
            else:
                for p in range(len(problems)):
                    for s in range(n):
                        later = task.debate_prompt(problems[p], _others(prev[p], s))
                        convs[p][s].append(Message(role="user", content=_together(task, settings, n, later)))
        reqs = [
            _request(society, settings, s, r, convs[p][s]) for p in range(len(problems)) for s in range(n)
        ]
        flat = backend.generate(reqs, sampling)
        for p in range(len(problems)):
            responses[p].append(flat[p * n : (p + 1) * n])
            for s in range(n):
                convs[p][s].append(Message(role="assistant", content=flat[p * n + s]))
    records = []
    for p, problem in enumerate(problems):
        answers = [[task.extract_answer(x) for x in rnd] for rnd in responses[p]]
        round_consensus = [
            majority_vote(a, task.is_equivalent, tie_key=f"{settings.seed}:{problem.id}:{r}")
            for r, a in enumerate(answers)
        ]
        records.append(
            DebateRecord(
                task=task.name,
                task_version=task.version,
                problem=problem,
                agents=[[society.agent(s, r).name for s in range(n)] for r in range(settings.rounds)],
                responses=responses[p],
                answers=answers,
                conversations=convs[p],
                summaries=summaries[p],
                consensus=round_consensus[-1],
                round_consensus=round_consensus,
                correct=task.is_equivalent(round_consensus[-1], problem.answer),
                seed=settings.seed,
                bases=society.bases(),
                interaction=settings.interaction,
            )
        )
    return records


def _together(task: Task, settings: DebateSettings, n: int, later: str) -> str:
    """A later round's message in the settings' interaction (a lone agent has no one to cooperate with: it
    checks its own answer, as in a debate)."""
    return task.cooperative_prompt(later) if settings.interaction == "cooperative" and n > 1 else later


def _others(responses: list[str], slot: int) -> list[str]:
    return [x for i, x in enumerate(responses) if i != slot]


def run_debate(
    backend: Backend,
    task: Task,
    problems: list[Problem],
    society: Society,
    settings: DebateSettings,
    out_path: Path | None = None,
    progress: bool = True,
    on_chunk: Callable[[list[DebateRecord]], None] | None = None,
    chunk_runner: ChunkRunner | None = None,
) -> list[DebateRecord]:
    """Debate every problem, appending records to `out_path` as chunks finish; resumes from that file.

    `chunk_runner` decides where chunks run (default: here, on `backend`, one after another; see
    `mft.pipeline.executor` for Ray workers). It must yield each chunk's records in chunk order, so the
    file is the same whoever ran the chunks. Returns the records of `problems` in problem order.
    """
    if settings.rounds < 1 or society.size < 1:
        raise MftError("a debate needs at least 1 agent and 1 round")
    if len({p.id for p in problems}) != len(problems):
        raise MftError("problem ids are not unique", hint="check the task's loader")
    done: dict[str, DebateRecord] = {}
    if out_path is not None:
        for rec in read_debates(out_path):
            _check_compatible(rec, task, society, settings, out_path)
            done[rec.problem.id] = rec
    for agent in society.all_agents():
        backend.add_agent(agent)

    chunks = [problems[i : i + settings.chunk_size] for i in range(0, len(problems), settings.chunk_size)]
    from tqdm.auto import tqdm

    bar = tqdm(total=len(problems), desc="debate", unit="problem", disable=not progress)
    bar.update(sum(1 for p in problems if p.id in done))
    todo = [(k, chunk) for k, chunk in enumerate(chunks) if not all(p.id in done for p in chunk)]
    if chunk_runner is None:
        results: Iterable[list[DebateRecord]] = (
            debate_chunk(backend, task, chunk, society, settings, k) for k, chunk in todo
        )
    else:
        results = chunk_runner(task, todo, society, settings)
    for records in results:
        new = [r for r in records if r.problem.id not in done]
        if out_path is not None:
            append_jsonl(out_path, new)
        for r in new:
            done[r.problem.id] = r
        if on_chunk is not None:
            on_chunk(new)
        bar.update(len(new))
    bar.close()
    return [done[p.id] for p in problems]


def _check_compatible(
    rec: DebateRecord, task: Task, society: Society, settings: DebateSettings, path: Path
) -> None:
    expected = [[society.agent(s, r).name for s in range(society.size)] for r in range(settings.rounds)]
    if (
        rec.task != task.name
        or rec.task_version != task.version
        or rec.agents != expected
        or rec.seed != settings.seed
        or rec.bases != society.bases()
        or rec.interaction != settings.interaction
    ):
        on = f" on {', '.join(rec.bases)}" if rec.bases else ""
        raise MftError(
            f"{path} holds debates made with other settings (task {rec.task} v{rec.task_version}, "
            f"{rec.n_agents} agents{on} x {rec.n_rounds} rounds, {rec.interaction}, seed {rec.seed})",
            hint="use a new output directory, or delete that file to start fresh",
        )

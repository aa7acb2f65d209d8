"""The one thread that runs the model for `mft serve`: requests that arrive together are batched.

The hf backend is not thread-safe, so every generation happens on this thread. HTTP handlers `submit` a
`Job` (one agent turn, or one society debate) and wait on its future; the thread takes every job waiting
when it is free, groups them by kind and sampling settings, and runs each group as ONE backend call (agent
turns) or ONE `debate_chunk` over all the group's questions (society debates), so 50 clients that ask at
once share the engine's batches instead of queueing behind each other. `max_batch` caps the jobs of one
group; 1 serves one request at a time (the reply to a sampled request then depends only on the request and
its seed; batched, a sampled reply also depends on the requests it shared its batch with, as with vLLM's
and OpenAI's servers; greedy replies never do).

A job whose client went away (disconnected, or past the server's request timeout) is marked `gone`: it is
dropped if it has not started, and a running backend call stops between decoding steps once every job in
it is gone (`Backend.interrupt`), so an abandoned request never holds the engine.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Literal

from mft.backends.base import Backend, GenerationRequest, Sampling
from mft.debate.engine import DebateSettings, debate_chunk
from mft.records import DebateRecord, Message, Problem
from mft.serve.society import AsAsked, ServedSociety


class Abandoned(Exception):
    """The job's client went away before its reply was ready."""


@dataclass
class Reply:
    """What one job produced: the reply text, its token usage, and (society jobs) the debate."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    record: DebateRecord | None = None
    slot: int = 0  # society jobs: the agent whose last answer is the reply (`consensus_slot`)


@dataclass
class Job:
    kind: Literal["agent", "society"]
    sampling: Sampling
    agent: str = ""  # agent jobs: who answers
    messages: list[Message] = field(default_factory=list)  # agent jobs: the chat
    question: str = ""  # society jobs: the question debated
    future: Future[Reply] = field(default_factory=Future)
    gone: threading.Event = field(default_factory=threading.Event)


class Engine:
    """Runs submitted jobs on `backend`, batching the ones that wait together (see the module doc)."""

    def __init__(self, backend: Backend, served: ServedSociety, max_batch: int = 64) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.backend, self.served, self.max_batch = backend, served, max_batch
        self.task = AsAsked(served.task)
        self.queue: queue.Queue[Job | None] = queue.Queue()
        self.batches: list[tuple[str, int]] = []  # (kind, jobs) of every group run, for tests and logs
        self.thread = threading.Thread(target=self._loop, name="mft-serve-engine", daemon=True)
        self.thread.start()

    def submit(self, job: Job) -> Future[Reply]:
        self.queue.put(job)
        return job.future

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join(timeout=30)

    # -- the engine thread -----------------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            first = self.queue.get()
            if first is None:
                return
            jobs = [first]
            while True:  # everything that arrived while the previous batch ran
                try:
                    more = self.queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self.queue.put(None)  # stop after this batch
                    break
                jobs.append(more)
            groups: dict[tuple[str, Sampling], list[Job]] = {}
            for job in jobs:
                if job.gone.is_set():
                    job.future.set_exception(Abandoned())
                    continue
                groups.setdefault((job.kind, job.sampling), []).append(job)
            for (kind, _), group in groups.items():
                for start in range(0, len(group), self.max_batch):
                    self._run(kind, group[start : start + self.max_batch])

    def _run(self, kind: str, group: list[Job]) -> None:
        live = [j for j in group if not j.gone.is_set()]
        for job in group:
            if job.gone.is_set():
                job.future.set_exception(Abandoned())
        if not live:
            return
        self.backend.interrupt = lambda: all(j.gone.is_set() for j in live)
        try:
            replies = self._agents(live) if kind == "agent" else self._debates(live)
        except Exception as exc:  # noqa: BLE001 - every waiting client gets the error, the engine lives on
            for job in live:
                job.future.set_exception(exc)
            return
        finally:
            self.backend.interrupt = None
        self.batches.append((kind, len(live)))
        for job, reply in zip(live, replies, strict=True):
            if job.gone.is_set():
                job.future.set_exception(Abandoned())
            else:
                job.future.set_result(reply)

    def _agents(self, jobs: list[Job]) -> list[Reply]:
        requests = [GenerationRequest(j.agent, j.messages) for j in jobs]
        texts = self.backend.generate(requests, jobs[0].sampling)
        usage = self.backend.last_usage or [(0, 0)] * len(texts)
        return [Reply(t, p, c) for t, (p, c) in zip(texts, usage, strict=True)]

    def _debates(self, jobs: list[Job]) -> list[Reply]:
        served, sampling = self.served, jobs[0].sampling
        problems = [
            Problem(
                id=f"served-{hashlib.blake2b(j.question.encode(), digest_size=6).hexdigest()}",
                question=j.question,
                answer="",
            )
            for j in jobs
        ]
        settings = DebateSettings(
            rounds=served.rounds,
            summarize=served.summarize,
            sampling=sampling,
            seed=sampling.seed,
            chunk_size=len(problems),
            agent_ids=served.agent_ids,
            interaction=served.interaction,
        )
        usage = _UsageByProblem(self.backend, len(problems))
        records = debate_chunk(usage, self.task, problems, served.society, settings, 0)
        replies = []
        for p, record in enumerate(records):
            slot = consensus_slot(self.task, record)
            prompt, completion = usage.totals[p]
            replies.append(Reply(record.responses[-1][slot], prompt, completion, record, slot))
        return replies


def consensus_slot(task: AsAsked, record: DebateRecord) -> int:
    """The first agent whose last-round answer is the consensus (the first agent's when nobody answered)."""
    last = record.answers[-1]
    return next((s for s, a in enumerate(last) if task.is_equivalent(a, record.consensus)), 0)


class _UsageByProblem(Backend):
    """The engine's backend, seen by `debate_chunk`, adding up each problem's token usage.

    `debate_chunk` sends each round's requests problem-major (request i belongs to problem i // N), so
    the backend's per-request usage is summed per problem.
    """

    def __init__(self, inner: Backend, n_problems: int) -> None:
        super().__init__()
        self.inner, self.n_problems = inner, n_problems
        self.name = inner.name
        self.totals = [(0, 0)] * n_problems

    def add_agent(self, agent: Any) -> None:
        self.inner.add_agent(agent)

    def generate(self, requests: list[GenerationRequest], sampling: Sampling) -> list[str]:
        texts = self.inner.generate(requests, sampling)
        per = len(requests) // self.n_problems
        for i, (p, c) in enumerate(self.inner.last_usage):
            old = self.totals[i // per]
            self.totals[i // per] = (old[0] + p, old[1] + c)
        return texts

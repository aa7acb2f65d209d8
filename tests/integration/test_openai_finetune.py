"""OpenAIBackend.finetune against a fake OpenAI fine-tuning API on loopback (no network, no key).

The fake server implements POST /v1/files (multipart upload), POST /v1/fine_tuning/jobs and
GET /v1/fine_tuning/jobs/{id}. A job answers `validating_files`, then `running`, and ends after a few polls
(`succeeded`, or `failed` / `cancelled` when scripted); `hold` keeps it running. `faults` scripts HTTP errors
per route ("upload", "create", "poll"): the route's first attempts get those statuses. Every request is
logged with its arrival time, so the tests count uploads, jobs and polls and see the backoff.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from mft.backends.base import Agent, Backend, FinetuneSettings
from mft.backends.openai import OpenAIBackend
from mft.backends.openai_finetune import finetune_suffix
from mft.errors import MftError
from mft.records import Message

LOOPBACK = "127.0.0.1"
# What stage_finetune passes: the LoRA settings the fine-tuning API ignores, plus epochs and seed.
PIPELINE_SETTINGS = FinetuneSettings(
    rank=8,
    alpha=16,
    dropout=0.0,
    target_modules="all-linear",
    epochs=3,
    lr=1e-3,
    batch_size=16,
    seed=7,
)
FAST_POLL = {"poll_interval_s": 0.02, "poll_max_interval_s": 0.08, "poll_timeout_s": 10.0}


class FakeFineTuning(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, polls_to_finish: int = 3, outcome: str = "succeeded") -> None:
        super().__init__((LOOPBACK, 0), _Handler)
        self.polls_to_finish = polls_to_finish  # polls answered before the job ends
        self.outcome = outcome  # "succeeded", "failed" or "cancelled"
        self.hold = False  # True: the job stays "running"
        self.faults: dict[str, list[int]] = {}
        self.lock = threading.Lock()
        self.log: list[tuple[str, str, float]] = []  # (route, path, arrival time) of every request
        self.attempts: Counter[str] = Counter()
        self.files: dict[str, dict[str, Any]] = {}
        self.jobs: dict[str, dict[str, Any]] = {}
        self.polls: Counter[str] = Counter()  # successful polls per job

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.server_address[1]}/v1"

    def count(self, route: str) -> int:
        return sum(r == route for r, _, _ in self.log)

    def times(self, route: str) -> list[float]:
        return [t for r, _, t in self.log if r == route]


class _Handler(BaseHTTPRequestHandler):
    server: FakeFineTuning

    def log_message(self, *args: Any) -> None:
        pass

    def _route(self) -> str:
        if self.command == "POST" and self.path == "/v1/files":
            return "upload"
        if self.command == "POST" and self.path == "/v1/fine_tuning/jobs":
            return "create"
        if self.command == "GET" and self.path.startswith("/v1/fine_tuning/jobs/"):
            return "poll"
        return "other"

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._handle()

    def do_POST(self) -> None:  # noqa: N802
        self._handle()

    def _handle(self) -> None:
        srv = self.server
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        route = self._route()
        with srv.lock:
            srv.log.append((route, self.path, time.monotonic()))
            attempt = srv.attempts[route]
            srv.attempts[route] += 1
            faults = srv.faults.get(route, [])
            fault = faults[attempt] if attempt < len(faults) else None
        if fault is not None:
            headers = {"Retry-After": "0"} if fault == 429 else {}
            self._json(fault, {"error": {"message": f"scripted {fault}", "type": "server_error"}}, headers)
        elif route == "upload":
            self._upload(body)
        elif route == "create":
            self._create(json.loads(body))
        elif route == "poll":
            self._poll(self.path.rsplit("/", 1)[1])
        else:
            self._json(404, {"error": {"message": f"no route {self.command} {self.path}"}})

    def _upload(self, body: bytes) -> None:
        srv = self.server
        head = f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode()
        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
        fields = {part.get_param("name", header="content-disposition"): part for part in msg.iter_parts()}
        data = fields["file"].get_payload(decode=True)
        with srv.lock:
            file_id = f"file-{len(srv.files) + 1}"
            srv.files[file_id] = {
                "data": data,
                "purpose": fields["purpose"].get_payload(decode=True).decode(),
                "filename": fields["file"].get_filename(),
            }
        obj = {
            "id": file_id,
            "object": "file",
            "bytes": len(data),
            "created_at": 0,
            "filename": fields["file"].get_filename(),
            "purpose": "fine-tune",
            "status": "processed",
        }
        self._json(200, obj)

    def _create(self, body: dict[str, Any]) -> None:
        srv = self.server
        if body.get("training_file") not in srv.files:
            self._json(400, {"error": {"message": f"no file {body.get('training_file')}"}})
            return
        with srv.lock:
            job_id = f"ftjob-{len(srv.jobs) + 1}"
            srv.jobs[job_id] = body
        self._json(200, self._job(job_id, "validating_files"))

    def _poll(self, job_id: str) -> None:
        srv = self.server
        if job_id not in srv.jobs:
            self._json(404, {"error": {"message": f"no job {job_id}"}})
            return
        with srv.lock:
            n = srv.polls[job_id]
            srv.polls[job_id] += 1
        if n >= srv.polls_to_finish and not srv.hold:
            status = srv.outcome
        else:
            status = "validating_files" if n == 0 else "running"
        self._json(200, self._job(job_id, status))

    def _job(self, job_id: str, status: str) -> dict[str, Any]:
        body = self.server.jobs[job_id]
        done = status == "succeeded"
        error = None
        if status == "failed":
            error = {"code": "invalid_training_file", "message": "line 2: too few messages", "param": None}
        return {
            "id": job_id,
            "object": "fine_tuning.job",
            "created_at": 0,
            "finished_at": 1 if status in ("succeeded", "failed", "cancelled") else None,
            "model": body["model"],
            "fine_tuned_model": f"ft:{body['model']}:org:{body.get('suffix')}:{job_id}" if done else None,
            "organization_id": "org",
            "result_files": [],
            "status": status,
            "training_file": body["training_file"],
            "validation_file": None,
            "hyperparameters": body.get("hyperparameters") or {"n_epochs": "auto"},
            "trained_tokens": 1234 if done else None,
            "error": error,
            "seed": body.get("seed", 0),
        }

    def _json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def fake() -> Iterator[Any]:
    servers: list[FakeFineTuning] = []

    def start(**kw: Any) -> FakeFineTuning:
        srv = FakeFineTuning(**kw)
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def _backend(url: str, **settings: Any) -> OpenAIBackend:
    defaults: dict[str, Any] = {
        "base_url": url,
        "timeout_s": 5.0,
        "backoff_base_s": 0.01,
        "backoff_max_s": 0.05,
        "jitter_seed": 0,
        **FAST_POLL,
    }
    return OpenAIBackend("base-model", **{**defaults, **settings})


EXAMPLES = [
    [
        Message(role="user", content="What is 2+3?"),
        Message(role="assistant", content="The answer is 5."),
    ],
    [
        Message(role="user", content="What is 7*6? ünïcode"),
        Message(role="assistant", content="First attempt: 41."),
        Message(role="user", content="Other agents said 42. Update your answer."),
        Message(role="assistant", content="The answer is 42."),
    ],
]


def _chat(examples: list[list[Message]]) -> list[dict[str, Any]]:
    return [{"messages": [{"role": m.role, "content": m.content} for m in ex]} for ex in examples]


def _jsonl(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip()]


def test_finetune_uploads_creates_polls_with_backoff_and_returns_the_fine_tuned_model(
    fake, tmp_path: Path
) -> None:
    srv = fake(polls_to_finish=4)
    backend = _backend(srv.url)
    backend.add_agent(Agent("gen_0", "ft:base-model:org:gen-0:ftjob-prev"))
    out_dir = tmp_path / "iter_2" / "agents" / "gen_0"
    start = time.monotonic()
    trained = backend.finetune(
        Agent("gen_0", "ft:base-model:org:gen-0:ftjob-prev"), EXAMPLES, out_dir, PIPELINE_SETTINGS
    )
    assert time.monotonic() - start < 10
    # the uploaded file is the examples in chat format, for fine-tuning
    assert srv.count("upload") == 1 and list(srv.files) == ["file-1"]
    upload = srv.files["file-1"]
    assert upload["purpose"] == "fine-tune" and upload["filename"] == "train.jsonl"
    assert _jsonl(upload["data"]) == _chat(EXAMPLES)
    assert _jsonl((out_dir / "train.jsonl").read_bytes()) == _chat(EXAMPLES)
    # one job, from the agent's current model, with n_epochs and seed; no LoRA settings sent
    assert srv.count("create") == 1
    body = srv.jobs["ftjob-1"]
    assert body == {
        "model": "ft:base-model:org:gen-0:ftjob-prev",
        "training_file": "file-1",
        "suffix": "gen-0",
        "seed": 7,
        "hyperparameters": {"n_epochs": 3},
    }
    # polled until it succeeded; waits doubled up to the cap (each gap at least the planned wait)
    assert srv.polls["ftjob-1"] == 5 and srv.count("poll") == 5
    polls = srv.times("poll")
    gaps = [b - a for a, b in zip(polls, polls[1:], strict=False)]
    planned = [0.02, 0.04, 0.08, 0.08]
    assert len(gaps) == len(planned)
    for gap, wait in zip(gaps, planned, strict=True):
        assert gap >= wait * 0.9, (gaps, planned)
    # the result: the fine-tuned model id is the agent's new adapter, recorded in model.json
    tuned = "ft:ft:base-model:org:gen-0:ftjob-prev:org:gen-0:ftjob-1"
    assert trained == Agent("gen_0", tuned)
    assert backend.model_of("gen_0") == tuned  # the next generate (and finetune) uses the new model
    assert json.loads((out_dir / "model.json").read_text()) == {
        "model": tuned,
        "job": "ftjob-1",
        "trained_tokens": 1234,
    }
    job = json.loads((out_dir / "job.json").read_text())
    assert (job["file"], job["job"]) == ("file-1", "ftjob-1")
    assert backend.finished_agent("gen_0", out_dir) == trained
    assert backend.describe()["finetune_jobs"] == {"gen_0": "ftjob-1"}
    assert backend.retries == 0


def test_an_agent_on_the_base_model_finetunes_the_base_model_and_epochs_are_optional(
    fake, tmp_path: Path
) -> None:
    srv = fake(polls_to_finish=1)
    backend = _backend(srv.url)
    trained = backend.finetune(Agent("Critic 1!"), EXAMPLES[:1], tmp_path / "c")
    body = srv.jobs["ftjob-1"]
    assert body["model"] == "base-model" and body["suffix"] == "critic-1" == finetune_suffix("Critic 1!")
    assert "hyperparameters" not in body and "seed" not in body  # the server's defaults
    assert trained.adapter == "ft:base-model:org:critic-1:ftjob-1"


def test_a_restart_resumes_polling_the_same_job_without_a_second_upload_or_job(fake, tmp_path: Path) -> None:
    srv = fake(polls_to_finish=2)
    srv.hold = True  # the job keeps running: the first call gives up after poll_timeout_s
    out_dir = tmp_path / "gen_1"
    with pytest.raises(MftError) as info:
        _backend(srv.url, poll_timeout_s=0.3).finetune(
            Agent("gen_1"), EXAMPLES, out_dir, FinetuneSettings(epochs=2)
        )
    err = info.value
    assert "ftjob-1" in err.message and "still running" in err.message and "poll_timeout_s=0.3" in err.message
    assert err.hint and "resume" in err.hint and "job.json" in err.hint
    assert json.loads((out_dir / "job.json").read_text())["job"] == "ftjob-1"
    assert not (out_dir / "model.json").exists()
    polls_before = srv.count("poll")
    assert polls_before >= 2
    srv.hold = False
    # a fresh process: a new backend, and the examples need not even be there any more
    trained = _backend(srv.url).finetune(Agent("gen_1"), [], out_dir, FinetuneSettings(epochs=2))
    assert (srv.count("upload"), srv.count("create")) == (1, 1)
    assert list(srv.jobs) == ["ftjob-1"]
    assert srv.count("poll") == polls_before + 1
    assert trained == Agent("gen_1", "ft:base-model:org:gen-1:ftjob-1")
    assert json.loads((out_dir / "model.json").read_text())["job"] == "ftjob-1"


def test_a_restart_after_the_upload_reuses_the_file_and_creates_the_job(fake, tmp_path: Path) -> None:
    srv = fake(polls_to_finish=1)
    srv.faults = {"create": [400]}  # the job could not be created: job.json holds only the file id
    out_dir = tmp_path / "gen_0"
    with pytest.raises(MftError, match=r"creating a fine-tuning job .*HTTP 400") as info:
        _backend(srv.url).finetune(Agent("gen_0"), EXAMPLES, out_dir)
    assert "not retried" in info.value.message and srv.attempts["create"] == 1
    state = json.loads((out_dir / "job.json").read_text())
    assert state["file"] == "file-1" and "job" not in state
    trained = _backend(srv.url).finetune(Agent("gen_0"), EXAMPLES, out_dir)
    assert srv.count("upload") == 1 and srv.count("create") == 2 and list(srv.jobs) == ["ftjob-1"]
    assert srv.jobs["ftjob-1"]["training_file"] == "file-1"
    assert trained.adapter == "ft:base-model:org:gen-0:ftjob-1"


def test_a_finished_agent_makes_no_request(fake, tmp_path: Path) -> None:
    srv = fake()
    out_dir = tmp_path / "gen_0"
    backend = _backend(srv.url)
    assert backend.finished_agent("gen_0", out_dir) is None
    out_dir.mkdir()
    (out_dir / "job.json").write_text(json.dumps({"file": "file-9", "job": "ftjob-9"}))
    assert backend.finished_agent("gen_0", out_dir) is None  # a job, but not finished
    (out_dir / "model.json").write_text(json.dumps({"model": "ft:m:done", "job": "ftjob-9"}))
    assert backend.finished_agent("gen_0", out_dir) == Agent("gen_0", "ft:m:done")
    assert backend.finetune(Agent("gen_0"), EXAMPLES, out_dir, PIPELINE_SETTINGS) == Agent(
        "gen_0", "ft:m:done"
    )
    assert srv.log == []
    (out_dir / "model.json").write_text("{not json")
    with pytest.raises(MftError, match="model.json is unreadable"):
        backend.finished_agent("gen_0", out_dir)
    assert srv.log == []


@pytest.mark.parametrize("outcome", ["failed", "cancelled"])
def test_a_failed_job_is_one_clear_error(fake, tmp_path: Path, outcome: str) -> None:
    srv = fake(polls_to_finish=2, outcome=outcome)
    out_dir = tmp_path / "critic_0"
    with pytest.raises(MftError) as info:
        _backend(srv.url).finetune(Agent("critic_0"), EXAMPLES, out_dir, FinetuneSettings(epochs=1))
    err = info.value
    assert "ftjob-1" in err.message and f"ended {outcome}" in err.message and "'critic_0'" in err.message
    if outcome == "failed":
        assert "line 2: too few messages" in err.message and "invalid_training_file" in err.message
    else:
        assert "no error message" in err.message
    assert err.hint and "delete" in err.hint and str(out_dir / "job.json") in err.hint
    assert "\n" not in err.message
    assert not (out_dir / "model.json").exists()
    assert srv.count("poll") == 3
    # as the hint says: deleting job.json starts over with a new upload and job
    srv.outcome = "succeeded"
    (out_dir / "job.json").unlink()
    trained = _backend(srv.url).finetune(Agent("critic_0"), EXAMPLES, out_dir, FinetuneSettings(epochs=1))
    assert (srv.count("upload"), srv.count("create")) == (2, 2)
    assert trained.adapter == "ft:base-model:org:critic-0:ftjob-2"


def test_transient_errors_are_retried_on_upload_create_and_poll(fake, tmp_path: Path) -> None:
    srv = fake(polls_to_finish=2)
    srv.faults = {"upload": [429, 500], "create": [503], "poll": [502, 429]}
    backend = _backend(srv.url, max_retries=3)
    trained = backend.finetune(Agent("gen_0"), EXAMPLES, tmp_path / "gen_0", PIPELINE_SETTINGS)
    assert trained.adapter == "ft:base-model:org:gen-0:ftjob-1"
    assert srv.attempts == Counter({"upload": 3, "create": 2, "poll": 5})
    assert list(srv.files) == ["file-1"] and list(srv.jobs) == ["ftjob-1"]  # no duplicates
    assert backend.retries == 5
    assert backend.retries_by_cause == {"429": 2, "500": 1, "503": 1, "502": 1}


def test_persistent_errors_give_up_after_max_retries_with_a_clear_error(fake, tmp_path: Path) -> None:
    srv = fake()
    srv.faults = {"upload": [500] * 10}
    with pytest.raises(MftError) as info:
        _backend(srv.url, max_retries=2).finetune(Agent("gen_0"), EXAMPLES, tmp_path / "gen_0")
    err = info.value
    assert "upload of" in err.message and "after 3 attempts" in err.message and "HTTP 500" in err.message
    assert srv.url in err.message and err.hint and "max_retries" in err.hint
    assert srv.attempts["upload"] == 3 and not (tmp_path / "gen_0" / "job.json").exists()
    # a server without the fine-tuning API (vLLM, llama.cpp): 404 at once, with a hint saying so
    srv.faults = {"upload": [500] * 3 + [404]}
    with pytest.raises(MftError, match="HTTP 404") as info:
        _backend(srv.url, max_retries=2).finetune(Agent("gen_0"), EXAMPLES, tmp_path / "gen_0")
    assert "no fine-tuning API" in (info.value.hint or "") and srv.attempts["upload"] == 4


def test_settings_are_checked(fake, tmp_path: Path) -> None:
    srv = fake()
    backend = _backend(srv.url)
    with pytest.raises(MftError, match="epochs"):
        backend.finetune(Agent("a"), EXAMPLES, tmp_path / "a", FinetuneSettings(epochs=0))
    with pytest.raises(MftError, match="poll_interval_s"):
        _backend(srv.url, poll_interval_s=0)
    with pytest.raises(MftError, match="poll_max_interval_s"):
        _backend(srv.url, poll_interval_s=1.0, poll_max_interval_s=0.5)
    with pytest.raises(MftError, match="no examples"):
        backend.finetune(Agent("a"), [], tmp_path / "a")
    assert srv.log == []


def test_finished_agent_of_the_base_and_hf_backends(tmp_path: Path) -> None:
    from mft.backends.hf import HFBackend

    class Plain(Backend):
        def add_agent(self, agent: Agent) -> None:
            pass

        def generate(self, requests, sampling):  # type: ignore[no-untyped-def]
            return []

    hf = HFBackend.__new__(HFBackend)  # finished_agent needs no model: skip loading one
    for backend in (Plain(), hf):
        assert backend.finished_agent("gen_0", tmp_path / "gen_0") is None
        (tmp_path / "gen_0").mkdir(exist_ok=True)
        assert backend.finished_agent("gen_0", tmp_path / "gen_0") is None
        (tmp_path / "gen_0" / "adapter_model.safetensors").write_bytes(b"")
        assert backend.finished_agent("gen_0", tmp_path / "gen_0") == Agent("gen_0", str(tmp_path / "gen_0"))
        (tmp_path / "gen_0" / "adapter_model.safetensors").unlink()


def test_an_objective_the_backend_does_not_train_is_refused_naming_those_that_do(tmp_path: Path) -> None:
    """The backend's own `objectives` decide, before any request: DPO is one line naming hf and vllm."""
    backend = _backend("http://127.0.0.1:9")  # nothing listens: no request may be made
    with pytest.raises(MftError, match="finetunes by SFT only, not dpo") as err:
        backend.finetune(Agent("gen_0"), [], tmp_path / "gen_0", FinetuneSettings(objective="dpo"))
    assert err.value.hint == "use backend: hf or vllm for dpo finetuning"

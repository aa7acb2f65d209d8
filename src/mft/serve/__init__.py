"""`mft serve`: a society of agents behind an OpenAI-compatible HTTP API (FastAPI + uvicorn; hf or vllm).

`society` decides what is served (a run's society or base agents), `app` answers the HTTP requests (see
its docstring for the routes); this module binds the socket, loads the backend and runs uvicorn.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import sys
from pathlib import Path
from typing import Any

from mft.backends import EngineShape, backend_class
from mft.errors import MftError
from mft.serve.app import ApiError, ChatMessageIn, ChatRequest, Limits, create_app
from mft.serve.society import DEFAULT_SOCIETY_NAME, AsAsked, ServedSociety, build_served, load_run_society

__all__ = [
    "DEFAULT_SOCIETY_NAME",
    "ApiError",
    "AsAsked",
    "ChatMessageIn",
    "ChatRequest",
    "Limits",
    "ServedSociety",
    "bind",
    "exposure_warning",
    "is_loopback",
    "build_served",
    "create_app",
    "engine_options",
    "load_run_society",
    "serve",
]


def is_loopback(host: str) -> bool:
    """Whether `host` is an address of this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str, api_key: str | None) -> str | None:
    """What to warn about when serving on `host` with `api_key` (None: nothing)."""
    if api_key is None and not is_loopback(host):
        return (
            f"listening on {host}, beyond this machine, with no API key: anyone who can reach the port can "
            "use the models (set --api-key or MFT_API_KEY)"
        )
    return None


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready socket on host:port (port 0: any free port), or an MftError saying why not."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise MftError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc})",
            hint="pick another --port (0: any free port), or stop what is using it",
        ) from None
    return sock


def engine_options(served: ServedSociety, backend_name: str) -> dict[str, Any]:
    """What backend `backend_name` sizes its engine by for a served society (`Backend.engine_options`):
    its agents, each an adapter slot, as large as the largest adapter's rank (8, mft's default rank, where
    no agent has one); a server runs no fixed debate, so no context or sequences in flight are given."""
    ranks = [
        r for a in served.agents() if a.adapter is not None and (r := _rank(Path(a.adapter))) is not None
    ]
    shape = EngineShape(
        agents=served.society.size,
        rounds=served.rounds,
        summarize=served.summarize,
        adapters=len(served.agents()),
        lora_rank=max(ranks, default=8),
    )
    return backend_class(backend_name).engine_options(shape)


def _rank(adapter: Path) -> int | None:
    """The rank an adapter directory's config declares (8 where it names none); None where it has no
    readable config (the backend says so when it loads the adapter)."""
    try:
        return int(json.loads((adapter / "adapter_config.json").read_text()).get("r", 8))
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def serve(
    *,
    model: str | None = None,
    run_dir: Path | None = None,
    iteration: int | None = None,
    agents: int | None = None,
    rounds: int | None = None,
    task: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    society_name: str = DEFAULT_SOCIETY_NAME,
    batch_size: int = 256,
    log_level: str = "info",
    api_key: str | None = None,
    max_body_bytes: int = 4 * 2**20,
    request_timeout_s: float = 600.0,
    max_batch: int = 64,
    backend_name: str = "hf",
) -> None:
    """Load the society on the hf (or vllm) backend and serve it until interrupted."""
    limits = Limits(api_key, max_body_bytes, request_timeout_s, max_batch)
    served = build_served(
        model=model,
        run_dir=run_dir,
        iteration=iteration,
        agents=agents,
        rounds=rounds,
        task=task,
        society_name=society_name,
    )
    try:
        import uvicorn
    except ImportError as exc:
        raise MftError("`mft serve` needs fastapi and uvicorn", hint="pip install 'mft[serve]'") from exc
    from mft.backends.mixed import society_backend

    sock = bind(host, port)  # before loading the model: a busy port fails fast
    warning = exposure_warning(host, api_key)
    if warning:
        print(f"mft serve: WARNING: {warning}", file=sys.stderr, flush=True)
    try:
        backend = society_backend(  # a mixed society: one backend per base model
            backend_name,
            served.base_models(),
            {
                "batch_size": batch_size,
                "chat_template_kwargs": served.chat_template_kwargs,
                **engine_options(served, backend_name),
            },
        )
        for note in backend.load_warnings:
            print(f"mft serve: WARNING: {note}", file=sys.stderr, flush=True)
        app = create_app(backend, served, limits)
        actual = sock.getsockname()[1]
        where = f"[{host}]" if ":" in host else host
        print(
            f"mft serve: {served.society.size} agents x {served.rounds} rounds ({served.source}, task "
            f"{served.task.name}); models: {', '.join(served.model_ids())}",
            flush=True,
        )
        print(f"mft serve: listening on http://{where}:{actual}/v1", flush=True)
        config = uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=5)
        uvicorn.Server(config).run(sockets=[sock])
        app.state.engine.close()
    finally:
        sock.close()

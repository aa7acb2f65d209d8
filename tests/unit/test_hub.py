"""A hub model name without a reachable hub: one line at once (no retries), or the cached copy; a local
path or the bundled model never reaches the network code."""

from __future__ import annotations

import http.server
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mft.backends import hub
from mft.cli import main
from mft.errors import MftError

MODEL = "some-org/some-model"


@pytest.fixture(autouse=True)
def _fresh(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))  # an empty cache
    probe = hub.unreachable  # cached per endpoint: each test asks afresh
    probe.cache_clear()
    yield
    probe.cache_clear()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens there once closed


def test_an_unreachable_hub_fails_at_once_naming_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    start = time.time()
    with pytest.raises(MftError) as err:
        hub.loadable(MODEL)
    assert time.time() - start < 5
    assert f"model {MODEL!r} is not a local directory" in str(err.value) and "cannot be reached" in str(
        err.value
    )
    assert "--model path/to/some-model" in (err.value.hint or "")


def test_a_hub_that_never_answers_is_given_up_on_after_the_probe_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    silent = socket.socket()  # accepts connections (the kernel's backlog) and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{silent.getsockname()[1]}")
    start = time.time()
    with pytest.raises(MftError, match="no answer within|timed out"):
        hub.loadable(MODEL)
    assert time.time() - start < hub.PROBE_TIMEOUT_S + 1.5
    silent.close()


def test_offline_and_not_cached_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MftError, match="HF_HUB_OFFLINE is set"):
        hub.loadable(MODEL)


def test_a_cached_model_is_loaded_from_its_snapshot_without_the_hub(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    repo = tmp_path / "cache" / "models--some-org--some-model"
    snapshot = repo / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    assert Path(hub.loadable(MODEL)) == snapshot.resolve()


def test_a_reachable_hub_gets_the_name_as_given(monkeypatch: pytest.MonkeyPatch) -> None:
    class Head(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:  # noqa: N802
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Head)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
    try:
        assert hub.loadable(MODEL) == MODEL  # from_pretrained then downloads as usual
    finally:
        server.shutdown()


def test_local_models_never_probe_the_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("probed the hub for a local model")

    monkeypatch.setattr(hub, "unreachable", no_network)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    assert hub.loadable(str(tmp_path / "m")) == str(tmp_path / "m")
    assert Path(hub.loadable("bundled")).is_dir()


def test_the_cli_gives_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    start = time.time()
    rc = main(["debate", "--model", MODEL, "--limit", "1", "--out", str(tmp_path / "d"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and MODEL in err, err
    assert time.time() - start < 5

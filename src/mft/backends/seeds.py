"""The per-request sampling seed, shared by every backend whose server or engine takes a seed per request.

One derivation for the openai and vllm backends, so both seed a round's requests alike: agents given the
same prompt sample different answers, while a rerun sends exactly the same seeds.
"""

from __future__ import annotations

import hashlib


def request_seed(round_seed: int, index: int) -> int:
    """The `seed` sent with request `index` of a round sampled with `round_seed` (fits in 31 bits)."""
    digest = hashlib.blake2b(f"{round_seed}:{index}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") >> 1

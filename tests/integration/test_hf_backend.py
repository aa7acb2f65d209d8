"""The hf backend on the bundled model: real transformers + peft, CPU, offline."""

from __future__ import annotations

from pathlib import Path

import pytest

from mft.backends.base import Agent, GenerationRequest, Sampling
from mft.backends.hf.adapters import mergeable, merged
from mft.errors import MftError
from mft.records import Message
from mft.tasks import get_task
from mft.toy import CHECKPOINT_DIR
from tests.adapters import random_adapter

task = get_task("arithmetic")


@pytest.fixture(scope="module")
def backend():
    from mft.backends.hf import HFBackend

    return HFBackend("bundled", batch_size=64)


def _req(agent: str, problem_index: int = 0) -> GenerationRequest:
    p = task.load("test", problem_index + 1)[problem_index]
    return GenerationRequest(agent, [Message(role="user", content=task.question_prompt(p))])


def test_bundled_model_is_a_real_small_llama() -> None:
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(CHECKPOINT_DIR)
    assert cfg.model_type == "llama"
    assert (CHECKPOINT_DIR / "model.safetensors").exists()
    size = sum(f.stat().st_size for f in CHECKPOINT_DIR.iterdir())
    assert size <= 20 * 2**20


def test_bundled_model_answers(backend) -> None:
    backend.add_agent(Agent("agent_0"))
    problems = task.load("test", 8)
    reqs = [
        GenerationRequest("agent_0", [Message(role="user", content=task.question_prompt(p))])
        for p in problems
    ]
    out = backend.generate(reqs, Sampling(temperature=0.0, max_new_tokens=task.max_new_tokens))
    answers = [task.extract_answer(o) for o in out]
    assert all(a is not None for a in answers), out
    for o, p in zip(out, problems, strict=True):  # it learned the worked-solution format of its recipe
        lines = o.splitlines()
        assert len(lines) == 6 and lines[-1].startswith("The answer is"), o
        a, b, c, d, e, f = p.meta["ops"]
        assert lines[0].startswith(f"{b:02d}*{c:02d}=") and lines[1].startswith(f"{e:02d}*{f:02d}="), o
    # and it can do some of the arithmetic (measured: 6 of these 8 greedy answers right; chance is ~0)
    assert sum(task.is_equivalent(a, p.answer) for a, p in zip(answers, problems, strict=True)) >= 3, out


def test_two_adapters_differ_and_share_one_base(backend, tmp_path: Path) -> None:
    base_params = sum(p.numel() for p in backend.base.parameters())
    backend.add_agent(Agent("a", str(random_adapter(tmp_path / "a", 1))))
    backend.add_agent(Agent("b", str(random_adapter(tmp_path / "b", 2))))
    backend.add_agent(Agent("plain"))
    greedy = Sampling(temperature=0.0, max_new_tokens=40)
    mixed = backend.generate([_req("a"), _req("b"), _req("plain")], greedy)
    assert len(set(mixed)) == 3, mixed
    # each row went through its own adapter: same output as generating that agent alone
    assert backend.generate([_req("a")], greedy)[0] == mixed[0]
    assert backend.generate([_req("b")], greedy)[0] == mixed[1]
    assert backend.generate([_req("plain")], greedy)[0] == mixed[2]
    # one base in memory: non-LoRA parameters are exactly the base's, held once
    non_lora = [p for n, p in backend.model.named_parameters() if "lora_" not in n]
    assert sum(p.numel() for p in non_lora) == base_params
    assert len({p.data_ptr() for p in non_lora}) == len(non_lora)


def test_per_adapter_and_mixed_batches_give_the_same_answers(backend, tmp_path: Path) -> None:
    backend.add_agent(Agent("a", str(random_adapter(tmp_path / "a", 3))))
    backend.add_agent(Agent("b", str(random_adapter(tmp_path / "b", 4))))
    backend.add_agent(Agent("plain"))
    reqs = [_req(agent, i) for i in range(3) for agent in ("a", "b", "plain")]
    greedy = Sampling(temperature=0.0, max_new_tokens=40)
    out = {}
    try:
        for mode in ("per-adapter", "mixed"):
            backend.adapter_batching = mode
            out[mode] = backend.generate(reqs, greedy)
    finally:
        backend.adapter_batching = "auto"
    assert out["per-adapter"] == out["mixed"]
    assert len({out["mixed"][0], out["mixed"][1], out["mixed"][2]}) == 3  # the agents really differ
    # auto: per adapter when that costs few extra batches (batch size 64 here), mixed for a handful of rows
    assert backend._mixed([300, 300, 300]) is False and backend._mixed([1, 1, 1]) is True


def test_merged_adapters_compute_what_the_lora_layers_do(backend, tmp_path: Path) -> None:
    """A per-adapter batch runs on the base with the adapter merged in: same function (up to rounding),
    same answers, and the base's own weights are put back untouched, also when the batch fails."""
    import torch

    backend.add_agent(Agent("m1", str(random_adapter(tmp_path / "m1", 5))))
    backend.add_agent(Agent("m2", str(random_adapter(tmp_path / "m2", 6))))
    backend.add_agent(Agent("plain"))
    before = {n: (p, p.detach().clone()) for n, p in backend.model.named_parameters()}
    ids = backend.tokenizer(backend.render(_req("m1")), return_tensors="pt", add_special_tokens=False)
    assert mergeable(backend.model, "m1")
    with torch.inference_mode():
        backend.model.set_adapter("m1")
        lora_logits = backend.model(**ids).logits
        with merged(backend.model, "m1"):
            merged_logits = backend.model(**ids).logits
            # inside: the adapted base weights are other tensors, the rest are the same objects
            params = dict(backend.model.named_parameters())
            assert (
                params["base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight"]
                is not (before["base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight"][0])
            )
        with backend.model.disable_adapter():
            base_logits = backend.model(**ids).logits
    assert torch.allclose(merged_logits, lora_logits, atol=1e-4), (merged_logits - lora_logits).abs().max()
    assert (base_logits - lora_logits).abs().max() > 1e-2  # the adapter really changes the model
    with pytest.raises(RuntimeError, match="boom"), merged(backend.model, "m2"):
        raise RuntimeError("boom")
    for n, p in backend.model.named_parameters():  # every parameter back: same object, same bits
        assert p is before[n][0] and torch.equal(p, before[n][1]), n

    reqs = [_req(agent, i) for i in range(3) for agent in ("m1", "m2", "plain")]
    greedy = Sampling(temperature=0.0, max_new_tokens=60)
    out = {}
    try:
        backend.adapter_batching = "per-adapter"
        for mode in ("on", "off"):
            backend.merge_adapters = mode
            out[mode] = backend.generate(reqs, greedy)
    finally:
        backend.adapter_batching, backend.merge_adapters = "auto", "auto"
    assert out["on"] == out["off"]
    assert len(set(out["on"][:3])) == 3  # the agents really differ


def test_adapter_variants_are_not_merged(tmp_path: Path) -> None:
    """DoRA (a LoRA variant) is not a plain weight delta: its batches keep peft's layers."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from mft.backends.hf import HFBackend

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(CHECKPOINT_DIR)
    cfg = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], use_dora=True, init_lora_weights=False)
    get_peft_model(base, cfg).save_pretrained(tmp_path / "dora")
    backend = HFBackend("bundled", batch_size=8, merge_adapters="on")
    backend.add_agent(Agent("dora", str(tmp_path / "dora")))
    assert not mergeable(backend.model, "dora")
    greedy = Sampling(temperature=0.0, max_new_tokens=30)
    on = backend.generate([_req("dora", 0), _req("dora", 1)], greedy)
    backend.merge_adapters = "off"
    assert backend.generate([_req("dora", 0), _req("dora", 1)], greedy) == on
    with pytest.raises(MftError, match="merge_adapters must be auto, on or off"):
        HFBackend("bundled", merge_adapters="yes")


def test_kv_caches_give_the_dynamic_caches_answers(backend) -> None:
    """The static and filled caches are speed choices only: the answers of transformers' default dynamic
    cache, on round-2 style prompts (long, different lengths, so left padding differs across rows), greedy
    and sampled."""
    backend.add_agent(Agent("agent_0"))
    first = backend.generate(
        [_req("agent_0", i) for i in range(4)], Sampling(temperature=0.0, max_new_tokens=40)
    )
    reqs = [
        GenerationRequest(
            "agent_0",
            [
                *_req("agent_0", i).messages,
                Message(role="assistant", content=first[i]),
                Message(role="user", content=task.debate_prompt(task.load("test", i + 1)[i], first[: i + 1])),
            ],
        )
        for i in range(4)
    ]
    # (cache, prefill_tokens): 1000 tokens is 2 rows of these ~450-token prompts, 1 is one row at a time
    modes = ((None, 0), ("static", 0), ("filled", 0), ("filled", 1000), ("filled", 1))
    for sampling in (
        Sampling(temperature=0.0, max_new_tokens=60),
        Sampling(temperature=1.0, top_p=0.9, max_new_tokens=task.max_new_tokens, seed=3),
    ):
        out = {}
        try:
            for mode in modes:
                backend.cache_implementation, backend.prefill_tokens = mode
                out[mode] = backend.generate(reqs, sampling)
        finally:
            del backend.cache_implementation, backend.prefill_tokens  # back to the class defaults
        assert all(out[modes[0]]) and all(out[m] == out[modes[0]] for m in modes), out


def test_filled_cache_attends_only_to_written_positions() -> None:
    import torch
    from transformers import AutoConfig

    from mft.backends.hf.kv_cache import FilledStaticLayer, filled_cache, supports_filled_cache

    layer = FilledStaticLayer(max_cache_len=10)
    k, v = torch.randn(2, 4, 3, 8), torch.randn(2, 4, 3, 8)  # batch 2, 4 heads, 3 prompt positions
    keys, values = layer.update(k, v)
    assert keys.shape == (2, 4, 3, 8) and torch.equal(keys, k) and torch.equal(values, v)
    assert layer.get_seq_length() == 3 and layer.get_mask_sizes(1) == (4, 0)
    k1, v1 = torch.randn(2, 4, 1, 8), torch.randn(2, 4, 1, 8)
    keys, values = layer.update(k1, v1)  # one decoding step
    assert keys.shape == (2, 4, 4, 8) and torch.equal(keys[:, :, 3:], k1) and torch.equal(values[:, :, :3], v)
    assert keys.data_ptr() == layer.keys.data_ptr()  # a view of the preallocated tensor, not a copy
    assert layer.keys.shape == (2, 4, 10, 8)
    layer.crop(-2)
    assert layer.get_seq_length() == 2 and layer.update(k1, v1)[0].shape[2] == 3
    layer.reset()
    assert layer.get_seq_length() == 0

    config = AutoConfig.from_pretrained(CHECKPOINT_DIR)
    assert supports_filled_cache(config)
    assert len(filled_cache(config, 50).layers) == config.num_hidden_layers
    sliding = AutoConfig.from_pretrained(CHECKPOINT_DIR)
    sliding.sliding_window = 16  # as Mistral-style configs have
    assert not supports_filled_cache(sliding)
    mixed = AutoConfig.from_pretrained(CHECKPOINT_DIR)
    mixed.layer_types = ["full_attention", "sliding_attention"] * 2
    assert not supports_filled_cache(mixed)


def test_generate_uses_the_filled_cache_where_it_applies(backend, monkeypatch) -> None:
    import torch

    from mft.backends.hf.kv_cache import FilledStaticLayer

    ids = torch.tensor([[0, 5, 6, 7], [8, 9, 10, 11]])
    kwargs = {"input_ids": ids, "attention_mask": (ids != 0).long(), "max_new_tokens": 196}
    [cache] = backend._cache_kwargs(backend.model, kwargs).values()
    assert all(isinstance(layer, FilledStaticLayer) for layer in cache.layers)
    assert cache.layers[0].max_cache_len == 200 and cache.get_seq_length() == 0  # 2 rows: one pass
    monkeypatch.setattr(backend, "prefill_tokens", 4)  # 4 tokens: one row of width 4 per chunk
    [cache] = backend._cache_kwargs(backend.model, kwargs).values()
    assert cache.get_seq_length() == 3  # prefilled, a row at a time, all but the last prompt token
    monkeypatch.setattr(backend.base.config, "sliding_window", 64, raising=False)
    assert backend._cache_kwargs(backend.model, kwargs) == {"cache_implementation": "static"}
    with pytest.raises(MftError, match="prefill_tokens must be"):
        type(backend)("bundled", prefill_tokens=-1)


def test_chunked_prefill_holds_the_whole_batch_prefill(backend) -> None:
    """The keys and values `prefill_in_chunks` leaves in the cache are those of one forward of the whole
    left-padded batch, row by row (padding positions aside, which attention never reads)."""
    import torch

    from mft.backends.hf.kv_cache import filled_cache, generate_cache_kwarg, prefill_in_chunks

    tok = backend.tokenizer
    texts = [backend.render(_req("agent_0", i)) for i in range(5)]
    texts[2] += " and a longer prompt than the others"
    enc = [tok.encode(t, add_special_tokens=False) for t in texts]
    width = max(map(len, enc))
    ids = torch.full((5, width), tok.pad_token_id)
    mask = torch.zeros((5, width), dtype=torch.long)
    for row, e in enumerate(enc):
        ids[row, width - len(e) :], mask[row, width - len(e) :] = torch.tensor(e), 1
    model = backend.base
    with torch.inference_mode():
        chunked = prefill_in_chunks(model, ids, mask, width + 10, rows=2)
        whole = filled_cache(model.config, width + 10)
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
        model(
            input_ids=ids[:, :-1],
            attention_mask=mask[:, :-1],
            position_ids=positions[:, :-1],
            use_cache=True,
            **{generate_cache_kwarg(): whole},
        )
    assert chunked.get_seq_length() == whole.get_seq_length() == width - 1
    real = mask[:, :-1].bool()
    for a, b in zip(chunked.layers, whole.layers, strict=True):
        assert a.keys.shape == b.keys.shape == (5, a.keys.shape[1], width + 10, a.keys.shape[3])
        for got, want in ((a.keys, b.keys), (a.values, b.values)):
            got, want = (
                got[:, :, : width - 1].transpose(1, 2)[real],
                want[:, :, : width - 1].transpose(1, 2)[real],
            )
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_chunked_prefill_in_mixed_adapter_batches(backend, tmp_path: Path) -> None:
    """peft's per-row adapter routing (`adapter_names=`) is sliced with the rows of each prefill chunk."""
    for i in range(2):
        backend.add_agent(Agent(f"mix_{i}", str(random_adapter(tmp_path / f"mix_{i}", seed=20 + i))))
    reqs = [_req(f"mix_{i % 2}", i) for i in range(5)]
    greedy = Sampling(temperature=0.0, max_new_tokens=40)
    out = {}
    try:
        backend.adapter_batching = "mixed"
        for budget in (0, 1):  # the whole batch at once; one row at a time
            backend.prefill_tokens = budget
            out[budget] = backend.generate(reqs, greedy)
    finally:
        del backend.adapter_batching, backend.prefill_tokens
    assert out[0] == out[1] and all(out[0])
    alone = [backend.generate([r], greedy)[0] for r in reqs]  # each agent through its own adapter
    assert out[1] == alone


def test_sampling_is_reproducible(backend) -> None:
    backend.add_agent(Agent("agent_0"))
    reqs = [_req("agent_0", i) for i in range(4)] * 2
    s = Sampling(temperature=1.0, top_p=0.9, max_new_tokens=60, seed=7)
    assert backend.generate(reqs, s) == backend.generate(reqs, s)


def test_bad_adapter_and_model_paths(backend, tmp_path: Path) -> None:
    from mft.backends.hf import HFBackend

    with pytest.raises(MftError, match="not a LoRA adapter"):
        backend.add_agent(Agent("x", str(tmp_path)))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "adapter_config.json").write_text("{not json")
    with pytest.raises(MftError, match="could not load adapter"):
        backend.add_agent(Agent("y", str(broken)))
    with pytest.raises(MftError, match="no config.json"):
        HFBackend(str(tmp_path / "missing-model"))


def test_loads_a_saved_copy_like_a_hub_model(tmp_path: Path) -> None:
    """from_pretrained on another local directory (the same code path a hub id takes)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mft.backends.hf import HFBackend

    AutoModelForCausalLM.from_pretrained(CHECKPOINT_DIR).save_pretrained(tmp_path / "copy")
    AutoTokenizer.from_pretrained(CHECKPOINT_DIR).save_pretrained(tmp_path / "copy")
    b = HFBackend(str(tmp_path / "copy"))
    b.add_agent(Agent("agent_0"))
    assert b.generate([_req("agent_0")], Sampling(temperature=0.0, max_new_tokens=8))[0]


def test_generation_batches_fit_a_token_budget(backend, monkeypatch) -> None:
    """`batch_tokens` caps rows x (longest prompt + max_new_tokens) per generate call: more, smaller
    batches, the same greedy answers."""
    from mft.backends.hf.model import plan_batches

    backend.add_agent(Agent("budget"))
    reqs = [_req("budget", i) for i in range(6)]
    greedy = Sampling(temperature=0.0, max_new_tokens=40)
    calls: list[int] = []
    generate = backend.model.generate

    def counting(**kwargs):  # type: ignore[no-untyped-def]
        calls.append(kwargs["input_ids"].shape[0])
        return generate(**kwargs)

    monkeypatch.setattr(backend.model, "generate", counting)
    whole = backend.generate(reqs, greedy)
    width = max(len(backend.tokenizer.encode(backend.render(r), add_special_tokens=False)) for r in reqs)
    try:
        backend.batch_tokens = 2 * (width + 40)  # two rows per batch
        small = backend.generate(reqs, greedy)
    finally:
        backend.batch_tokens = "auto"
    assert calls == [6, 2, 2, 2] and small == whole
    assert plan_batches([0, 1, 2, 3], [5, 5, 9, 9], 8, 1, 20) == [[0, 1], [2, 3]]  # 3 x 10 > 20
    assert plan_batches([0, 1, 2, 3], [5, 5, 9, 9], 3, 1, None) == [[0, 1, 2], [3]]
    assert plan_batches([0, 1, 2], [50, 50, 50], 8, 10, 20) == [[0], [1], [2]]  # one row at least


def test_model_loading_options_and_lossless_merging(tmp_path: Path) -> None:
    from mft.backends.hf import HFBackend

    eager = HFBackend("bundled", attn_implementation="eager", batch_size=4)
    assert eager.base.config._attn_implementation == "eager"
    assert eager._merge_enabled()  # float32 weights on a CPU: merged batches are exact
    bf16 = HFBackend("bundled", dtype="bfloat16", batch_size=4)
    assert not bf16._merge_enabled()  # W + BA in bfloat16 would round the LoRA delta away
    with pytest.raises(MftError, match="merge_adapters: on needs float32"):
        HFBackend("bundled", dtype="bfloat16", merge_adapters="on")
    with pytest.raises(MftError, match="batch_tokens"):
        HFBackend("bundled", batch_tokens=0)


def test_a_full_model_agent_can_wait_on_the_cpu(tmp_path: Path) -> None:
    """offload_full_models: the agent's own model is kept off the device between its batches (on a GPU that
    is one model's memory per agent freed); it generates what it generates without offloading."""
    from mft.backends.base import FinetuneSettings
    from mft.backends.hf import HFBackend

    settings = FinetuneSettings(method="full", epochs=1, batch_size=4, lr=1e-4)
    examples = [[Message(role="user", content="1+1?"), Message(role="assistant", content="2")]] * 4
    greedy = Sampling(temperature=0.0, max_new_tokens=20)
    outs = []
    for mode in ("on", "off"):
        b = HFBackend("bundled", batch_size=4, offload_full_models=mode)
        full = b.finetune(Agent("f"), examples, tmp_path / mode, settings)
        fresh = HFBackend("bundled", batch_size=4, offload_full_models=mode)
        fresh.add_agent(full)
        assert (fresh.full_models["f"].device.type == "cpu") and fresh.offload_full_models == (mode == "on")
        outs.append(fresh.generate([_req("f", 0), _req("f", 1)], greedy))
    assert outs[0] == outs[1]
